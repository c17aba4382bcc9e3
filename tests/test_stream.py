"""Tests of the streaming reader: tile plans, sources, the prefetching stream.

References are independent of the code under test: coverage counts on a grid,
hand-computed plans, the whole array as xarray reads it, explicit counts of
live arrays, and the log text.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref

import numpy as np
import pytest
import xarray as xr

from pipeline import stream as st
from pipeline.backend import resolve
from pipeline.synthetic import planted_modes
from conftest import _cupy_ready

SHAPE = (10, 6, 8)  # (time, lat, lon)


def _field() -> xr.Dataset:
    ds = planted_modes(n_time=SHAPE[0], n_lat=SHAPE[1], n_lon=SHAPE[2], land_fraction=0.2, seed=3)
    ds = ds[["field"]]
    ds.attrs.update(field_name="sst", field_units="K")
    return ds


def _write(ds: xr.Dataset, path, chunks, zarr_format: int = 3):
    ds.to_zarr(path, mode="w", zarr_format=zarr_format, consolidated=False, encoding={"field": {"chunks": chunks}})
    return path


@pytest.fixture(scope="module")
def field() -> xr.Dataset:
    return _field()


@pytest.fixture(scope="module")
def stores(tmp_path_factory, field):
    """Fields stores of the same data with different chunkings (Zarr 3 unless noted)."""
    root = tmp_path_factory.mktemp("stores")
    return {
        (4, 2, 3): _write(field, root / "a.zarr", (4, 2, 3)),
        (10, 4, 8): _write(field, root / "b.zarr", (10, 4, 8)),
        (3, 1, 5): _write(field, root / "c.zarr", (3, 1, 5)),
        "v2": _write(field, root / "v2.zarr", (4, 2, 3), zarr_format=2),
    }


def _assemble(source: st.FieldSource, tiles) -> np.ndarray:
    out = np.full(source.shape, -1.0)
    for tile in tiles:
        out[tile.time, tile.lat, tile.lon] = source.read(tile)
    return out


def _coverage(shape, tiles) -> np.ndarray:
    count = np.zeros(shape, dtype=int)
    for tile in tiles:
        count[tile.time, tile.lat, tile.lon] += 1
    return count


# ---------------------------------------------------------------- plans


@pytest.mark.parametrize("chunks", [(4, 2, 3), (10, 4, 8), (3, 1, 5)])
@pytest.mark.parametrize("budget", [100, 480, 800, 1300, 2000, 10**6])
def test_plan_tiles_cover_once_aligned_within_budget(stores, field, chunks, budget):
    source = st.ZarrSource(stores[chunks])
    tiles = st.plan_tiles(source, budget)
    np.testing.assert_array_equal(_coverage(SHAPE, tiles), 1)
    assert [t.index for t in tiles] == list(range(len(tiles)))
    assert [(t.lat.start, t.lon.start) for t in tiles] == sorted((t.lat.start, t.lon.start) for t in tiles)
    one_chunk = SHAPE[0] * chunks[1] * chunks[2] * 8
    for t in tiles:
        assert (t.time.start, t.time.stop) == (0, SHAPE[0])
        for s, c, n in ((t.lat, chunks[1], SHAPE[1]), (t.lon, chunks[2], SHAPE[2])):
            assert s.start % c == 0 and (s.stop % c == 0 or s.stop == n)
        assert np.prod(t.shape) * 8 <= max(budget, one_chunk)
    np.testing.assert_array_equal(_assemble(source, tiles), field["field"].values)


def test_plan_tiles_matches_hand_computed_plan(stores):
    source = st.ZarrSource(stores[(4, 2, 3)])  # a cell column is 10 * 8 = 80 bytes
    boxes = lambda tiles: [(t.lat.start, t.lat.stop, t.lon.start, t.lon.stop) for t in tiles]  # noqa: E731
    # 800 B = 10 cells: a 2-row chunk row (16 cells) is split into lon chunks of 3, 3+2 columns
    assert boxes(st.plan_tiles(source, 800)) == [(0, 2, 0, 3), (0, 2, 3, 8), (2, 4, 0, 3), (2, 4, 3, 8), (4, 6, 0, 3), (4, 6, 3, 8)]
    # 2560 B = 32 cells, exactly two full-width chunk rows per tile, then the last one
    assert boxes(st.plan_tiles(source, 2560)) == [(0, 4, 0, 8), (4, 6, 0, 8)]
    assert boxes(st.plan_tiles(source, 2559)) == [(0, 2, 0, 8), (2, 4, 0, 8), (4, 6, 0, 8)]
    assert boxes(st.plan_tiles(source, 10**6)) == [(0, 6, 0, 8)]


def test_plan_tiles_warns_when_one_chunk_exceeds_budget(stores, caplog):
    source = st.ZarrSource(stores[(4, 2, 3)])  # one chunk of all time steps: 10*2*3*8 = 480 B
    with caplog.at_level(logging.WARNING, logger="pipeline.stream"):
        tiles = st.plan_tiles(source, 479)
    assert [t.shape for t in tiles[:3]] == [(10, 2, 3), (10, 2, 3), (10, 2, 2)]
    assert any("chunking (4, 2, 3)" in r.message and "above the budget" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.stream"):
        st.plan_tiles(source, 480)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("chunks", [(4, 2, 3), (3, 1, 5)])
@pytest.mark.parametrize("budget", [100, 384, 1200, 2000, 10**6])
def test_plan_time_blocks_cover_once_aligned_within_budget(stores, field, chunks, budget, caplog):
    source = st.ZarrSource(stores[chunks])
    step = SHAPE[1] * SHAPE[2] * 8  # 384 B per time step
    with caplog.at_level(logging.WARNING, logger="pipeline.stream"):
        blocks = st.plan_time_blocks(source, budget)
    np.testing.assert_array_equal(_coverage(SHAPE, blocks), 1)
    assert [b.time.start for b in blocks] == sorted(b.time.start for b in blocks)
    for b in blocks:
        assert (b.lat, b.lon) == (slice(0, SHAPE[1]), slice(0, SHAPE[2]))
        assert b.time.start % chunks[0] == 0 and (b.time.stop % chunks[0] == 0 or b.time.stop == SHAPE[0])
        assert b.shape[0] * step <= max(budget, chunks[0] * step)
    assert bool(caplog.records) == (chunks[0] * step > budget)
    np.testing.assert_array_equal(_assemble(source, blocks), field["field"].values)


def test_plan_time_blocks_groups_greedily(stores):
    source = st.ZarrSource(stores[(4, 2, 3)])
    blocks = st.plan_time_blocks(source, 8 * 384)  # 8 steps fit: chunks [0,4) and [4,8) together
    assert [(b.time.start, b.time.stop) for b in blocks] == [(0, 8), (8, 10)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 9, 20])
def test_parts_partition_the_plan_balanced(stores, n):
    source = st.ZarrSource(stores[(3, 1, 5)])
    full = st.plan_tiles(source, 10 * 8 * 5)  # one chunk (1 x 5 cells) per tile: 12 tiles of 5 or 3 cells
    parts = [st.plan_tiles(source, 10 * 8 * 5, part=(i, n)) for i in range(n)]
    assert [t for p in parts for t in p] == full
    if n <= len(full):
        assert all(parts)
    cells = np.array([sum(t.n_cells for t in p) for p in parts])
    biggest = max(t.n_cells for t in full)
    assert np.all(np.abs(cells - cells.sum() / n) <= biggest)


@pytest.mark.parametrize("part", [(2, 2), (-1, 2), (0, 0), [0, 2], (0.0, 2)])
def test_bad_part_is_rejected(stores, part):
    with pytest.raises(ValueError, match="part must be a tuple"):
        st.plan_tiles(st.ZarrSource(stores[(4, 2, 3)]), 1000, part=part)


def test_bad_budget_is_rejected(field):
    source = st.open_source(field)
    with pytest.raises(ValueError, match="budget_bytes must be a positive"):
        st.plan_tiles(source, 0)
    with pytest.raises(ValueError, match="budget_bytes must be a positive"):
        st.plan_time_blocks(source, float("inf"))
    with pytest.raises(TypeError, match="budget_bytes must be a number"):
        st.plan_tiles(source, "1GB")


def test_tile_rejects_open_or_strided_slices():
    with pytest.raises(ValueError, match=r"Tile\.lat must be a slice"):
        st.Tile(0, slice(0, 3), slice(None, 2), slice(0, 1))
    with pytest.raises(ValueError, match=r"Tile\.lon must be a slice"):
        st.Tile(0, slice(0, 3), slice(0, 2), slice(0, 4, 2))
    assert st.Tile(0, slice(1, 3), slice(0, 2), slice(2, 7)).shape == (2, 2, 5)


# ---------------------------------------------------------------- sources


def test_zarr_and_array_sources_agree(stores, field):
    z = st.ZarrSource(stores[(4, 2, 3)])
    a = st.open_source(field)
    assert isinstance(a, st.ArraySource) and a.chunks == (1, 1, min(SHAPE[2], 256))  # default: one step, one row, <= 256 lon
    assert (z.shape, z.dtype, z.chunks, z.units) == (SHAPE, np.dtype("float64"), (4, 2, 3), "K")
    assert z.attrs["field_name"] == a.attrs["field_name"] == "sst" and a.units == "K"
    for name in ("time", "lat", "lon"):
        np.testing.assert_array_equal(getattr(z, name), field[name].values)
        np.testing.assert_array_equal(getattr(a, name), field[name].values)
    assert z.nbytes == a.nbytes == int(np.prod(SHAPE)) * 8
    for tile in st.plan_tiles(z, 800) + st.plan_time_blocks(z, 1000):
        zt, at = z.read(tile), a.read(tile)
        assert zt.flags.c_contiguous and zt.shape == at.shape == tile.shape
        assert not at.flags.writeable and np.shares_memory(at, field["field"].values)  # a read-only view
        np.testing.assert_array_equal(zt, at)  # NaN on land in both


def test_in_memory_sources_stream_views_without_threads_and_cache_sized_tiles(stores, field):
    a, z = st.open_source(field), st.ZarrSource(stores[(4, 2, 3)])
    assert a.in_memory and not z.in_memory
    assert not st.ArraySource(xr.open_zarr(stores[(4, 2, 3)], consolidated=False)["field"]).in_memory  # lazy: read box by box
    numpy = resolve("numpy")
    assert st.tile_bytes(a, 10**9, numpy) == st.CACHE_TILE_BYTES and st.tile_bytes(z, 10**9, numpy) == 10**9
    assert st.tile_bytes(a, 100, numpy) == 100
    tiles = st.plan_tiles(a, 800)
    stats = st.StreamStats()
    got = [(t, b) for t, b in st.stream(a, tiles, numpy, stats=stats)]
    assert [t for t, _ in got] == tiles and stats.tiles == len(tiles) and stats.bytes == a.nbytes
    for tile, block in got:
        assert np.shares_memory(block, field["field"].values) and not block.flags.writeable
        np.testing.assert_array_equal(block, z.read(tile))


def test_zarr_v2_store_reads_the_same(stores, field):
    source = st.open_source(str(stores["v2"]))
    np.testing.assert_array_equal(_assemble(source, st.plan_tiles(source, 500)), field["field"].values)


def test_packed_store_is_decoded_like_xarray(tmp_path, field):
    path = tmp_path / "packed.zarr"
    enc = {"field": {"dtype": "int16", "scale_factor": 0.01, "add_offset": 1.0, "_FillValue": -999}}
    field.to_zarr(path, zarr_format=3, consolidated=False, encoding=enc)
    source = st.ZarrSource(path)
    expected = xr.open_zarr(path, consolidated=False)["field"].values
    assert source.dtype == expected.dtype
    got = _assemble(source, st.plan_tiles(source, 10**6))
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got).sum() == np.isnan(field["field"].values).sum() > 0


def test_array_source_transposes_and_takes_numpy(field):
    da = field["field"].transpose("lon", "time", "lat")
    source = st.ArraySource(da, attrs={"field_name": "x"})
    tile = st.Tile(0, slice(2, 5), slice(1, 4), slice(3, 8))
    np.testing.assert_array_equal(source.read(tile), field["field"].values[2:5, 1:4, 3:8])
    plain = st.ArraySource(field["field"].values, coords={"lat": field["lat"].values}, chunks=(10, 2, 8))
    np.testing.assert_array_equal(plain.lat, field["lat"].values)
    np.testing.assert_array_equal(plain.lon, np.arange(SHAPE[2]))
    assert plain.units == "" and plain.attrs == {} and len(st.plan_tiles(plain, 10 * 2 * 8 * 8)) == 3


def test_sources_reject_bad_input(tmp_path, stores, field):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        st.ZarrSource(tmp_path / "missing.zarr")
    with pytest.raises(ValueError, match="has no variable 'sst'"):
        st.ZarrSource(stores[(4, 2, 3)], variable="sst")
    with pytest.raises(ValueError, match="must have dimensions"):
        st.ArraySource(field["field"].isel(time=0))
    with pytest.raises(ValueError, match="has no 'field' variable"):
        st.open_source(field.rename({"field": "z"}))
    with pytest.raises(TypeError, match="open_source needs"):
        st.open_source(42)
    with pytest.raises(TypeError, match="must hold real numbers"):
        st.ArraySource(np.zeros(SHAPE, dtype=complex))
    path = tmp_path / "swapped.zarr"
    field.transpose("time", "lon", "lat").to_zarr(path, zarr_format=3, consolidated=False)
    with pytest.raises(ValueError, match=r"dimensions \('time', 'lat', 'lon'\) in that order"):
        st.ZarrSource(path)
    with pytest.raises(ValueError, match="beyond the source's 6 lat points"):
        st.open_source(field).read(st.Tile(0, slice(0, 1), slice(0, 7), slice(0, 1)))


def test_an_undecodable_chunk_of_a_store_without_manifest_names_store_variable_and_chunk(tmp_path, field):
    """A user's Zarr source (no manifest) is read as it is, but a chunk its codec rejects is named."""
    from pipeline.io import CorruptStoreError

    path = _write(field, tmp_path / "theirs.zarr", (10, 2, 8))
    source = st.ZarrSource(path)
    assert not source.has_manifest
    (path / "field" / "c" / "0" / "1" / "0").write_bytes(b"not a zstd frame" * 4)
    tiles = st.plan_tiles(source, 10**6)
    with pytest.raises(CorruptStoreError, match=(
            rf"^Could not decode chunk file field/c/0/1/0 of variable 'field' in the fields store {path} "
            r"\(\w+: .+\); the file is damaged: rewrite or restore it\.$")):
        list(st.stream(source, tiles, resolve("numpy"), prefetch=1))


