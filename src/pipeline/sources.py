"""Open a field's source as one lazy canonical ``(time, lat, lon)`` field.

A field's config entry names its source (``source: netcdf | zarr |
synthetic``) and, for files, a ``path``: one netCDF file, one Zarr store
(format 2 or 3), a glob pattern (``data/tos_Omon_*.nc``, matched with
:func:`glob.glob` and sorted) or a list of files. :func:`open_field` opens
every file with xarray, lazily and without dask, brings each to canonical form
and joins them along time into *one* lazy variable: reading any box of it
(``field.isel(lat=slice(a, b)).values``) reads only that box from each file,
so a field larger than memory can be copied band by band.

Time is decoded here, not by xarray: the stored numbers of each file go
through :func:`pipeline.timeaxis.decode` with the file's own units and
calendar, or with ``time_units`` / ``calendar`` from the config when given
(so ``months since 1958-01-01`` and mislabelled files are readable).

The data are checked as they are read, so nothing reaches the analysis
silently different from the source: coordinates when a file is opened (no
NaN in time, lat or lon; latitudes within [-90, 90]; no repeated latitude or
longitude; longitudes made one increasing run, a date-line wrap rolled),
``select`` values matched exactly (nearest only within ``select_tolerance``,
the value used recorded in the field's ``selected`` attribute), and values
box by box as they are read (``inf`` is an error naming the file, date and
cell, or missing with a warning under ``nonfinite: mask``).
"""

from __future__ import annotations

import glob
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from pipeline import coords, synthetic, timeaxis
from pipeline.grid import canonical_dims
from pipeline.io import BOUNDS, BOUNDS_DIM

log = logging.getLogger(__name__)

SOURCES = ("netcdf", "zarr", "synthetic")
SYNTHETIC_KINDS = ("modes", "regression", "distribution", "daily_extremes")
DIMS = ("time", "lat", "lon")
_GLOB_CHARS = "*?["
_BENIGN_TIME_WARNINGS = ("Unable to decode time axis into full numpy.datetime64", "Ambiguous reference date string")
NONFINITE = ("error", "mask")


def open_field(name: str, spec: dict[str, Any]) -> xr.Dataset:
    """The source of field ``name`` (config entry ``spec``) as a lazy canonical Dataset.

    Parameters
    ----------
    name : str
        The field's name in the config (used in messages and attributes).
    spec : dict
        The field's config entry: ``source``, ``path`` (file, Zarr store, glob
        pattern or list of files), ``variable`` (optional when each file has
        one variable of 3 or more dimensions), ``select`` (values to pick on
        extra axes, exactly) and ``select_tolerance`` (a distance, or a
        mapping axis -> distance, within which the nearest value is taken
        instead), ``time_units`` and ``calendar`` (override the files'),
        ``units`` and ``long_name`` (override the variable's attributes),
        ``nonfinite`` (``error``, the default, or ``mask``: infinite values
        read as NaN, with a warning). ``years`` is not applied here.

    Returns
    -------
    xr.Dataset
        ``field(time, lat, lon)`` (float, latitudes ascending, longitudes one
        increasing run, time sorted), lazily read from the files, its
        ``selected`` attribute giving the values ``select`` used; ``time``
        decoded, ``lat``/``lon`` float64 with CF attributes; the source's
        bounds of each axis that has them (``time_bnds``, ``lat_bnds``,
        ``lon_bnds`` along ``bnds``; time bounds only when every file has them);
        the planted-truth
        variables of a synthetic or single-file source; attributes ``field_name``, ``field_units``,
        ``source``, ``source_files`` and ``Conventions``. ``close()`` closes
        every file.

    Raises
    ------
    FileNotFoundError
        If a file or store is missing, or a pattern matches nothing.
    ValueError
        If a file cannot be read, lacks the variable or an axis, has time
        steps that cannot be decoded, a coordinate is invalid (NaN, latitude
        beyond +-90, a repeated value), a ``select`` value is not in its
        coordinate, or the files disagree (grid, calendar, selection,
        repeated or overlapping time steps). Reading the field raises it for
        an infinite value unless ``nonfinite`` is ``mask``.
    """
    if not isinstance(spec, dict):
        raise TypeError(f"Field {name!r}: the config entry must be a mapping; got {type(spec).__name__}.")
    source = spec.get("source")
    if source not in SOURCES:
        raise ValueError(f"Field {name!r}: source must be one of {', '.join(SOURCES)}; got {source!r}.")
    nonfinite = spec.get("nonfinite", "error")
    if nonfinite not in NONFINITE:
        raise ValueError(f"Field {name!r}: nonfinite must be one of {', '.join(NONFINITE)}; got {nonfinite!r}.")
    coords.tolerances(name, spec)
    if source == "synthetic":
        return _open_synthetic(name, spec)
    paths, label = resolve_paths(name, spec)
    opened: list[xr.Dataset] = []
    try:
        pieces = []
        for path in paths:
            opened.append(_open_file(name, source, path))
            pieces.append(_piece(opened[-1], name, spec, path))
        pieces = _check_and_order(pieces, name)
        out = _assemble(pieces, name, spec, label)
    except BaseException:
        for ds in opened:
            ds.close()
        raise
    out.set_close(lambda: [ds.close() for ds in opened])
    return out


