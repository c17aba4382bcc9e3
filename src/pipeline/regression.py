"""Regression stage: a target field, cell by cell, on the leading PCs of another field.

The design is the first ``n_predictors`` PCs of the predictor field's EOF store,
matched to the target field step by step (:func:`align`, which the posterior
stage reuses): yearly with yearly, monthly with monthly or daily with daily
steps, the predictor leading by ``lag`` steps. Predictors are standardized
inside (divisor n, ``ddof=0``) and the fit is OLS, ridge (penalty chosen by GCV) or lasso (penalty
chosen by K-fold CV) on the standardized, centred problem; coefficients are
reported in original units. Cells of the target with any missing value over the
paired steps are left out and come back NaN.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np
import xarray as xr

from pipeline import grid, io, timeaxis
from pipeline.backend import Backend, as_backend, to_numpy
from pipeline.kernels import regression as kr

log = logging.getLogger(__name__)

METHODS = ("ols", "ridge", "lasso")
_REQUIRED = ("target", "predictor", "n_predictors", "method")
_LASSO_KEYS = ("cv_folds", "max_iter", "tol")


@dataclass(frozen=True)
class Aligned:
    """A target field and its predictor design, matched step by step.

    Attributes
    ----------
    field : xr.DataArray
        The target ``(time, lat, lon)`` at the paired steps, in time order.
    design : np.ndarray
        ``(sample, predictor)`` host matrix of the first ``n_predictors`` PCs,
        row ``i`` from the predictor step ``lag`` steps before target step ``i``.
    predictors : list of str
        Predictor names, ``f"{predictor}_pc{m}"``.
    kind : str
        The step both axes share: ``yearly``, ``monthly`` or ``daily``.
    lag : int
        Steps (of ``kind``) by which the predictor leads the target.
    period : str
        First and last paired target step, e.g. ``"1950-01 .. 1999-12"``.
    target_units, predictor_units : str
        Units of the target field and of the PCs.
    """

    field: xr.DataArray
    design: np.ndarray
    predictors: list[str]
    kind: str
    lag: int
    period: str
    target_units: str
    predictor_units: str

    @property
    def n_samples(self) -> int:
        return int(self.design.shape[0])

    def attrs(self) -> dict[str, Any]:
        """The store attributes that describe the alignment."""
        return {"n_samples": self.n_samples, "period": self.period, "alignment": self.kind, "lag": int(self.lag)}


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """Validate the ``regression`` config section and return it unchanged.

    Raises
    ------
    ValueError
        On a missing key, an unknown method, an empty or negative ``alphas``
        grid, a ``lag`` that is not an integer, or out-of-range
        ``n_predictors``, ``cv_folds``, ``max_iter``, ``tol``.
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"regression params must be a mapping (the config section); got {type(params).__name__}.")
    missing = [k for k in _REQUIRED if k not in params]
    if missing:
        raise ValueError(f"regression params lack the key(s) {', '.join(missing)}.")
    if params["method"] not in METHODS:
        raise ValueError(f"regression method must be one of {', '.join(METHODS)}; got {params['method']!r}.")
    if not _is_int(params["n_predictors"]) or params["n_predictors"] < 1:
        raise ValueError(f"regression n_predictors must be an integer >= 1; got {params['n_predictors']!r}.")
    lag = params.get("lag", 0)
    if not _is_int(lag):
        raise ValueError(f"regression lag must be an integer number of time steps (0: no lag); got {lag!r}.")
    if params["method"] != "ols" or "alphas" in params:
        check_alphas(params.get("alphas"))
    if params["method"] == "lasso":
        missing = [k for k in _LASSO_KEYS if k not in params]
        if missing:
            raise ValueError(f"regression method 'lasso' needs the key(s) {', '.join(missing)}.")
        if not _is_int(params["cv_folds"]) or params["cv_folds"] < 2:
            raise ValueError(f"regression cv_folds must be an integer >= 2; got {params['cv_folds']!r}.")
        if not _is_int(params["max_iter"]) or params["max_iter"] < 1:
            raise ValueError(f"regression max_iter must be an integer >= 1; got {params['max_iter']!r}.")
        if not isinstance(params["tol"], (int, float)) or not params["tol"] > 0:
            raise ValueError(f"regression tol must be a positive number; got {params['tol']!r}.")
    return params


