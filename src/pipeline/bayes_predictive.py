"""Posterior-predictive calibration of the bayes stage on held-out values: randomized PIT and CRPS.

With ``bayes.holdout: N`` the last ``N`` values of every cell's series are kept
out of the fit (:mod:`pipeline.bayes`). Each held-out value ``y`` is then met by
posterior-predictive draws, one GEV draw per posterior draw ``(mu_s, sigma_s,
xi_s)``: ``x_s = F^-1(u_s; mu_s, sigma_s, xi_s)`` with ``u_s`` uniform
(:func:`pipeline.kernels.gev.gev_ppf`), and scored by

* the randomized PIT ``(#{x_s < y} + U (#{x_s = y} + 1)) / (S + 1)``
  (:func:`pipeline.kernels.calibration.pit`), uniform on (0, 1) when the
  posterior predictive is calibrated;
* the CRPS ``E|X - y| - E|X - X'| / 2`` of the ``S`` draws
  (:func:`pipeline.kernels.calibration.crps`), and the same score of the
  training values used as an ensemble (climatology); ``1 - CRPS / CRPS_clim``
  is the skill (> 0: the posterior predictive beats climatology).

The pooled PIT of all cells and held-out values is tested for uniformity by
the chi-squared test of :func:`pipeline.kernels.calibration.rank_uniformity`
on ``PIT_BINS`` equal bins. Values of one year are correlated across cells, so
the pooled values are fewer independent ones than they look and the test is
optimistic (its p-value too small under a correlated but calibrated forecast);
read it as a screen, with the histogram.

:func:`scores` is raw arrays in, raw arrays out (array API); :func:`variables`
turns them into the store's labelled variables.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np
import xarray as xr

from pipeline import grid
from pipeline.kernels import calibration, special
from pipeline.kernels import gev as kgev

Array = Any

#: Fewest training values a held-out split must leave in a cell's series.
MIN_TRAINING = 10
#: Equal bins of the pooled PIT's chi-squared uniformity test.
PIT_BINS = 10


def _seeds(seed: int, j: int) -> tuple[int, int]:
    """Two independent 32-bit seeds (predictive draws, PIT randomization) for held-out value ``j``."""
    a, b = np.random.SeedSequence([seed, j]).generate_state(2)
    return int(a), int(b)


def predictive_draws(params: Array, *, seed: int, j: int = 0) -> Array:
    """One GEV draw per posterior draw, ``F^-1(u_s; loc_s, scale_s, shape_s)``: ``(S, cells)`` for ``params`` ``(3, S,
    cells)``; the draws :func:`scores` meets held-out value ``j`` with."""
    u = special.uniform(tuple(params.shape[1:]), seed=_seeds(seed, j)[0], like=params)
    return kgev.gev_ppf(u, params)


def scores(params: Array, train: Array, heldout: Array, *, seed: int) -> dict[str, Array]:
    """PIT and CRPS of each held-out value under the posterior predictive, and the CRPS of climatology.

    Parameters
    ----------
    params : array (3, S, cells)
        Posterior draws of ``loc, scale, shape`` (natural scale; ``shape`` is xi,
        scipy's ``c = -xi``).
    train : array (n, cells)
        The values the posterior was fitted to (the climatological ensemble).
    heldout : array (N, cells)
        The held-out values.
    seed : int
        Seed of the predictive draws and of the PIT's randomization.

    Returns
    -------
    dict of ``pit``, ``crps``, ``crps_climatology``, each ``(N, cells)``; NaN where
    the held-out value, a posterior draw or a training value of the cell is NaN.
    """
    xp = array_api_compat.array_namespace(params, train, heldout)
    if params.ndim != 3 or params.shape[0] != 3 or train.ndim != 2 or heldout.ndim != 2 \
            or not params.shape[2] == train.shape[1] == heldout.shape[1]:
        raise ValueError(f"params (3, S, cells), train (n, cells) and heldout (N, cells) must share cells; got shapes "
                         f"{tuple(params.shape)}, {tuple(train.shape)} and {tuple(heldout.shape)}.")
    broken = xp.any(xp.isnan(params), axis=(0, 1)) | xp.any(xp.isnan(train), axis=0)
    out: dict[str, list[Array]] = {"pit": [], "crps": [], "crps_climatology": []}
    for j in range(heldout.shape[0]):  # one held-out value at a time: memory of one (S, cells) ensemble
        sim = predictive_draws(params, seed=seed, j=j)
        y = heldout[j, :]
        bad = broken | xp.isnan(y)
        nan = xp.full_like(y, xp.nan)
        out["pit"].append(xp.where(bad, nan, calibration.pit(sim, y, seed=_seeds(seed, j)[1])))
        out["crps"].append(xp.where(bad, nan, calibration.crps(sim, y)))
        out["crps_climatology"].append(xp.where(bad, nan, calibration.crps(train, y)))
    return {k: xp.stack(v) for k, v in out.items()}


def uniformity(pit: np.ndarray, n_bins: int = PIT_BINS) -> tuple[np.ndarray, float, float, int]:
    """Chi-squared test that the finite ``pit`` values are uniform on ``n_bins`` equal bins.

    Returns the bin counts, the statistic, its p-value (``n_bins - 1`` degrees of
    freedom) and the number of values pooled.
    """
    values = np.asarray(pit, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros(n_bins, dtype=np.int64), float("nan"), float("nan"), 0
    ranks = np.clip(np.floor(values * n_bins), 0, n_bins - 1).astype(np.int64)
    counts, stat, p_value = calibration.rank_uniformity(ranks, n_ranks=n_bins, n_bins=n_bins)
    return np.asarray(counts), float(stat), float(p_value), int(values.size)


def variables(s: dict[str, np.ndarray], cells: grid.CellIndex, heldout: xr.DataArray,
              units: str) -> tuple[dict[str, xr.DataArray], dict[str, Any]]:
    """The store's ``pit``, ``crps``, ``crps_climatology``, ``crps_skill`` and the uniformity attributes.

    ``s`` holds :func:`scores`' arrays on the host; ``heldout`` is the held-out
    part of the series' ``sample`` coordinate (with any coordinates along it),
    which becomes the ``heldout`` coordinate.
    """
    crps, clim = np.mean(s["crps"], axis=0), np.mean(s["crps_climatology"], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        skill = np.where(clim > 0, 1.0 - crps / clim, np.nan)
    lead = {"heldout": heldout["sample"].values}
    out = {
        "pit": grid.from_matrix(s["pit"], cells, leading=lead, name="pit", attrs={
            "units": "1", "long_name": "randomized PIT of the held-out value under the posterior predictive"}),
        "crps": grid.from_matrix(crps, cells, name="crps", attrs={
            "units": units, "long_name": "CRPS of the posterior predictive, mean over the held-out values"}),
        "crps_climatology": grid.from_matrix(clim, cells, name="crps_climatology", attrs={
            "units": units, "long_name": "CRPS of the training values as an ensemble, mean over the held-out values"}),
        "crps_skill": grid.from_matrix(skill, cells, name="crps_skill", attrs={
            "units": "1", "long_name": "CRPS skill against climatology, 1 - crps / crps_climatology"}),
    }
    extra = {k: ("heldout", v.values, v.attrs) for k, v in heldout.coords.items()
             if k != "sample" and v.dims == ("sample",)}
    out["pit"] = out["pit"].assign_coords(extra)
    out["pit"]["heldout"].attrs.update(long_name="held-out sample (label of the series' sample axis)")
    counts, stat, p_value, n = uniformity(s["pit"])
    attrs = {"pit_bins": PIT_BINS, "pit_counts": counts, "pit_chi2": stat, "pit_chi2_pvalue": p_value,
             "pit_n": n, "pit_test": f"chi-squared uniformity of the pooled PIT on {PIT_BINS} equal bins "
             f"({PIT_BINS - 1} df); values of one year are correlated across cells, so the pooled test is optimistic"}
    return out, attrs
