"""Read a ``(time, lat, lon)`` field tile by tile, prefetching, onto a backend.

The I/O half of the out-of-core stages. A :class:`FieldSource` (a Zarr fields
store or an in-memory array) is cut into :class:`Tile` s by a planner:

* :func:`plan_tiles` -- spatial tiles holding *all* time steps, aligned to the
  source's lat/lon chunks, each within a byte budget where the chunking allows;
* :func:`plan_time_blocks` -- blocks of consecutive time steps holding *all*
  cells, aligned to the time chunks.

:func:`stream` then reads the tiles with a pool of ``readers`` threads,
``prefetch`` tiles ahead of the caller's compute and in order, and yields each on the backend (a NumPy array,
or a CuPy array copied through a pinned host buffer on a non-blocking CUDA
stream). At most ``prefetch + 2`` tiles are alive at once, so memory stays
bounded by about ``(prefetch + 2) * budget``.

This module does no statistics and imports no stage code; xarray is used only
to read the (small) coordinates and attributes of a store.
"""

from __future__ import annotations

import itertools
import logging
import math
import numbers
import os
import queue
import threading
import time as _time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pipeline import io
from pipeline.backend import Backend
from pipeline.grid import as_field

log = logging.getLogger(__name__)

DIMS = ("time", "lat", "lon")
CACHE_TILE_BYTES = 4 * 2**20
"""Tile size for an in-memory source on the CPU: reading costs nothing, and a
tile this small stays in cache between the products a pass makes with it."""


@dataclass(frozen=True)
class Tile:
    """A box of the source: contiguous slices into its ``(time, lat, lon)`` axes.

    Attributes
    ----------
    index : int
        Position in the full plan (global, also in a ``part`` of it).
    time, lat, lon : slice
        ``slice(start, stop)`` with integer bounds and step 1 (``None``).
    """

    index: int
    time: slice
    lat: slice
    lon: slice

    def __post_init__(self) -> None:
        for name in DIMS:
            s = getattr(self, name)
            ok = isinstance(s, slice) and s.step in (None, 1)
            ok = ok and isinstance(s.start, numbers.Integral) and isinstance(s.stop, numbers.Integral)
            if not ok or not 0 <= s.start <= s.stop:
                raise ValueError(f"Tile.{name} must be a slice(start, stop) with integers 0 <= start <= stop and step 1; got {s!r}.")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_time, n_lat, n_lon)`` of the tile."""
        return (self.time.stop - self.time.start, self.lat.stop - self.lat.start, self.lon.stop - self.lon.start)

    @property
    def n_cells(self) -> int:
        """Grid cells (lat x lon) in the tile."""
        return self.shape[1] * self.shape[2]


class FieldSource:
    """A ``(time, lat, lon)`` field that can be read box by box.

    Attributes
    ----------
    shape : tuple of int
        ``(n_time, n_lat, n_lon)``.
    dtype : np.dtype
        The dtype :meth:`read` returns.
    chunks : tuple of int
        Native chunk shape (the whole array for in-memory sources).
    time, lat, lon : np.ndarray
        Coordinate values.
    attrs : dict
        Dataset attributes of the fields store (``field_name``, ...), ``{}`` if none.
    units : str
        The field variable's ``units`` attribute, ``""`` if none.
    in_memory : bool
        Whether :meth:`read` returns views of data already in host memory
        (no reading cost; :func:`stream` then hands them over without threads,
        and the stages cut such a source into cache-sized tiles).
    """

    in_memory: bool = False
    shape: tuple[int, int, int]
    dtype: np.dtype
    chunks: tuple[int, int, int]
    time: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    attrs: dict
    units: str

    @property
    def nbytes(self) -> int:
        """Bytes of the whole field in memory."""
        return int(math.prod(self.shape)) * self.dtype.itemsize

    def read(self, tile: Tile) -> np.ndarray:
        """The values of ``tile``: a host array of shape ``tile.shape`` and dtype :attr:`dtype`.

        C-contiguous, except from an :attr:`in_memory` source, which returns a
        read-only view whose last two axes are contiguous.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement read().")

    def _check_tile(self, tile: Tile) -> None:
        if not isinstance(tile, Tile):
            raise TypeError(f"read() needs a Tile; got {type(tile).__name__}.")
        for name, s, n in zip(DIMS, (tile.time, tile.lat, tile.lon), self.shape):
            if s.stop > n:
                raise ValueError(f"Tile {tile.index} reaches {name} index {s.stop}, beyond the source's {n} {name} points.")

    def _set_axes(self, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...], what: str) -> None:
        """Validate and store shape, dtype and chunks (shared by the subclasses)."""
        dtype = np.dtype(dtype)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"The {what} must be a non-empty (time, lat, lon) array; got shape {tuple(shape)}.")
        if dtype.kind not in "iuf":
            raise TypeError(f"The {what} must hold real numbers; got dtype {dtype}.")
        self.shape = tuple(int(n) for n in shape)
        self.dtype = dtype
        self.chunks = tuple(int(min(c, n)) for c, n in zip(chunks, self.shape))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, chunks={self.chunks})"


