"""Distributions stage: per-cell maximum-likelihood fits, goodness of fit and return levels.

Reads a ``fields/{field}.zarr`` store and writes ``distributions/{field}.zarr``
(see ``docs/stores.md``). In each cell the stage takes a series
(:func:`series_of`: the field as it is, its block maxima or minima, or the
declustered peaks over a threshold), fits every configured family by maximum
likelihood (:mod:`pipeline.kernels.distributions`), and stores the parameters
with their standard errors and covariance, log-likelihood, AIC, BIC, the KS and
Anderson-Darling statistics with parametric-bootstrap p-values, the family of
lowest AIC, the likelihood-ratio test of Gumbel within GEV, and, for a series of
one value a year or of peaks at a known rate, return levels with delta-method
and profile-likelihood intervals and the return periods of given values.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field as dc_field
from typing import Any

import numpy as np
import xarray as xr

from pipeline import grid, io, temporal, timeaxis
from pipeline.backend import Backend, resolve, to_numpy
from pipeline.kernels import distributions as kernels
from pipeline.kernels import series as kseries

log = logging.getLogger(__name__)

STAGE = "distributions"
FAMILIES = tuple(kernels.FAMILIES)
SERIES = ("field", "block_maxima", "block_minima", "exceedances")
MIN_SAMPLES = 5  # fewest values (blocks, peaks) a cell needs for a fit
_NOT_FITTED = -1
DEFAULTS: dict[str, Any] = {
    "families": ["normal", "gumbel_r", "gumbel_l", "gev"],
    "series": {"kind": "field", "block": "annual", "min_coverage": 0.9, "threshold": {"quantile": 0.95}, "run": 1},
    "return_levels": {"periods": [10, 50, 100], "values": [], "level": 0.95, "profile": True},
    "goodness_of_fit": {"n_bootstrap": 99, "seed": 0},
    "max_iter": 100,
}

_LONG_NAMES = {
    "loc": "location parameter (scipy.stats loc)",
    "scale": "scale parameter (scipy.stats scale)",
    "shape": "shape parameter (gev, gpd: xi; lognormal: sigma of log; gamma: a; weibull: c)",
    "loglik": "maximized log-likelihood",
    "aic": "Akaike information criterion, 2k - 2 log L",
    "bic": "Bayesian information criterion, k log n - 2 log L",
    "ks": "Kolmogorov-Smirnov statistic of the fitted distribution",
    "ad": "Anderson-Darling statistic of the fitted distribution",
    "ks_pvalue": "parametric-bootstrap p-value of the Kolmogorov-Smirnov statistic",
    "ad_pvalue": "parametric-bootstrap p-value of the Anderson-Darling statistic",
}


@dataclass(frozen=True)
class Settings:
    """The validated ``distributions`` config section."""

    families: tuple[str, ...]
    kind: str = "field"
    block: Any = "annual"
    min_coverage: float = 0.9
    threshold: dict[str, float] = dc_field(default_factory=lambda: {"quantile": 0.95})
    run: int = 1
    periods: tuple[float, ...] = (10.0, 50.0, 100.0)
    values: tuple[float, ...] = ()
    level: float = 0.95
    profile: bool = True
    n_bootstrap: int = 99
    seed: int = 0
    max_iter: int = 100
    cells: tuple[tuple[float, float], ...] = ()
    covariate: Any = "none"
    covariate_scale: bool = False
    covariate_at: tuple[float, ...] = ()

    @property
    def minima(self) -> bool:
        return self.kind == "block_minima"


def _merged(params: dict[str, Any], key: str) -> dict[str, Any]:
    value = params.get(key) or {}
    if not isinstance(value, dict):
        raise TypeError(f"distributions.{key} must be a mapping; got {value!r}.")
    unknown = set(value) - set(DEFAULTS[key])
    if unknown:
        raise ValueError(f"distributions.{key} has unknown key(s) {', '.join(sorted(unknown))}; "
                         f"allowed: {', '.join(DEFAULTS[key])}.")
    return {**DEFAULTS[key], **value}


def settings(params: dict[str, Any]) -> Settings:
    """The :class:`Settings` of the ``distributions`` config section, with one-sentence errors."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be the distributions config section as a dict; got {type(params).__name__}.")
    families = params.get("families", DEFAULTS["families"])
    if isinstance(families, str) or not isinstance(families, (list, tuple)) or not families:
        raise ValueError(f"distributions.families must be a non-empty list of family names; got {families!r}.")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"distributions.families has unknown family {unknown[0]!r}; valid families are "
                         f"{', '.join(FAMILIES)}.")
    if len(set(families)) != len(families):
        raise ValueError(f"distributions.families lists a family twice: {list(families)!r}.")
    s, r, g = _merged(params, "series"), _merged(params, "return_levels"), _merged(params, "goodness_of_fit")
    if s["kind"] not in SERIES:
        raise ValueError(f"distributions.series.kind must be one of {', '.join(SERIES)}; got {s['kind']!r}.")
    if (s["kind"] == "exceedances") != (list(families) == ["gpd"]) and ("gpd" in families or s["kind"] ==
                                                                         "exceedances"):
        raise ValueError("distributions: the gpd family is fitted to exceedances and exceedances to gpd only; set "
                         "series.kind: exceedances with families: [gpd], or leave gpd out.")
    if s["kind"] == "block_minima" and "gev" in families:
        raise ValueError("distributions: gev describes maxima; fit block minima with gumbel_l (or negate the "
                         "field and fit its block maxima).")
    if params.get("covariate", "none") not in (None, "none") and "gev" not in families:
        raise ValueError("distributions.covariate makes the gev location depend on it; add gev to families.")
    threshold = s["threshold"]
    if not isinstance(threshold, dict) or len(threshold) != 1 or next(iter(threshold)) not in ("quantile", "value"):
        raise ValueError(f"distributions.series.threshold must be {{quantile: q}} or {{value: v}}; got {threshold!r}.")
    if "quantile" in threshold and not 0 < float(threshold["quantile"]) < 1:
        raise ValueError(f"distributions.series.threshold.quantile must lie in (0, 1); got {threshold['quantile']!r}.")
    periods = tuple(float(t) for t in r["periods"])
    if not periods or min(periods) <= 1:
        raise ValueError(f"distributions.return_levels.periods must be return periods in years above 1; got "
                         f"{r['periods']!r}.")
    return Settings(
        families=tuple(families), kind=s["kind"], block=s["block"], min_coverage=float(s["min_coverage"]),
        threshold=dict(threshold), run=int(s["run"]), periods=periods, values=tuple(float(v) for v in r["values"]),
        level=float(r["level"]), profile=bool(r["profile"]), n_bootstrap=int(g["n_bootstrap"]), seed=int(g["seed"]),
        max_iter=int(params.get("max_iter", DEFAULTS["max_iter"])),
        cells=tuple((float(c["lat"]), float(c["lon"])) for c in params.get("cells") or []),
        covariate=_covariate(params.get("covariate", "none")), covariate_scale=bool(params.get("covariate_scale")),
        covariate_at=tuple(float(v) for v in params.get("covariate_at") or ()),
    )