# ---------------------------------------------------------------- paths and files


def resolve_paths(name: str, spec: dict[str, Any]) -> tuple[list[Path], str]:
    """The files of field ``name`` (a glob expanded, sorted), and the ``source`` label (path, pattern or list)."""
    raw = spec.get("path")
    if raw is None or (isinstance(raw, (str, list, tuple)) and len(raw) == 0):
        raise ValueError(f"Field {name!r}: set fields.{name}.path to a file, a Zarr store, a glob pattern or a list of files.")
    if isinstance(raw, (list, tuple)):
        paths = [Path(p) for p in raw]
        for p in paths:
            if not p.exists():
                raise FileNotFoundError(f"Field {name!r}: the file {str(p)!r} listed in fields.{name}.path does not exist.")
        return paths, ", ".join(str(p) for p in raw)
    if not isinstance(raw, (str, os.PathLike)):
        raise TypeError(f"Field {name!r}: fields.{name}.path must be a string or a list of strings; got {type(raw).__name__}.")
    text = str(raw)
    if Path(text).exists():
        return [Path(text)], text
    if any(c in text for c in _GLOB_CHARS):
        matches = sorted(glob.glob(text))
        if not matches:
            raise FileNotFoundError(f"Field {name!r}: no file matches the pattern {text!r} of fields.{name}.path.")
        return [Path(m) for m in matches], text
    raise FileNotFoundError(f"Field {name!r}: the {spec['source']} source {text!r} does not exist; check fields.{name}.path.")


def _open_file(name: str, source: str, path: Path) -> xr.Dataset:
    """One file or store, lazily (no dask, no cache), with CF masking/scaling but raw time numbers."""
    zarr = source == "zarr" or path.is_dir()
    try:
        with warnings.catch_warnings():  # stores without consolidated metadata, Snakemake's timestamp file
            warnings.filterwarnings("ignore", message="Failed to open Zarr store with consolidated")
            warnings.filterwarnings("ignore", message="Object at .snakemake_timestamp is not recognized")
            return xr.open_dataset(path, engine="zarr" if zarr else None, chunks=None, cache=False,
                                   decode_times=False, decode_timedelta=False, mask_and_scale=True,
                                   **({"consolidated": None} if zarr else {}))
    except (OSError, ValueError, TypeError, KeyError) as err:
        kind = "a Zarr store" if zarr else "a netCDF file"
        raise ValueError(f"Field {name!r}: could not read {str(path)!r} as {kind} ({err}); check fields.{name}.path "
                         f"and fields.{name}.source.") from err


# ---------------------------------------------------------------- one file in canonical form


@dataclass
class _Piece:
    """One file of a field: its variable and how to read it in canonical order.

    ``var`` keeps the file's dimension order (``dims``, a permutation of
    ``time, lat, lon``); ``time_index``, ``lat_index`` and ``lon_index`` map
    canonical (sorted) positions to the file's own. ``selected`` is what
    ``select`` picked, as ``(axis, asked, used)``; ``bounds`` the file's
    bounds of each axis that has them, ``(n, 2)`` in canonical order.
    """

    path: Path
    var: xr.Variable
    dims: tuple[str, ...]
    time: np.ndarray
    keys: np.ndarray
    calendar: str
    time_index: np.ndarray
    lat: np.ndarray
    lat_index: np.ndarray
    lon: np.ndarray
    lon_index: np.ndarray
    attrs: dict
    variable: str
    truth: dict
    selected: list[tuple[str, Any, Any]]
    bounds: dict[str, np.ndarray]


