"""Bayes stage: a Bayesian GEV per cell, sampled by MCMC, with its return levels and diagnostics.

Reads a ``distributions/{field}.zarr`` store (its ``series``: block maxima, or a
field of one value a year) and writes ``bayes/{field}.zarr`` (see
``docs/stores.md``). In every cell the GEV with weakly informative priors on
location and log-scale and the Martins & Stedinger (2000) prior on the shape
(:func:`pipeline.kernels.models.bayes_gev`) is sampled by HMC or adaptive
random-walk Metropolis (:mod:`pipeline.kernels.mcmc`), all cells and chains at
once. The store holds posterior summaries of ``loc``, ``scale``, ``shape`` and of
the return levels, the per-cell diagnostics (rank-normalized split R-hat, bulk
and tail ESS, divergences, acceptance; :mod:`pipeline.kernels.diagnostics`), a
flag of the cells that fail the thresholds, and thinned draws as ``(chain, draw,
lat, lon)`` variables that ArviZ opens as a posterior group.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import xarray as xr

from pipeline import grid, io
from pipeline.backend import Backend, resolve, to_numpy
from pipeline.kernels import diagnostics as kdiag
from pipeline.kernels import mcmc, models

log = logging.getLogger(__name__)

STAGE = "bayes"
PARAMS = ("loc", "scale", "shape")
DEFAULTS: dict[str, Any] = {
    "sampler": "hmc", "chains": 4, "warmup": 500, "draws": 1000, "n_leapfrog": 8, "seed": 0, "keep_draws": 100,
    "prior_loc_sd": 10.0, "prior_log_scale_sd": 2.0, "shape_prior": [6.0, 9.0], "credible_level": 0.9,
    "rhat_max": 1.01, "ess_min": 400.0, "divergent_max": 0.01, "periods": [10.0, 50.0, 100.0],
}


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """The ``bayes`` section with defaults filled, refusing what cannot run in one sentence."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be the bayes config section as a dict; got {type(params).__name__}.")
    unknown = set(params) - set(DEFAULTS) - {"fields"}
    if unknown:
        raise ValueError(f"bayes has unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(DEFAULTS)}.")
    p = {**DEFAULTS, **{k: v for k, v in params.items() if k != "fields"}}
    if p["sampler"] not in ("hmc", "rwm"):
        raise ValueError(f"bayes.sampler must be hmc or rwm; got {p['sampler']!r}.")
    for key in ("chains", "warmup", "draws", "n_leapfrog", "keep_draws"):
        if isinstance(p[key], bool) or not isinstance(p[key], int) or p[key] < (2 if key == "chains" else 1):
            raise ValueError(f"bayes.{key} must be a whole number of at least {2 if key == 'chains' else 1}; "
                             f"got {p[key]!r}.")
    if not 0 < float(p["credible_level"]) < 1:
        raise ValueError(f"bayes.credible_level must lie in (0, 1); got {p['credible_level']!r}.")
    p["keep_draws"] = min(int(p["keep_draws"]), int(p["draws"]))
    return p


def _series(dist_ds: xr.Dataset) -> tuple[np.ndarray, grid.CellIndex, str]:
    """The fitted series of a distributions store as a (sample, cell) matrix of the cells with 5+ values."""
    name = str(dist_ds.attrs.get("field_name", "field"))
    if "series" not in dist_ds:
        raise ValueError(f"The distributions store of {name!r} has no 'series'; rerun the distributions stage.")
    kind = str(dist_ds.attrs.get("series", "field"))
    if kind == "exceedances" or kind == "block_minima":
        raise ValueError(f"The Bayesian GEV describes maxima of blocks; the {name} series is {kind.replace('_', ' ')}."
                         " Use distributions.series.kind: block_maxima for this field.")
    series = dist_ds["series"].transpose("sample", "lat", "lon")
    count = series.notnull().sum("sample")
    valid = count >= 5
    cells = grid.CellIndex(valid=valid, flat=np.flatnonzero(valid.values.ravel()))
    if cells.n_features == 0:
        raise ValueError(f"No cell of the {name} series has 5 or more values; nothing to sample.")
    values = np.asarray(series.values).reshape(series.sizes["sample"], -1)[:, cells.flat]
    return values.astype(np.float64), cells, name