def _covariate(value: Any) -> Any:
    """``none``, ``time`` or ``{field, mode}``: the covariate of the non-stationary GEV."""
    if value in (None, "none", "time"):
        return value or "none"
    if isinstance(value, dict) and "field" in value and set(value) <= {"field", "mode"}:
        return {"field": str(value["field"]), "mode": int(value.get("mode", 1))}
    raise ValueError(f"distributions.covariate must be none, time or {{field: name, mode: k}}; got {value!r}.")


# ------------------------------------------------------------------ series


@dataclass
class Series:
    """The series fitted in each cell.

    ``values`` (sample, cell) on the host; ``valid`` marks the peaks of an
    exceedance series (NaN-padded columns), None otherwise; ``threshold`` and
    ``rate`` (peaks per year) per cell for exceedances; ``yearly`` says whether
    return periods in years apply; ``time`` is the time of each sample (None for
    exceedances).
    """

    values: np.ndarray
    cells: grid.CellIndex
    describe: str
    yearly: bool
    valid: np.ndarray | None = None
    threshold: np.ndarray | None = None
    rate: np.ndarray | None = None
    time: np.ndarray | None = None
    n_years: float | None = None


def _years_spanned(time_values: np.ndarray) -> float:
    """The length of a record in years: its span in days plus one step, over the calendar's year."""
    days = timeaxis.ordinal_days(time_values)
    step = float(np.median(np.diff(days))) if days.size > 1 else 1.0
    return float(days[-1] - days[0] + step) / timeaxis.days_per_year(timeaxis.calendar_of(time_values))