# ---------------------------------------------------------------- stream


class _Counting(st.FieldSource):
    """A source that counts reads and live arrays, with optional delay and failure."""

    def __init__(self, inner: st.FieldSource, delay: float = 0.0, fail_at: int | None = None):
        self.inner, self.delay, self.fail_at = inner, delay, fail_at
        self.shape, self.dtype, self.chunks = inner.shape, inner.dtype, inner.chunks
        self.time, self.lat, self.lon, self.attrs, self.units = inner.time, inner.lat, inner.lon, inner.attrs, inner.units
        self.reads, self.alive, self.max_alive = 0, 0, 0
        self._lock = threading.Lock()

    def _died(self) -> None:
        with self._lock:
            self.alive -= 1

    def read(self, tile):
        if tile.index == self.fail_at:
            raise OSError(f"disk error at tile {tile.index}")
        time.sleep(self.delay)
        block = self.inner.read(tile)
        with self._lock:
            self.reads += 1
            self.alive += 1
            self.max_alive = max(self.max_alive, self.alive)
        weakref.finalize(block, self._died)
        return block


@pytest.mark.parametrize("readers", [1, 3])
@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_stream_yields_tiles_in_order_with_contents(stores, prefetch, readers):
    source = st.ZarrSource(stores[(4, 2, 3)])
    tiles = st.plan_tiles(source, 500)
    stats = st.StreamStats()
    seen = []
    for tile, block in st.stream(source, tiles, resolve("numpy"), prefetch=prefetch, readers=readers, stats=stats):
        assert isinstance(block, np.ndarray) and block.dtype == source.dtype
        np.testing.assert_array_equal(block, source.read(tile))
        seen.append(tile)
    assert seen == tiles
    assert (stats.tiles, stats.n_tiles, stats.bytes) == (len(tiles), len(tiles), source.nbytes)
    assert stats.elapsed > 0 and stats.gbps > 0