class ArraySource(FieldSource):
    """An in-memory field: an ``xr.DataArray`` with dims ``(time, lat, lon)`` or a NumPy array.

    Parameters
    ----------
    field : xr.DataArray or np.ndarray
        The field; a DataArray is transposed to ``(time, lat, lon)``.
    attrs : dict, optional
        Dataset attributes to report (``field_name``, ``field_units``, ...).
    coords : dict, optional
        ``time``/``lat``/``lon`` values for a NumPy ``field`` (default: positions).
    chunks : tuple of int, optional
        A chunk shape to plan with (default: one time step, one latitude
        row, 256 longitudes, so that tiles can be as small as a cache and
        time blocks any length).

    A field held in a NumPy array (``in_memory``) is read as read-only views,
    never copied; a lazily loaded or dask-backed DataArray is read box by box.
    """

    def __init__(
        self,
        field: xr.DataArray | np.ndarray,
        attrs: dict | None = None,
        *,
        coords: dict[str, np.ndarray] | None = None,
        chunks: tuple[int, int, int] | None = None,
    ) -> None:
        if isinstance(field, xr.DataArray):
            if set(field.dims) != set(DIMS) or field.ndim != 3:
                raise ValueError(f"The field must have dimensions (time, lat, lon); got {field.dims}.")
            field = field.transpose(*DIMS)
            coords = {d: np.asarray(field[d].values) if d in field.coords else np.arange(n) for d, n in field.sizes.items()}
            self.units = str(field.attrs.get("units", ""))
            self._data: Any = field.variable
        elif isinstance(field, np.ndarray):
            coords = dict(coords or {})
            self.units = ""
            self._data = field
        else:
            raise TypeError(f"ArraySource needs an xarray DataArray or a NumPy array; got {type(field).__name__}.")
        # xarray's own test for loaded data (a lazily opened or dask array is read box by box instead)
        self.in_memory = bool(getattr(self._data, "_in_memory", True))
        self._set_axes(field.shape, field.dtype, chunks or (1, 1, 256), "field")
        for d, n in zip(DIMS, self.shape):
            values = np.asarray(coords.get(d, np.arange(n)))
            if values.shape != (n,):
                raise ValueError(f"The {d} coordinate has shape {values.shape}; the field has {n} {d} steps.")
            setattr(self, d, values)
        self.attrs = dict(attrs or {})

    def read(self, tile: Tile) -> np.ndarray:
        self._check_tile(tile)
        block = self._data[tile.time, tile.lat, tile.lon]
        block = block.values if isinstance(block, xr.Variable) else block
        if not self.in_memory:
            return np.ascontiguousarray(block, dtype=self.dtype)
        view = block.view()
        view.flags.writeable = False  # the caller's data: never written through
        return view