def _block_series(field: xr.DataArray, s: Settings, name: str, backend: Backend) -> xr.DataArray:
    statistic = "max" if s.kind == "block_maxima" else "min"
    spec = temporal.spec_of(name, {"aggregate": {"period": s.block, "statistic": statistic,
                                                 "min_coverage": s.min_coverage}})
    p = temporal.plan(field["time"].values, spec, name)
    blocks = temporal.apply(field.values, p, backend).field
    return xr.DataArray(blocks, dims=field.dims, coords={"time": p.time, "lat": field["lat"], "lon": field["lon"]},
                        attrs=field.attrs)


def series_of(field: xr.DataArray, s: Settings, name: str, backend: Backend) -> Series:
    """The :class:`Series` of a ``(time, lat, lon)`` field for the settings' ``kind``."""
    if s.kind in ("block_maxima", "block_minima"):
        if not timeaxis.is_dates(field["time"].values):
            raise ValueError(f"The {name} field's time axis holds plain numbers, not dates; set fields.{name}."
                             "time_units so that its blocks can be found.")
        field = _block_series(field, s, name, backend)
    if s.kind != "exceedances":
        cells = grid.complete_cells(field, name=name)
        values = grid.to_matrix(field, cells)
        t = field["time"].values
        yearly = timeaxis.is_dates(t) and timeaxis.step_kind(t, f"{name} time axis") == "yearly"
        block = s.block if isinstance(s.block, str) else "block"
        describe = "the field as it is" if s.kind == "field" else f"{block} {s.kind.split('_')[1]}"
        return Series(values, cells, describe, yearly, time=t, n_years=float(values.shape[0]) if yearly else None)
    if not timeaxis.is_dates(field["time"].values):
        raise ValueError(f"The {name} field's time axis holds plain numbers, not dates; set fields.{name}.time_units "
                         "so that the peaks' rate per year is known.")
    valid_any = field.notnull().any("time")
    cells = grid.CellIndex(valid=valid_any, flat=np.flatnonzero(valid_any.values.ravel()))
    x = backend.asarray(grid.to_matrix(field, cells).astype(np.float64, copy=False))
    if "quantile" in s.threshold:
        q = float(s.threshold["quantile"])
        threshold = kseries.quantile(x, q)
        describe = f"peaks over the {100 * q:g}th percentile"
    else:
        threshold = backend.xp.full((x.shape[1],), float(s.threshold["value"]), dtype=x.dtype)
        describe = f"peaks over {s.threshold['value']:g} {field.attrs.get('units', '')}".rstrip()
    peaks = kseries.exceedances(x, threshold, run=s.run)
    n_years = _years_spanned(field["time"].values)
    count = to_numpy(peaks["n_peaks"]).astype(np.float64)
    describe += f", declustered by runs of {s.run}" if s.run else ", every exceedance"
    return Series(to_numpy(peaks["values"]), cells, describe, True, valid=to_numpy(peaks["valid"]),
                  threshold=to_numpy(threshold), rate=count / n_years, n_years=n_years)


# ----------------------------------------------------------------- compute


def _grid(values: np.ndarray, cells: grid.CellIndex, leading: dict[str, np.ndarray], name: str,
          attrs: dict[str, Any]) -> xr.DataArray:
    return grid.from_matrix(values, cells, leading=leading, name=name, attrs=attrs)


def _best_family(best: np.ndarray, cells: grid.CellIndex, families: tuple[str, ...]) -> xr.DataArray:
    """``best_family(lat, lon)`` as int8, -1 where not fitted, with CF flag attributes."""
    nlat, nlon = cells.valid.shape
    flat = np.full(nlat * nlon, _NOT_FITTED, dtype=np.int8)
    flat[cells.flat] = best.astype(np.int8)
    attrs = {
        "long_name": "index into family of the lowest AIC",
        "units": "1",
        "flag_values": np.arange(_NOT_FITTED, len(families), dtype=np.int8),
        "flag_meanings": " ".join(("not_fitted", *families)),
    }
    coords = {"lat": cells.valid["lat"].values, "lon": cells.valid["lon"].values}
    return xr.DataArray(flat.reshape(nlat, nlon), dims=("lat", "lon"), coords=coords, name="best_family", attrs=attrs)


