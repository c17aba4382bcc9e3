"""Distributions stage: per-cell maximum-likelihood fits of normal and Gumbel laws.

Reads a ``fields/{field}.zarr`` store and writes ``distributions/{field}.zarr``
(see ``docs/stores.md``): for every family named in the config and every
complete grid cell, the maximum-likelihood ``loc`` and ``scale``, the
log-likelihood, AIC = 2k - 2 log L (k = 2) and the Kolmogorov-Smirnov statistic
of the fitted law, plus ``best_family``, the index of the lowest AIC. Cells with
a missing value at any time step are NaN (``best_family`` -1), as are complete
cells whose series is constant: no scale can be fitted there, so they are
reported as not fitted (and logged) rather than stopping the run. The numbers
come from :mod:`pipeline.kernels.distributions`.
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
from pipeline.kernels import distributions as kernels

log = logging.getLogger(__name__)

STAGE = "distributions"
FAMILIES = kernels.FAMILIES
MIN_TIME_STEPS = 3
MAX_ITER = 100  # cap on the Gumbel scale iterations (5-15 are typical)
_NOT_FITTED = -1

_LONG_NAMES = {
    "loc": "maximum-likelihood location parameter",
    "scale": "maximum-likelihood scale parameter",
    "loglik": "maximized log-likelihood",
    "aic": "Akaike information criterion (2k - 2 log L, k = 2)",
    "ks": "Kolmogorov-Smirnov statistic of the fitted distribution",
}


def _families(params: dict[str, Any]) -> tuple[str, ...]:
    """The validated ``families`` entry of the stage's config section."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be the distributions config section as a dict; got {type(params).__name__}.")
    families = params.get("families", list(FAMILIES))
    if isinstance(families, str) or not isinstance(families, (list, tuple)):
        raise TypeError(f"distributions.families must be a list of family names; got {families!r}.")
    if len(families) == 0:
        raise ValueError(f"distributions.families is empty; name at least one of {', '.join(FAMILIES)}.")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"distributions.families has unknown family {unknown[0]!r}; valid families are {', '.join(FAMILIES)}.")
    if len(set(families)) != len(families):
        raise ValueError(f"distributions.families lists a family twice: {list(families)!r}.")
    return tuple(families)


def _grid(values: np.ndarray, cells: grid.CellIndex, families: tuple[str, ...], name: str, units: str) -> xr.DataArray:
    """A ``(family, feature)`` result as a ``(family, lat, lon)`` DataArray with CF attributes."""
    attrs = {"units": units, "long_name": _LONG_NAMES[name]}
    return grid.from_matrix(values, cells, leading={"family": np.array(families)}, name=name, attrs=attrs)


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


def compute(fields_ds: xr.Dataset, *, params: dict[str, Any], backend: Backend) -> xr.Dataset:
    """Fit every configured family to every complete cell of a fields store.

    Parameters
    ----------
    fields_ds : xr.Dataset
        A fields store: ``field(time, lat, lon)``, NaN where missing; dataset
        attribute ``field_name`` and ``field.attrs["units"]`` are carried over.
    params : dict
        The ``distributions`` config section; ``families`` (distinct names from
        ``normal``, ``gumbel_r``, ``gumbel_l``; all three when absent) is read,
        ``fields`` is for the workflow and ignored.
    backend : Backend
        Where the fits run (see :func:`pipeline.backend.resolve`).

    Returns
    -------
    xr.Dataset
        ``loc``, ``scale``, ``loglik``, ``aic``, ``ks`` on ``(family, lat, lon)``
        and ``best_family(lat, lon)`` (int8, -1 where not fitted), NaN outside
        the complete cells and on constant cells.

    Raises
    ------
    ValueError
        Unknown, duplicated or no families; fewer than 3 time steps; no
        complete cell; no complete cell with a non-constant series.
    TypeError
        ``fields_ds`` is not a Dataset, ``families`` is not a list, or the field
        is not real-valued.
    """
    families = _families(params)
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a pipeline.backend.Backend (see backend.resolve); got {type(backend).__name__}.")
    field, field_name = grid.field_of(fields_ds, MIN_TIME_STEPS, f"the {MIN_TIME_STEPS} a two-parameter fit needs")
    units = str(field.attrs.get("units", fields_ds.attrs.get("field_units", "")))
    cells = grid.complete_cells(field, name=field_name)
    matrix = grid.to_matrix(field, cells)
    if matrix.dtype not in (np.float32, np.float64):
        matrix = matrix.astype(np.float64)

    start = time.perf_counter()
    x = backend.asarray(matrix)
    fits = kernels.fit_families(x, families, max_iter=MAX_ITER)
    xp = backend.xp
    floats = to_numpy(xp.stack([fits[k] for k in ("loc", "scale", "loglik", "aic", "ks")]))
    best = to_numpy(fits["best"])
    log.info(
        "%s: fitted %s to %d complete cells x %d time steps on %s in %.2f s (Gumbel scale: %d iterations)",
        field_name, ", ".join(families), matrix.shape[1], matrix.shape[0], backend.name,
        time.perf_counter() - start, fits["n_iter"],
    )  # fmt: skip
    if fits["n_iter"] >= MAX_ITER:
        log.warning("%s: the Gumbel scale iteration hit its cap of %d steps; the bracketed estimate is used", field_name, MAX_ITER)
    n_constant = int(np.sum(best == _NOT_FITTED))
    if n_constant == matrix.shape[1]:
        raise ValueError(f"Every complete cell of the field {field_name!r} is constant over time; no distribution can be fitted.")
    if n_constant:
        log.warning("%s: %d complete cells are constant over time; left unfitted (NaN, best_family -1)", field_name, n_constant)

    unit_of = {"loc": units, "scale": units, "loglik": "1", "aic": "1", "ks": "1"}
    data = {name: _grid(floats[i], cells, families, name, unit_of[name]) for i, name in enumerate(unit_of)}
    data["best_family"] = _best_family(best, cells, families)
    ds = xr.Dataset(data)
    ds["family"].attrs.update(long_name="distribution family (as in scipy.stats)")
    for dim in ("lat", "lon"):
        ds[dim].attrs.update(field[dim].attrs)
    ds.attrs.update(
        field_name=field_name,
        field_units=units,
        n_samples=int(matrix.shape[0]),
        n_params=kernels.N_PARAMS,
        n_constant_cells=n_constant,
    )
    return ds


def run(
    field_store: str | os.PathLike,
    output: str | os.PathLike,
    *,
    params: dict[str, Any],
    backend: str = "auto",
    output_options: dict[str, Any] | None = None,
) -> None:
    """Read a fields store, fit the distributions, write the distributions store (with the field's grid bounds).

    Parameters
    ----------
    field_store : path-like
        ``fields/{field}.zarr`` written by the ingest stage.
    output : path-like
        ``distributions/{field}.zarr`` to write (atomically, with provenance).
    params : dict
        The ``distributions`` config section (see :func:`compute`).
    backend : {"auto", "numpy", "cupy"}
        Array backend for the fits.
    output_options : dict, optional
        The ``output`` config section (:func:`pipeline.io.output_options`).
    """
    fields_ds = io.open_store(field_store, what="fields store")
    b = resolve(backend)
    ds = compute(fields_ds, params=params, backend=b)
    io.write_store(io.with_bounds(ds, fields_ds), output, stage=STAGE, params=params, backend=b.name,
                   output=output_options)
    log.info("wrote %s", output)
