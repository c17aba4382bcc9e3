"""SBC stage: simulation-based calibration of the samplers, one model ("case") per store.

Talts, Betancourt, Simpson, Vehtari & Gelman (2018): in each of ``cells``
simulated cells a parameter is drawn from the prior, data are simulated from
it, the sampler draws ``L`` posterior draws, and the rank of the true
parameter among them is recorded. Ranks are uniform on ``0..L`` exactly when
the sampler draws from the posterior; a sampler that is biased, too narrow,
too wide or not converged piles them up at one end, at both ends or in the
middle. The simulations and the samplers are :mod:`pipeline.kernels.sbc`
(all cells at once, on the configured backend).

For every sampler and parameter the ranks are binned into ``n_bins`` equal
groups and tested for uniformity with Pearson's chi-squared test
(``n_bins - 1`` degrees of freedom, :func:`pipeline.kernels.calibration.rank_uniformity`)
at level ``level``. The store also gives the test's power against four
stated alternatives (:func:`power`): a sampler whose draws are Gaussian with
the posterior's mean shifted by 0.25 or 0.5 posterior sd, or its sd 20 % too
small or too large, so that "passed" has a stated meaning.

Writes ``sbc/{case}.zarr`` (see ``docs/stores.md``); the figure kind
``sbc_ranks`` draws its rank histograms.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import xarray as xr
from scipy import stats

from pipeline import io
from pipeline.backend import Backend, resolve, to_numpy
from pipeline.kernels import calibration as kcal
from pipeline.kernels import sbc as ksbc

log = logging.getLogger(__name__)

STAGE = "sbc"
CASES = ("regression", "normal", "lognormal", "gev")
CASE_DEFAULTS: dict[str, dict[str, Any]] = {
    "regression": {"n_obs": 30, "predictors": 2, "alpha": 1.0, "a0": 3.0, "b0": 2.0},
    "normal": {"n_obs": 20, "loc0": 0.0, "kappa0": 1.0, "a0": 3.0, "b0": 2.0},
    "gev": {"n_obs": 50, "prior_loc_sd": 1.0, "prior_log_scale_sd": 0.5, "shape_prior": [6.0, 9.0]},
}
DEFAULTS: dict[str, Any] = {"samplers": ["hmc", "rejection"], "cells": 1000, "n_ranks": 99, "n_bins": 20,
                            "level": 0.01, "chains": 4, "warmup": 300, "seed": 0, **CASE_DEFAULTS}
#: (label, mean shift in posterior sd, ratio of the sampler's sd to the posterior's) of the power table.
ALTERNATIVES = (("mean off by 0.25 sd", 0.25, 1.0), ("mean off by 0.5 sd", 0.5, 1.0),
                ("sd 20 % too small", 0.0, 0.8), ("sd 20 % too large", 0.0, 1.2))


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """The ``sbc`` section with defaults filled (per-case options merged), refusing what cannot run in one sentence."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be the sbc config section as a dict; got {type(params).__name__}.")
    unknown = set(params) - set(DEFAULTS) - {"cases"}
    if unknown:
        raise ValueError(f"sbc has unknown key(s) {', '.join(sorted(unknown))}; allowed: cases, {', '.join(DEFAULTS)}.")
    p = {**DEFAULTS, **{k: v for k, v in params.items() if k != "cases"}}
    for case, defaults in CASE_DEFAULTS.items():
        given = params.get(case) or {}
        extra = set(given) - set(defaults)
        if extra:
            raise ValueError(f"sbc.{case} has unknown key(s) {', '.join(sorted(extra))}; allowed: {', '.join(defaults)}.")
        p[case] = {**defaults, **given}
    samplers = p["samplers"]
    if isinstance(samplers, str) or not samplers or any(s not in ksbc.SAMPLERS for s in samplers):
        raise ValueError(f"sbc.samplers must list samplers among {', '.join(ksbc.SAMPLERS)}; got {samplers!r}.")
    for key, low in (("cells", 20), ("n_ranks", 9), ("n_bins", 2), ("chains", 1), ("warmup", 1)):
        if isinstance(p[key], bool) or not isinstance(p[key], int) or p[key] < low:
            raise ValueError(f"sbc.{key} must be a whole number of at least {low}; got {p[key]!r}.")
    if (p["n_ranks"] + 1) % p["n_bins"]:
        raise ValueError(f"sbc.n_bins ({p['n_bins']}) must divide sbc.n_ranks + 1 ({p['n_ranks'] + 1}), the number "
                         "of possible ranks, so that every bin is equally likely; e.g. n_ranks 99 with n_bins 20.")
    if not 0 < float(p["level"]) < 1:
        raise ValueError(f"sbc.level must lie in (0, 1); got {p['level']!r}.")
    return p