def _too_short(ser: Series) -> np.ndarray:
    """Cells with fewer than :data:`MIN_SAMPLES` values in their series."""
    n = ser.valid.sum(axis=0) if ser.valid is not None else np.full(ser.values.shape[1], ser.values.shape[0])
    return n < MIN_SAMPLES


def _mask_not_fitted(out: dict[str, np.ndarray], short: np.ndarray) -> np.ndarray:
    """NaN every per-family float result where that family has no fit; returns the (family, cell) mask."""
    not_fitted = ~np.isfinite(out["loglik"]) | short[None, :]
    n_fam = not_fitted.shape[0]
    for key, value in out.items():
        if value.dtype.kind != "f" or key.startswith("lr_"):  # the likelihood ratio is NaN with its log-likelihoods
            continue
        mask = not_fitted.reshape((n_fam,) + (1,) * (value.ndim - 2) + (value.shape[-1],))
        out[key] = np.where(mask, np.nan, value)
    out["converged"] = out["converged"] & ~not_fitted
    out["best"] = np.where(short, _NOT_FITTED, out["best"])
    if "lr_statistic" in out:
        out["lr_statistic"] = np.where(short, np.nan, out["lr_statistic"])
        out["lr_pvalue"] = np.where(short, np.nan, out["lr_pvalue"])
    return not_fitted


def compute(fields_ds: xr.Dataset, *, params: dict[str, Any], backend: Backend,
            covariate_ds: xr.Dataset | None = None) -> xr.Dataset:
    """Fit every configured family to the series of every cell of a fields store.

    Parameters
    ----------
    fields_ds : xr.Dataset
        A fields store: ``field(time, lat, lon)``, NaN where missing.
    params : dict
        The ``distributions`` config section (:func:`settings`; ``fields`` is
        for the workflow and ignored).
    backend : Backend
        Where the fits run (see :func:`pipeline.backend.resolve`).
    covariate_ds : xr.Dataset, optional
        The EOF store whose PC is the covariate of a non-stationary GEV
        (``covariate: {field, mode}``).

    Returns
    -------
    xr.Dataset
        The layout of ``docs/stores.md``.

    Raises
    ------
    ValueError
        Bad settings, too short a record, or no cell with a series to fit.
    """
    s = settings(params)
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a pipeline.backend.Backend (see backend.resolve); got {type(backend).__name__}.")
    field, name = grid.field_of(fields_ds, 3, "the 3 a fit needs")
    units = str(field.attrs.get("units", fields_ds.attrs.get("field_units", "")))
    ser = series_of(field, s, name, backend)
    short = _too_short(ser)
    if short.all():
        raise ValueError(f"No cell of the {name} field has {MIN_SAMPLES} or more values in its series "
                         f"({ser.describe}); use a longer record or a lower threshold.")
    xp = backend.xp
    start = time.perf_counter()
    x = backend.asarray(ser.values.astype(np.float64, copy=False))
    valid = None if ser.valid is None else backend.asarray(ser.valid)
    loc = None if ser.threshold is None else backend.asarray(ser.threshold)
    fits = kernels.fit_all(x, s.families, valid=valid, loc=loc, max_iter=s.max_iter)
    fitted = time.perf_counter() - start
    gof = kernels.goodness_of_fit(x, s.families, fits, n_boot=s.n_bootstrap, seed=s.seed, valid=valid, loc=loc)
    out = {key: to_numpy(value) for key, value in fits.items() if key != "n_params"}
    out.update({key: to_numpy(value) for key, value in gof.items()})
    lr = kernels.likelihood_ratio(fits, s.families, "gev", "gumbel_r")
    if lr is not None:
        out["lr_statistic"], out["lr_pvalue"] = (to_numpy(v) for v in lr)
    if ser.yearly:
        periods = backend.asarray(np.asarray(s.periods))
        rate = None if ser.rate is None else backend.asarray(ser.rate)
        levels = kernels.return_levels(s.families, fits, periods, level=s.level, minima=s.minima, rate=rate, x=x,
                                       valid=valid, profile=s.profile)
        out.update({f"rl_{key}": to_numpy(value) for key, value in levels.items()})
        if s.values:
            values = backend.asarray(np.asarray(s.values))
            out["rp_of_values"] = to_numpy(kernels.return_periods_of(s.families, fits, values, minima=s.minima,
                                                                     rate=rate))
    ns = None
    if s.covariate != "none":
        if not ser.yearly or ser.time is None:
            raise ValueError(f"distributions.covariate needs a series of one value a year (block maxima, or a yearly "
                             f"field); the {name} series is {ser.describe}.")
        ns = nonstationary(x, ser, s, fits["loglik"][s.families.index("gev"), ...], covariate_ds, name, units,
                           backend)
    not_fitted = _mask_not_fitted(out, short)
    elapsed = time.perf_counter() - start
    log.info("%s: fitted %s to %s in %d cells (%d values a cell at most) on %s in %.2f s (fits %.2f s)",
             name, ", ".join(s.families), ser.describe, ser.values.shape[1], ser.values.shape[0], backend.name,
             elapsed, fitted)
    for i, fam in enumerate(s.families):
        bad = int(np.sum(~out["converged"][i] & ~not_fitted[i]))
        if bad:
            log.warning("%s: the %s fit did not converge in %d cells within %d steps; they are flagged in "
                        "'converged'", name, fam, bad, s.max_iter)
        unfit = int(np.sum(not_fitted[i]))
        if unfit:
            log.warning("%s: %s could not be fitted in %d of %d cells (constant series, values outside its "
                        "support, or fewer than %d values); they are NaN", name, fam, unfit, ser.values.shape[1],
                        MIN_SAMPLES)
    if (out["best"] == _NOT_FITTED).all():
        raise ValueError(f"No family could be fitted in any cell of the {name} field ({ser.describe}).")
    ds = _dataset(out, ser, s, field, name, units)
    if ns is not None:
        ds = ds.assign(dict(ns.data_vars)).assign_attrs(ns.attrs)
    return ds