def _choose_variable(ds: xr.Dataset, name: str, spec: dict[str, Any], where: str) -> str:
    variable = spec.get("variable")
    if variable is None:
        candidates = [str(v) for v in ds.data_vars if ds[v].ndim >= 3]
        if len(candidates) != 1:
            raise ValueError(f"Field {name!r}: set fields.{name}.variable to one of "
                             f"{', '.join(map(str, ds.data_vars)) or 'its variables'} ({where}).")
        return candidates[0]
    if variable not in ds.data_vars:
        raise ValueError(f"Field {name!r}: variable {variable!r} is not in the source {where}; it has "
                         f"{', '.join(map(str, ds.data_vars)) or 'no variables'}.")
    return str(variable)


def _three_axes(ds: xr.Dataset, name: str, spec: dict[str, Any],
                where: str) -> tuple[xr.DataArray, str, list[tuple[str, Any, Any]]]:
    """The chosen variable with its axes renamed, ``select`` applied and singleton axes dropped.

    Also returns what ``select`` picked: ``(axis, asked, used)`` per axis.
    """
    variable = _choose_variable(ds, name, spec, where)
    da = canonical_dims(ds[variable], f"variable {variable!r} of field {name!r} ({where})")
    tolerances = coords.tolerances(name, spec)
    selected = []
    for dim, value in (spec.get("select") or {}).items():
        if dim in DIMS:
            raise ValueError(f"Field {name!r}: 'select' picks a value of an extra axis; {dim!r} is one of time, lat, lon.")
        if dim not in da.dims:
            raise ValueError(f"Field {name!r}: 'select' names {dim!r}, which is not a dimension of {variable!r} ({where}).")
        da, used = coords.select(da, str(dim), value, tolerances.get(str(dim)), name, where)
        selected.append((str(dim), value, used))
    extra = [str(d) for d in da.dims if d not in DIMS]
    da = da.squeeze([d for d in extra if da.sizes[d] == 1], drop=True)
    extra = [d for d in extra if d in da.dims]
    if extra:
        raise ValueError(f"Field {name!r}: variable {variable!r} has extra dimensions {extra} ({where}); pick one "
                         f"level with 'select' (e.g. select: {{{extra[0]}: <value>}}).")
    return da, variable, selected


def _decoded_time(da: xr.DataArray, name: str, spec: dict[str, Any], where: str) -> tuple[np.ndarray, str]:
    """The dates of the time axis, decoded with the file's or the config's units and calendar."""
    values = np.asarray(da["time"].values)
    attrs = da["time"].attrs
    missing = np.isnat(values) if values.dtype.kind in "mM" else (
        np.isnan(values) if values.dtype.kind == "f" else np.zeros(values.shape, dtype=bool))
    if missing.any():
        coords.missing_coordinate("time", int(np.flatnonzero(missing)[0]), values.size, name, where)
    if values.dtype.kind == "M" or (values.dtype == object and timeaxis.is_dates(values)):
        return values, timeaxis.calendar_of(values) if values.size else "standard"
    units = spec.get("time_units") or attrs.get("units")
    calendar = spec.get("calendar") or attrs.get("calendar") or "standard"
    if not units:
        raise ValueError(f"Field {name!r}: the time axis of {where} has no units; set fields.{name}.time_units "
                         "(e.g. 'days since 1950-01-01' or 'months since 1958-01-01').")
    try:
        cal = timeaxis.canonical_calendar(str(calendar))
        with warnings.catch_warnings():  # benign: cftime dates before 1582, a reference year written '1-1-1'
            for message in _BENIGN_TIME_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            return timeaxis.decode(values, str(units), cal), cal
    except (ValueError, TypeError, OverflowError) as err:
        raise ValueError(f"Field {name!r}: could not decode the time axis of {where} with units {units!r} and calendar "
                         f"{calendar!r} ({err}); set fields.{name}.time_units and fields.{name}.calendar.") from err


