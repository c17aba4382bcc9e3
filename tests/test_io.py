"""Tests of pipeline.io: atomic writes that keep the last good store, manifests, markers, provenance.

Faults are made for real where that is cheap (a chunk file deleted or
overwritten, a process killed with SIGKILL between the two renames of a swap)
and simulated with monkeypatch where not (a full disk, a permission error).
References are independent of the code under test: the bytes of the store
files, ``git rev-parse HEAD``, ``hashlib.sha256`` of the files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from conftest import files_without_history
from pipeline import io
from pipeline import stream as st

ROOT = Path(__file__).resolve().parents[1]


def _dataset(value: float = 1.0) -> xr.Dataset:
    """A small eof-like Dataset stored in several chunks."""
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {"eof": (("mode", "lat", "lon"), value * rng.normal(size=(3, 4, 5))), "eigenvalue": ("mode", [3.0, 2.0, 1.0])},
        coords={"mode": [1, 2, 3], "lat": np.linspace(-30, 30, 4), "lon": np.linspace(0, 80, 5)},
        attrs={"field_name": "sst"},
    )
    ds["eof"].encoding["chunks"] = (1, 2, 5)
    return ds


def _files_raw(store: Path) -> dict[str, bytes]:
    return {f.relative_to(store).as_posix(): f.read_bytes() for f in sorted(store.rglob("*")) if f.is_file()}


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


@pytest.fixture
def written(tmp_path) -> Path:
    return io.write_store(_dataset(), tmp_path / "eof" / "sst.zarr", stage="eof", params={"n_modes": 3})


# ---------------------------------------------------------------- atomic writes


def test_an_error_inside_the_write_keeps_the_old_store_byte_for_byte(written):
    before = _files_raw(written)
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_directory(written) as tmp:
            _dataset(2.0).to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
            raise RuntimeError("boom")
    assert _files_raw(written) == before
    assert _siblings(written) == []
    xr.testing.assert_identical(io.open_store(written)["eof"], io.cf_labelled(_dataset())["eof"])


KILL_BETWEEN_RENAMES = """
import os, signal, sys
import numpy as np, xarray as xr
from pipeline import io
real = os.replace
def replace(src, dst):
    if os.path.basename(os.fspath(src)).startswith(".sst.zarr.tmp-"):  # the new store, about to go into place
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
os.replace = replace
io.write_store(xr.Dataset({"eof": ("mode", np.full(3, 7.0))}), sys.argv[1], stage="eof")
"""


def test_a_kill_between_the_two_renames_is_recovered_by_the_next_write(written):
    before = _files_raw(written)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(written)], env=env, timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert not written.exists()  # killed mid-swap: the old store is aside, the new one not yet in place
    left = _siblings(written)
    assert [n.split("-")[0] for n in left] == [".sst.zarr.old", ".sst.zarr.tmp"]
    assert _files_raw(written.with_name(left[0])) == before

    with io.atomic_directory(written) as tmp:
        assert _files_raw(written) == before  # put back before anything else happens
        _dataset(3.0).to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
    assert _siblings(written) == []
    np.testing.assert_allclose(io.open_store(written)["eof"].values, _dataset(3.0)["eof"].values)


def test_stale_temporary_and_old_copies_are_removed_by_the_next_write(written, caplog):
    for name in (".sst.zarr.tmp-dead0001", ".sst.zarr.old-dead0002"):
        shutil.copytree(written, written.with_name(name))
    other = written.with_name(".other.zarr.tmp-dead0003")  # another store's: left alone
    other.mkdir()
    with caplog.at_level("INFO", logger="pipeline.io"):
        io.write_store(_dataset(2.0), written, stage="eof")
    assert _siblings(written) == [] and other.is_dir()
    assert "removed" in caplog.text and ".sst.zarr.tmp-dead0001" in caplog.text
    np.testing.assert_allclose(io.open_store(written)["eof"].values, _dataset(2.0)["eof"].values)


def test_an_old_copy_without_a_store_is_put_back_before_the_write(written):
    before = _files_raw(written)
    aside = written.with_name(".sst.zarr.old-feed0001")
    os.replace(written, aside)
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_directory(written):
            raise RuntimeError("boom")
    assert _files_raw(written) == before and _siblings(written) == []


def test_a_full_disk_names_the_store_keeps_the_old_one_and_removes_the_temporary(written, monkeypatch):
    import zarr.storage._local as local

    before = _files_raw(written)

    def full(path, value, exclusive=False):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local, "_put", full)
    with pytest.raises(io.StoreWriteError) as info:
        io.write_store(_dataset(2.0), written, stage="eof")
    assert str(info.value) == (
        f"Could not write the eof store {written} (No space left on device); free space on that disk, or write "
        "the results to another disk (a results/ folder linked there, or snakemake --directory); the previous "
        "store, if any, is kept."
    )
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert _files_raw(written) == before and _siblings(written) == []


def test_a_permission_error_names_the_store(written, monkeypatch):
    import zarr.storage._local as local

    def denied(path, value, exclusive=False):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(local, "_put", denied)
    with pytest.raises(io.StoreWriteError, match=rf"Could not write the eof store {written} \(Permission denied\); "
                                                 rf"make {written.parent} writable"):
        io.write_store(_dataset(2.0), written, stage="eof")
    assert _siblings(written) == []


def test_an_os_error_elsewhere_inside_the_block_passes_through_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        with io.atomic_directory(tmp_path / "out" / "x.zarr"):
            open(tmp_path / "source.nc", "rb")  # reading a missing source is not a write error
    assert not isinstance(info.value, io.StoreWriteError)
    assert sorted(os.listdir(tmp_path / "out")) == []


# ---------------------------------------------------------------- manifests


def test_a_written_store_records_each_chunk_file_and_its_crc32(written):
    arrays = io.read_manifest(written)
    assert set(arrays) == {"eof", "eigenvalue", "mode", "lat", "lon"}
    assert sorted(arrays["eof"]) == [f"c/{m}/{i}/0" for m in range(3) for i in range(2)]
    import zlib

    for array, chunks in arrays.items():
        for key, crc in chunks.items():
            assert zlib.crc32((written / array / key).read_bytes()) == crc
    assert io.MANIFEST not in io.open_store(written).attrs  # about the files, not the data


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_a_sealed_store_is_consolidated_and_its_manifest_still_verifies(tmp_path, zarr_format):
    import warnings

    path = io.write_store(_dataset(), tmp_path / "sst.zarr", stage="eof", output={"zarr_format": zarr_format})
    assert io.is_consolidated(path) and io.check_store(path)
    assert io.read_manifest(path) == io.manifest(path)["arrays"]  # consolidating changed no chunk file
    chunk = "c/1/0/0" if zarr_format == 3 else "1.0.0"
    assert chunk in io.read_manifest(path)["eof"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xr.testing.assert_identical(xr.open_zarr(path).load().drop_attrs(deep=False),
                                    io.open_store(path).drop_attrs(deep=False))


def test_the_temporary_netcdf_copy_of_a_killed_write_is_removed_by_the_next_write(written):
    stale = written.with_name(f".{written.name}.nc.tmp-0badc0de")
    stale.write_bytes(b"half a file")
    io.write_store(_dataset(), written, stage="eof", output={"netcdf": True})
    assert not stale.exists() and io.netcdf_path(written).is_file() and _siblings(written) == []


@pytest.mark.parametrize("fault", ["missing", "corrupt"])
def test_a_damaged_chunk_is_named_by_open_store(written, fault):
    chunk = written / "eof" / "c" / "1" / "0" / "0"
    if fault == "missing":
        chunk.unlink()
        needle = "is incomplete: chunk file eof/c/1/0/0 of variable 'eof' listed in its manifest is missing"
    else:
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0xFF
        chunk.write_bytes(bytes(data))
        needle = "is corrupt: chunk file eof/c/1/0/0 of variable 'eof' does not match the checksum in its manifest"
    with pytest.raises(io.CorruptStoreError) as info:
        io.open_store(written, what="eof store")
    assert str(info.value) == f"The eof store {written} {needle}; rewrite it (snakemake --forcerun eof)."


@pytest.fixture
def fields_store(tmp_path) -> Path:
    """A streamed fields store of four latitude-band chunks, written by the pipeline (with a manifest)."""
    from pipeline.synthetic import write_planted_modes_store

    return write_planted_modes_store(tmp_path / "fields" / "x.zarr", n_time=12, n_lat=8, n_lon=6,
                                     chunks=(12, 2, 6), seed=1)


def test_a_missing_chunk_stops_zarr_source_at_open(fields_store):
    (fields_store / "field" / "c" / "0" / "2" / "0").unlink()
    with pytest.raises(io.CorruptStoreError, match=(
            rf"^The fields store {fields_store} is incomplete: chunk file field/c/0/2/0 of variable 'field' listed "
            r"in its manifest is missing; rewrite it \(snakemake --forcerun ingest\)\.$")):
        st.ZarrSource(fields_store)


def test_a_chunk_damaged_or_removed_after_open_stops_zarr_source_at_the_read(fields_store):
    source = st.ZarrSource(fields_store)
    tiles = st.plan_tiles(source, 10**9)
    chunk = fields_store / "field" / "c" / "0" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0x01  # one bit: zstd may still decode it, the checksum does not match
    chunk.write_bytes(bytes(data))
    with pytest.raises(io.CorruptStoreError, match=r"is corrupt: chunk file field/c/0/1/0 of variable 'field'"):
        source.read(tiles[0])
    chunk.unlink()
    with pytest.raises(io.CorruptStoreError, match=r"is incomplete: chunk file field/c/0/1/0 of variable 'field'"):
        source.read(tiles[0])


def test_a_store_without_a_manifest_is_read_as_it_is(tmp_path):
    ds = _dataset()
    ds.to_zarr(tmp_path / "theirs.zarr", zarr_format=3, consolidated=False)
    (tmp_path / "theirs.zarr" / "eof" / "c" / "1" / "0" / "0").unlink()  # to them, a chunk of fill values
    back = io.open_store(tmp_path / "theirs.zarr")
    assert np.isnan(back["eof"].values[1, :2]).all() and not np.isnan(back["eof"].values[0]).any()
    assert io.read_manifest(tmp_path / "theirs.zarr") is None


def test_a_manifest_that_is_not_ours_is_an_error(written):
    import zarr

    zarr.open_group(written, mode="r+").attrs[io.MANIFEST] = {"arrays": "everything"}
    with pytest.raises(io.CorruptStoreError, match=rf"The attribute pipeline_manifest of the store {written} is not"):
        io.open_store(written)


# ---------------------------------------------------------------- markers


def test_a_marker_is_written_after_its_store_and_leads_back_to_it(written):
    marker = io.marker_path(written)
    assert marker.name == "sst.zarr.done" and io.store_path(marker) == written
    io.write_marker(marker)
    content = json.loads(marker.read_text())
    assert content["store"] == "sst.zarr" and len(content["manifest_sha256"]) == 64
    assert io.marked_store(marker) == written
    with pytest.raises(ValueError, match="A store marker is the store's path followed by '.done'"):
        io.store_path(written)


def test_a_marker_without_its_store_cannot_be_written(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not there; its marker .* is written only after it"):
        io.write_marker(tmp_path / "eof" / "sst.zarr.done")


def test_a_store_missing_or_replaced_behind_its_marker_is_named(written):
    marker = io.write_marker(io.marker_path(written))
    io.write_store(_dataset(5.0), written, stage="eof")  # rewritten outside the workflow
    with pytest.raises(io.CorruptStoreError, match=(
            rf"The eof store {written} is not the one its marker {marker} was written for .*--forcerun eof\)")):
        io.marked_store(marker, "eof store")
    shutil.rmtree(written)
    with pytest.raises(FileNotFoundError, match=rf"The store {written} is missing although its marker {marker} is"):
        io.marked_store(marker)


# ---------------------------------------------------------------- provenance and reproducibility


def test_provenance_fields(written):
    attrs = json.loads((written / "zarr.json").read_text())["attributes"]
    expected = ["Conventions", "field_name", "pipeline_stage", "pipeline_version", "pipeline_git_commit",
                "pipeline_config", "pipeline_dtype", "software", "history", io.MANIFEST]
    assert list(attrs) == [k for k in expected if k != "pipeline_git_commit" or io.git_commit() is not None]
    assert attrs["pipeline_stage"] == "eof" and attrs["pipeline_config"] == '{"n_modes": 3}'
    assert attrs["pipeline_dtype"] == "float64"  # of eof, the stage's main variable
    assert attrs["history"].endswith("written by pipeline.eof")
    stamped = [k for k, v in attrs.items() if isinstance(v, str) and "T" in v and ":" in v and k != "history"]
    assert stamped == []  # history is the only timestamp


def test_the_git_commit_is_recorded_in_a_checkout_and_absent_outside_git(tmp_path, monkeypatch):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0 and shutil.which("git"):
        assert io.git_commit().removesuffix("-dirty") == head.stdout.strip()
        assert io.provenance("eof")["pipeline_git_commit"] == io.git_commit()
    outside = tmp_path / "elsewhere" / "io.py"
    outside.parent.mkdir()
    outside.write_text("")
    assert io.git_commit(outside) is None
    monkeypatch.setattr(io, "git_commit", lambda where=None: None)
    attrs = io.provenance("eof")
    assert "pipeline_git_commit" not in attrs
    ds = _dataset()
    ds.attrs["pipeline_git_commit"] = "0123abc"  # an input's provenance, carried over: dropped
    path = io.write_store(ds, tmp_path / "again.zarr", stage="eof")
    assert "pipeline_git_commit" not in io.open_store(path).attrs


def test_ingest_provenance_checksums_each_source_file_and_zarr_directory(tmp_path):
    nc = tmp_path / "a.nc"
    nc.write_bytes(b"netcdf bytes")
    source = tmp_path / "src.zarr"
    _dataset().to_zarr(source, zarr_format=3, consolidated=False)
    digest = hashlib.sha256()
    for f in sorted(p for p in source.rglob("*") if p.is_file()):
        digest.update(f.relative_to(source).as_posix().encode() + b"\0" + f.read_bytes())
    sums = json.loads(io.provenance("ingest", sources=[nc, str(source)])["pipeline_source_sha256"])
    assert sums == {str(nc): hashlib.sha256(b"netcdf bytes").hexdigest(), str(source): digest.hexdigest()}
    field = xr.Dataset({"field": (("time", "lat", "lon"), np.zeros((2, 3, 4), dtype="float32"))})
    path = io.write_store(field, tmp_path / "fields.zarr", stage="ingest", sources=[nc])
    attrs = io.open_store(path).attrs
    assert attrs["pipeline_dtype"] == "float32"
    assert json.loads(attrs["pipeline_source_sha256"]) == {str(nc): hashlib.sha256(b"netcdf bytes").hexdigest()}
    assert "pipeline_source_sha256" not in io.provenance("eof")


def test_the_same_dataset_written_twice_gives_byte_identical_stores(tmp_path):
    a = io.write_store(_dataset(), tmp_path / "a" / "sst.zarr", stage="eof", params={"n_modes": 3}, backend="numpy")
    b = io.write_store(_dataset(), tmp_path / "b" / "sst.zarr", stage="eof", params={"n_modes": 3}, backend="numpy")
    assert files_without_history(a) == files_without_history(b)
    io.write_marker(io.marker_path(a))
    io.write_marker(io.marker_path(b))
    assert io.marker_path(a).read_bytes() == io.marker_path(b).read_bytes()