def covariate_of(ser: Series, s: Settings, covariate_ds: xr.Dataset | None, name: str
                 ) -> tuple[np.ndarray, np.ndarray, str, str, tuple[float, ...], float]:
    """The rows of the series that have a covariate value, the values fitted, their name and units, the values
    where the return levels are reported (in the covariate's own units) and the reference subtracted from them."""
    years = timeaxis.date_fields(ser.time)[0].astype(np.float64)
    if s.covariate == "time":  # years since the first, so that loc0 and scale0 are those of the first year
        at = s.covariate_at or (float(years[0]), float(years[-1]))
        return np.arange(years.size), years - years[0], f"years since {int(years[0])}", "year", at, years[0]
    label, mode = s.covariate["field"], s.covariate["mode"]
    if covariate_ds is None or "pc" not in covariate_ds:
        raise ValueError(f"distributions.covariate names PC {mode} of {label!r}, but no EOF store of it was given; "
                         f"add {label!r} to eof.fields.")
    pc = covariate_ds["pc"].transpose("time", "mode")
    if mode > pc.sizes["mode"]:
        raise ValueError(f"distributions.covariate asks for PC {mode} of {label!r}; its EOF store holds "
                         f"{pc.sizes['mode']}.")
    it, ip, _ = timeaxis.align(ser.time, pc["time"].values, what=(f"{name} series", f"PCs of {label!r}"))
    if it.size < MIN_SAMPLES + 2:
        raise ValueError(f"Only {it.size} steps of the {name} series have a PC {mode} of {label!r}; a "
                         "non-stationary fit needs more.")
    c = np.asarray(pc.isel(mode=mode - 1).values, dtype=np.float64)[ip]
    at = s.covariate_at or (float(c.mean() - c.std()), float(c.mean() + c.std()))
    return it, c, f"{label} PC {mode}", str(pc.attrs.get("units", "1")), at, 0.0