@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_at_most_prefetch_plus_two_tiles_alive(field, prefetch):
    source = _Counting(st.open_source(field), delay=0.001)
    tiles = [st.Tile(k, slice(0, 10), slice(k % 6, k % 6 + 1), slice(0, 8)) for k in range(16)]
    for k, (_tile, _block) in enumerate(st.stream(source, tiles, resolve("numpy"), prefetch=prefetch)):
        time.sleep(0.01)  # slow compute: the reader runs ahead as far as it may
        # tile k-1 may still be held by whoever got it, k is in hand: `prefetch` more at most
        # (before the first tile is dropped, its slot goes to one more read-ahead)
        assert source.reads <= max(k, 1) + 1 + prefetch
    assert source.reads == len(tiles)
    assert prefetch + 1 <= source.max_alive <= prefetch + 2
    del _block
    assert source.alive == 0


def test_reading_overlaps_compute(field):
    source = _Counting(st.open_source(field), delay=0.03)
    tiles = st.plan_tiles(st.ArraySource(field["field"], chunks=(10, 1, 8)), 10 * 8 * 8)
    start = time.perf_counter()
    for _ in st.stream(source, tiles, resolve("numpy"), prefetch=2):
        time.sleep(0.03)
    serial = 2 * 0.03 * len(tiles)  # 0.36 s without overlap, about 0.21 s with
    assert time.perf_counter() - start < 0.8 * serial


