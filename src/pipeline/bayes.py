"""Bayes stage: a Bayesian GEV per cell, sampled by MCMC, exact rejection or VI, with its return levels and diagnostics.

Reads a ``distributions/{field}.zarr`` store (its ``series``: block maxima, or a
field of one value a year) and writes ``bayes/{field}.zarr`` (see
``docs/stores.md``). In every cell the GEV with weakly informative priors on
location and log-scale and the Martins & Stedinger (2000) prior on the shape
(:func:`pipeline.kernels.models.bayes_gev`) is sampled, all cells at once, by
``bayes.sampler``:

* ``hmc`` or ``rwm``: HMC or adaptive random-walk Metropolis
  (:mod:`pipeline.kernels.mcmc`), ``chains`` chains a cell;
* ``rejection``: exact draws by rejection from a Student-t envelope at the
  Laplace mode (:mod:`pipeline.kernels.rejection`); a cell whose envelope does
  not cover its posterior (or that lacks draws after the rounds) is sampled by
  HMC instead;
* ``vi``: Gaussian ADVI (:mod:`pipeline.kernels.vi`), draws from ``q`` and the
  PSIS k-hat of ``p/q`` per cell; a cell with k-hat above ``khat_max`` fails
  and, with ``vi_fallback``, is sampled by HMC instead.

Independent draws (rejection, VI) are arranged as ``chains`` pseudo-chains of
``draws``, so R-hat and ESS are computed alike for every method (about 1 and
about ``chains * draws`` for independent draws). The store holds posterior
summaries of ``loc``, ``scale``, ``shape`` and of the return levels, the per-cell
diagnostics (rank-normalized split R-hat, bulk and tail ESS, divergences,
acceptance; :mod:`pipeline.kernels.diagnostics`), which method drew each cell, a
flag of the cells that fail the thresholds, and thinned draws as ``(chain,
draw, lat, lon)`` variables that ArviZ opens as a posterior group. With
``holdout: N`` the last ``N`` values of each series are left out of the fit and
scored by the posterior predictive (:mod:`pipeline.bayes_predictive`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, NamedTuple

import array_api_compat
import numpy as np
import xarray as xr

from pipeline import bayes_predictive, grid, io
from pipeline.backend import Backend, resolve, to_numpy
from pipeline.kernels import diagnostics as kdiag
from pipeline.kernels import mcmc, models, newton, rejection, vi

log = logging.getLogger(__name__)

STAGE = "bayes"
PARAMS = ("loc", "scale", "shape")
SAMPLERS = ("hmc", "rwm", "rejection", "vi")
#: Values of the ``method`` flag: what drew a cell's posterior (index into this tuple; -1: not sampled).
METHODS = SAMPLERS
HMC, REJECTION, VI = (METHODS.index(k) for k in ("hmc", "rejection", "vi"))
DEFAULTS: dict[str, Any] = {
    "sampler": "hmc", "chains": 4, "warmup": 500, "draws": 1000, "n_leapfrog": 8, "seed": 0, "keep_draws": 100,
    "prior_loc_sd": 10.0, "prior_log_scale_sd": 2.0, "shape_prior": [6.0, 9.0], "credible_level": 0.9,
    "rhat_max": 1.01, "ess_min": 400.0, "divergent_max": 0.01, "periods": [10.0, 50.0, 100.0],
    "rejection_df": 4.0, "rejection_scale": 1.2, "rejection_pilot": 1000,
    "vi_family": "fullrank", "vi_iter": 1000, "vi_lr": 0.02, "khat_max": 0.7, "vi_fallback": True, "holdout": 0,
}
_WHOLE = {"chains": 2, "warmup": 1, "draws": 1, "n_leapfrog": 1, "keep_draws": 1, "rejection_pilot": 1, "vi_iter": 2,
          "holdout": 0}
_POSITIVE = ("rejection_df", "rejection_scale", "vi_lr", "khat_max")


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """The ``bayes`` section with defaults filled, refusing what cannot run in one sentence."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be the bayes config section as a dict; got {type(params).__name__}.")
    unknown = set(params) - set(DEFAULTS) - {"fields"}
    if unknown:
        raise ValueError(f"bayes has unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(DEFAULTS)}.")
    p = {**DEFAULTS, **{k: v for k, v in params.items() if k != "fields"}}
    if p["sampler"] not in SAMPLERS:
        raise ValueError(f"bayes.sampler must be one of {', '.join(SAMPLERS)}; got {p['sampler']!r}.")
    if p["vi_family"] not in vi.FAMILIES:
        raise ValueError(f"bayes.vi_family must be one of {', '.join(vi.FAMILIES)}; got {p['vi_family']!r}.")
    for key, least in _WHOLE.items():
        if isinstance(p[key], bool) or not isinstance(p[key], int) or p[key] < least:
            raise ValueError(f"bayes.{key} must be a whole number of at least {least}; got {p[key]!r}.")
    for key in _POSITIVE:
        if isinstance(p[key], bool) or not isinstance(p[key], int | float) or not p[key] > 0:
            raise ValueError(f"bayes.{key} must be a positive number; got {p[key]!r}.")
    if not isinstance(p["vi_fallback"], bool):
        raise ValueError(f"bayes.vi_fallback must be true or false; got {p['vi_fallback']!r}.")
    if not 0 < float(p["credible_level"]) < 1:
        raise ValueError(f"bayes.credible_level must lie in (0, 1); got {p['credible_level']!r}.")
    p["keep_draws"] = min(int(p["keep_draws"]), int(p["draws"]))
    return p