def _piece(ds: xr.Dataset, name: str, spec: dict[str, Any], path: Path) -> _Piece:
    where = repr(str(path))
    da, variable, selected = _three_axes(ds, name, spec, where)
    if da.sizes["time"] == 0:
        raise ValueError(f"Field {name!r}: {where} has no time steps; remove it from fields.{name}.path.")
    time, calendar = _decoded_time(da, name, spec, where)
    keys = timeaxis.ordinal_days(time)
    time_index = np.argsort(keys, kind="stable")
    if np.any(np.diff(keys) < 0) and np.all(np.diff(keys[time_index]) > 0):
        log.info("field %s: the %d time steps of %s are not in order; sorted them", name, keys.size, path)
    lat = coords.checked_axis(da, "lat", name, where)
    lon = coords.checked_axis(da, "lon", name, where)
    lat_index = coords.lat_order(lat)
    lon_index, lon = coords.lon_order(lon, name, where)
    centres = {"time": keys[time_index], "lat": lat[lat_index], "lon": lon}
    order = {"time": time_index, "lat": lat_index, "lon": lon_index}
    bounds = {axis: b for axis in DIMS
              if (b := _axis_bounds(ds, da, axis, order[axis], centres[axis], spec, calendar, name, where)) is not None}
    return _Piece(path=path, var=da.variable, dims=tuple(str(d) for d in da.dims), time=time[time_index],
                  keys=keys[time_index], calendar=calendar, time_index=time_index, lat=lat[lat_index],
                  lat_index=lat_index, lon=lon, lon_index=lon_index, attrs=dict(da.attrs), variable=variable,
                  truth=_truth(ds, time_index, lat_index, lon_index), selected=selected, bounds=bounds)


def _axis_bounds(ds: xr.Dataset, da: xr.DataArray, axis: str, index: np.ndarray, centre: np.ndarray,
                 spec: dict[str, Any], calendar: str, name: str, where: str) -> np.ndarray | None:
    """The source's bounds of ``axis`` (CF ``bounds``), ``(n, 2)`` in canonical order, or None.

    Time bounds are decoded like the time axis; longitude bounds move by the
    whole turns that bring each edge nearest its cell's (canonical) longitude.
    Each row is ordered lower, upper. Bounds that are not a ``(n, 2)`` variable,
    cannot be decoded or do not hold their coordinate value are left out, with
    a log line.
    """
    label = da[axis].attrs.get("bounds")
    if not isinstance(label, str) or label not in ds.variables:
        return None
    raw = ds[label].variable
    if raw.shape != (centre.size, 2):
        log.info("field %s: the %s bounds %r of %s are not one (%s, 2) variable; left out", name, axis, label, where,
                 axis)
        return None
    values = np.asarray(raw.values)[index]
    try:
        if axis == "time":
            values = _decoded_time_bounds(values, da, spec, calendar)
            edges = timeaxis.ordinal_days(values.ravel()).reshape(values.shape)
        else:
            values = edges = values.astype(np.float64)
    except (ValueError, TypeError, OverflowError) as err:
        log.info("field %s: the %s bounds %r of %s cannot be read (%s); left out", name, axis, label, where, err)
        return None
    if axis == "lon":
        values = edges = values + 360.0 * np.round((centre[:, None] - values) / 360.0)
    swap = edges[:, 0] > edges[:, 1]
    values, edges = np.where(swap[:, None], values[:, ::-1], values), np.where(swap[:, None], edges[:, ::-1], edges)
    if not np.all((edges[:, 0] <= centre) & (centre <= edges[:, 1])):
        log.info("field %s: the %s bounds %r of %s do not hold their %s values; left out", name, axis, label, where,
                 axis)
        return None
    return values


def _decoded_time_bounds(values: np.ndarray, da: xr.DataArray, spec: dict[str, Any], calendar: str) -> np.ndarray:
    """Time bounds as dates, decoded with the time axis' units (CF: bounds share them) and calendar."""
    if values.dtype.kind == "M" or (values.dtype == object and timeaxis.is_dates(values.ravel())):
        return values
    units = spec.get("time_units") or da["time"].attrs.get("units")
    if not units:
        raise ValueError("the time axis has no units")
    with warnings.catch_warnings():
        for message in _BENIGN_TIME_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        return np.asarray(timeaxis.decode(values.ravel(), str(units), calendar)).reshape(values.shape)


def _is_truth(variable: Any) -> bool:
    return str(variable).startswith("true_") or variable in ("land", "predictors")