class ZarrSource(FieldSource):
    """A fields store (``docs/stores.md``) read straight from Zarr, chunk-aligned.

    The coordinates and attributes are read once with xarray; the field itself is
    read with ``zarr`` box by box. Packed variables (``scale_factor``,
    ``add_offset``, ``_FillValue``) are decoded as xarray would.

    A store written by this pipeline is checked against its manifest
    (:mod:`pipeline.io`): every chunk file it lists must be there when the
    store is opened, and each chunk read must match its checksum; a missing or
    damaged chunk raises :class:`pipeline.io.CorruptStoreError` naming the
    store, the variable and the chunk. A chunk that cannot be decoded raises
    the same error, in any store. Stores without a manifest (a user's Zarr
    source) are read as they are.

    Parameters
    ----------
    path : path-like
        The store directory (Zarr format 3 or 2).
    variable : str
        The ``(time, lat, lon)`` variable to read.
    """

    def __init__(self, path: str | os.PathLike, variable: str = "field") -> None:
        import zarr

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"The fields store {path} does not exist; run the ingest stage first.")
        self.has_manifest = io.check_store(path, "fields store", checksums=False)
        with warnings.catch_warnings():  # stores of older versions hold Snakemake's .snakemake_timestamp file
            warnings.filterwarnings("ignore", message="Object at .snakemake_timestamp is not recognized")
            with xr.open_dataset(path, engine="zarr", consolidated=False, chunks=None) as ds:
                if variable not in ds.data_vars:
                    raise ValueError(f"The store {path} has no variable {variable!r}; it holds {sorted(ds.data_vars)}.")
                var = ds[variable]
                if var.dims != DIMS:
                    raise ValueError(f"The variable {variable!r} of {path} must have dimensions {DIMS} in that order; got {var.dims}.")
                for d in DIMS:
                    setattr(self, d, np.asarray(ds[d].values))
                self.attrs = {k: v for k, v in ds.attrs.items() if k != io.MANIFEST}
                self.units = str(var.attrs.get("units", ""))
                decoded, encoding = var.dtype, dict(var.encoding)
            self._array = zarr.open_group(io.checked_zarr_store(path, "fields store"), mode="r")[variable]
        self.path, self.variable = path, variable
        self._set_axes(self._array.shape, decoded, self._array.chunks, f"{variable} of {path}")
        self._decode = _decoder(encoding, self.dtype, np.dtype(self._array.dtype))

    def read(self, tile: Tile) -> np.ndarray:
        self._check_tile(tile)
        try:
            raw = self._array[tile.time, tile.lat, tile.lon]
        except io.CorruptStoreError:
            raise
        except Exception as err:  # noqa: BLE001 -- a codec's error, whatever its type, is named by its chunk
            raise self._undecodable(tile, err) from err
        return np.ascontiguousarray(self._decode(raw) if self._decode else raw, dtype=self.dtype)

    def _undecodable(self, tile: Tile, err: Exception) -> Exception:
        """The error naming the first chunk of ``tile`` that cannot be read on its own (or the tile's span)."""
        spans = [range(s.start // c, -(-s.stop // c)) for s, c in zip((tile.time, tile.lat, tile.lon), self.chunks)]
        where = ", ".join(f"{d} {s.start}:{s.stop}" for d, s in zip(DIMS, (tile.time, tile.lat, tile.lon)))
        where = f"the box {where}"
        for coords in itertools.product(*spans):
            box = tuple(slice(i * c, (i + 1) * c) for i, c in zip(coords, self.chunks))
            try:
                self._array[box]
            except Exception:  # noqa: BLE001 -- this is the chunk
                where = f"chunk file {self.variable}/{self._array.metadata.encode_chunk_key(coords)}"
                break
        return io.CorruptStoreError(
            f"Could not decode {where} of variable {self.variable!r} in the fields store {self.path} "
            f"({type(err).__name__}: {err}); the file is damaged: {io.rewrite_hint(self.path)}.")


def _decoder(encoding: dict, dtype: np.dtype, raw_dtype: np.dtype) -> Any:
    """A function undoing CF packing/masking of raw Zarr values, or None when there is none."""
    scale = encoding.get("scale_factor", 1.0)
    offset = encoding.get("add_offset", 0.0)
    fills = [v for k in ("_FillValue", "missing_value") if (v := encoding.get(k)) is not None]
    fills = [f for f in np.ravel(fills) if not (raw_dtype.kind == "f" and np.isnan(f))]
    if scale == 1.0 and offset == 0.0 and not fills and dtype == raw_dtype:
        return None

    def decode(raw: np.ndarray) -> np.ndarray:
        missing = np.isin(raw, fills) if fills else None
        out = raw.astype(dtype) * dtype.type(scale) + dtype.type(offset) if (scale, offset) != (1.0, 0.0) else raw.astype(dtype)
        if missing is not None and dtype.kind == "f":
            out[missing] = np.nan
        return out

    return decode


def open_source(obj: Any) -> FieldSource:
    """A :class:`FieldSource` for a store path, an ``xr.Dataset`` with ``field``, an ``xr.DataArray`` or a source.

    A Dataset's ``field`` or a DataArray may name its axes with any alias of
    :data:`pipeline.grid.ALIASES` (``latitude``, ``longitude``, ...) in any order.
    """
    if isinstance(obj, FieldSource):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return ZarrSource(obj)
    if isinstance(obj, xr.Dataset):
        if "field" not in obj.data_vars:
            name = obj.attrs.get("field_name", "field")
            raise ValueError(f"The fields dataset of {name} has no 'field' variable; it holds {sorted(obj.data_vars)}.")
        return ArraySource(as_field(obj["field"], f"{obj.attrs.get('field_name', 'field')} field"), attrs=dict(obj.attrs))
    if isinstance(obj, xr.DataArray):
        return ArraySource(as_field(obj, f"field {obj.name!r}" if obj.name is not None else "field"))
    raise TypeError(f"open_source needs a store path, an xarray Dataset/DataArray or a FieldSource; got {type(obj).__name__}.")


# ---------------------------------------------------------------- planning


def _budget(budget_bytes: Any) -> int:
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, numbers.Real):
        raise TypeError(f"budget_bytes must be a number of bytes; got {type(budget_bytes).__name__}.")
    if not math.isfinite(budget_bytes) or budget_bytes < 1:
        raise ValueError(f"budget_bytes must be a positive, finite number of bytes; got {budget_bytes!r}.")
    return int(budget_bytes)


def _chunk_spans(n: int, chunk: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each chunk along an axis of length ``n``."""
    return [(a, min(a + chunk, n)) for a in range(0, n, chunk)]


def _group(spans: list[tuple[int, int]], unit: int, cap: int) -> list[tuple[int, int]]:
    """Merge consecutive spans greedily while ``(stop - start) * unit <= cap``; an oversize span stays alone."""
    groups: list[tuple[int, int]] = []
    for a, b in spans:
        if groups and (b - groups[-1][0]) * unit <= cap:
            groups[-1] = (groups[-1][0], b)
        else:
            groups.append((a, b))
    return groups


def _warn_oversize(source: FieldSource, box: tuple[int, int, int], budget: int, what: str) -> None:
    size = math.prod(box) * source.dtype.itemsize
    if size > budget:
        log.warning("the chunking %s of the source forces %s of %s (%s), above the budget of %s",
                    source.chunks, what, box, _size(size), _size(budget))


def _size(n_bytes: float) -> str:
    """``n_bytes`` for a log line: B, kB, MB or GB (powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{int(n_bytes)} B"


def plan_tiles(source: FieldSource, budget_bytes: int, *, part: tuple[int, int] | None = None) -> list[Tile]:
    """Spatial tiles holding all time steps, aligned to the lat/lon chunks, within a byte budget.

    Whole lat-chunk rows are grouped, as many full-width rows as fit in
    ``budget_bytes`` (a tile holds ``n_time * n_lat_t * n_lon_t * itemsize``
    bytes); a chunk row too big on its own is split into groups of lon chunks;
    a single chunk (all time x one lat chunk x one lon chunk) above the budget is
    still used, with a warning. The tiles cover every cell once, row-major.

    Parameters
    ----------
    source : FieldSource
        The field.
    budget_bytes : int
        Most bytes per tile.
    part : (i, n), optional
        Keep only the i-th of n contiguous groups of the plan, balanced by cell
        count (scatter/gather jobs); tile indices stay those of the full plan.
    """
    n_time, n_lat, n_lon = source.shape
    budget = _budget(budget_bytes)
    cap = budget // (n_time * source.dtype.itemsize)  # cells per tile
    lon_spans = _chunk_spans(n_lon, source.chunks[2])
    boxes: list[tuple[tuple[int, int], tuple[int, int]]] = []
    rows: list[tuple[int, int]] = []  # full-width lat rows waiting to be emitted
    for a, b in _chunk_spans(n_lat, source.chunks[1]):
        if (b - a) * n_lon <= cap:
            rows.append((a, b))
            continue
        boxes += [(r, (0, n_lon)) for r in _group(rows, n_lon, cap)]
        rows = []
        boxes += [((a, b), c) for c in _group(lon_spans, b - a, cap)]
    boxes += [(r, (0, n_lon)) for r in _group(rows, n_lon, cap)]
    _warn_oversize(source, (n_time, *source.chunks[1:]), budget, "tiles")
    tiles = [Tile(k, slice(0, n_time), slice(*la), slice(*lo)) for k, (la, lo) in enumerate(boxes)]
    log.info("planned %d spatial tiles of %s within %s", len(tiles), source.shape, _size(budget))
    return tiles if part is None else _part(tiles, part)


def _part(tiles: list[Tile], part: tuple[int, int]) -> list[Tile]:
    """The i-th of n contiguous groups of ``tiles`` with about equal cell counts."""
    ok = isinstance(part, tuple) and len(part) == 2 and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in part)
    if not ok or not 0 <= part[0] < part[1]:
        raise ValueError(f"part must be a tuple (i, n) of integers with 0 <= i < n; got {part!r}.")
    i, n = int(part[0]), int(part[1])
    cum = np.concatenate([[0], np.cumsum([t.n_cells for t in tiles])])
    bounds = [0]
    for j in range(1, n):  # group j starts after the tile count whose cell total is nearest j/n of all
        b = int(np.argmin(np.abs(cum - cum[-1] * j / n)))
        if n <= len(tiles):
            b = min(max(b, bounds[-1] + 1), len(tiles) - (n - j))
        bounds.append(max(b, bounds[-1]))
    bounds.append(len(tiles))
    return tiles[bounds[i] : bounds[i + 1]]


def tile_bytes(source: FieldSource, budget_bytes: int, backend: Backend) -> int:
    """Bytes per tile for a stage: ``budget_bytes``, or :data:`CACHE_TILE_BYTES` if smaller for an in-memory source on NumPy."""
    if source.in_memory and backend.name == "numpy":
        return min(int(budget_bytes), CACHE_TILE_BYTES)
    return int(budget_bytes)


def plan_time_blocks(source: FieldSource, budget_bytes: int) -> list[Tile]:
    """Blocks of consecutive time steps holding all cells, aligned to the time chunks, within a byte budget.

    As many whole time chunks as fit are grouped; a single time chunk above the
    budget is still used, with a warning.
    """
    n_time, n_lat, n_lon = source.shape
    budget = _budget(budget_bytes)
    cap = budget // (n_lat * n_lon * source.dtype.itemsize)  # time steps per block
    spans = _group(_chunk_spans(n_time, source.chunks[0]), 1, cap)
    _warn_oversize(source, (source.chunks[0], n_lat, n_lon), budget, "time blocks")
    blocks = [Tile(k, slice(a, b), slice(0, n_lat), slice(0, n_lon)) for k, (a, b) in enumerate(spans)]
    log.info("planned %d time blocks of %s within %s", len(blocks), source.shape, _size(budget))
    return blocks


# ---------------------------------------------------------------- streaming


@dataclass
class StreamStats:
    """What one :func:`stream` call did; filled in place when passed as ``stats``.

    Attributes
    ----------
    n_tiles : int
        Tiles planned.
    tiles : int
        Tiles delivered to the caller.
    bytes : int
        Bytes delivered.
    elapsed : float
        Seconds from the first request to the end (or the stop) of the stream.
    read_seconds : float
        Seconds the reader thread spent in ``source.read``.
    wait_seconds : float
        Seconds the caller waited for a tile (reading not hidden by compute).
    """

    n_tiles: int = 0
    tiles: int = 0
    bytes: int = 0
    elapsed: float = 0.0
    read_seconds: float = 0.0
    wait_seconds: float = 0.0

    @property
    def gigabytes(self) -> float:
        return self.bytes / 1e9

    @property
    def gbps(self) -> float:
        """Delivered gigabytes per second."""
        return self.gigabytes / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class _Failure:
    error: BaseException


_DONE = object()


def stream(
    source: FieldSource,
    tiles: Sequence[Tile],
    backend: Backend,
    *,
    prefetch: int = 2,
    readers: int = 4,
    label: str = "",
    log_every: float = 5.0,
    stats: StreamStats | None = None,
) -> Iterator[tuple[Tile, Any]]:
    """Yield ``(tile, array)`` for each tile in order, the array on ``backend``.

    A pool of ``readers`` threads reads (decompresses) tiles ``prefetch`` ahead of the
    caller, so reading overlaps with the caller's compute; at most
    ``prefetch + 2`` tiles are alive at once (the one being computed on, the one
    being handed over, and ``prefetch`` read ahead). With CuPy each host tile is
    copied into one of two reusable pinned buffers and sent to the device on a
    non-blocking CUDA stream; the caller's current stream waits on that copy, so
    the array is ready for any work queued on it. An error in the reader is
    raised in the caller; closing the generator early stops the reader.

    Parameters
    ----------
    source : FieldSource
        The field.
    tiles : sequence of Tile
        The plan (:func:`plan_tiles` or :func:`plan_time_blocks`).
    backend : Backend
        Where the arrays go (``numpy``: host arrays as read; ``cupy``: device arrays).
    prefetch : int
        Tiles read ahead (0: no overlap).
    readers : int
        Tiles read (decompressed) at the same time, by a pool of threads; the
        tiles still arrive in order and within the ``prefetch + 2`` bound.
    label : str
        Prefix of the progress log lines.
    log_every : float
        Seconds between progress lines (INFO); one more line at the end.
    stats : StreamStats, optional
        Filled in place with the stream's totals.
    """
    if not isinstance(source, FieldSource):
        raise TypeError(f"stream needs a FieldSource (see open_source); got {type(source).__name__}.")
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a pipeline.backend.Backend; got {type(backend).__name__}.")
    tiles = list(tiles)
    if not all(isinstance(t, Tile) for t in tiles):
        raise TypeError("tiles must be a sequence of Tile (see plan_tiles and plan_time_blocks).")
    if isinstance(prefetch, bool) or not isinstance(prefetch, numbers.Integral) or prefetch < 0:
        raise ValueError(f"prefetch must be a non-negative integer; got {prefetch!r}.")
    if isinstance(log_every, bool) or not isinstance(log_every, numbers.Real) or not log_every >= 0:
        raise ValueError(f"log_every must be a non-negative number of seconds; got {log_every!r}.")
    if isinstance(readers, bool) or not isinstance(readers, numbers.Integral) or readers < 1:
        raise ValueError(f"readers must be a positive integer; got {readers!r}.")
    stats = stats if stats is not None else StreamStats()
    if source.in_memory and backend.name == "numpy":
        return _stream_views(source, tiles, label or "stream", float(log_every), stats)
    return _stream(source, tiles, _transfer(backend), int(prefetch), int(readers), label or "stream",
                   float(log_every), stats)


def _stream(source: FieldSource, tiles: list[Tile], transfer: Any, prefetch: int, readers: int, label: str,
            log_every: float, stats: StreamStats) -> Iterator[tuple[Tile, Any]]:
    n = len(tiles)
    for f in fields(stats):  # a reused stats object starts from zero
        setattr(stats, f.name, f.default)
    stats.n_tiles = n
    results: queue.SimpleQueue = queue.SimpleQueue()
    permits = threading.Semaphore(prefetch + 2)  # one per alive tile
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix=f"stream-read {label}")
    reader = threading.Thread(target=_read_ahead, args=(source, tiles, results, permits, stop, stats, pool),
                              name=f"stream-reader {label}", daemon=True)
    start = last_log = _time.perf_counter()
    reader.start()
    try:
        for k in range(1, n + 1):
            t0 = _time.perf_counter()
            item = results.get()
            if isinstance(item, _Failure):
                raise item.error
            tile, block = item[0], item[1].result()
            stats.wait_seconds += _time.perf_counter() - t0
            array = transfer(block)
            block = None
            item = None
            stats.tiles, stats.bytes = k, stats.bytes + math.prod(tile.shape) * source.dtype.itemsize
            now = _time.perf_counter()
            if now - last_log >= log_every and k < n:
                stats.elapsed, last_log = now - start, now
                _log_progress(label, stats)
            yield tile, array
            array = None
            if k >= 2:  # the caller has let go of tile k-1: its permit returns to the reader
                permits.release()
    finally:
        stop.set()
        permits.release()  # wake a reader waiting for a permit
        reader.join()
        pool.shutdown(wait=True, cancel_futures=True)
        stats.elapsed = _time.perf_counter() - start
        _log_progress(label, stats)


def imap(fn: Any, source: FieldSource, tiles: Sequence[Tile], backend: Backend, *, label: str = "",
         workers: int | None = None) -> Iterator[tuple[Tile, Any]]:
    """Yield ``(tile, fn(tile, array))`` for each tile in order: :func:`stream` with the compute in it.

    For an in-memory source on NumPy the tiles are views and ``fn`` runs on
    ``workers`` threads (default: the CPUs this process may use), each with a
    single-threaded BLAS, at most ``2 × workers`` tiles ahead of the caller;
    NumPy releases the GIL in its loops and in BLAS, so one core computes per
    tile. Otherwise ``fn`` runs in the caller's thread on :func:`stream`'s
    tiles, whose reading already overlaps it. ``fn`` must not keep the
    array: results that alias it would pin the tile.
    """
    if not (source.in_memory and backend.name == "numpy"):
        for tile, block in stream(source, tiles, backend, label=label):
            yield tile, fn(tile, block)
        return
    from threadpoolctl import threadpool_limits

    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    stats = StreamStats(n_tiles=len(tiles))
    start = _time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers, thread_name_prefix=f"tiles {label}") as pool:
        pending: queue.SimpleQueue = queue.SimpleQueue()
        ahead = iter(tiles)
        for tile in [t for _, t in zip(range(2 * workers), ahead)]:
            pending.put((tile, pool.submit(lambda t: fn(t, _read_one(source, t, stats)), tile)))
        for k in range(1, len(tiles) + 1):
            tile, future = pending.get()
            result = future.result()
            nxt = next(ahead, None)
            if nxt is not None:
                pending.put((nxt, pool.submit(lambda t: fn(t, _read_one(source, t, stats)), nxt)))
            stats.tiles, stats.bytes = k, stats.bytes + tile.shape[0] * tile.n_cells * source.dtype.itemsize
            yield tile, result
    stats.elapsed = _time.perf_counter() - start
    _log_progress(label or "imap", stats)