def check_alphas(alphas: Any) -> list[float]:
    """The penalty grid as floats; ValueError if it is empty, not numeric, or has a negative value."""
    if not isinstance(alphas, (list, tuple)) or len(alphas) == 0:
        raise ValueError(f"regression alphas must be a non-empty list of penalties >= 0; got {alphas!r}.")
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in alphas):
        raise ValueError(f"regression alphas must all be finite numbers; got {alphas!r}.")
    if min(alphas) < 0:
        raise ValueError(f"regression alphas must all be >= 0; got {min(alphas)!r} in {alphas!r}.")
    return [float(a) for a in alphas]


def _check_name(ds: xr.Dataset, expected: str, what: str) -> None:
    name = ds.attrs.get("field_name")
    if name is not None and name != expected:
        raise ValueError(f"The {what} store holds field {name!r} but the regression config names {expected!r}.")


def _dates(time_coord: xr.DataArray, what: str) -> np.ndarray:
    values = np.asarray(time_coord.values)
    if not timeaxis.is_dates(values):
        raise TypeError(f"The {what} time coordinate must hold dates (datetime64 or cftime); got dtype {values.dtype}.")
    return values


def align(
    target_ds: xr.Dataset, predictor_eof_ds: xr.Dataset, *, target: str, predictor: str, n_predictors: int,
    lag: int = 0,
) -> Aligned:
    """Match the target field and the first ``n_predictors`` PCs step by step (:func:`pipeline.timeaxis.align`).

    Both time axes must have one step kind (yearly, monthly or daily); target
    step ``k`` pairs with the PCs of step ``k − lag``. Only the pairs present
    in both stores are kept, in time order. The target's dimensions may use
    any name of :data:`pipeline.grid.ALIASES`, in any order.

    Raises
    ------
    ValueError
        If a store lacks ``field`` or ``pc``, an axis repeats a date, the step
        kinds differ, ``n_predictors`` exceeds the number of PCs, or fewer
        than ``n_predictors + 2`` steps pair up.
    """
    if "field" not in target_ds:
        raise ValueError(f"The target store for {target!r} has no variable 'field'.")
    _check_name(target_ds, target, "target")
    _check_name(predictor_eof_ds, predictor, "predictor EOF")
    field = grid.as_field(target_ds["field"], f"target field {target!r}")
    pc = predictor_eof_ds.get("pc")
    pc = None if pc is None else grid.canonical_dims(pc, f"predictor PCs of {predictor!r}", require=())
    if pc is None or set(pc.dims) != {"time", "mode"}:
        raise ValueError(f"The predictor EOF store for {predictor!r} needs a variable 'pc' with dims (time, mode).")
    pc = pc.transpose("time", "mode")
    if n_predictors > pc.sizes["mode"]:
        raise ValueError(
            f"regression n_predictors is {n_predictors} but the EOF store of {predictor!r} "
            f"holds only {pc.sizes['mode']} PCs."
        )
    t_target = _dates(field["time"], f"target field {target!r}")
    it, ip, kind = timeaxis.align(t_target, _dates(pc["time"], f"predictor PCs of {predictor!r}"), lag=lag,
                                  what=(f"target field {target!r}", f"predictor PCs of {predictor!r}"))
    if it.size < n_predictors + 2:
        span = f" ({timeaxis.period_label(t_target[it], kind)})" if it.size else ""
        raise ValueError(
            f"Only {it.size} {kind} steps{span} pair up between target {target!r} and predictor {predictor!r} "
            f"at lag {lag}; a regression on {n_predictors} predictors needs at least {n_predictors + 2}."
        )
    return Aligned(
        field=field.isel(time=it),
        design=np.asarray(pc.isel(time=ip, mode=slice(0, n_predictors)).values, dtype=np.float64),
        predictors=[f"{predictor}_pc{m}" for m in range(1, n_predictors + 1)],
        kind=kind,
        lag=int(lag),
        period=timeaxis.period_label(t_target[it], kind),
        target_units=str(target_ds.attrs.get("field_units", target_ds["field"].attrs.get("units", ""))),
        predictor_units=str(pc.attrs.get("units", predictor_eof_ds.attrs.get("field_units", ""))),
    )