class Series(NamedTuple):
    """The training matrix ``x`` (sample, cell), the held-out values ``y`` (holdout, cell) and their labels."""

    x: np.ndarray
    y: np.ndarray
    cells: grid.CellIndex
    name: str
    heldout: xr.DataArray | None


def _series(dist_ds: xr.Dataset, holdout: int) -> Series:
    """The fitted series of a distributions store as (sample, cell) matrices of the cells with 5+ training values."""
    name = str(dist_ds.attrs.get("field_name", "field"))
    if "series" not in dist_ds:
        raise ValueError(f"The distributions store of {name!r} has no 'series'; rerun the distributions stage.")
    kind = str(dist_ds.attrs.get("series", "field"))
    if kind == "exceedances" or kind == "block_minima":
        raise ValueError(f"The Bayesian GEV describes maxima of blocks; the {name} series is {kind.replace('_', ' ')}."
                         " Use distributions.series.kind: block_maxima for this field.")
    series = dist_ds["series"].transpose("sample", "lat", "lon")
    n_train = series.sizes["sample"] - holdout
    if holdout and n_train < bayes_predictive.MIN_TRAINING:
        raise ValueError(f"bayes.holdout: {holdout} leaves {n_train} of the {series.sizes['sample']} values of the "
                         f"{name} series to fit; keep at least {bayes_predictive.MIN_TRAINING} (holdout <= "
                         f"{series.sizes['sample'] - bayes_predictive.MIN_TRAINING}).")
    train = series.isel(sample=slice(0, n_train))
    valid = train.notnull().sum("sample") >= 5
    cells = grid.CellIndex(valid=valid, flat=np.flatnonzero(valid.values.ravel()))
    if cells.n_features == 0:
        raise ValueError(f"No cell of the {name} series has 5 or more values to fit; nothing to sample.")
    values = np.asarray(series.values, dtype=np.float64).reshape(series.sizes["sample"], -1)[:, cells.flat]
    heldout = series["sample"].isel(sample=slice(n_train, None)) if holdout else None
    return Series(values[:n_train], values[n_train:], cells, name, heldout)