def _stream_views(source: FieldSource, tiles: list[Tile], label: str, log_every: float,
                  stats: StreamStats) -> Iterator[tuple[Tile, Any]]:
    """:func:`stream` for an in-memory source on NumPy: read-only views, in order, no threads."""
    for f in fields(stats):
        setattr(stats, f.name, f.default)
    stats.n_tiles = len(tiles)
    start = last_log = _time.perf_counter()
    try:
        for k, tile in enumerate(tiles, 1):
            block = _read_one(source, tile, stats)
            stats.tiles, stats.bytes = k, stats.bytes + block.nbytes
            now = _time.perf_counter()
            if now - last_log >= log_every and k < len(tiles):
                stats.elapsed, last_log = now - start, now
                _log_progress(label, stats)
            yield tile, block
    finally:
        stats.elapsed = _time.perf_counter() - start
        _log_progress(label, stats)


def _read_ahead(source: FieldSource, tiles: list[Tile], results: queue.SimpleQueue,
                permits: threading.Semaphore, stop: threading.Event, stats: StreamStats,
                pool: ThreadPoolExecutor) -> None:
    """The reader thread: one permit per tile, whose read goes to the pool; futures queue up in order.

    Stops on ``stop``; an error while submitting goes to the queue, an error
    while reading surfaces from the tile's future in the caller.
    """
    try:
        for tile in tiles:
            permits.acquire()
            if stop.is_set():
                return
            results.put((tile, pool.submit(_read_one, source, tile, stats)))
        results.put(_DONE)
    except BaseException as err:  # noqa: BLE001 -- handed to the caller, which re-raises it
        results.put(_Failure(err))


