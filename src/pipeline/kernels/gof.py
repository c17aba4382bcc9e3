"""Goodness of fit per cell: KS and Anderson-Darling statistics, parametric-bootstrap p-values, LR test, AIC/BIC.

The statistics take probability-integral transforms ``u = F(x)`` sorted
ascending along axis 0, one column per cell. Columns may be ragged: the usable
values lead each column and NaN pads the rest (``xp.sort`` puts NaN last), and
the number of usable values per column is counted from the NaN or given as
``n``. Nothing here loops over cells; :func:`bootstrap_pvalues` loops over
chunks of cells only to bound memory.

Because the fitted parameters are estimated from the same data, the classical
KS and AD null distributions do not apply (Lilliefors 1967; Stephens 1974);
:func:`bootstrap_pvalues` gets the null distribution by the parametric
bootstrap (Stute, González Manteiga & Presedo Quindimil 1993): simulate from the
fitted law, refit, recompute the statistic.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from pipeline.kernels import special

SEED_BLOCK = 32  # cells sharing one random stream in bootstrap_pvalues: results do not depend on chunk_cells
_CHUNK_ELEMENTS = 2**22  # default budget: simulated values per chunk (x n_boot x cells), ~32 MB in float64


def _check_sorted(u_sorted: Any, n: Any) -> tuple[Any, Any, Any]:
    """Namespace, per-column counts (int64, (cells,)) and the row numbers 1..N as a column."""
    xp = array_api_compat.array_namespace(u_sorted)
    if u_sorted.ndim != 2 or not xp.isdtype(u_sorted.dtype, "real floating"):
        raise TypeError(f"u_sorted must be a 2-D real floating (n, cells) array; got {u_sorted.ndim}-D {u_sorted.dtype}.")
    if n is None:
        n = xp.sum(xp.astype(~xp.isnan(u_sorted), xp.int64), axis=0)
    elif n.shape != (u_sorted.shape[1],):
        raise ValueError(f"n must have shape (cells,) = ({u_sorted.shape[1]},); got {tuple(n.shape)}.")
    dev = array_api_compat.device(u_sorted)
    rows = xp.arange(1, u_sorted.shape[0] + 1, dtype=u_sorted.dtype, device=dev)[:, None]
    return xp, n, rows


def ks_statistic(u_sorted: Any, n: Any = None) -> Any:
    """Kolmogorov-Smirnov statistic ``D = max_i max(i/n - u_(i), u_(i) - (i-1)/n)`` per column.

    Parameters
    ----------
    u_sorted : array, shape (N, cells)
        ``F(x)`` sorted ascending along axis 0; in ragged columns the ``n``
        usable values come first (NaN padding last).
    n : array of int, shape (cells,), optional
        Usable values per column; by default the number of non-NaN entries.
        Rows at or beyond ``n`` are ignored, whatever they hold.

    Returns
    -------
    array, shape (cells,)
        NaN where ``n == 0`` or a usable ``u`` is NaN.
    """
    xp, n, i = _check_sorted(u_sorted, n)
    nf = xp.astype(n, u_sorted.dtype)
    nsafe = xp.where(n > 0, nf, 1.0)
    gaps = xp.maximum(i / nsafe - u_sorted, u_sorted - (i - 1.0) / nsafe)
    d = xp.max(xp.where(i <= nf, gaps, 0.0), axis=0)
    return xp.where(n > 0, d, xp.nan)


def ad_statistic(u_sorted: Any, n: Any = None) -> Any:
    """Anderson-Darling statistic per column.

    ``A^2 = -n - (1/n) sum_i (2i-1) [log u_(i) + log(1 - u_(n+1-i))]``
    (Stephens 1974), computed in the reordered form
    ``A^2 = -n - (1/n) sum_i [(2i-1) log u_(i) + (2n+1-2i) log(1 - u_(i))]``,
    which needs no per-column reversal, so ragged columns cost nothing extra.
    ``u`` is clipped to ``[smallest_normal, 1 - eps/2]`` so that values that
    rounded to 0 or 1 give a large finite statistic instead of infinity.

    Parameters
    ----------
    u_sorted : array, shape (N, cells)
        ``F(x)`` sorted ascending along axis 0, usable values first.
    n : array of int, shape (cells,), optional
        Usable values per column; by default the number of non-NaN entries.

    Returns
    -------
    array, shape (cells,)
        NaN where ``n == 0`` or a usable ``u`` is NaN.
    """
    xp, n, i = _check_sorted(u_sorted, n)
    info = xp.finfo(u_sorted.dtype)
    nf = xp.astype(n, u_sorted.dtype)
    used = i <= nf
    u = xp.clip(xp.where(used, u_sorted, 0.5), float(info.smallest_normal), 1.0 - float(info.eps) / 2)
    terms = (2.0 * i - 1.0) * xp.log(u) + (2.0 * nf + 1.0 - 2.0 * i) * xp.log1p(-u)
    total = xp.sum(xp.where(used, terms, 0.0), axis=0)
    nsafe = xp.where(n > 0, nf, 1.0)
    return xp.where(n > 0, -nf - total / nsafe, xp.nan)


def _statistics(family: Any, x: Any, params: Any, valid: Any, n: Any, xp: Any) -> tuple[Any, Any]:
    """KS and AD of the columns of ``x`` against ``family(params)``, usable rows given by ``valid``."""
    u = family.cdf(x, params)
    if valid is not None:
        u = xp.where(valid, u, xp.nan)
    u_sorted = xp.sort(u, axis=0)
    return ks_statistic(u_sorted, n), ad_statistic(u_sorted, n)


def _block_seed(seed: int, block: int) -> int:
    """A 63-bit seed for one block of cells, from the user seed and the block number (splitmix64 mixing)."""
    z = (seed * 0x9E3779B97F4A7C15 + (block + 1) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 1


def _repeat_cells(a: Any, n_boot: int, xp: Any) -> Any:
    """``(..., C)`` -> ``(..., n_boot * C)``, resample-major: column ``b * C + c`` belongs to cell ``c``."""
    lead = a.shape[:-1]
    c = a.shape[-1]
    tiled = xp.broadcast_to(xp.expand_dims(a, axis=-2), (*lead, n_boot, c))
    return xp.reshape(tiled, (*lead, n_boot * c))


def _check_bootstrap(x: Any, fit: dict, n_boot: int, seed: int, valid: Any, loc: Any, chunk_cells: int | None) -> Any:
    xp = array_api_compat.array_namespace(x)
    if x.ndim != 2 or not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"x must be a 2-D real floating (n, cells) array; got {x.ndim}-D {x.dtype}.")
    cells = x.shape[1]
    if "params" not in fit or fit["params"].shape != (3, cells):
        raise ValueError(f"fit must be a fit dict whose 'params' has shape (3, cells) = (3, {cells}).")
    for name, value in (("n_boot", n_boot), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "n_boot" else 0):
            raise ValueError(f"{name} must be a {'positive' if name == 'n_boot' else 'non-negative'} int; got {value!r}.")
    if chunk_cells is not None and (isinstance(chunk_cells, bool) or not isinstance(chunk_cells, int) or chunk_cells < 1):
        raise ValueError(f"chunk_cells must be a positive int or None (automatic); got {chunk_cells!r}.")
    if valid is not None and valid.shape != x.shape:
        raise ValueError(f"valid must have the shape of x {tuple(x.shape)}; got {tuple(valid.shape)}.")
    if loc is not None and loc.shape != (cells,):
        raise ValueError(f"loc must have shape (cells,) = ({cells},); got {tuple(loc.shape)}.")
    return xp


def bootstrap_pvalues(
    family: Any,
    x: Any,
    fit: dict[str, Any],
    *,
    n_boot: int,
    seed: int,
    valid: Any = None,
    loc: Any = None,
    chunk_cells: int | None = None,
) -> dict[str, Any]:
    """Parametric-bootstrap p-values of the KS and AD statistics, per cell.

    For every cell, ``n_boot`` samples of the cell's size are drawn from the
    fitted law (``family.ppf`` of :func:`special.uniform`), refitted with
    ``family.fit`` (all cells x resamples of a chunk as the columns of one
    matrix) and their statistics ``T*`` recomputed against their own fits. Then
    ``p = (1 + #{T* >= T}) / (1 + n_ok)`` (Davison & Hinkley 1997, ch. 4),
    with ``n_ok`` the resamples whose refit converged and whose statistic is
    finite (``n_ok = n_boot`` when every refit succeeds). p-values are
    multiples of ``1 / (n_boot + 1)``, the smallest being ``1 / (n_boot + 1)``.

    Reproducibility: the uniforms of each block of :data:`SEED_BLOCK`
    consecutive cells come from one stream seeded by ``(seed, block number)``,
    so results depend only on ``seed``, ``n_boot``, the backend and the cell's
    position, not on ``chunk_cells``. A chunk is a whole number of blocks.

    Parameters
    ----------
    family : Family
        With ``fit``, ``cdf`` and ``ppf`` (see ``pipeline.kernels.families``).
    x : array, shape (n, cells)
        The data that were fitted.
    fit : dict
        ``family.fit(x, ...)``; its ``params`` (3, cells) define the null law.
    n_boot : int
        Resamples per cell (e.g. 99 or 999).
    seed : int
        Non-negative seed of the simulation.
    valid : array of bool, shape (n, cells), optional
        Usable observations (ragged columns, e.g. NaN-padded exceedance peaks);
        only for families whose ``fit`` honours ``valid`` (gpd). Resamples have
        the same number of usable values per cell (their leading rows). Without
        it every row counts, and a column with a NaN gets NaN results.
    loc : array, shape (cells,), optional
        Known location (the gpd threshold), passed to every refit.
    chunk_cells : int, optional
        Cells per chunk, rounded up to a multiple of :data:`SEED_BLOCK`; by
        default about ``2**22 / (n * n_boot)``, at least one block.

    Returns
    -------
    dict
        ``ks``, ``ad`` (observed statistics), ``ks_pvalue``, ``ad_pvalue`` and
        ``n_boot_ok`` (int64, the smaller of the two counts of usable resamples), each of
        shape (cells,); NaN statistics where the observed fit is NaN, NaN
        p-values there and where no resample succeeded.
    """
    xp = _check_bootstrap(x, fit, n_boot, seed, valid, loc, chunk_cells)
    n_rows, cells = x.shape
    dev = array_api_compat.device(x)
    params = fit["params"]
    if valid is None:
        counts = xp.full((cells,), n_rows, dtype=xp.int64, device=dev)
    else:
        counts = xp.sum(xp.astype(valid, xp.int64), axis=0)
    ks, ad = _statistics(family, x, params, valid, counts, xp)

    if chunk_cells is None:
        chunk_cells = _CHUNK_ELEMENTS // max(1, n_rows * n_boot)
    chunk = max(1, -(-chunk_cells // SEED_BLOCK)) * SEED_BLOCK
    rows = xp.arange(n_rows, dtype=xp.int64, device=dev)[:, None]
    parts: dict[str, list] = {"ks_ge": [], "ad_ge": [], "ks_ok": [], "ad_ok": []}
    for c0 in range(0, cells, chunk):
        c1 = min(c0 + chunk, cells)
        draws = [
            special.uniform((n_rows, n_boot, min(b0 + SEED_BLOCK, c1) - b0), seed=_block_seed(seed, b0 // SEED_BLOCK), like=x)
            for b0 in range(c0, c1, SEED_BLOCK)
        ]
        u = xp.reshape(xp.concat(draws, axis=2), (n_rows, n_boot * (c1 - c0)))
        sim = family.ppf(u, _repeat_cells(params[:, c0:c1], n_boot, xp))
        counts_rep = _repeat_cells(counts[c0:c1], n_boot, xp)
        kwargs: dict[str, Any] = {}
        sim_valid = None
        if valid is not None:
            sim_valid = rows < counts_rep  # the leading rows of each resample are its sample
            kwargs["valid"] = sim_valid
        if loc is not None:
            kwargs["loc"] = _repeat_cells(loc[c0:c1], n_boot, xp)
        refit = family.fit(sim, **kwargs)
        ks_b, ad_b = _statistics(family, sim, refit["params"], sim_valid, counts_rep, xp)
        converged = xp.reshape(refit["converged"], (n_boot, c1 - c0))
        for name, t_star, t_obs in (("ks", ks_b, ks[c0:c1]), ("ad", ad_b, ad[c0:c1])):
            t_star = xp.reshape(t_star, (n_boot, c1 - c0))
            ok = converged & xp.isfinite(t_star)
            parts[f"{name}_ok"].append(xp.sum(xp.astype(ok, xp.int64), axis=0))
            parts[f"{name}_ge"].append(xp.sum(xp.astype(ok & (t_star >= t_obs), xp.int64), axis=0))

    out = {"ks": ks, "ad": ad}
    for name, t_obs in (("ks", ks), ("ad", ad)):
        ge = xp.astype(xp.concat(parts[f"{name}_ge"]), x.dtype)
        ok = xp.concat(parts[f"{name}_ok"])
        p = (1.0 + ge) / (1.0 + xp.astype(ok, x.dtype))
        out[f"{name}_pvalue"] = xp.where(xp.isfinite(t_obs) & (ok > 0), p, xp.nan)
    out["n_boot_ok"] = xp.minimum(xp.concat(parts["ks_ok"]), xp.concat(parts["ad_ok"]))
    return out


# ------------------------------------------------------ likelihood-based tools


def lr_test(loglik_full: Any, loglik_nested: Any, df: int = 1) -> tuple[Any, Any]:
    """Likelihood-ratio test of a nested model, per cell.

    ``LR = 2 (log L_full - log L_nested)``, clipped at 0 (a nested fit may come
    out a hair better by round-off), with p-value ``P(chi2_df > LR)
    = Q(df/2, LR/2)``, the regularized upper incomplete gamma function (Wilks
    1938). For Gumbel within GEV (``xi = 0`` an interior point), ``df = 1``.

    Returns
    -------
    statistic, pvalue : arrays of the broadcast shape of the inputs
        NaN where either log-likelihood is NaN.
    """
    xp = array_api_compat.array_namespace(loglik_full, loglik_nested)
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be a positive int (the number of restricted parameters); got {df!r}.")
    stat = 2.0 * (loglik_full - loglik_nested)
    stat = xp.where(stat < 0, 0.0, stat)  # keeps NaN
    return stat, special.gammaincc(xp.full_like(stat, df / 2.0), stat / 2.0)


def aic(loglik: Any, k: int) -> Any:
    """Akaike information criterion ``AIC = 2k - 2 log L`` (k estimated parameters)."""
    return 2.0 * k - 2.0 * loglik


def bic(loglik: Any, k: int, n: Any) -> Any:
    """Bayesian information criterion ``BIC = k log n - 2 log L``; ``n`` an int or a per-cell count array."""
    if isinstance(n, int | float):
        return k * math.log(n) - 2.0 * loglik
    xp = array_api_compat.array_namespace(loglik, n)
    return k * xp.log(xp.astype(n, loglik.dtype)) - 2.0 * loglik


__all__ = ["SEED_BLOCK", "ad_statistic", "aic", "bic", "bootstrap_pvalues", "ks_statistic", "lr_test"]