def _truth(ds: xr.Dataset, time_index: np.ndarray, lat_index: np.ndarray,
           lon_index: np.ndarray) -> dict[str, xr.DataArray]:
    """Planted-truth variables of a file (``true_*``, ``land``, ``predictors``), in canonical order, loaded.

    Their time/lat/lon coordinates are dropped: the field's apply.
    """
    out = {}
    order = {"time": time_index, "lat": lat_index, "lon": lon_index}
    for v in filter(_is_truth, ds.data_vars):
        da = canonical_dims(ds[v], f"variable {v!r}", require=())
        da = da.isel({d: order[d] for d in da.dims if d in order and da.sizes[d] == order[d].size})
        da = da.drop_vars([c for c in da.coords if c in DIMS or c not in da.dims])
        out[str(v)] = da.load()
    return out


# ---------------------------------------------------------------- several files: checks and order


def _date_text(time: np.ndarray, i: int) -> str:
    y, m, d = (int(a[0]) for a in timeaxis.date_fields(np.asarray(time)[[i]]))
    return f"{y:04d}-{m:02d}-{d:02d}"


def _same_axis(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal values, also when one file stores them as float32 and the other as float64."""
    if a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b) or np.array_equal(a.astype(np.float32), b.astype(np.float32)))


def _check_and_order(pieces: list[_Piece], name: str) -> list[_Piece]:
    """The pieces ordered by first time step, after checking that they form one field."""
    first = pieces[0]
    for p in pieces[1:]:
        if p.calendar != first.calendar:
            raise ValueError(f"Field {name!r}: {str(p.path)!r} uses calendar {p.calendar!r} but {str(first.path)!r} uses "
                             f"{first.calendar!r}; set fields.{name}.calendar to the files' true calendar.")
        if p.time.dtype.kind != first.time.dtype.kind:
            raise ValueError(f"Field {name!r}: the dates of {str(p.path)!r} and {str(first.path)!r} decode to different "
                             f"types (one before 1582 in the standard calendar); set fields.{name}.calendar to "
                             "proleptic_gregorian.")
    for p in pieces[1:]:
        if _selected_text(p.selected) != _selected_text(first.selected):
            raise ValueError(f"Field {name!r}: select uses {_selected_text(p.selected)} in {str(p.path)!r} but "
                             f"{_selected_text(first.selected)} in {str(first.path)!r}; all files of a field must give "
                             f"the same selection, so lower fields.{name}.select_tolerance or fix the files.")
        for axis in ("lat", "lon"):
            if not _same_axis(getattr(p, axis), getattr(first, axis)):
                raise ValueError(f"Field {name!r}: the {axis} coordinates of {str(p.path)!r} differ from those of "
                                 f"{str(first.path)!r}; all files of a field must share one grid.")
    _check_duplicates(pieces, name)
    pieces = sorted(pieces, key=lambda p: p.keys[0])
    for a, b in zip(pieces, pieces[1:]):
        if b.keys[0] <= a.keys[-1]:
            raise ValueError(
                f"Field {name!r}: the time ranges of {str(a.path)!r} ({_date_text(a.time, 0)} .. {_date_text(a.time, -1)}) "
                f"and {str(b.path)!r} ({_date_text(b.time, 0)} .. {_date_text(b.time, -1)}) overlap; each file must "
                "hold a separate period.")
    return pieces


def _check_duplicates(pieces: list[_Piece], name: str) -> None:
    keys = np.concatenate([p.keys for p in pieces])
    uniq, counts = np.unique(keys, return_counts=True)
    if np.all(counts == 1):
        return
    key = uniq[counts > 1][0]
    holders = sorted((p for p in pieces if np.any(p.keys == key)), key=lambda p: p.keys[0])
    date = _date_text(holders[0].time, int(np.flatnonzero(holders[0].keys == key)[0]))
    files = " and ".join(repr(str(p.path)) for p in holders)
    raise ValueError(f"Field {name!r}: the time step {date} appears more than once, in {files}; remove the repeated "
                     f"steps (or list each file once in fields.{name}.path).")


# ---------------------------------------------------------------- the joined lazy array


def _read_box(piece: _Piece, t: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Values of one file at canonical positions ``t`` (its own, sorted), ``lat`` and ``lon`` as ``(t, lat, lon)``.

    Only the box covering the wanted positions is read from the file (one
    basic slice per axis), then picked and transposed in memory.
    """
    raw = {"time": piece.time_index[t], "lat": piece.lat_index[lat], "lon": piece.lon_index[lon]}
    box = tuple(slice(int(raw[d].min()), int(raw[d].max()) + 1) for d in piece.dims)
    block = np.asarray(piece.var[box].values)
    picks = [raw[d] - raw[d].min() for d in piece.dims]
    if not all(np.array_equal(k, np.arange(k.size)) for k in picks):  # some axis reversed, sorted or strided
        block = block[np.ix_(*picks)]
    return np.transpose(block, [piece.dims.index(d) for d in DIMS])


class _FileStack(BackendArray):
    """The files of a field joined along time, read box by box (outer indexing).

    Every box read is checked for infinite values: an error naming the
    file, date and cell, or (``nonfinite="mask"``) NaN with a warning.
    """

    def __init__(self, pieces: list[_Piece], dtype: np.dtype, name: str, nonfinite: str) -> None:
        self.pieces = pieces
        self.name = name
        self.nonfinite = nonfinite
        self.starts = np.cumsum([0] + [p.time.size for p in pieces])
        self.shape = (int(self.starts[-1]), pieces[0].lat.size, pieces[0].lon.size)
        self.dtype = np.dtype(dtype)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._raw_getitem)

    def _raw_getitem(self, key: tuple) -> np.ndarray:
        positions = [np.arange(n)[k] for n, k in zip(self.shape, key)]
        scalar = tuple(0 if p.ndim == 0 else slice(None) for p in positions)
        t, lat, lon = (np.atleast_1d(p) for p in positions)
        out = np.empty((t.size, lat.size, lon.size), dtype=self.dtype)
        if out.size:
            for piece, start, stop in zip(self.pieces, self.starts[:-1], self.starts[1:]):
                inside = (t >= start) & (t < stop)
                if inside.any():
                    out[inside] = self._finite(_read_box(piece, t[inside] - start, lat, lon), piece,
                                               t[inside] - start, lat, lon)
        return out[scalar]

    def _finite(self, block: np.ndarray, piece: _Piece, t: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """``block`` (positions ``t, lat, lon`` of ``piece``) checked for infinite values, or with them masked."""
        if block.dtype.kind != "f" or not block.size:
            return block
        if np.isfinite(np.fmax.reduce(block, axis=None)) and np.isfinite(np.fmin.reduce(block, axis=None)):
            return block  # two reductions, no temporary: the usual case
        bad = np.isinf(block)
        if not bad.any():  # all NaN
            return block
        count = int(bad.sum())
        if self.nonfinite == "mask":
            log.warning("field %s: %d infinite values read from %s treated as missing (nonfinite: mask)", self.name,
                        count, str(piece.path))
            return np.where(bad, np.nan, block)
        i, j, k = np.argwhere(bad)[0]  # the earliest step, then the first cell
        which = "the only infinite value" if count == 1 else f"the first of {count} infinite values"
        raise ValueError(
            f"Field {self.name!r}: variable {piece.variable!r} of {str(piece.path)!r} is {block[i, j, k]} at "
            f"{_date_text(piece.time, int(t[i]))}, lat {coords.fmt(piece.lat[lat[j]])}, lon {coords.fmt(piece.lon[lon[k]])} "
            f"({which} read); replace them with NaN in the source, or set fields.{self.name}.nonfinite: mask to "
            "read them as missing.")


def _assemble(pieces: list[_Piece], name: str, spec: dict[str, Any], label: str) -> xr.Dataset:
    dtype = np.result_type(*[p.var.dtype for p in pieces])
    if not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float64)
    stack = _FileStack(pieces, dtype, name, spec.get("nonfinite", "error"))
    field = xr.Variable(DIMS, indexing.LazilyIndexedArray(stack))
    first = pieces[0]
    axes = {"time": np.concatenate([p.time for p in pieces]), "lat": first.lat, "lon": first.lon}
    truth = first.truth if len(pieces) == 1 else {}
    bounds = {axis: b for axis, b in first.bounds.items() if axis != "time"}
    if all("time" in p.bounds for p in pieces):
        bounds["time"] = np.concatenate([p.bounds["time"] for p in pieces])
    _log_selection(name, spec, first.selected)
    return _dataset(field, axes, first.attrs, first.variable, truth, name, spec, label, len(pieces),
                    _selected_text(first.selected), bounds)