def test_reader_error_surfaces_in_caller(field):
    source = _Counting(st.open_source(field), fail_at=3)
    tiles = [st.Tile(k, slice(0, 10), slice(k, k + 1), slice(0, 8)) for k in range(6)]
    got = []
    with pytest.raises(OSError, match="disk error at tile 3"):
        for tile, _ in st.stream(source, tiles, resolve("numpy")):
            got.append(tile.index)
    assert got == [0, 1, 2]
    assert not [t for t in threading.enumerate() if t.name.startswith("stream-reader")]


def test_read_of_wrong_shape_is_reported(field):
    class Wrong(_Counting):
        def read(self, tile):
            return np.zeros((1, 1, 1))

    with pytest.raises(ValueError, match=r"Wrong.read returned \(1, 1, 1\) for tile 0"):
        list(st.stream(Wrong(st.open_source(field)), st.plan_tiles(st.open_source(field), 10**6), resolve("numpy")))


def test_closing_early_stops_the_reader(field):
    source = _Counting(st.open_source(field), delay=0.002)
    tiles = [st.Tile(k, slice(0, 10), slice(k % 6, k % 6 + 1), slice(0, 8)) for k in range(40)]
    gen = st.stream(source, tiles, resolve("numpy"), prefetch=2, label="early")
    for _ in range(3):
        next(gen)
    closer = threading.Thread(target=gen.close)
    closer.start()
    closer.join(timeout=5.0)
    assert not closer.is_alive(), "closing the stream hung"
    assert not [t for t in threading.enumerate() if t.name.startswith("stream-reader")]
    reads = source.reads
    assert reads <= 3 + 2 + 1
    time.sleep(0.02)
    assert source.reads == reads  # nothing reads after the close
    for k, _ in enumerate(st.stream(source, tiles, resolve("numpy"))):  # a `break` stops it too
        if k == 1:
            break
    assert not [t for t in threading.enumerate() if t.name.startswith("stream-reader")]