def design(n_obs: int, predictors: int, seed: int) -> np.ndarray:
    """The fixed design of the regression case: ``predictors`` columns correlated 0.5, centred and scaled to unit sd."""
    rng = np.random.default_rng([seed, 7919])
    cov = 0.5 * np.ones((predictors, predictors)) + 0.5 * np.eye(predictors)
    Z = rng.standard_normal((n_obs, predictors)) @ np.linalg.cholesky(cov).T
    Z -= Z.mean(axis=0)
    return Z / Z.std(axis=0)


def make_case(name: str, p: dict[str, Any], backend: Backend) -> ksbc.Case:
    """The kernel's :class:`~pipeline.kernels.sbc.Case` of ``name`` with the section's options."""
    if name not in CASES:
        raise ValueError(f"sbc case must be one of {', '.join(CASES)}; got {name!r}.")
    if name == "regression":
        o = p["regression"]
        Z = backend.asarray(design(int(o["n_obs"]), int(o["predictors"]), int(p["seed"])))
        return ksbc.regression_case(Z, alpha=float(o["alpha"]), a0=float(o["a0"]), b0=float(o["b0"]))
    if name in ("normal", "lognormal"):
        o = p["normal"]
        return ksbc.normal_case(int(o["n_obs"]), loc0=float(o["loc0"]), kappa0=float(o["kappa0"]), a0=float(o["a0"]),
                                b0=float(o["b0"]), log=name == "lognormal")
    o = p["gev"]
    return ksbc.gev_case(int(o["n_obs"]), prior_loc_sd=float(o["prior_loc_sd"]),
                         prior_log_scale_sd=float(o["prior_log_scale_sd"]),
                         shape_prior=tuple(float(v) for v in o["shape_prior"]))


def bin_probabilities(n_bins: int, shift: float, sd_ratio: float) -> np.ndarray:
    """Probability of each rank bin when the sampler draws ``N(m + shift s, (sd_ratio s)^2)`` for a posterior ``N(m, s^2)``.

    The true parameter is a posterior draw, ``m + z s`` with ``z ~ N(0, 1)``; its
    rank fraction among the sampler's draws is ``Phi((z - shift)/sd_ratio)``,
    whose distribution function is ``Phi(shift + sd_ratio Phi^-1(q))``. (Ranks
    among ``L`` draws bin the fraction; with ``L + 1`` a multiple of ``n_bins``
    the binning error is of order ``1/L``.)
    """
    edges = stats.norm.cdf(shift + sd_ratio * stats.norm.ppf(np.linspace(0.0, 1.0, n_bins + 1)))
    return np.diff(edges)


def power(cells: int, n_bins: int, level: float, shift: float, sd_ratio: float) -> float:
    """Power of the chi-squared rank test at ``level`` with ``cells`` ranks against :func:`bin_probabilities`.

    Under the alternative the statistic is approximately non-central chi-squared
    with ``n_bins - 1`` degrees of freedom and non-centrality
    ``cells * n_bins * sum (p_b - 1/n_bins)^2``.
    """
    prob = bin_probabilities(n_bins, shift, sd_ratio)
    lam = cells * n_bins * float(np.sum((prob - 1.0 / n_bins) ** 2))
    return float(stats.ncx2.sf(stats.chi2.isf(level, n_bins - 1), n_bins - 1, lam))


def compute(case: str, *, params: dict[str, Any], backend: Backend) -> xr.Dataset:
    """Run SBC of every configured sampler on one case (module docstring) and test its ranks."""
    p = check_params(params)
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a pipeline.backend.Backend (see backend.resolve); got {type(backend).__name__}.")
    spec = make_case(case, p, backend)
    like = backend.asarray(np.zeros(1))
    L, n_bins, level = int(p["n_ranks"]), int(p["n_bins"]), float(p["level"])
    rows: dict[str, list[Any]] = {k: [] for k in ("sampler", "param", "rank", "truth", "counts", "statistic",
                                                 "p_value", "flagged", "ess")}
    for sampler in p["samplers"]:
        res = ksbc.run(spec, sampler, cells=int(p["cells"]), seed=int(p["seed"]), like=like, n_ranks=L,
                       chains=int(p["chains"]), warmup=int(p["warmup"]))
        ranks, truth = to_numpy(res.ranks), to_numpy(res.prior)
        ess, flagged = to_numpy(res.ess), to_numpy(res.flagged)
        for j, name in enumerate(spec.param_names):
            counts, stat, pval = kcal.rank_uniformity(ranks[j], L + 1, n_bins)
            rows["sampler"].append(sampler)
            rows["param"].append(name)
            rows["rank"].append(ranks[j])
            rows["truth"].append(truth[j])
            rows["counts"].append(np.asarray(counts))
            rows["statistic"].append(stat)
            rows["p_value"].append(pval)
            rows["flagged"].append(float(np.mean(flagged)))
            rows["ess"].append(float(np.median(ess[j])))
            log.info("sbc %s, %s, %s: chi2 = %.1f on %d dof, p = %.3g (%s at level %g); %.1f%% of cells flagged; "
                     "median ESS %.0f; %.1f s", case, sampler, name, stat, n_bins - 1, pval,
                     "passed" if pval > level else "FAILED", level, 100 * float(np.mean(flagged)),
                     float(np.median(ess[j])), res.seconds)
    failed = [f"{s}/{n}" for s, n, pv in zip(rows["sampler"], rows["param"], rows["p_value"]) if not pv > level]
    if failed:
        log.warning("sbc %s: the rank test rejects uniformity at level %g for %s; that sampler is not drawing from the "
                    "posterior there (raise warmup, or see docs/calibration.md)", case, level, ", ".join(failed))
    return _dataset(rows, spec, case, p)