def _selected_text(selected: list[tuple[str, Any, Any]]) -> str:
    """The values ``select`` used, as ``level=1000.0, member=3``."""
    return ", ".join(f"{dim}={coords.fmt(used)}" for dim, _, used in selected)


def _log_selection(name: str, spec: dict[str, Any], selected: list[tuple[str, Any, Any]]) -> None:
    for dim, asked, used in selected:
        if coords.fmt(asked) == coords.fmt(used) or (coords.is_number(asked) and float(asked) == float(used)):
            log.info("field %s: selected %s=%s", name, dim, coords.fmt(used))
        else:
            log.info("field %s: select %s=%s is not in the %s coordinate; used %s=%s, the nearest within "
                     "select_tolerance %s", name, dim, coords.fmt(asked), dim, dim, coords.fmt(used),
                     coords.fmt(coords.tolerances(name, spec)[dim]))


# ---------------------------------------------------------------- synthetic sources and attributes


def _open_synthetic(name: str, spec: dict[str, Any]) -> xr.Dataset:
    ds = _synthetic(name, spec)
    spec = {**spec, "variable": spec.get("variable") or "field"}
    da, variable, selected = _three_axes(ds, name, spec, "synthetic")
    da = da.transpose(*DIMS).sortby("lat")
    if not np.issubdtype(da.dtype, np.floating):
        da = da.astype(np.float64)
    truth = {str(v): ds[v] for v in filter(_is_truth, ds.data_vars)}  # generated on the canonical grid
    axes = {d: da[d].values for d in DIMS}
    _log_selection(name, spec, selected)
    return _dataset(da.variable, axes, dict(da.attrs), variable, truth, name, spec, "synthetic", 0,
                    _selected_text(selected))


