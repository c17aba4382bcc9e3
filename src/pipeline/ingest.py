"""Ingest: any source becomes the canonical ``(time, lat, lon)`` field store that is analysed.

:func:`pipeline.sources.open_field` opens the source (a netCDF file, a Zarr
store, a glob or list of files, or a synthetic field with planted truth) as
one lazy canonical field; :mod:`pipeline.temporal` then applies the field's
time handling (years, climatology, aggregation, detrending). The result has
dimensions exactly ``(time, lat, lon)``, latitudes ascending, missing values
NaN, CF attributes, and -- when asked for -- the ``climatology`` that was
subtracted and the ``trend`` that was removed.

A field larger than ``stream_above_mb`` is processed band by band of
latitudes (every operation works cell by cell), so it never sits whole in
memory. The source is only read.

Both paths read the source through :func:`pipeline.sources.open_field`,
which checks what it reads: coordinates when the files are opened, values
box by box (an infinite value stops the ingest naming its file, date and
cell, or is read as missing under ``nonfinite: mask``), so bad data stop
the ingest before a store is in place.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import xarray as xr

from pipeline import io, sources, synthetic, temporal
from pipeline.io import BOUNDS, BOUNDS_DIM, streamed_field_store, write_store

log = logging.getLogger(__name__)

STREAM_BAND_MB = 64
"""Largest latitude band read at once when a field is streamed."""
WORKING_COPIES = 6
"""Float64 band-sized temporaries of the time handling (cast, kept steps, anomaly, result, detrend)."""
READ_COPIES = 4
"""Band-sized buffers alive while a band is read (decoded chunks, compressed bytes, the band), measured."""
CELL_METHODS = {"mean": "mean", "max": "maximum", "min": "minimum"}
"""CF ``cell_methods`` name of each ``aggregate.statistic``."""


def _plan(canon: xr.Dataset, name: str, spec: dict[str, Any]) -> temporal.TimePlan:
    return temporal.plan(canon["time"].values, temporal.spec_of(name, spec), name)


def _template(canon: xr.Dataset, p: temporal.TimePlan) -> xr.Dataset:
    """Everything of the output store but ``field``, ``climatology`` and ``trend``: coordinates, truth, attributes.

    The source's bounds follow the time steps kept; an aggregated time axis
    gets the bounds of its blocks (:func:`pipeline.temporal.block_bounds`).
    """
    out = canon.drop_vars("field")
    if p.spec.season is not None:  # a new time axis: time-dependent truth no longer applies
        timed = [v for v in out.data_vars if "time" in out[v].dims]
        out = out.drop_vars([*timed, "time"]).assign_coords(time=("time", p.time, dict(canon["time"].attrs)))
        out[BOUNDS["time"]] = (("time", BOUNDS_DIM), temporal.block_bounds(p))
    elif p.keep.size < p.n_in:
        out = out.isel(time=p.keep)
    if p.groups is not None:
        slot = ("calendar day (29 February is day 60 and 1 March day 61 in every year of a calendar with leap "
                "years)" if p.group_dim == "dayofyear" else "calendar month")
        out = out.assign_coords({p.group_dim: (p.group_dim, np.arange(1, p.n_groups + 1),
                                               {"long_name": slot, "units": "1"})})
    described = p.describe()
    if described:
        out.attrs["time_processing"] = described
    return out


def _attrs(canon: xr.Dataset, p: temporal.TimePlan) -> dict[str, dict[str, Any]]:
    """Attributes of ``field``, ``climatology`` and ``trend``.

    An aggregated field's ``cell_methods`` gains ``time: mean``, ``time:
    maximum`` or ``time: minimum`` (after the source's own, if any): each
    value is that statistic over the block its time bounds span.
    """
    field = dict(canon["field"].attrs)
    units, long_name = field.get("units", "1"), field.get("long_name", canon.attrs.get("field_name", "field"))
    described = p.describe()
    if described:
        field["time_processing"] = described
    if p.spec.season is not None:
        method = f"time: {CELL_METHODS[p.spec.statistic]}"
        field["cell_methods"] = f"{field['cell_methods']} {method}" if field.get("cell_methods") else method
    base = p.spec.base_period or p.spec.years
    period = f"{base[0]}-{base[1]}" if base else "the whole record"
    return {
        "field": field,
        "climatology": {"long_name": f"{p.spec.climatology} climatology of {long_name} ({period})", "units": units},
        "trend": {"long_name": f"linear trend of {long_name}, removed", "units": f"{units} year-1"},
    }


def _assemble(canon: xr.Dataset, p: temporal.TimePlan, result: temporal.Processed) -> xr.Dataset:
    """The output Dataset of an in-memory field from its processed arrays."""
    out = _template(canon, p)
    attrs = _attrs(canon, p)
    dtype = canon["field"].dtype
    out["field"] = (("time", "lat", "lon"), result.field.astype(dtype, copy=False), attrs["field"])
    if result.climatology is not None:
        out["climatology"] = ((p.group_dim, "lat", "lon"), result.climatology, attrs["climatology"])
    if result.trend is not None:
        out["trend"] = (("lat", "lon"), result.trend, attrs["trend"])
    return out[["field", *[v for v in out.data_vars if v != "field"]]]


def compute(name: str, spec: dict[str, Any]) -> xr.Dataset:
    """Open the source of field ``name``, apply its time handling, and return the Dataset (in memory)."""
    canon = sources.open_field(name, spec)
    try:
        p = _plan(canon, name, spec)
        canon = canon.load()
    finally:
        canon.close()
    out = canon if p.identity else _assemble(canon, p, temporal.apply(canon["field"].values, p))
    _check_not_empty(out["field"], name)
    log.info("ingested %s from %s: %d time steps x %d lat x %d lon, %.1f%% missing%s", name, out.attrs["source"],
             *out["field"].shape, 100 * float(out["field"].isnull().mean()),
             f" ({p.describe()})" if p.describe() else "")
    return out


def _check_not_empty(field: xr.DataArray, name: str) -> None:
    if not bool(field.notnull().any()):
        raise ValueError(f"Field {name!r}: variable {field.attrs.get('source_variable', name)!r} is missing (NaN) "
                         "everywhere after ingest.")


def band_bytes(itemsize: int, processed: bool, stream_above_mb: float, band_mb: float = STREAM_BAND_MB) -> int:
    """Source bytes per band so that a streamed field's working set stays within ``stream_above_mb``."""
    copies = max(READ_COPIES, 1.0 + WORKING_COPIES * 8.0 / itemsize) if processed else READ_COPIES
    return max(1, int(min(band_mb, stream_above_mb / copies) * 2**20))


def stream_copy(canon: xr.Dataset, output: str | os.PathLike, *, params: dict[str, Any],
                p: temporal.TimePlan | None = None, band_mb: float = STREAM_BAND_MB,
                files: list[str] | None = None, output_options: dict[str, Any] | None = None) -> None:
    """Write a lazily opened canonical field to ``output`` band by band, time handling applied (bounded memory).

    The store is chunked for the EOF stages: all time steps, a band of
    latitudes, all longitudes (split along longitude if one latitude row is
    larger than a band). Each band is read, processed by
    :func:`pipeline.temporal.apply` and written before the next is read.
    ``output_options``: the ``output`` config section (:func:`pipeline.io.output_options`).
    """
    field = canon["field"]
    name = canon.attrs.get("field_name", "field")
    p = p or _plan(canon, name, params)
    n_in, n_lat, n_lon = field.shape
    n_out = p.time.size
    budget = band_bytes(field.dtype.itemsize, not p.identity, params.get("stream_above_mb", 512), band_mb)
    row = n_in * n_lon * field.dtype.itemsize
    rows = max(1, min(n_lat, budget // row))
    cols = n_lon if row <= budget else max(1, budget // (n_in * field.dtype.itemsize))
    attrs = _attrs(canon, p)
    extra = {}
    if p.groups is not None:
        extra["climatology"] = ((p.group_dim, "lat", "lon"), (p.n_groups, n_lat, n_lon), (p.n_groups, rows, cols),
                                attrs["climatology"])
    if p.spec.detrend != "none":
        extra["trend"] = (("lat", "lon"), (n_lat, n_lon), (rows, cols), attrs["trend"])
    empty = True
    with streamed_field_store(output, _template(canon, p), shape=(n_out, n_lat, n_lon), dtype=field.dtype,
                              chunks=(n_out, rows, cols), field_attrs=attrs["field"], stage="ingest", params=params,
                              extra=extra, sources=files, output=output_options) as arrays:
        for i0 in range(0, n_lat, rows):
            for j0 in range(0, n_lon, cols):
                box = (slice(i0, i0 + rows), slice(j0, j0 + cols))
                band = np.asarray(field.isel(lat=box[0], lon=box[1]).values)
                result = temporal.apply(band, p)
                empty = empty and bool(np.isnan(result.field).all())
                arrays["field"][:, box[0], box[1]] = result.field.astype(field.dtype, copy=False)
                if result.climatology is not None:
                    arrays["climatology"][:, box[0], box[1]] = result.climatology
                if result.trend is not None:
                    arrays["trend"][box[0], box[1]] = result.trend
                band = result = None  # let go before the next read
            log.info("ingest %s: latitude rows %d-%d of %d done", name, i0, min(i0 + rows, n_lat), n_lat)
        if empty:
            _check_not_empty(xr.DataArray([np.nan], attrs=attrs["field"]), name)


def run(name: str, output: str | os.PathLike, *, params: dict[str, Any],
        output_options: dict[str, Any] | None = None) -> None:
    """Ingest field ``name`` (config entry ``params``) into the Zarr store ``output``.

    Small fields are read whole; a field larger than ``stream_above_mb`` (a key
    of the field's entry, default 512) is processed band by band, and a
    synthetic field with ``stream: true`` is generated straight into the
    store, so neither ever sits whole in memory. The store records a SHA-256
    of each source file (``pipeline_source_sha256``). ``output_options``: the
    ``output`` config section (Zarr format, netCDF copy; a streamed synthetic
    store is always Zarr format 3).
    """
    options = io.output_options(output_options)
    if params.get("source") == "synthetic" and params.get("stream"):
        if temporal.spec_of(name, params).active or params.get("years"):
            raise ValueError(f"Field {name!r}: a streamed synthetic field takes no time handling (years, "
                             "climatology, aggregate, detrend); leave those keys out.")
        synthetic_options = dict(params.get("options") or {})
        synthetic.write_planted_modes_store(output, field_name=name, units=params.get("units", "K"),
                                            **synthetic_options)
        if options["netcdf"]:
            io.export_netcdf(output)
        return
    files = None if params.get("source") == "synthetic" else [str(f) for f in sources.resolve_paths(name, params)[0]]
    canon = sources.open_field(name, params)
    try:
        p = _plan(canon, name, params)
        if canon["field"].nbytes > params.get("stream_above_mb", 512) * 2**20:
            stream_copy(canon, output, params=params, p=p, files=files, output_options=options)
            return
        canon = canon.load()
    finally:
        canon.close()
    out = canon if p.identity else _assemble(canon, p, temporal.apply(canon["field"].values, p))
    _check_not_empty(out["field"], name)
    if p.describe():
        log.info("ingest %s: %s", name, p.describe())
    write_store(out, output, stage="ingest", params=params, sources=files, output=options)