def _dataset(rows: dict[str, list[Any]], spec: ksbc.Case, case: str, p: dict[str, Any]) -> xr.Dataset:
    L, n_bins, level, cells = int(p["n_ranks"]), int(p["n_bins"]), float(p["level"]), int(p["cells"])
    n_test = len(rows["param"])
    test = {"test": np.arange(n_test)}
    pvals = np.asarray(rows["p_value"])
    ds = xr.Dataset(
        {
            "rank": (("test", "cell"), np.stack(rows["rank"]).astype(np.int32),
                     {"units": "1", "long_name": f"rank of the true parameter among {L} posterior draws"}),
            "truth": (("test", "cell"), np.stack(rows["truth"]),
                      {"units": "1", "long_name": "parameter drawn from the prior (unconstrained scale)"}),
            "counts": (("test", "bin"), np.stack(rows["counts"]).astype(np.int64),
                       {"units": "1", "long_name": "cells per rank bin"}),
            "statistic": ("test", np.asarray(rows["statistic"]),
                          {"units": "1", "long_name": f"Pearson chi-squared statistic, {n_bins - 1} degrees of freedom"}),
            "p_value": ("test", pvals, {"units": "1", "long_name": "p-value of the rank uniformity test"}),
            "passed": ("test", (pvals > level).astype(np.int8),
                       {"units": "1", "long_name": f"1 where uniformity is not rejected at level {level:g}"}),
            "flagged": ("test", np.asarray(rows["flagged"]),
                        {"units": "1", "long_name": "share of cells the sampler flagged (diagnostics or fallback)"}),
            "ess_median": ("test", np.asarray(rows["ess"]),
                           {"units": "1", "long_name": "median bulk ESS of the draws before thinning"}),
            "power": ("alternative", np.asarray([power(cells, n_bins, level, s, r) for _, s, r in ALTERNATIVES]),
                      {"units": "1", "long_name": f"power of the rank test at level {level:g} with {cells} cells"}),
        },
        coords={
            **test,
            "sampler": ("test", np.asarray(rows["sampler"], dtype=object)),
            "param": ("test", np.asarray(rows["param"], dtype=object)),
            "cell": np.arange(cells),
            "bin": np.arange(n_bins),
            "alternative": np.asarray([a for a, _, _ in ALTERNATIVES], dtype=object),
            "shift": ("alternative", np.asarray([s for _, s, _ in ALTERNATIVES]), {"units": "posterior sd"}),
            "sd_ratio": ("alternative", np.asarray([r for _, _, r in ALTERNATIVES]), {"units": "1"}),
        },
    )
    ds["bin"].attrs.update(long_name=f"rank bin ({(L + 1) // n_bins} ranks each)")
    ds.attrs.update(field_name=case, case=case, model=spec.name, n_ranks=L, n_bins=n_bins, cells=cells, level=level,
                    test="Pearson chi-squared test of uniform ranks, binned into equal groups",
                    options=str(p[case if case != "lognormal" else "normal"]), chains=int(p["chains"]),
                    warmup=int(p["warmup"]), n_failed=int(n_test - int(np.sum(pvals > level))))
    return ds


def run(case: str, output: str | os.PathLike, *, params: dict[str, Any], backend: str = "auto",
        output_options: dict[str, Any] | None = None) -> None:
    """Run SBC of one case and write its store."""
    b = resolve(backend)
    start = time.perf_counter()
    ds = compute(case, params=params, backend=b)
    io.write_store(ds, output, stage=STAGE, params=params, backend=b.name, output=output_options)
    log.info("wrote %s in %.1f s", output, time.perf_counter() - start)