def _synthetic(name: str, spec: dict[str, Any]) -> xr.Dataset:
    kind = spec.get("kind", "modes")
    options = dict(spec.get("options") or {})
    if kind == "modes":
        return synthetic.planted_modes(**options)
    if kind == "distribution":
        return synthetic.planted_distribution(**options)
    if kind == "daily_extremes":
        return synthetic.planted_daily_extremes(**options)
    if kind == "regression":
        other = spec.get("predictors_spec")
        if not other or other.get("kind", "modes") != "modes":
            raise ValueError(f"Field {name!r}: a synthetic regression field needs 'predictors_from' naming a "
                             "synthetic field of kind 'modes'.")
        planted = synthetic.planted_modes(**(other.get("options") or {}))
        return synthetic.planted_regression(planted["true_pc"].values, time=planted["time"].values, **options)
    raise ValueError(f"Field {name!r}: synthetic kind must be one of {', '.join(SYNTHETIC_KINDS)}; got {kind!r}.")


def _dataset(field: xr.Variable, axes: dict[str, np.ndarray], attrs: dict, variable: str, truth: dict, name: str,
             spec: dict[str, Any], label: str, n_files: int, selected: str = "",
             bounds: dict[str, np.ndarray] | None = None) -> xr.Dataset:
    """The canonical Dataset: ``field`` with CF attributes, coordinates, truth variables, bounds, provenance.

    ``field`` is a ``(time, lat, lon)`` Variable, kept as it is (lazy for a file source);
    ``selected`` (the values ``select`` used) becomes its attribute of that name. The
    source's ``standard_name`` and ``cell_methods`` are kept. ``bounds``: the source's
    bounds of ``time``, ``lat``, ``lon`` (``(n, 2)``, canonical order), stored as
    ``time_bnds``, ``lat_bnds``, ``lon_bnds`` along ``bnds``.
    """
    units = spec.get("units") or attrs.get("units", "1")
    field = field.copy(deep=False)
    field.attrs = {"units": units, "long_name": spec.get("long_name") or attrs.get("long_name", name),
                   "source_variable": variable}
    for key in ("standard_name", "cell_methods"):
        if key in attrs:
            field.attrs[key] = attrs[key]
    if selected:
        field.attrs["selected"] = selected
    axes = {"time": np.asarray(axes["time"]), "lat": np.asarray(axes["lat"], dtype=np.float64),
            "lon": np.asarray(axes["lon"], dtype=np.float64)}
    out = xr.Dataset({"field": field}, coords=axes)
    for v, da in truth.items():
        out[v] = da
    for axis in (a for a in DIMS if a in (bounds or {})):
        out[BOUNDS[axis]] = ((axis, BOUNDS_DIM), bounds[axis])
    out["lat"].attrs.update(units="degrees_north", standard_name="latitude", long_name="latitude")
    out["lon"].attrs.update(units="degrees_east", standard_name="longitude", long_name="longitude")
    out["time"].attrs.update(standard_name="time", long_name="time")
    out.attrs = {"field_name": name, "field_units": units, "source": label, "source_files": n_files,
                 "Conventions": "CF-1.10"}
    return out
