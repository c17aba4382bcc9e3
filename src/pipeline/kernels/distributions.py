"""Per-cell distribution fits of every configured family, their comparison and return levels.

The families themselves live in :mod:`pipeline.kernels.families` (normal,
lognormal, gamma, Weibull, both Gumbels) and :mod:`pipeline.kernels.gev` (GEV,
GPD); every one is a :class:`~pipeline.kernels.families.Family` whose
parameters are the scipy-like triple ``(loc, scale, shape)``. This module runs
the ones asked for over a ``(sample, cell)`` matrix and stacks their results
along a leading family axis, ranks them by AIC, adds the goodness-of-fit
statistics of :mod:`pipeline.kernels.gof` and the return levels of
:mod:`pipeline.kernels.return_levels`. Nothing here loops over cells.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from pipeline.kernels import gev, gof
from pipeline.kernels import return_levels as rl
from pipeline.kernels.families import FAMILIES_2P, Family

FAMILIES: dict[str, Family] = {**FAMILIES_2P, "gev": gev.GEV, "gpd": gev.GPD}
PARAMS = ("loc", "scale", "shape")
PROFILED = ("gev", "gpd")  # families with profile-likelihood return-level intervals


def family(name: str) -> Family:
    """The :class:`Family` called ``name``."""
    if name not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}; got {name!r}.")
    return FAMILIES[name]


def _stack(xp: Any, rows: list[Any]) -> Any:
    return xp.stack(rows, axis=0)


def n_valid(x: Any, valid: Any | None) -> Any:
    """Observations per cell: the rows of ``x``, or the True entries of ``valid`` per column."""
    xp = array_api_compat.array_namespace(x)
    if valid is None:
        return xp.full((x.shape[1],), float(x.shape[0]), dtype=x.dtype, device=array_api_compat.device(x))
    return xp.sum(xp.astype(valid, x.dtype), axis=0)


def fit_all(x: Any, names: tuple[str, ...], *, valid: Any | None = None, loc: Any | None = None,
            max_iter: int = 100) -> dict[str, Any]:
    """Fit every family in ``names`` to every column of ``x`` and rank them by AIC.

    Parameters
    ----------
    x : array, shape (sample, cell)
        The series of each cell. Without ``valid`` every entry is used.
    names : tuple of str
        Families of :data:`FAMILIES`.
    valid : bool array like ``x``, optional
        The observations to use (exceedance peaks of ragged length); only the
        ``gpd`` family takes it.
    loc : array, shape (cell,), optional
        The threshold of each cell (``gpd`` only).
    max_iter : int
        Most Newton steps of an iterative fit.

    Returns
    -------
    dict
        ``params`` (family, 3, cell) as ``(loc, scale, shape)``; ``cov``
        (family, 3, 3, cell); ``loglik``, ``aic``, ``bic`` (family, cell);
        ``converged`` (bool) and ``n_iter`` (family, cell); ``n_params``, a
        tuple of the estimated parameters of each family; ``best`` (cell,),
        the index of the lowest AIC, -1 where no family was fitted.
    """
    xp = array_api_compat.array_namespace(x)
    fits = [family(name).fit(x, max_iter=max_iter, **({"valid": valid, "loc": loc} if name == "gpd" else {}))
            for name in names]
    out = {key: _stack(xp, [f[key] for f in fits]) for key in ("params", "cov", "loglik", "converged", "n_iter")}
    k = tuple(family(name).n_params for name in names)
    n = n_valid(x, valid)
    out["n_params"] = k
    out["aic"] = _stack(xp, [gof.aic(out["loglik"][i, ...], k[i]) for i in range(len(names))])
    out["bic"] = _stack(xp, [gof.bic(out["loglik"][i, ...], k[i], n) for i in range(len(names))])
    finite = xp.isfinite(out["aic"])
    best = xp.argmin(xp.where(finite, out["aic"], xp.full_like(out["aic"], math.inf)), axis=0)
    out["best"] = xp.where(xp.any(finite, axis=0), best, xp.full_like(best, -1))
    return out


def goodness_of_fit(x: Any, names: tuple[str, ...], fits: dict[str, Any], *, n_boot: int, seed: int,
                    valid: Any | None = None, loc: Any | None = None) -> dict[str, Any]:
    """KS and AD statistics of each fitted family, with parametric-bootstrap p-values when ``n_boot`` > 0.

    Returns ``ks``, ``ad``, ``ks_pvalue``, ``ad_pvalue`` of shape (family, cell)
    (p-values NaN when ``n_boot`` is 0).
    """
    xp = array_api_compat.array_namespace(x)
    rows: dict[str, list] = {"ks": [], "ad": [], "ks_pvalue": [], "ad_pvalue": []}
    for i, name in enumerate(names):
        fit = {key: fits[key][i, ...] for key in ("params", "cov", "loglik", "converged", "n_iter")}
        extra = {"valid": valid, "loc": loc} if name == "gpd" else {}
        if n_boot > 0:
            res = gof.bootstrap_pvalues(family(name), x, fit, n_boot=n_boot, seed=seed + i, **extra)
        else:
            res = _statistics(family(name), x, fit["params"], valid if name == "gpd" else None)
        for key in rows:
            rows[key].append(res[key])
    return {key: _stack(xp, value) for key, value in rows.items()}


def _statistics(fam: Family, x: Any, params: Any, valid: Any | None) -> dict[str, Any]:
    """KS and AD statistics of the columns of ``x`` (the rows ``valid`` marks) under ``fam(params)``, no p-values."""
    xp = array_api_compat.array_namespace(x)
    u = fam.cdf(x, params)
    if valid is not None:
        u = xp.where(valid, u, xp.nan)
    u_sorted = xp.sort(u, axis=0)  # NaN last
    n = n_valid(x, valid)
    ks, ad = gof.ks_statistic(u_sorted, n), gof.ad_statistic(u_sorted, n)
    nan = xp.full_like(ks, math.nan)
    return {"ks": ks, "ad": ad, "ks_pvalue": nan, "ad_pvalue": nan}


def likelihood_ratio(fits: dict[str, Any], names: tuple[str, ...], full: str, nested: str) -> tuple[Any, Any] | None:
    """The likelihood-ratio statistic and p-value of ``nested`` within ``full`` (1 df), None if one is missing."""
    if full not in names or nested not in names:
        return None
    ll = fits["loglik"]
    return gof.lr_test(ll[names.index(full), ...], ll[names.index(nested), ...], df=1)


def return_levels(names: tuple[str, ...], fits: dict[str, Any], periods: Any, *, level: float,
                  minima: bool = False, rate: Any | None = None, x: Any | None = None,
                  valid: Any | None = None, profile: bool = True) -> dict[str, Any]:
    """Return levels of every fitted family with delta-method (and for GEV/GPD profile-likelihood) intervals.

    Parameters
    ----------
    names, fits : as from :func:`fit_all`.
    periods : array, shape (period,)
        Return periods in years; the series has one value a year (block
        maxima or minima), or, for ``gpd``, ``rate`` peaks a year.
    level : float
        Confidence level of the intervals.
    minima : bool
        Block minima: the level the yearly minimum falls below once in ``T``
        years, ``ppf(1/T)`` (profile intervals are not computed).
    rate : array, shape (cell,), optional
        Peaks per year of an exceedance series (``gpd``).
    x, valid : arrays, optional
        The fitted series (and mask), needed for profile intervals.
    profile : bool
        Whether to compute profile-likelihood intervals.

    Returns
    -------
    dict
        ``return_level``, ``lower``, ``upper``, ``profile_lower``,
        ``profile_upper``, each (family, period, cell); NaN where a quantity
        does not apply.
    """
    xp = array_api_compat.array_namespace(fits["loglik"])
    keys = ("return_level", "lower", "upper", "profile_lower", "profile_upper")
    rows: dict[str, list] = {k: [] for k in keys}
    for i, name in enumerate(names):
        fam, params, cov = family(name), fits["params"][i, ...], fits["cov"][i, ...]
        if name == "gpd":
            level_T = rl.gpd_return_level(params, rate, periods)
            lo, hi = rl.gpd_delta_interval(params, cov, rate, periods, level=level)
        else:
            level_T = rl.return_level(fam, params, periods, minima=minima)
            lo, hi = rl.delta_interval(fam, params, cov, periods, level=level, minima=minima)
        nan = xp.full_like(level_T, math.nan)
        plo, phi = nan, nan
        if profile and name in PROFILED and not minima and x is not None:
            if name == "gev":
                plo, phi = rl.profile_interval_gev(x, params, fits["loglik"][i, ...], periods, level=level)[:2]
            else:
                plo, phi = rl.profile_interval_gpd(x, params, fits["loglik"][i, ...], rate, periods, level=level,
                                                   valid=valid)[:2]
        for key, value in zip(keys, (level_T, lo, hi, plo, phi)):
            rows[key].append(value)
    return {key: _stack(xp, value) for key, value in rows.items()}


def return_periods_of(names: tuple[str, ...], fits: dict[str, Any], values: Any, *, minima: bool = False,
                      rate: Any | None = None) -> Any:
    """Return period in years of each of ``values`` under each fitted family, (family, value, cell)."""
    xp = array_api_compat.array_namespace(fits["loglik"])
    rows = []
    for i, name in enumerate(names):
        params = fits["params"][i, ...]
        if name == "gpd":
            rows.append(rl.gpd_return_period(params, rate, values))
        else:
            rows.append(rl.return_period(family(name), params, values, minima=minima))
    return _stack(xp, rows)