def nonstationary(x: Any, ser: Series, s: Settings, stationary_loglik: Any, covariate_ds: xr.Dataset | None,
                  name: str, units: str, backend: Backend) -> xr.Dataset:
    """The non-stationary GEV of every cell (location, and with ``covariate_scale`` log-scale, linear in the
    covariate): parameters, standard errors, the likelihood-ratio test against the stationary GEV and the
    return levels at the covariate values ``covariate_at``."""
    from pipeline.kernels import gev as kgev
    from pipeline.kernels import gof, return_levels as krl

    rows, c, cname, cunits, at, ref = covariate_of(ser, s, covariate_ds, name)
    xp = backend.xp
    xs = xp.take(x, backend.asarray(rows), axis=0)
    fit = kgev.fit_nonstationary(xs, backend.asarray(c), scale_trend=s.covariate_scale, max_iter=s.max_iter)
    k = 2 if s.covariate_scale else 1
    stat, pvalue = gof.lr_test(fit["loglik"], stationary_loglik, df=k)
    levels = krl.nonstationary_return_level(fit["params"], fit["cov"], [a - ref for a in at],
                                            backend.asarray(np.asarray(s.periods)),
                                            level=s.level, scale_trend=s.covariate_scale)
    names = ["loc0", "loc_trend", "scale0"] + (["log_scale_trend"] if s.covariate_scale else []) + ["shape"]
    h = {key: to_numpy(fit[key]) for key in ("params", "cov", "loglik", "converged")}
    if rows.size < ser.values.shape[0]:
        log.info("%s: the non-stationary fit uses the %d of %d values that have a covariate", name, rows.size,
                 ser.values.shape[0])
    lead = {"ns_param": np.array(names)}
    per = {"covariate_value": np.array(at), "return_period": np.array(s.periods)}
    out = {
        "ns_params": (lead, h["params"], "mixed", f"non-stationary GEV against {cname}: location and scale at "
                      "its zero, their trends per covariate unit, shape"),
        "ns_se": (lead, np.sqrt(np.stack([h["cov"][i, i] for i in range(len(names))])), "mixed",
                  "standard errors of ns_params"),
        "ns_loglik": ({}, h["loglik"], "1", "maximized log-likelihood of the non-stationary GEV"),
        "ns_lr_statistic": ({}, to_numpy(stat), "1", f"likelihood ratio against the stationary GEV ({k} df)"),
        "ns_lr_pvalue": ({}, to_numpy(pvalue), "1", "p-value of the likelihood-ratio test (chi-squared)"),
        "ns_return_level": (per, to_numpy(levels[0]), units, "return level at the covariate value"),
        "ns_return_level_lower": (per, to_numpy(levels[1]), units, "lower delta-method bound"),
        "ns_return_level_upper": (per, to_numpy(levels[2]), units, "upper delta-method bound"),
    }
    data = {key: _grid(v, ser.cells, lead_, key, {"units": u, "long_name": ln})
            for key, (lead_, v, u, ln) in out.items()}
    data["ns_converged"] = _grid(h["converged"].astype(np.float64), ser.cells, {}, "ns_converged", {}).fillna(0) \
        .astype(np.int8).assign_attrs(units="1", long_name="1 where the non-stationary fit converged")
    ds = xr.Dataset(data)
    ds["covariate_value"].attrs.update(units=cunits, long_name="value of the covariate (a year for time)")
    ds.attrs.update(covariate=cname, covariate_units=cunits)
    return ds


