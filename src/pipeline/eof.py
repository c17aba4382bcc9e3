"""The eof stage: leading EOFs, PCs and their diagnostics from a moments store.

Reads ``moments/{field}.zarr`` and writes ``eof/{field}.zarr`` as described in
``docs/stores.md``. The weighted anomaly matrix ``X_w`` of the complete cells
(anomaly times the stored latitude weight) is decomposed by
:func:`pipeline.kernels.eof.eof_decomposition`; ``method: auto`` reuses the
covariance kept in the moments store (``time`` or ``space``), an explicit
``time``/``space`` recomputes it when the stored one is the other kind, and
``svd`` works on ``X_w`` directly.

Config section ``eof``: ``n_modes`` (int ≥ 1, default 5) and ``method``
(``auto`` | ``time`` | ``space`` | ``svd``, default ``auto``); the ``fields``
key belongs to the workflow and is ignored here.
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
from pipeline.kernels import eof as kernels
from pipeline.kernels.moments import weight_columns

log = logging.getLogger(__name__)

STAGE = "eof"
METHODS = ("auto", *kernels.METHODS)
DEFAULTS: dict[str, Any] = {"n_modes": 5, "method": "auto"}
REQUIRED = ("anomaly", "valid", "weight", "covariance")


def _params(params: dict[str, Any]) -> tuple[int, str]:
    """Validated ``(n_modes, method)`` from the config section."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict (the 'eof' config section); got {type(params).__name__}.")
    n_modes = params.get("n_modes", DEFAULTS["n_modes"])
    if isinstance(n_modes, bool) or not isinstance(n_modes, int) or n_modes < 1:
        raise ValueError(f"eof.n_modes must be an integer of at least 1; got {n_modes!r}.")
    method = params.get("method", DEFAULTS["method"])
    if method not in METHODS:
        raise ValueError(f"eof.method must be one of {', '.join(METHODS)}; got {method!r}.")
    return n_modes, method


def _check_store(moments_ds: xr.Dataset) -> str:
    """The field name, after checking the moments Dataset has what the stage reads."""
    if not isinstance(moments_ds, xr.Dataset):
        raise TypeError(f"moments_ds must be an xarray Dataset; got {type(moments_ds).__name__}.")
    name = str(moments_ds.attrs.get("field_name", "field"))
    missing = [v for v in REQUIRED if v not in moments_ds.variables]
    if missing:
        raise ValueError(f"The moments store of {name} lacks {', '.join(missing)}; rerun the moments stage.")
    kind = moments_ds["covariance"].attrs.get("kind")
    if kind not in ("time", "space"):
        raise ValueError(
            f"The covariance in the moments store of {name} has kind {kind!r}; expected 'time' or 'space'."
        )
    return name


def _mode_var(values: np.ndarray, cells: grid.CellIndex, mode: np.ndarray, long: str, units: str) -> xr.DataArray:
    """A ``(mode, lat, lon)`` variable from ``(feature, mode)`` host values."""
    return grid.from_matrix(values.T, cells, leading={"mode": mode}, attrs={"long_name": long, "units": units})


def _dataset(res: dict[str, Any], cells: grid.CellIndex, moments_ds: xr.Dataset, name: str) -> xr.Dataset:
    """Assemble the eof store from host results."""
    units = str(moments_ds.attrs.get("field_units", moments_ds["anomaly"].attrs.get("units", "1")))
    mode = np.arange(1, res["eigenvalue"].size + 1)
    weighting = str(moments_ds["weight"].attrs.get("weighting", moments_ds.attrs.get("weighting", "unknown")))
    ds = xr.Dataset(
        {
            "eof": _mode_var(res["eof"], cells, mode, f"EOF of {name} (unit norm in weighted space)", "1"),
            "pc": xr.DataArray(res["pc"], dims=("time", "mode"),
                               attrs={"long_name": f"principal component of {name} (unscaled)", "units": units}),
            "eigenvalue": ("mode", res["eigenvalue"],
                           {"long_name": f"variance of the {name} mode", "units": f"({units})^2"}),
            "variance_fraction": ("mode", res["eigenvalue"] / res["total_variance"],
                                  {"long_name": "fraction of total weighted variance", "units": "1"}),
            "north_error": ("mode", res["north_error"],
                            {"long_name": "North et al. (1982) eigenvalue sampling error", "units": f"({units})^2"}),
            "eof_correlation": _mode_var(res["correlation"], cells, mode,
                                         f"correlation of {name} anomaly with the PC", "1"),
            "eof_covariance": _mode_var(res["covariance"], cells, mode,
                                        f"covariance of {name} anomaly with the unit-variance PC", units),
        },
        coords={"time": moments_ds["time"], "mode": ("mode", mode, {"long_name": "EOF mode number", "units": "1"})},
        attrs={"field_name": name, "field_units": units, "method": res["method"],
               "weighting": weighting,
               "n_samples": int(moments_ds.sizes["time"]), "rank": int(res["rank"]),
               "total_variance": float(res["total_variance"])},
    )
    return ds


