"""The moments stage: time statistics, anomalies and the weighted covariance of a field.

Reads a ``fields/{field}.zarr`` store and writes ``moments/{field}.zarr`` as
described in ``docs/stores.md``: per-cell ``mean``, ``std`` (divisor n−1) and
``count`` over valid time steps, the ``valid`` mask of complete cells, the
``anomaly`` field, the latitude ``weight`` and the weighted ``covariance`` of
the complete cells, kept in the smaller dimension (attribute ``kind``).

Config section ``moments``: ``weights`` (``none`` | ``coslat`` |
``sqrt_coslat``, default ``sqrt_coslat``) and ``min_time_steps`` (int ≥ 2,
default 3).
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
from pipeline.kernels import moments as kernels

log = logging.getLogger(__name__)

STAGE = "moments"
DEFAULTS: dict[str, Any] = {"weights": "sqrt_coslat", "min_time_steps": 3}


def _params(params: dict[str, Any]) -> tuple[str, int]:
    """Validated ``(weights, min_time_steps)`` from the config section."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict (the 'moments' config section); got {type(params).__name__}.")
    weights = params.get("weights", DEFAULTS["weights"])
    if weights not in grid.WEIGHTS:
        raise ValueError(f"moments.weights must be one of {', '.join(grid.WEIGHTS)}; got {weights!r}.")
    min_steps = params.get("min_time_steps", DEFAULTS["min_time_steps"])
    if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 2:
        raise ValueError(f"moments.min_time_steps must be an integer of at least 2; got {min_steps!r}.")
    return weights, min_steps


def _grid_var(field: xr.DataArray, values: np.ndarray, long_name: str, units: str) -> xr.DataArray:
    """A ``(lat, lon)`` variable from a flat host array over all cells of ``field``."""
    return xr.DataArray(values.reshape(field.shape[1:]), dims=("lat", "lon"),
                        coords={"lat": field["lat"], "lon": field["lon"]},
                        attrs={"long_name": long_name, "units": units})


def _dataset(field: xr.DataArray, name: str, stats: dict[str, np.ndarray], weight: xr.DataArray,
             cells: grid.CellIndex, kind: str) -> xr.Dataset:
    """Assemble the moments store from host arrays."""
    units = str(field.attrs.get("units", "1"))
    long = str(field.attrs.get("long_name", name))
    valid = cells.valid.astype(bool).assign_attrs(long_name=f"complete cell (no missing time step) of {long}", units="1")
    anomaly = xr.DataArray(stats["anomaly"].reshape(field.shape), dims=("time", "lat", "lon"), coords=field.coords,
                           attrs={"long_name": f"anomaly of {long}", "units": units})
    covariance = xr.DataArray(stats["covariance"], dims=("i", "j"), attrs={
        "long_name": f"weighted covariance of {long} ({kind}, divisor n-1)", "units": f"({units})^2", "kind": kind})
    return xr.Dataset(
        {
            "mean": _grid_var(field, stats["mean"], f"time mean over valid steps of {long}", units),
            "std": _grid_var(field, stats["std"], f"standard deviation (ddof=1) over valid steps of {long}", units),
            "count": _grid_var(field, stats["count"], f"number of valid time steps of {long}", "1"),
            "valid": valid,
            "anomaly": anomaly,
            "weight": weight,
            "covariance": covariance,
        },
        attrs={"field_name": name, "field_units": units, "weighting": weight.attrs["weighting"],
               "n_samples": int(field.shape[0]), "n_complete_cells": cells.n_features},
    )


def compute(fields_ds: xr.Dataset, *, params: dict[str, Any], backend: Backend) -> xr.Dataset:
    """Moments of the ``field`` variable of a fields Dataset.

    Parameters
    ----------
    fields_ds : xr.Dataset
        A fields store: ``field(time, lat, lon)`` with NaN for missing values,
        attribute ``field_name`` and ``field.attrs["units"]``.
    params : dict
        The ``moments`` config section (``weights``, ``min_time_steps``).
    backend : Backend
        Array backend for the kernels (see :func:`pipeline.backend.resolve`).

    Returns
    -------
    xr.Dataset
        The moments store of ``docs/stores.md``.

    Raises
    ------
    ValueError
        If ``field`` is missing, all NaN, has no complete cell, has fewer time
        steps than ``min_time_steps``, or a parameter is invalid.
    """
    weights, min_steps = _params(params)
    field, name = grid.field_of(fields_ds, min_steps, f"moments.min_time_steps={min_steps}")
    cells = grid.complete_cells(field, name)
    dtype = field.dtype if field.dtype in (np.float32, np.float64) else np.float64
    n_time = field.sizes["time"]
    host = np.asarray(field.values, dtype=dtype).reshape(n_time, -1)
    weight = grid.latitude_weights(field["lat"], weights)
    w_cells = np.broadcast_to(weight.values[:, None], field.shape[1:]).ravel()[cells.flat]

    start = time.perf_counter()
    xp = backend.xp
    x = backend.asarray(host)
    mom = kernels.time_moments(x)
    complete = xp.take(mom.anomaly, backend.asarray(cells.flat), axis=1)
    cov, kind = kernels.weighted_covariance(complete, backend.asarray(w_cells, dtype=x.dtype))
    stats = {k: to_numpy(v) for k, v in mom._asdict().items()}
    stats["covariance"] = to_numpy(cov)
    log.info("moments of %s: %d time steps x %d cells (%d complete), %s weights, %s covariance %s, %.3f s on %s",
             name, n_time, host.shape[1], cells.n_features, weights, kind, stats["covariance"].shape,
             time.perf_counter() - start, backend.name)
    return _dataset(field, name, stats, weight, cells, kind)


def run(field_store: str | os.PathLike, output: str | os.PathLike, *, params: dict[str, Any],
        backend: str = "auto") -> None:
    """Read a fields store, compute its moments and write the moments store.

    Parameters
    ----------
    field_store : path-like
        ``fields/{field}.zarr``.
    output : path-like
        ``moments/{field}.zarr``, written atomically with provenance.
    params : dict
        The ``moments`` config section.
    backend : {"auto", "numpy", "cupy"}
        Array backend.
    """
    b = resolve(backend)
    fields_ds = io.open_store(field_store, what="fields store")
    ds = compute(fields_ds, params=params, backend=b)
    io.write_store(ds, output, stage=STAGE, params=params, backend=b.name)
    log.info("wrote %s", output)