def _dataset(out: dict[str, np.ndarray], ser: Series, s: Settings, field: xr.DataArray, name: str,
             units: str) -> xr.Dataset:
    cells, fam = ser.cells, {"family": np.array(s.families)}
    param_units = {"loc": units, "scale": units, "shape": "1"}
    data: dict[str, xr.DataArray] = {}
    for k, p in enumerate(kernels.PARAMS):
        data[p] = _grid(out["params"][:, k], cells, fam, p, {"units": param_units[p], "long_name": _LONG_NAMES[p]})
        se = np.sqrt(out["cov"][:, k, k])
        data[f"{p}_se"] = _grid(se, cells, fam, f"{p}_se",
                                {"units": param_units[p], "long_name": f"standard error of the {p} parameter"})
    data["cov"] = _grid(out["cov"], cells, {**fam, "param": np.array(kernels.PARAMS),
                                            "param_": np.array(kernels.PARAMS)}, "cov",
                        {"units": "mixed", "long_name": "covariance of (loc, scale, shape) from the observed "
                                                        "information (NaN for fixed or absent parameters)"})
    for key in ("loglik", "aic", "bic", "ks", "ad", "ks_pvalue", "ad_pvalue"):
        data[key] = _grid(out[key], cells, fam, key, {"units": "1", "long_name": _LONG_NAMES[key]})
    for key, dtype, long_name in (("converged", np.int8, "1 where the fit converged"),
                                  ("n_iter", np.int16, "Newton steps used")):
        grid_vals = _grid(out[key].astype(np.float64), cells, fam, key, {})
        data[key] = grid_vals.fillna(0).astype(dtype).assign_attrs(units="1", long_name=long_name)
    data["best_family"] = _best_family(out["best"], cells, s.families)
    if "lr_statistic" in out:
        data["lr_statistic"] = _grid(out["lr_statistic"], cells, {}, "lr_statistic",
                                     {"units": "1", "long_name": "likelihood-ratio statistic of gumbel_r within gev"})
        data["lr_pvalue"] = _grid(out["lr_pvalue"], cells, {}, "lr_pvalue",
                                  {"units": "1", "long_name": "p-value of the likelihood-ratio test (chi-squared, 1 df)"})
    if ser.yearly:
        per = {**fam, "return_period": np.array(s.periods)}
        names = {"return_level": "return level", "lower": "lower delta-method bound of the return level",
                 "upper": "upper delta-method bound of the return level",
                 "profile_lower": "lower profile-likelihood bound of the return level",
                 "profile_upper": "upper profile-likelihood bound of the return level"}
        for key, long_name in names.items():
            var = "return_level" if key == "return_level" else f"return_level_{key}"
            data[var] = _grid(out[f"rl_{key}"], cells, per, var, {"units": units, "long_name": long_name})
        if "rp_of_values" in out:
            data["return_period_of"] = _grid(out["rp_of_values"], cells, {**fam, "value": np.array(s.values)},
                                             "return_period_of", {"units": "year",
                                                                  "long_name": "return period of the value"})
    data["series"] = _grid(np.where(ser.valid, ser.values, np.nan) if ser.valid is not None else ser.values,
                           cells, {"sample": np.arange(ser.values.shape[0])}, "series",
                           {"units": units, "long_name": f"fitted series: {ser.describe}"})
    if ser.threshold is not None:
        data["threshold"] = _grid(ser.threshold, cells, {}, "threshold", {"units": units, "long_name": "threshold"})
        data["exceedance_rate"] = _grid(ser.rate, cells, {}, "exceedance_rate",
                                        {"units": "year-1", "long_name": "peaks over the threshold per year"})
    ds = xr.Dataset(data)
    ds["family"].attrs.update(long_name="distribution family (docs/methods.md: parameters beside scipy.stats)")
    if "return_period" in ds.coords:
        ds["return_period"].attrs.update(units="year", long_name="return period")
    for dim in ("lat", "lon"):
        ds[dim].attrs.update(field[dim].attrs)
    ds.attrs.update(field_name=name, field_units=units, series=s.kind, series_description=ser.describe,
                    block=str(s.block) if s.kind.startswith("block") else "", interval_level=s.level,
                    n_samples=int(ser.values.shape[0]), n_bootstrap=s.n_bootstrap,
                    n_params=np.array([kernels.family(f).n_params for f in s.families], dtype=np.int8))
    if ser.n_years is not None:
        ds.attrs["n_years"] = float(ser.n_years)
    ds.attrs["plot_cells"] = json.dumps([list(c) for c in s.cells])
    return ds


def run(
    field_store: str | os.PathLike,
    output: str | os.PathLike,
    *,
    params: dict[str, Any],
    backend: str = "auto",
    output_options: dict[str, Any] | None = None,
    covariate_store: str | os.PathLike | None = None,
) -> None:
    """Read a fields store, fit the distributions, write the distributions store (with the field's grid bounds).

    ``covariate_store``: the EOF store whose PC is the covariate of a non-stationary GEV, when configured.
    """
    fields_ds = io.open_store(field_store, what="fields store")
    covariate_ds = None if covariate_store is None else io.open_store(covariate_store, what="covariate EOF store")
    b = resolve(backend)
    ds = compute(fields_ds, params=params, backend=b, covariate_ds=covariate_ds)
    io.write_store(io.with_bounds(ds, fields_ds), output, stage=STAGE, params=params, backend=b.name,
                   output=output_options)
    log.info("wrote %s", output)