def compute(moments_ds: xr.Dataset, *, params: dict[str, Any], backend: Backend) -> xr.Dataset:
    """EOF analysis of the weighted anomalies held in a moments Dataset.

    Parameters
    ----------
    moments_ds : xr.Dataset
        A moments store (``anomaly``, ``valid``, ``weight``, ``covariance``).
    params : dict
        The ``eof`` config section (``n_modes``, ``method``).
    backend : Backend
        Array backend for the kernels.

    Returns
    -------
    xr.Dataset
        The eof store of ``docs/stores.md``; NaN in the maps where a cell is
        not complete.

    Raises
    ------
    ValueError
        On an invalid parameter, a moments store missing a variable, or
        ``n_modes`` above the numerical rank of the anomalies.
    """
    n_modes, method = _params(params)
    name = _check_store(moments_ds)
    anomaly = moments_ds["anomaly"].transpose("time", "lat", "lon")
    cells = grid.complete_cells(anomaly, name)
    a_host = grid.to_matrix(anomaly, cells)
    weight = moments_ds["weight"].reindex(lat=anomaly["lat"]).values
    w_cells = np.broadcast_to(weight[:, None], anomaly.shape[1:]).ravel()[cells.flat]
    stored_kind = moments_ds["covariance"].attrs["kind"]
    method = stored_kind if method == "auto" else method

    start = time.perf_counter()
    a = backend.asarray(a_host)
    cov = backend.asarray(moments_ds["covariance"].values, dtype=a.dtype) if method == stored_kind else None
    xw = weight_columns(a, backend.asarray(w_cells, dtype=a.dtype))
    res = kernels.eof_decomposition(xw, n_modes, method=method, covariance=cov, label=name)
    out = {
        "eof": to_numpy(res.eof), "pc": to_numpy(res.pc), "eigenvalue": to_numpy(res.eigenvalue),
        "north_error": to_numpy(kernels.north_error(res.eigenvalue, a_host.shape[0])),
        "correlation": to_numpy(kernels.eof_correlation(a, res.pc)),
        "covariance": to_numpy(kernels.eof_covariance(a, res.pc)),
        "total_variance": res.total_variance, "rank": res.rank, "method": res.method,
    }
    log.info("eof of %s: %d modes of a %d x %d weighted anomaly matrix by %s (rank %d, %.1f%% of variance), "
             "%.3f s on %s", name, n_modes, *a_host.shape, method, res.rank,
             100.0 * float(out["eigenvalue"].sum()) / res.total_variance, time.perf_counter() - start, backend.name)
    return _dataset(out, cells, moments_ds, name)


def run(moments_store: str | os.PathLike, output: str | os.PathLike, *, params: dict[str, Any],
        backend: str = "auto") -> None:
    """Read a moments store, compute its EOFs and write the eof store.

    Parameters
    ----------
    moments_store : path-like
        ``moments/{field}.zarr``.
    output : path-like
        ``eof/{field}.zarr``, written atomically with provenance.
    params : dict
        The ``eof`` config section.
    backend : {"auto", "numpy", "cupy"}
        Array backend.
    """
    b = resolve(backend)
    moments_ds = io.open_store(moments_store, what="moments store")
    ds = compute(moments_ds, params=params, backend=b)
    io.write_store(ds, output, stage=STAGE, params=params, backend=b.name)
    log.info("wrote %s", output)