def compute(dist_ds: xr.Dataset, *, params: dict[str, Any], backend: Backend) -> xr.Dataset:
    """Sample the Bayesian GEV of every cell of a distributions store's series (module docstring)."""
    p = check_params(params)
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a pipeline.backend.Backend (see backend.resolve); got {type(backend).__name__}.")
    x, cells, name = _series(dist_ds)
    if "periods" not in params and "return_period" in dist_ds.coords:  # the distributions stage's periods
        p["periods"] = [float(t) for t in dist_ds["return_period"].values]
    xp = backend.xp
    start = time.perf_counter()
    model = models.bayes_gev(backend.asarray(x), prior_loc_sd=float(p["prior_loc_sd"]),
                             prior_log_scale_sd=float(p["prior_log_scale_sd"]),
                             shape_prior=tuple(float(v) for v in p["shape_prior"]))
    theta0 = model.init(int(p["chains"]), int(p["seed"]))
    if p["sampler"] == "hmc":
        run = mcmc.hmc(model, theta0, n_warmup=p["warmup"], n_draws=p["draws"], seed=p["seed"],
                       n_leapfrog=p["n_leapfrog"])
        divergent = xp.sum(xp.astype(run["divergent"], xp.int64), axis=(0, 1))
    else:
        run = mcmc.rwm(model, theta0, n_warmup=p["warmup"], n_draws=p["draws"], seed=p["seed"])
        divergent = xp.zeros((x.shape[1],), dtype=xp.int64)
    natural = model.constrain(run["draws"])  # each (chains, draws, cells)
    draws = xp.stack([natural[k] for k in PARAMS])
    levels = models.gev_return_levels(natural, p["periods"])  # (period, chains, draws, cells)
    rhat = xp.stack([kdiag.rhat(draws[i, ...]) for i in range(3)])
    ess_bulk = xp.stack([kdiag.ess(draws[i, ...], method="bulk") for i in range(3)])
    ess_tail = xp.stack([kdiag.ess(draws[i, ...], method="tail") for i in range(3)])
    elapsed = time.perf_counter() - start
    h = {k: to_numpy(v) for k, v in {"draws": draws, "levels": levels, "rhat": rhat, "ess_bulk": ess_bulk,
                                     "ess_tail": ess_tail, "divergent": divergent,
                                     "accept": xp.mean(run["accept"], axis=0)}.items()}
    failed = ((np.nanmax(h["rhat"], axis=0) > p["rhat_max"]) | (np.nanmin(h["ess_bulk"], axis=0) < p["ess_min"])
              | (h["divergent"] > p["divergent_max"] * p["chains"] * p["draws"]) | ~np.isfinite(h["rhat"]).all(axis=0))
    log.info("%s: Bayesian GEV by %s in %d cells x %d chains x %d draws (+%d warm-up) on %s in %.1f s; %d cells fail "
             "R-hat <= %g, bulk ESS >= %g or divergences <= %g of draws", name, p["sampler"], x.shape[1], p["chains"], p["draws"],
             p["warmup"], backend.name, elapsed, int(failed.sum()), p["rhat_max"], p["ess_min"], p["divergent_max"])
    if failed.any():
        log.warning("%s: %d of %d cells fail the sampler diagnostics (flagged in 'failed'); their summaries are kept but "
                    "should not be trusted: raise bayes.warmup / bayes.draws", name, int(failed.sum()), x.shape[1])
    return _dataset(h, failed, cells, p, dist_ds, name)