def check_design(aligned: Aligned) -> None:
    """Reject a design with a constant predictor (it cannot be standardized)."""
    std = aligned.design.std(axis=0)
    if np.any(std == 0):
        bad = aligned.predictors[int(np.flatnonzero(std == 0)[0])]
        raise ValueError(f"Predictor {bad} is constant over {aligned.period}; it cannot be standardized.")


def best_alpha(alphas: list[float], scores: Any) -> float:
    """The alpha of the lowest score (the first one on ties); ``scores`` may live on the device."""
    xp = array_api_compat.array_namespace(scores)
    return alphas[int(xp.argmin(scores))]


def _fit(Z: Any, Yc: Any, params: dict[str, Any]) -> tuple[Any, float, list[float], Any]:
    """Standardized coefficients, chosen alpha, the alpha grid and its scores."""
    method = params["method"]
    if method == "ols":
        return kr.ols(Z, Yc), 0.0, [0.0], kr.ridge_gcv(Z, Yc, [0.0])
    alphas = check_alphas(params["alphas"])
    if method == "ridge":
        scores = kr.ridge_gcv(Z, Yc, alphas)
        alpha = best_alpha(alphas, scores)
        return kr.ridge(Z, Yc, alpha), alpha, alphas, scores
    scores = kr.lasso_cv(
        Z, Yc, alphas, n_folds=params["cv_folds"], max_iter=params["max_iter"], tol=float(params["tol"])
    )
    alpha = best_alpha(alphas, scores)
    fit = kr.lasso(Z, Yc, alpha, max_iter=params["max_iter"], tol=float(params["tol"]))
    if not fit.converged:
        log.warning("lasso did not converge in %d sweeps (tol %g)", fit.n_sweeps, params["tol"])
    log.info("lasso at alpha %g: %d sweeps", alpha, fit.n_sweeps)
    return fit.beta, alpha, alphas, scores


def compute(
    target_ds: xr.Dataset, predictor_eof_ds: xr.Dataset, *, params: dict[str, Any], backend: Backend | str
) -> xr.Dataset:
    """Fit the regression of every complete target cell on the predictor PCs.

    Parameters
    ----------
    target_ds : xr.Dataset
        A fields store: ``field(time, lat, lon)`` (any dimension names of
        :data:`pipeline.grid.ALIASES`, in any order).
    predictor_eof_ds : xr.Dataset
        An EOF store: ``pc(time, mode)``.
    params : dict
        The ``regression`` config section (see :func:`check_params`).
    backend : Backend or str
        The array backend, resolved or by name.

    Returns
    -------
    xr.Dataset
        The ``regression/{target}.zarr`` layout of docs/stores.md.
    """
    check_params(params)
    b = as_backend(backend)
    aligned = align(
        target_ds, predictor_eof_ds, target=params["target"], predictor=params["predictor"],
        n_predictors=params["n_predictors"], lag=params.get("lag", 0),
    )
    check_design(aligned)
    cells = grid.complete_cells(aligned.field, name=params["target"])
    t0 = time.perf_counter()
    X, Y = b.asarray(aligned.design), b.asarray(grid.to_matrix(aligned.field, cells))
    std = kr.standardize(X)
    Yc, ybar = kr.center(Y)
    diag = kr.diagnostics(std.Z)
    beta, alpha, alphas, scores = _fit(std.Z, Yc, params)
    coef, intercept = kr.to_original_units(beta, std.mean, std.std, ybar)
    r2 = kr.r2_score(Y, std.Z @ beta + ybar)
    host = {k: to_numpy(v) for k, v in dict(coef=coef, intercept=intercept, r2=r2, scores=scores,
                                             mean=std.mean, std=std.std).items()}
    log.info(
        "regression %s on %s: method %s, %d %s steps (lag %d) x %d cells x %d predictors, alpha %g, rank %d, "
        "cond %.3g (%.2f s)", params["target"], params["predictor"], params["method"], X.shape[0], aligned.kind,
        aligned.lag, cells.n_features,
        X.shape[1], alpha, diag.rank, diag.condition_number, time.perf_counter() - t0,
    )
    return _dataset(host, aligned, cells, params, alpha, alphas, diag)


