"""Calibration of what a posterior claims: simulation-based calibration ranks, PIT and CRPS, per cell.

* :func:`sbc_ranks` -- simulation-based calibration (Talts, Betancourt,
  Simpson, Vehtari & Gelman 2018): for a parameter drawn from the prior, data
  simulated from it and ``L`` (thinned, nearly independent) posterior draws,
  the rank of the prior draw among the posterior draws is uniform on
  ``0..L`` exactly when the sampler draws from the true posterior;
* :func:`rank_uniformity` -- a chi-squared test of those ranks binned into
  ``n_bins`` equal groups of ranks, its p-value from the regularized upper
  incomplete gamma function;
* :func:`pit` -- the probability integral transform of held-out observations
  under posterior-predictive draws (uniform when the forecast is calibrated),
  randomized within ties so that discrete ensembles stay uniform;
* :func:`crps` -- the continuous ranked probability score of an ensemble,
  ``E|X - y| - E|X - X'| / 2``, in the exact ``O(m log m)`` form on sorted
  draws (Hersbach 2000; Gneiting & Raftery 2007).

Draws are along the leading axis, cells (any batch) trail. Array API only.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from pipeline.kernels import special


def sbc_ranks(prior_draw: Any, posterior_draws: Any) -> Any:
    """Rank of each prior draw among its posterior draws: ``#{posterior < prior}``, in ``0..L``.

    Parameters
    ----------
    prior_draw : array, shape (*batch)
        The parameter each data set was simulated from.
    posterior_draws : array, shape (L, *batch)
        Posterior draws given that data set (thin them to near independence first).

    Returns
    -------
    array of int64, shape (*batch)
    """
    xp = array_api_compat.array_namespace(prior_draw, posterior_draws)
    if posterior_draws.shape[1:] != prior_draw.shape:
        raise ValueError(f"posterior_draws must have shape (L, *{tuple(prior_draw.shape)}); got "
                         f"{tuple(posterior_draws.shape)}.")
    return xp.sum(xp.astype(posterior_draws < prior_draw, xp.int64), axis=0)


def rank_uniformity(ranks: Any, n_ranks: int, n_bins: int = 20) -> tuple[Any, float, int]:
    """Chi-squared test that ``ranks`` (values ``0..n_ranks - 1``) are uniform, after binning.

    The ``n_ranks`` possible ranks are grouped into ``n_bins`` bins of equal
    width (``n_bins`` must divide ``n_ranks``, so every bin is equally likely
    under uniformity); the statistic ``sum (O - E)^2 / E`` has ``n_bins - 1``
    degrees of freedom.

    Returns
    -------
    counts : array (n_bins,)
    statistic : float
    p_value : float
    """
    xp = array_api_compat.array_namespace(ranks)
    if n_ranks % n_bins:
        raise ValueError(f"n_bins ({n_bins}) must divide the number of possible ranks ({n_ranks}).")
    flat = xp.reshape(ranks, (-1,))
    width = n_ranks // n_bins
    bins = flat // width
    counts = xp.stack([xp.sum(xp.astype(bins == b, xp.int64)) for b in range(n_bins)])
    total = float(xp.sum(counts))
    expected = total / n_bins
    stat = float(xp.sum((xp.astype(counts, xp.float64) - expected) ** 2)) / expected
    p = float(special.gammaincc(xp.asarray(0.5 * (n_bins - 1), dtype=xp.float64),
                                xp.asarray(0.5 * stat, dtype=xp.float64)))
    return counts, stat, p


def pit(draws: Any, observed: Any, *, seed: int = 0) -> Any:
    """Randomized probability integral transform of ``observed`` under the ensemble ``draws``.

    ``PIT = (#{x < y} + U (#{x == y} + 1)) / (m + 1)``, ``U`` uniform on (0, 1):
    exactly uniform for a calibrated ensemble of ``m`` exchangeable draws,
    continuous or not.

    Parameters
    ----------
    draws : array, shape (m, *batch)
    observed : array, shape (*batch)
    """
    xp = array_api_compat.array_namespace(draws, observed)
    below = xp.sum(xp.astype(draws < observed, draws.dtype), axis=0)
    ties = xp.sum(xp.astype(draws == observed, draws.dtype), axis=0)
    u = special.uniform(tuple(observed.shape), seed=seed, like=below)
    return (below + u * (ties + 1.0)) / (draws.shape[0] + 1.0)


def crps(draws: Any, observed: Any) -> Any:
    """CRPS of the ensemble ``draws`` (m, *batch) for ``observed`` (*batch), lower is better.

    With the draws sorted, ``x_(1) <= ... <= x_(m)``, the energy form
    ``mean|x - y| - (1/2m^2) sum_ij |x_i - x_j|`` uses
    ``sum_ij |x_i - x_j| = 2 sum_i (2i - m - 1) x_(i)``: no ``m^2`` term.
    """
    xp = array_api_compat.array_namespace(draws, observed)
    m = draws.shape[0]
    x = xp.sort(draws, axis=0)
    term1 = xp.mean(xp.abs(x - observed), axis=0)
    i = xp.arange(1, m + 1, dtype=x.dtype, device=array_api_compat.device(x))
    weights = xp.reshape(2.0 * i - m - 1.0, (m,) + (1,) * (x.ndim - 1))
    spread = 2.0 * xp.sum(weights * x, axis=0) / (m * m)
    return term1 - 0.5 * spread


def crps_normal(mean: Any, sd: Any, observed: Any) -> Any:
    """Closed-form CRPS of ``N(mean, sd^2)``: ``sd [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]``."""
    xp = array_api_compat.array_namespace(mean, sd, observed)
    z = (observed - mean) / sd
    phi = xp.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return sd * (z * (2.0 * special.ndtr(z) - 1.0) + 2.0 * phi - 1.0 / math.sqrt(math.pi))
