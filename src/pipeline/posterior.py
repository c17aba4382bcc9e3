"""Posterior stage: exact posterior draws of the Bayesian ridge regression per cell.

The design and the target are aligned exactly as in the regression stage
(:func:`pipeline.regression.align`: the same step kind and ``lag``),
standardized and centred the same way, and every complete cell gets the
conjugate normal--inverse-gamma posterior of :mod:`pipeline.kernels.posterior`,
whose mean is the ridge solution for the penalty ``alpha``. The penalty comes
from the regression store:

* ``ridge``: its chosen ``alpha``;
* ``ols``: ``alpha = 0`` (a flat prior on the coefficients), allowed only when
  the standardized design has full rank -- otherwise the posterior is improper
  and a ValueError says so;
* ``lasso``: the lasso penalty has another scale and no Gaussian-prior meaning,
  so the ridge penalty is chosen here by GCV over the same ``alphas`` grid (as
  the ridge method would), with a warning; the attribute ``alpha_source`` says
  which rule was used.

Draws come from two generators seeded from the config's ``seed`` through
``numpy.random.SeedSequence`` (one for the gamma draws, one for the normal
draws); see the kernel module for why this makes the results independent of
``chunk_cells`` on NumPy. Summaries are in original units: target units per
predictor unit.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from pipeline import grid, io
from pipeline import regression as reg
from pipeline.backend import Backend, as_backend, to_numpy
from pipeline.kernels import posterior as kp
from pipeline.kernels import regression as kr

log = logging.getLogger(__name__)

_KEYS = ("n_draws", "credible_level", "prior_a0", "prior_b0", "seed", "chunk_cells")


def _integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """Validate the ``posterior`` config section and return it unchanged."""
    if not isinstance(params, Mapping):
        raise TypeError(f"posterior params must be a mapping (the config section); got {type(params).__name__}.")
    missing = [k for k in _KEYS if k not in params]
    if missing:
        raise ValueError(f"posterior params lack the key(s) {', '.join(missing)}.")
    for key, low in (("n_draws", 2), ("chunk_cells", 1), ("seed", 0)):
        if not _integer(params[key]) or params[key] < low:
            raise ValueError(f"posterior {key} must be an integer >= {low}; got {params[key]!r}.")
    if not _number(params["credible_level"]) or not 0 < params["credible_level"] < 1:
        raise ValueError(f"posterior credible_level must lie strictly between 0 and 1; got {params['credible_level']!r}.")
    for key in ("prior_a0", "prior_b0"):
        if not _number(params[key]) or not params[key] > 0:
            raise ValueError(f"posterior {key} must be a positive number; got {params[key]!r}.")
    return params


def _alpha(regression_ds: xr.Dataset, Z: Any, Yc: Any, regression_params: dict[str, Any]) -> tuple[float, str]:
    """The ridge penalty of the posterior and a note of where it came from."""
    method = regression_ds.attrs.get("method", regression_params["method"])
    if method == "ridge":
        if "alpha" not in regression_ds:
            raise ValueError("The regression store has no variable 'alpha'; rerun the regression stage.")
        return float(regression_ds["alpha"]), "regression store (ridge)"
    if method == "ols":
        diag = kr.diagnostics(Z)
        if diag.rank < Z.shape[1]:
            raise ValueError(
                f"The regression method was 'ols' and the standardized design has rank {diag.rank} < "
                f"{Z.shape[1]} predictors, so a flat-prior posterior is improper; use method 'ridge'."
            )
        return 0.0, "ols (flat prior, alpha = 0)"
    if method == "lasso":
        alphas = reg.check_alphas(regression_params.get("alphas"))
        alpha = reg.best_alpha(alphas, kr.ridge_gcv(Z, Yc, alphas))
        log.warning("regression method is lasso; posterior uses the GCV ridge penalty %g instead", alpha)
        return alpha, "gcv over regression alphas (regression method lasso)"
    raise ValueError(f"The regression store has method {method!r}; expected one of {', '.join(reg.METHODS)}.")


def _check_regression_store(regression_ds: xr.Dataset, aligned: reg.Aligned) -> None:
    """The regression store must have been fitted on the same predictors, aligned the same way."""
    stored = [str(p) for p in regression_ds["predictor"].values] if "predictor" in regression_ds.coords else []
    if stored != aligned.predictors:
        raise ValueError(
            f"The regression store's predictors {stored} differ from {aligned.predictors}; "
            "rerun the regression stage with the same config."
        )
    ours = {"alignment": aligned.kind, "lag": aligned.lag, "period": aligned.period}
    theirs = {k: regression_ds.attrs[k] for k in ours if k in regression_ds.attrs}
    if any(theirs[k] != ours[k] for k in theirs):
        raise ValueError(
            f"The regression store was aligned with {theirs} but the regression config gives {ours}; "
            "rerun the regression stage with the same config."
        )


def _generators(b: Backend, seed: int) -> tuple[Any, Any]:
    """Independent generators for the gamma and the normal draws, from one seed."""
    s_gamma, s_normal = np.random.SeedSequence(seed).generate_state(2)
    return b.default_rng(int(s_gamma)), b.default_rng(int(s_normal))


def compute(
    target_ds: xr.Dataset,
    predictor_eof_ds: xr.Dataset,
    regression_ds: xr.Dataset,
    *,
    params: dict[str, Any],
    regression_params: dict[str, Any],
    backend: Backend | str,
) -> xr.Dataset:
    """Posterior summaries of the regression coefficients of every complete cell.

    Parameters
    ----------
    target_ds, predictor_eof_ds : xr.Dataset
        The target's fields store and the predictor's EOF store, as for
        :func:`pipeline.regression.compute` (the target's dimensions may use
        any alias of :data:`pipeline.grid.ALIASES`, in any order).
    regression_ds : xr.Dataset
        The regression store of the same target (gives ``alpha``).
    params : dict
        The ``posterior`` config section (see :func:`check_params`).
    regression_params : dict
        The ``regression`` config section (target, predictor, n_predictors,
        ``lag``, ...): the alignment is the regression stage's.
    backend : Backend or str
        The array backend, resolved or by name.

    Returns
    -------
    xr.Dataset
        The ``posterior/{target}.zarr`` layout of docs/stores.md.
    """
    check_params(params)
    reg.check_params(regression_params)
    b = as_backend(backend)
    aligned = reg.align(
        target_ds, predictor_eof_ds, target=regression_params["target"],
        predictor=regression_params["predictor"], n_predictors=regression_params["n_predictors"],
        lag=regression_params.get("lag", 0),
    )
    reg.check_design(aligned)
    _check_regression_store(regression_ds, aligned)
    cells = grid.complete_cells(aligned.field, name=regression_params["target"])
    t0 = time.perf_counter()
    X, Y = b.asarray(aligned.design), b.asarray(grid.to_matrix(aligned.field, cells))
    std = kr.standardize(X)
    Yc, _ = kr.center(Y)
    alpha, source = _alpha(regression_ds, std.Z, Yc, regression_params)
    rng_gamma, rng_normal = _generators(b, params["seed"])
    summary = kp.sample_summaries(
        std.Z, Yc, std.std, alpha, a0=float(params["prior_a0"]), b0=float(params["prior_b0"]),
        n_draws=params["n_draws"], level=float(params["credible_level"]), chunk_cells=params["chunk_cells"],
        rng_gamma=rng_gamma, rng_normal=rng_normal,
    )
    host = {name: to_numpy(getattr(summary, name)) for name in kp.Summary._fields}
    log.info(
        "posterior %s: %d %s steps (lag %d) x %d cells x %d predictors, %d draws, alpha %g from %s (%.2f s)",
        regression_params["target"], X.shape[0], aligned.kind, aligned.lag, cells.n_features, X.shape[1],
        params["n_draws"], alpha, source, time.perf_counter() - t0,
    )
    return _dataset(host, aligned, cells, params, regression_params, alpha, source)


def _dataset(
    host: dict[str, np.ndarray], aligned: reg.Aligned, cells: grid.CellIndex, params: dict[str, Any],
    regression_params: dict[str, Any], alpha: float, source: str,
) -> xr.Dataset:
    tu, pu = aligned.target_units, aligned.predictor_units
    lead = {"predictor": np.array(aligned.predictors, dtype=object)}
    coef_units = f"({tu})/({pu})"
    level = float(params["credible_level"])
    described = {
        "mean": "posterior mean of the regression coefficient",
        "sd": "posterior standard deviation of the regression coefficient",
        "ci_lower": f"lower bound of the equal-tailed {level:g} credible interval",
        "ci_upper": f"upper bound of the equal-tailed {level:g} credible interval",
    }
    data = {name: grid.from_matrix(host[name], cells, lead, attrs={"units": coef_units, "long_name": text})
            for name, text in described.items()}
    data["p_positive"] = grid.from_matrix(host["p_positive"], cells, lead, attrs={
        "units": "1", "long_name": "posterior probability that the coefficient is positive"})
    data["sigma"] = grid.from_matrix(host["sigma"], cells, attrs={
        "units": tu, "long_name": "posterior mean of the noise standard deviation"})
    ds = xr.Dataset(data, attrs={
        "field_name": regression_params["target"], "field_units": tu,
        "predictor_field": regression_params["predictor"],
        "n_draws": int(params["n_draws"]), "seed": int(params["seed"]), "credible_level": level,
        "alpha": float(alpha), "alpha_source": source,
        "prior_a0": float(params["prior_a0"]), "prior_b0": float(params["prior_b0"]),
        **aligned.attrs(),
    })
    for name in ("lat", "lon"):
        ds[name].attrs.update(aligned.field[name].attrs)
    ds["predictor"].attrs["long_name"] = f"leading principal component of {regression_params['predictor']}"
    return ds


def run(
    target_store: str | os.PathLike,
    predictor_eof_store: str | os.PathLike,
    regression_store: str | os.PathLike,
    output: str | os.PathLike,
    *,
    params: dict[str, Any],
    regression_params: dict[str, Any],
    backend: str = "auto",
    output_options: dict[str, Any] | None = None,
) -> None:
    """Read the three input stores, sample the posterior, and write ``output``.

    The store keeps the target's grid bounds (:func:`pipeline.io.with_bounds`);
    ``output_options``: the ``output`` config section.
    """
    b = as_backend(backend)
    target_ds = io.open_store(target_store, "target fields store")
    eof_ds = io.open_store(predictor_eof_store, "predictor EOF store")
    regression_ds = io.open_store(regression_store, "regression store")
    ds = compute(target_ds, eof_ds, regression_ds, params=params, regression_params=regression_params, backend=b)
    io.write_store(io.with_bounds(ds, target_ds), output, stage="posterior", params=params, backend=b.name,
                   output=output_options)
    log.info("wrote %s", output)