def _dataset(
    host: dict[str, np.ndarray], aligned: Aligned, cells: grid.CellIndex, params: dict[str, Any],
    alpha: float, alphas: list[float], diag: kr.Diagnostics,
) -> xr.Dataset:
    tu, pu = aligned.target_units, aligned.predictor_units
    lead = {"predictor": np.array(aligned.predictors, dtype=object)}
    score = "GCV score" if params["method"] != "lasso" else f"{params['cv_folds']}-fold CV mean squared error"
    ds = xr.Dataset(
        {
            "coef": grid.from_matrix(host["coef"], cells, lead, attrs={
                "units": f"({tu})/({pu})", "long_name": f"regression coefficient of {params['target']} on each predictor"}),
            "intercept": grid.from_matrix(host["intercept"], cells, attrs={"units": tu, "long_name": "intercept"}),
            "r2": grid.from_matrix(host["r2"], cells, attrs={
                "units": "1", "long_name": "coefficient of determination of the in-sample fit"}),
            "alpha": ((), alpha, {"units": "1", "long_name": "chosen penalty for standardized predictors"}),
            "alpha_grid": (("alpha_candidate",), np.asarray(alphas, dtype=np.float64), {
                "units": "1", "long_name": "candidate penalties"}),
            "cv_score": (("alpha_candidate",), host["scores"], {
                "units": f"({tu})^2", "long_name": f"{score} summed over cells"}),
            "predictor_mean": (("predictor",), host["mean"], {"units": pu, "long_name": "predictor mean"}),
            "predictor_std": (("predictor",), host["std"], {
                "units": pu, "long_name": "predictor standard deviation (divisor n)", "ddof": 0}),
        },
        coords={"predictor": lead["predictor"]},
        attrs={
            "field_name": params["target"], "field_units": tu, "predictor_field": params["predictor"],
            "method": params["method"], "rank": diag.rank, "condition_number": diag.condition_number,
            **aligned.attrs(),
        },
    )
    for name in ("lat", "lon"):
        ds[name].attrs.update(aligned.field[name].attrs)
    ds["predictor"].attrs["long_name"] = f"leading principal component of {params['predictor']}"
    return ds


def run(
    target_store: str | os.PathLike, predictor_eof_store: str | os.PathLike, output: str | os.PathLike,
    *, params: dict[str, Any], backend: str = "auto", output_options: dict[str, Any] | None = None,
) -> None:
    """Read the target field and predictor EOF stores, fit, and write ``output``.

    The store keeps the target's grid bounds (:func:`pipeline.io.with_bounds`);
    ``output_options``: the ``output`` config section.
    """
    b = as_backend(backend)
    target_ds = io.open_store(target_store, "target fields store")
    eof_ds = io.open_store(predictor_eof_store, "predictor EOF store")
    ds = compute(target_ds, eof_ds, params=params, backend=b)
    io.write_store(io.with_bounds(ds, target_ds), output, stage="regression", params=params, backend=b.name,
                   output=output_options)
    log.info("wrote %s", output)