def _stream(seed: int, k: int) -> int:
    """An independent 32-bit seed for the ``k``-th random stream of the stage (1: rejection/VI, 2: HMC fallback,
    3: VI draws, 4: posterior predictive); the MCMC samplers take ``seed`` itself."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


class Sampled(NamedTuple):
    """Draws ``theta`` (3, chains, draws, cells), unconstrained; per cell the divergent transitions, the mean MCMC
    acceptance probability (NaN for independent draws), the method (host int8) and sampler-specific diagnostics."""

    theta: Any
    divergent: Any
    accept: Any
    method: np.ndarray
    extra: dict[str, Any]


def _model(x: Any, p: dict[str, Any]) -> models.Model:
    return models.bayes_gev(x, prior_loc_sd=float(p["prior_loc_sd"]), prior_log_scale_sd=float(p["prior_log_scale_sd"]),
                            shape_prior=tuple(float(v) for v in p["shape_prior"]))


def _mcmc(model: models.Model, p: dict[str, Any], sampler: str, seed: int) -> tuple[Any, Any, Any]:
    """``(theta, divergent, accept)`` of ``chains`` HMC or RWM chains a cell."""
    theta0 = model.init(int(p["chains"]), seed)
    xp = array_api_compat.array_namespace(theta0)
    if sampler == "hmc":
        run = mcmc.hmc(model, theta0, n_warmup=p["warmup"], n_draws=p["draws"], seed=seed, n_leapfrog=p["n_leapfrog"])
        divergent = xp.sum(xp.astype(run["divergent"], xp.int64), axis=(0, 1))
    else:
        run = mcmc.rwm(model, theta0, n_warmup=p["warmup"], n_draws=p["draws"], seed=seed)
        divergent = xp.zeros((theta0.shape[2],), dtype=xp.int64)
    return run["draws"], divergent, xp.mean(run["accept"], axis=0)


def _with_hmc(s: Sampled, x: Any, need: np.ndarray, p: dict[str, Any], backend: Backend) -> Sampled:
    """``s`` with the cells ``need`` (host bool) re-sampled by HMC on a model of just their columns."""
    if not need.any():
        return s
    xp = backend.xp
    idx = backend.asarray(np.flatnonzero(need).astype(np.int64))
    theta, divergent, accept = _mcmc(_model(xp.take(x, idx, axis=1), p), p, "hmc", _stream(int(p["seed"]), 2))
    return Sampled(newton.scatter_cells(s.theta, idx, theta, xp), newton.scatter_cells(s.divergent, idx, divergent, xp),
                   newton.scatter_cells(s.accept, idx, accept, xp), np.where(need, HMC, s.method).astype(np.int8),
                   s.extra)


def _independent(model: models.Model, x: Any, p: dict[str, Any], backend: Backend) -> tuple[Sampled, np.ndarray]:
    """Rejection or VI draws as pseudo-chains, and the cells (host bool) whose draws cannot be trusted."""
    xp = backend.xp
    chains, draws, cells = int(p["chains"]), int(p["draws"]), x.shape[1]
    n, seed = chains * draws, int(p["seed"])
    none = (xp.zeros((cells,), dtype=xp.int64), xp.full((cells,), xp.nan, dtype=xp.float64))
    if p["sampler"] == "rejection":
        lap = rejection.laplace(model, model.init(1, seed)[:, 0, :])
        rej = rejection.rejection_sample(model, lap.mode, lap.cov, n_draws=n, seed=_stream(seed, 1),
                                         df=float(p["rejection_df"]), scale=float(p["rejection_scale"]),
                                         n_pilot=int(p["rejection_pilot"]))
        theta, bad = rej.draws, to_numpy(rej.needs_mcmc).astype(bool)
        extra, method = {"rejection_acceptance": rej.acceptance}, REJECTION
    else:
        fit = vi.advi(model, None, family=p["vi_family"], n_iter=int(p["vi_iter"]), lr=float(p["vi_lr"]),
                      seed=_stream(seed, 1))
        # the same seed: the draws are the points of the importance ratios
        khat = kdiag.psis_khat(vi.log_ratios(model, fit, n, _stream(seed, 3)))
        theta = vi.draws(fit, n, _stream(seed, 3))
        bad = ~(to_numpy(khat) <= float(p["khat_max"]))
        extra, method = {"khat": khat}, VI
    theta = xp.reshape(theta, (theta.shape[0], chains, draws, cells))
    return Sampled(theta, *none, np.full(cells, method, dtype=np.int8), extra), bad


def _sample(x: Any, p: dict[str, Any], backend: Backend) -> tuple[models.Model, Sampled, np.ndarray]:
    """The model of ``x`` (sample, cell) on the backend, its draws by ``p["sampler"]``, and the cells whose
    draws fail the sampler's own check (envelope, k-hat) and were not re-sampled."""
    model = _model(x, p)
    if p["sampler"] in ("hmc", "rwm"):
        theta, divergent, accept = _mcmc(model, p, p["sampler"], int(p["seed"]))
        method = np.full(x.shape[1], METHODS.index(p["sampler"]), dtype=np.int8)
        return model, Sampled(theta, divergent, accept, method, {}), np.zeros(x.shape[1], dtype=bool)
    s, bad = _independent(model, x, p, backend)
    if p["sampler"] == "rejection" or p["vi_fallback"]:
        return model, _with_hmc(s, x, bad, p, backend), np.zeros(x.shape[1], dtype=bool)
    return model, s, bad


