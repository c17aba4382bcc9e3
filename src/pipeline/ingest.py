"""Ingest: any source becomes a canonical ``(time, lat, lon)`` field store.

Sources (``source:`` in a field's config entry):

* ``netcdf`` -- a netCDF-3 or netCDF-4 file, read with xarray;
* ``zarr`` -- a Zarr store (format 2 or 3);
* ``synthetic`` -- a field with planted truth from :mod:`pipeline.synthetic`
  (``kind: modes | regression | distribution``), reproducible from its seed.

The source is only read. The result has dimensions exactly ``(time, lat, lon)``
(common aliases such as ``latitude`` are renamed, singleton axes such as a
one-level ``pressure`` are squeezed), latitudes ascending, missing values NaN,
and CF attributes.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pipeline import synthetic
from pipeline.io import streamed_field_store, write_store

log = logging.getLogger(__name__)

SOURCES = ("netcdf", "zarr", "synthetic")
ALIASES = {
    "time": ("time", "t", "valid_time", "date"),
    "lat": ("lat", "latitude", "nav_lat", "y_lat", "rlat"),
    "lon": ("lon", "longitude", "nav_lon", "x_lon", "rlon"),
}
SYNTHETIC_KINDS = ("modes", "regression", "distribution")
STREAM_BAND_MB = 64


def open_source(name: str, spec: dict[str, Any]) -> xr.Dataset:
    """Open the source of field ``name`` as described by its config entry ``spec``."""
    source = spec.get("source")
    if source not in SOURCES:
        raise ValueError(f"Field {name!r}: source must be one of {', '.join(SOURCES)}; got {source!r}.")
    if source == "synthetic":
        return _synthetic(name, spec)
    path = Path(spec.get("path", ""))
    if not spec.get("path") or not path.exists():
        raise FileNotFoundError(f"Field {name!r}: the {source} source {str(path)!r} does not exist.")
    try:
        if source == "zarr":
            with warnings.catch_warnings():  # stores without consolidated metadata are fine
                warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated")
                return xr.open_zarr(path, consolidated=None)
        return xr.open_dataset(path, decode_timedelta=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"Field {name!r}: could not read {str(path)!r} as {source} ({err}).") from err


def _synthetic(name: str, spec: dict[str, Any]) -> xr.Dataset:
    kind = spec.get("kind", "modes")
    options = dict(spec.get("options") or {})
    if kind == "modes":
        return synthetic.planted_modes(**options)
    if kind == "distribution":
        return synthetic.planted_distribution(**options)
    if kind == "regression":
        other = spec.get("predictors_spec")
        if not other or other.get("kind", "modes") != "modes":
            raise ValueError(
                f"Field {name!r}: a synthetic regression field needs 'predictors_from' naming a "
                "synthetic field of kind 'modes'."
            )
        planted = synthetic.planted_modes(**(other.get("options") or {}))
        return synthetic.planted_regression(planted["true_pc"].values, time=planted["time"].values, **options)
    raise ValueError(f"Field {name!r}: synthetic kind must be one of {', '.join(SYNTHETIC_KINDS)}; got {kind!r}.")


def canonical_field(ds: xr.Dataset, name: str, spec: dict[str, Any]) -> xr.Dataset:
    """Pick the variable and bring it to canonical ``(time, lat, lon)`` form.

    Parameters
    ----------
    ds : xr.Dataset
        The opened source.
    name : str
        The field's name in the config (used in messages and attributes).
    spec : dict
        The field's config entry: ``variable`` (optional when the source has a
        single data variable), ``select`` (coordinate values to pick on extra
        axes, e.g. ``{pressure: 500}``), ``years`` (``[first, last]``),
        ``units`` and ``long_name`` (override the source's attributes).
    """
    variable = spec.get("variable") or ("field" if spec.get("source") == "synthetic" else None)
    if variable is None:
        candidates = [v for v in ds.data_vars if ds[v].ndim >= 3]
        if len(candidates) != 1:
            raise ValueError(
                f"Field {name!r}: set 'variable' to one of {', '.join(map(str, ds.data_vars))}."
            )
        variable = candidates[0]
    if variable not in ds.data_vars:
        raise ValueError(
            f"Field {name!r}: variable {variable!r} is not in the source; it has {', '.join(map(str, ds.data_vars)) or 'no variables'}."
        )
    da = _rename_dims(ds[variable], name)
    for dim, value in (spec.get("select") or {}).items():
        if dim not in da.dims:
            raise ValueError(f"Field {name!r}: 'select' names {dim!r}, which is not a dimension of {variable!r}.")
        da = da.sel({dim: value}, method="nearest")
    extra = [d for d in da.dims if d not in ("time", "lat", "lon")]
    singleton = [d for d in extra if da.sizes[d] == 1]
    da = da.squeeze(singleton, drop=True)
    extra = [d for d in extra if d not in singleton]
    if extra:
        raise ValueError(
            f"Field {name!r}: variable {variable!r} has extra dimensions {extra}; pick one level with "
            f"'select' (e.g. select: {{{extra[0]}: <value>}})."
        )
    if spec.get("years"):
        first, last = spec["years"]
        years = da["time"].dt.year
        da = da.isel(time=((years >= first) & (years <= last)).values)
        if da.sizes["time"] == 0:
            raise ValueError(f"Field {name!r}: no time step falls in years {first}-{last}.")
    da = da.transpose("time", "lat", "lon").sortby("lat")
    if not np.issubdtype(da.dtype, np.floating):
        da = da.astype(np.float64)
    return _attributes(da, ds, name, variable, spec)


def _rename_dims(da: xr.DataArray, name: str) -> xr.DataArray:
    renames = {}
    for canonical, aliases in ALIASES.items():
        found = [d for d in da.dims if str(d).lower() in aliases]
        if not found:
            raise ValueError(
                f"Field {name!r}: variable {da.name!r} has no {canonical} dimension "
                f"(looked for {', '.join(aliases)}; it has {', '.join(map(str, da.dims))})."
            )
        if found[0] != canonical:
            renames[found[0]] = canonical
    return da.rename(renames)


def _attributes(da: xr.DataArray, ds: xr.Dataset, name: str, variable: str, spec: dict[str, Any]) -> xr.Dataset:
    units = spec.get("units") or da.attrs.get("units", "1")
    coords = {"time": da["time"].values, "lat": da["lat"].values.astype(np.float64), "lon": da["lon"].values.astype(np.float64)}
    field = xr.DataArray(da.variable.data, dims=da.dims, coords=coords)  # still lazy for a lazily opened source
    field.attrs = {
        "units": units,
        "long_name": spec.get("long_name") or da.attrs.get("long_name", name),
        "source_variable": variable,
    }
    if "standard_name" in da.attrs:
        field.attrs["standard_name"] = da.attrs["standard_name"]
    out = xr.Dataset({"field": field})
    truth = [v for v in ds.data_vars if str(v).startswith("true_") or v in ("land", "predictors")]
    for v in truth:
        out[v] = ds[v]
    out["lat"].attrs.update(units="degrees_north", standard_name="latitude", long_name="latitude")
    out["lon"].attrs.update(units="degrees_east", standard_name="longitude", long_name="longitude")
    out["time"].attrs.update(standard_name="time", long_name="time")
    source = "synthetic" if spec.get("source") == "synthetic" else str(spec.get("path"))
    out.attrs = {"field_name": name, "field_units": units, "source": source, "Conventions": "CF-1.10"}
    return out


def compute(name: str, spec: dict[str, Any]) -> xr.Dataset:
    """Open the source of field ``name`` and return its canonical Dataset (in memory)."""
    ds = open_source(name, spec)
    try:
        out = canonical_field(ds, name, spec).load()
    finally:
        ds.close()
    _check_not_empty(out["field"], name)
    log.info(
        "ingested %s from %s: %d time steps x %d lat x %d lon, %.1f%% missing",
        name,
        out.attrs["source"],
        *out["field"].shape,
        100 * float(out["field"].isnull().mean()),
    )
    return out


def _check_not_empty(field: xr.DataArray, name: str) -> None:
    if not bool(field.notnull().any()):
        raise ValueError(f"Field {name!r}: variable {field.attrs['source_variable']!r} is missing (NaN) everywhere.")


def stream_copy(canon: xr.Dataset, output: str | os.PathLike, *, params: dict[str, Any],
                band_mb: float = STREAM_BAND_MB) -> None:
    """Write a lazily opened canonical field to ``output`` band by band (bounded memory).

    The store is chunked for the EOF stages: all time steps, a band of
    latitudes, all longitudes (``band_mb`` per chunk at most, split along
    longitude if one latitude row is larger).
    """
    field = canon["field"]
    n_time, n_lat, n_lon = field.shape
    row = n_time * n_lon * field.dtype.itemsize
    rows = max(1, min(n_lat, int(band_mb * 2**20 // row)))
    lon_chunk = n_lon if row <= band_mb * 2**20 else max(1, int(band_mb * 2**20 // (n_time * field.dtype.itemsize)))
    template = canon.drop_vars("field")
    empty = True
    with streamed_field_store(output, template, shape=field.shape, dtype=field.dtype, chunks=(n_time, rows, lon_chunk),
                              field_attrs=dict(field.attrs), stage="ingest", params=params) as array:
        for i0 in range(0, n_lat, rows):
            band = np.asarray(field.isel(lat=slice(i0, i0 + rows)).values)
            empty = empty and bool(np.isnan(band).all())
            array[:, i0 : i0 + rows, :] = band
            log.info("ingest %s: latitude rows %d-%d of %d copied", canon.attrs["field_name"], i0, i0 + band.shape[1], n_lat)
        if empty:
            _check_not_empty(xr.DataArray([np.nan], attrs=field.attrs), canon.attrs["field_name"])


def run(name: str, output: str | os.PathLike, *, params: dict[str, Any]) -> None:
    """Ingest field ``name`` (config entry ``params``) into the Zarr store ``output``.

    Small fields are read whole; a field larger than ``stream_above_mb`` (a key
    of the field's entry, default 512) is copied band by band, and a synthetic
    field with ``stream: true`` is generated straight into the store, so
    neither ever sits whole in memory.
    """
    if params.get("source") == "synthetic" and params.get("stream"):
        options = dict(params.get("options") or {})
        synthetic.write_planted_modes_store(output, field_name=name, units=params.get("units", "K"), **options)
        return
    ds = open_source(name, params)
    try:
        canon = canonical_field(ds, name, params)
        if canon["field"].nbytes > params.get("stream_above_mb", 512) * 2**20:
            stream_copy(canon, output, params=params)
            return
        out = canon.load()
    finally:
        ds.close()
    _check_not_empty(out["field"], name)
    write_store(out, output, stage="ingest", params=params)