def _dataset(h: dict[str, np.ndarray], failed: np.ndarray, cells: grid.CellIndex, p: dict[str, Any],
             dist_ds: xr.Dataset, name: str) -> xr.Dataset:
    units = str(dist_ds.attrs.get("field_units", ""))
    level = float(p["credible_level"])
    q = (0.5 - level / 2, 0.5 + level / 2)
    draws, levels = h["draws"], h["levels"]  # (3, chains, draws, cells), (period, chains, draws, cells)
    flat = draws.reshape(3, -1, draws.shape[-1])
    lflat = levels.reshape(levels.shape[0], -1, levels.shape[-1])
    par = {"param": np.array(PARAMS)}
    per = {"return_period": np.asarray(p["periods"], dtype=np.float64)}
    out = {
        "posterior_mean": (par, flat.mean(axis=1), "mixed", "posterior mean of loc, scale, shape"),
        "posterior_sd": (par, flat.std(axis=1, ddof=1), "mixed", "posterior standard deviation"),
        "posterior_lower": (par, np.quantile(flat, q[0], axis=1), "mixed", f"lower end of the {level:g} credible "
                            "interval"),
        "posterior_upper": (par, np.quantile(flat, q[1], axis=1), "mixed", f"upper end of the {level:g} credible "
                            "interval"),
        "p_shape_positive": ({}, np.mean(flat[2] > 0, axis=0), "1", "posterior probability of a heavy tail (xi > 0)"),
        "return_level_mean": (per, lflat.mean(axis=1), units, "posterior mean of the return level"),
        "return_level_median": (per, np.median(lflat, axis=1), units, "posterior median of the return level"),
        "return_level_lower": (per, np.quantile(lflat, q[0], axis=1), units, "lower end of its credible interval"),
        "return_level_upper": (per, np.quantile(lflat, q[1], axis=1), units, "upper end of its credible interval"),
        "rhat": (par, h["rhat"], "1", "rank-normalized split R-hat (Vehtari et al. 2021)"),
        "ess_bulk": (par, h["ess_bulk"], "1", "bulk effective sample size"),
        "ess_tail": (par, h["ess_tail"], "1", "tail effective sample size"),
        "divergences": ({}, h["divergent"].astype(np.float64), "1", "divergent HMC transitions after warm-up"),
        "accept": ({}, h["accept"], "1", "mean acceptance probability"),
        "failed": ({}, failed.astype(np.float64), "1", "1 where R-hat, bulk ESS or the share of divergent transitions "
                   "fails its threshold"),
    }
    data = {k: grid.from_matrix(v, cells, leading=lead, name=k, attrs={"units": u, "long_name": ln})
            for k, (lead, v, u, ln) in out.items()}
    data["failed"] = data["failed"].fillna(0).astype(np.int8).assign_attrs(units="1", long_name=out["failed"][3])
    keep = int(p["keep_draws"])
    step = max(1, draws.shape[2] // keep)
    sel = slice(0, step * keep, step)
    chain = {"chain": np.arange(draws.shape[1]), "draw": np.arange(keep)}
    param_units = {"loc": units, "scale": units, "shape": "1"}
    for i, k in enumerate(PARAMS):
        data[k] = grid.from_matrix(draws[i][:, sel], cells, leading=chain, name=k,
                                   attrs={"units": param_units[k], "long_name": f"posterior draws of {k} (thinned)"})
    ds = xr.Dataset(data)
    ds["return_period"].attrs.update(units="year", long_name="return period")
    for dim in ("lat", "lon"):
        ds[dim].attrs.update(dist_ds[dim].attrs)
    ds.attrs.update(field_name=name, field_units=units, sampler=p["sampler"], chains=int(p["chains"]),
                    warmup=int(p["warmup"]), draws=int(p["draws"]), thinned_to=keep, credible_level=level,
                    shape_prior="1/2 - xi ~ Beta(%g, %g) (Martins and Stedinger 2000)" % tuple(p["shape_prior"]),
                    rhat_max=float(p["rhat_max"]), ess_min=float(p["ess_min"]),
                    divergent_max=float(p["divergent_max"]), n_failed=int(failed.sum()),
                    series=str(dist_ds.attrs.get("series_description", "")))
    return ds


def run(dist_store: str | os.PathLike, output: str | os.PathLike, *, params: dict[str, Any], backend: str = "auto",
        output_options: dict[str, Any] | None = None) -> None:
    """Read a distributions store, sample the Bayesian GEV per cell, write the bayes store."""
    dist_ds = io.open_store(dist_store, what="distributions store")
    b = resolve(backend)
    ds = compute(dist_ds, params=params, backend=b)
    io.write_store(ds, output, stage=STAGE, params=params, backend=b.name, output=output_options)
    log.info("wrote %s", output)