def compute(dist_ds: xr.Dataset, *, params: dict[str, Any], backend: Backend) -> xr.Dataset:
    """Sample the Bayesian GEV of every cell of a distributions store's series (module docstring)."""
    p = check_params(params)
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a pipeline.backend.Backend (see backend.resolve); got {type(backend).__name__}.")
    ser = _series(dist_ds, int(p["holdout"]))
    if "periods" not in params and "return_period" in dist_ds.coords:  # the distributions stage's periods
        p["periods"] = [float(t) for t in dist_ds["return_period"].values]
    xp = backend.xp
    start = time.perf_counter()
    x = backend.asarray(ser.x)
    model, s, untrusted = _sample(x, p, backend)
    natural = model.constrain(s.theta)  # each (chains, draws, cells)
    draws = xp.stack([natural[k] for k in PARAMS])
    levels = models.gev_return_levels(natural, p["periods"])  # (period, chains, draws, cells)
    rhat = xp.stack([kdiag.rhat(draws[i, ...]) for i in range(3)])
    ess_bulk = xp.stack([kdiag.ess(draws[i, ...], method="bulk") for i in range(3)])
    ess_tail = xp.stack([kdiag.ess(draws[i, ...], method="tail") for i in range(3)])
    out = {"draws": draws, "levels": levels, "rhat": rhat, "ess_bulk": ess_bulk, "ess_tail": ess_tail,
           "divergent": s.divergent, "accept": s.accept, **s.extra}
    if ser.heldout is not None:
        flat = xp.reshape(draws, (3, -1, draws.shape[-1]))
        out.update(bayes_predictive.scores(flat, x, backend.asarray(ser.y), seed=_stream(int(p["seed"]), 4)))
    elapsed = time.perf_counter() - start
    h = {k: to_numpy(v) for k, v in out.items()}
    # R-hat, ESS and divergences judge Markov chains; independent draws (rejection, VI) are judged by their envelope
    # or k-hat (``untrusted``), their R-hat and ESS being noise about 1 and chains x draws
    chains = np.isin(np.asarray(to_numpy(s.method)), [METHODS.index("hmc"), METHODS.index("rwm")])
    mixing = ((np.nanmax(h["rhat"], axis=0) > p["rhat_max"]) | (np.nanmin(h["ess_bulk"], axis=0) < p["ess_min"])
              | (h["divergent"] > p["divergent_max"] * p["chains"] * p["draws"]))
    failed = (chains & mixing) | ~np.isfinite(h["rhat"]).all(axis=0) | untrusted
    fallback = int(np.sum(s.method != METHODS.index(p["sampler"])))
    log.info("%s: Bayesian GEV by %s in %d cells x %d chains x %d draws on %s in %.1f s (%d cells re-sampled by HMC); "
             "%d cells fail R-hat <= %g, bulk ESS >= %g, divergences <= %g of draws%s", ser.name, p["sampler"],
             ser.x.shape[1], p["chains"], p["draws"], backend.name, elapsed, fallback, int(failed.sum()), p["rhat_max"],
             p["ess_min"], p["divergent_max"], f" or k-hat <= {p['khat_max']:g}" if p["sampler"] == "vi" else "")
    if failed.any():
        log.warning("%s: %d of %d cells fail the sampler diagnostics (flagged in 'failed'); their summaries are kept but "
                    "should not be trusted: raise bayes.warmup / bayes.draws%s", ser.name, int(failed.sum()),
                    ser.x.shape[1], " or set bayes.vi_fallback: true" if untrusted.any() else "")
    return _dataset(h, s.method, failed, ser, p, dist_ds)


def _method(method: np.ndarray, cells: grid.CellIndex) -> xr.DataArray:
    """``method(lat, lon)`` as int8, -1 where not sampled, with CF flag attributes."""
    da = grid.from_matrix(method.astype(np.float64), cells, name="method")
    return da.fillna(-1).astype(np.int8).assign_attrs(
        units="1", long_name="what drew the cell's posterior", flag_values=np.arange(-1, len(METHODS), dtype=np.int8),
        flag_meanings=" ".join(("not_sampled", *METHODS)))