def test_progress_is_logged_with_throughput(field, caplog):
    source = st.open_source(field)
    tiles = st.plan_tiles(st.ArraySource(field["field"], chunks=(10, 2, 8)), 10 * 2 * 8 * 8)
    pattern = re.compile(r"^sst moments: tile (\d+)/3, \d+\.\d\d GB read, \d+\.\d\d GB/s, \d+\.\d s$")
    with caplog.at_level(logging.INFO, logger="pipeline.stream"):
        list(st.stream(source, tiles, resolve("numpy"), label="sst moments", log_every=0))
    lines = [m.group(1) for r in caplog.records if (m := pattern.match(r.getMessage()))]
    assert lines == ["1", "2", "3"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.stream"):
        list(st.stream(source, tiles, resolve("numpy"), label="sst moments", log_every=3600))
    lines = [m.group(1) for r in caplog.records if (m := pattern.match(r.getMessage()))]
    assert lines == ["3"]  # only the closing line


def test_stream_rejects_bad_arguments(field):
    source, b = st.open_source(field), resolve("numpy")
    tiles = st.plan_tiles(source, 10**6)
    with pytest.raises(ValueError, match="readers must be a positive integer"):
        st.stream(source, tiles, b, readers=0)
    with pytest.raises(ValueError, match="prefetch must be a non-negative integer"):
        st.stream(source, tiles, b, prefetch=-1)
    with pytest.raises(ValueError, match="log_every must be"):
        st.stream(source, tiles, b, log_every=float("nan"))
    with pytest.raises(TypeError, match="stream needs a FieldSource"):
        st.stream(field, tiles, b)
    with pytest.raises(TypeError, match="backend must be"):
        st.stream(source, tiles, "numpy")
    with pytest.raises(TypeError, match="tiles must be a sequence of Tile"):
        st.stream(source, [(0, 1)], b)


def test_read_throughput_times_a_plain_read(stores):
    seconds = st.read_throughput(st.ZarrSource(stores[(4, 2, 3)]), 500)
    assert isinstance(seconds, float) and 0 < seconds < 10


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_ready(), reason="CuPy with a CUDA device is not available")
def test_stream_to_cupy_gives_ready_device_arrays(stores, field):
    import cupy

    source = st.ZarrSource(stores[(4, 2, 3)])
    tiles = st.plan_tiles(source, 500)
    total = cupy.zeros((), dtype=cupy.float64)
    kept = []
    for tile, block in st.stream(source, tiles, resolve("cupy"), prefetch=2):
        assert isinstance(block, cupy.ndarray) and block.shape == tile.shape and block.dtype == source.dtype
        total += cupy.nansum(block, dtype=cupy.float64)  # queued on the current stream, after the copy
        kept.append((tile, block))
    for tile, block in kept:  # earlier arrays were not overwritten by later copies
        np.testing.assert_array_equal(cupy.asnumpy(block), source.read(tile))
    values = field["field"].values.astype(np.float64)
    # the anomalies sum to about zero: compare on the scale of the absolute values
    np.testing.assert_allclose(float(total), np.nansum(values), rtol=0, atol=1e-12 * np.nansum(np.abs(values)))