def _read_one(source: FieldSource, tile: Tile, stats: StreamStats) -> np.ndarray:
    t0 = _time.perf_counter()
    block = source.read(tile)
    stats.read_seconds += _time.perf_counter() - t0
    if not isinstance(block, np.ndarray) or block.shape != tile.shape:
        got = getattr(block, "shape", type(block).__name__)
        raise ValueError(f"{type(source).__name__}.read returned {got} for tile {tile.index}; expected an array of shape {tile.shape}.")
    return block


def _log_progress(label: str, stats: StreamStats) -> None:
    log.info("%s: tile %d/%d, %.2f GB read, %.2f GB/s, %.1f s",
             label, stats.tiles, stats.n_tiles, stats.gigabytes, stats.gbps, stats.elapsed)


def _transfer(backend: Backend) -> Any:
    """The function moving a host tile to ``backend``."""
    if backend.name == "numpy":
        return lambda host: host
    if backend.name == "cupy":
        return _PinnedCopier()
    return backend.asarray


class _PinnedCopier:
    """Host -> device copies through two reusable pinned buffers on a non-blocking stream.

    For each tile: wait until the buffer slot's previous copy has finished, copy
    the tile into it, allocate the device array on the caller's current stream,
    make the copy stream wait for the work already queued there (the memory pool
    may hand back memory that work still reads), copy asynchronously, and make
    the caller's stream wait for the copy before anything it queues next.
    """

    def __init__(self) -> None:
        import cupy
        import cupyx

        self._cp, self._cpx = cupy, cupyx
        self._stream = cupy.cuda.Stream(non_blocking=True)
        self._buffers: list[np.ndarray | None] = [None, None]
        self._events: list[Any] = [None, None]
        self._slot = 0

    def __call__(self, host: np.ndarray) -> Any:
        cp, s = self._cp, self._slot
        self._slot = 1 - s
        if self._events[s] is not None:
            self._events[s].synchronize()  # its previous copy has left the buffer
        if self._buffers[s] is None or self._buffers[s].nbytes < host.nbytes:
            self._buffers[s] = self._cpx.empty_pinned((host.nbytes,), dtype=np.uint8)
        staging = self._buffers[s][: host.nbytes].view(host.dtype).reshape(host.shape)
        np.copyto(staging, host)
        caller = cp.cuda.get_current_stream()
        device = cp.empty(host.shape, dtype=host.dtype)
        self._stream.wait_event(caller.record())
        device.set(staging, stream=self._stream)
        self._events[s] = self._stream.record()
        caller.wait_event(self._events[s])
        return device


def read_throughput(source: FieldSource, budget_bytes: int) -> float:
    """Seconds to read the whole source once, tile by tile (:func:`plan_tiles`), with no compute."""
    source = open_source(source)
    tiles = plan_tiles(source, budget_bytes)
    start = _time.perf_counter()
    for tile in tiles:
        source.read(tile)
    seconds = _time.perf_counter() - start
    log.info("plain read of %s: %d tiles, %.2f GB in %.2f s (%.2f GB/s)", source, len(tiles),
             source.nbytes / 1e9, seconds, source.nbytes / 1e9 / seconds if seconds > 0 else 0.0)
    return seconds