def _dataset(h: dict[str, np.ndarray], method: np.ndarray, failed: np.ndarray, ser: Series, p: dict[str, Any],
             dist_ds: xr.Dataset) -> xr.Dataset:
    cells, name = ser.cells, ser.name
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
        "rhat": (par, h["rhat"], "1", "rank-normalized split R-hat (Vehtari et al. 2021); independent draws as "
                 "pseudo-chains"),
        "ess_bulk": (par, h["ess_bulk"], "1", "bulk effective sample size"),
        "ess_tail": (par, h["ess_tail"], "1", "tail effective sample size"),
        "divergences": ({}, h["divergent"].astype(np.float64), "1", "divergent HMC transitions after warm-up"),
        "accept": ({}, h["accept"], "1", "mean MCMC acceptance probability (NaN for independent draws)"),
        "failed": ({}, failed.astype(np.float64), "1", "1 where R-hat, bulk ESS, the share of divergent transitions "
                   "or the VI k-hat fails its threshold"),
    }
    if "rejection_acceptance" in h:
        out["rejection_acceptance"] = ({}, h["rejection_acceptance"], "1", "accepted / proposed draws of the "
                                       "rejection sampler after its pilot (NaN where there is no envelope)")
    if "khat" in h:
        out["khat"] = ({}, h["khat"], "1", "Pareto k-hat of PSIS of p/q at the VI draws (> khat_max: q not trusted)")
    data = {k: grid.from_matrix(v, cells, leading=lead, name=k, attrs={"units": u, "long_name": ln})
            for k, (lead, v, u, ln) in out.items()}
    data["failed"] = data["failed"].fillna(0).astype(np.int8).assign_attrs(units="1", long_name=out["failed"][3])
    data["method"] = _method(method, cells)
    keep = int(p["keep_draws"])
    step = max(1, draws.shape[2] // keep)
    sel = slice(0, step * keep, step)
    chain = {"chain": np.arange(draws.shape[1]), "draw": np.arange(keep)}
    param_units = {"loc": units, "scale": units, "shape": "1"}
    for i, k in enumerate(PARAMS):
        data[k] = grid.from_matrix(draws[i][:, sel], cells, leading=chain, name=k,
                                   attrs={"units": param_units[k], "long_name": f"posterior draws of {k} (thinned)"})
    attrs: dict[str, Any] = {}
    if ser.heldout is not None:
        scores, attrs = bayes_predictive.variables({k: h[k] for k in ("pit", "crps", "crps_climatology")}, cells,
                                                   ser.heldout, units)
        data.update(scores)
    ds = xr.Dataset(data)
    ds["return_period"].attrs.update(units="year", long_name="return period")
    for dim in ("lat", "lon"):
        ds[dim].attrs.update(dist_ds[dim].attrs)
    ds.attrs.update(field_name=name, field_units=units, sampler=p["sampler"], chains=int(p["chains"]),
                    warmup=int(p["warmup"]), draws=int(p["draws"]), thinned_to=keep, credible_level=level,
                    shape_prior="1/2 - xi ~ Beta(%g, %g) (Martins and Stedinger 2000)" % tuple(p["shape_prior"]),
                    rhat_max=float(p["rhat_max"]), ess_min=float(p["ess_min"]),
                    divergent_max=float(p["divergent_max"]), n_failed=int(failed.sum()),
                    n_fallback=int(np.sum(method != METHODS.index(p["sampler"]))), holdout=int(p["holdout"]),
                    series=str(dist_ds.attrs.get("series_description", "")), **attrs)
    if p["sampler"] == "rejection":
        ds.attrs.update(rejection_df=float(p["rejection_df"]), rejection_scale=float(p["rejection_scale"]),
                        rejection_pilot=int(p["rejection_pilot"]))
    if p["sampler"] == "vi":
        ds.attrs.update(vi_family=p["vi_family"], vi_iter=int(p["vi_iter"]), vi_lr=float(p["vi_lr"]),
                        khat_max=float(p["khat_max"]), vi_fallback=int(p["vi_fallback"]))
    return ds


def run(dist_store: str | os.PathLike, output: str | os.PathLike, *, params: dict[str, Any], backend: str = "auto",
        output_options: dict[str, Any] | None = None) -> None:
    """Read a distributions store, sample the Bayesian GEV per cell, write the bayes store."""
    dist_ds = io.open_store(dist_store, what="distributions store")
    b = resolve(backend)
    ds = compute(dist_ds, params=params, backend=b)
    io.write_store(ds, output, stage=STAGE, params=params, backend=b.name, output=output_options)
    log.info("wrote %s", output)