@pytest.mark.parametrize("in_memory", [True, False])
def test_imap_returns_every_tile_result_in_order_and_raises_errors(stores, field, in_memory):
    source = st.open_source(field) if in_memory else st.ZarrSource(stores[(4, 2, 3)])
    tiles = st.plan_tiles(source, 10 * 8 * 8)
    assert len(tiles) > 3
    threads = set()

    def total(tile, block):
        threads.add(threading.current_thread().name)
        time.sleep(0.002 * (tile.index % 3))  # uneven work: order must still hold
        return tile.index, float(np.nansum(block))

    got = list(st.imap(total, source, tiles, resolve("numpy"), workers=2))
    assert [t for t, _ in got] == tiles and [r[0] for _, r in got] == [t.index for t in tiles]
    expected = [float(np.nansum(field["field"].values[t.time, t.lat, t.lon])) for t in tiles]
    np.testing.assert_allclose([r[1] for _, r in got], expected, rtol=1e-12)
    assert (threading.current_thread().name not in threads) == in_memory  # worker threads only for in-memory data

    def fail(tile, block):
        if tile.index == 2:
            raise ValueError("bad tile")
        return tile.index

    with pytest.raises(ValueError, match="bad tile"):
        list(st.imap(fail, source, tiles, resolve("numpy"), workers=2))
