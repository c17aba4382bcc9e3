"""Every store is CF-labelled, consolidated and quiet to open; Zarr format 2 and netCDF copies read back equal.

One Snakemake run (module scope) of config/synthetic.yaml, plus two fields
from the embedded SST file, whose source has bounds on every axis: one as it
is (bounds carried into the fields, moments and eof stores) and one
aggregated to annual maxima (block bounds, ``cell_methods``). The run builds
the stores only (their markers), not the figures. The format-2 and netCDF
checks rewrite the run's stores with :func:`pipeline.io.write_store`
directly, which is what every stage calls.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from pipeline import ingest, io
from pipeline import stream as st

cf_xarray = pytest.importorskip("cf_xarray")

ROOT = Path(__file__).resolve().parents[1]
SST = ROOT / "resources" / "sst_ndjfm_anom.nc"
STORES = ["fields/x", "fields/y", "fields/d", "fields/sst", "fields/sstmax", "moments/x", "moments/sst", "eof/x",
          "eof/sst", "regression/y", "distributions/d", "posterior/y"]
STAGE = {"fields": "ingest", "moments": "moments", "eof": "eof", "regression": "regression",
         "distributions": "distributions", "posterior": "posterior"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The stores of config/synthetic.yaml plus the SST fields, written by one Snakemake run."""
    workdir = tmp_path_factory.mktemp("cf")
    config = yaml.safe_load((ROOT / "config" / "synthetic.yaml").read_text())
    config["fields"]["sst"] = {"source": "netcdf", "path": str(SST), "variable": "sst", "units": "K"}
    config["fields"]["sstmax"] = {**config["fields"]["sst"], "aggregate": {"period": "annual", "statistic": "max"}}
    config["eof"]["fields"] = ["x", "sst"]
    (workdir / "cf.yaml").write_text(yaml.safe_dump(config))
    targets = [f"results/synthetic/{name}.zarr.done" for name in STORES]
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile"), *targets, "--cores", "2",
         "--configfile", "cf.yaml"],
        cwd=workdir, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return workdir / "results" / "synthetic"


def _quiet_open(store: Path) -> xr.Dataset:
    """``xr.open_zarr(store)``, loaded, with every warning an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with xr.open_zarr(store) as ds:
            return ds.load()


def _without_manifest(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` without the manifest (it describes the Zarr files, not the data)."""
    return ds.drop_attrs(deep=False).assign_attrs({k: v for k, v in ds.attrs.items() if k != io.MANIFEST})


def _without_provenance(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` without manifest and provenance (each write records its own)."""
    return ds.drop_attrs(deep=False).assign_attrs(
        {k: v for k, v in ds.attrs.items() if k != io.MANIFEST and k not in io.PROVENANCE_KEYS})


def test_every_store_opens_without_a_warning(run):
    stores = sorted(p.relative_to(run).as_posix() for p in run.glob("*/*.zarr"))
    assert stores == sorted(f"{name}.zarr" for name in STORES)  # nothing else, nothing left out
    for name in STORES:
        ds = _quiet_open(run / f"{name}.zarr")
        assert ds.attrs["Conventions"] == "CF-1.10", name
        assert list(ds.attrs)[0] == "Conventions", name


def test_a_store_holds_its_zarr_files_only_with_consolidated_metadata_and_a_manifest_that_verifies(run):
    for name in STORES:
        store = run / f"{name}.zarr"
        assert json.loads((store / "zarr.json").read_text())["consolidated_metadata"]["metadata"], name
        arrays = io.read_manifest(store)
        chunks = {f"{array}/{key}" for array, keys in arrays.items() for key in keys}
        files = {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()}
        assert {f for f in files if Path(f).name != "zarr.json"} == chunks, name  # no .snakemake_timestamp
        assert io.check_store(store) and io.marked_store(io.marker_path(store)) == store, name
    assert not list(run.rglob("*.nc"))  # output.netcdf is false by default


def test_cf_xarray_finds_x_y_and_t_on_every_store_with_lat_lon_time(run):
    for name in STORES:
        ds = _quiet_open(run / f"{name}.zarr")
        expected = {axis: [coord] for axis, coord in (("X", "lon"), ("Y", "lat"), ("T", "time")) if coord in ds.coords}
        assert {"X", "Y"} <= set(expected), name  # every store is on the grid
        assert ds.cf.axes == expected, name
        assert ds.cf["X"].name == "lon" and ds.cf["Y"].name == "lat", name
        assert ds["lat"].attrs["units"] == "degrees_north" and ds["lon"].attrs["units"] == "degrees_east", name
        assert ds["lat"].attrs["standard_name"] == "latitude" and ds["lon"].attrs["standard_name"] == "longitude"
        if "time" in ds.coords:
            assert ds.cf["T"].name == "time" and ds["time"].attrs["standard_name"] == "time", name
            assert " since " in ds["time"].encoding["units"] and "units" not in ds["time"].attrs, name


def test_the_sources_bounds_are_kept_in_the_fields_store_and_the_stores_on_its_grid(run):
    source = xr.open_dataset(SST)
    fields = _quiet_open(run / "fields" / "sst.zarr")
    assert fields.cf.bounds["T"] == ["time_bnds"] and fields.cf.bounds["Y"] == ["lat_bnds"]
    np.testing.assert_array_equal(fields["lat_bnds"].values, source["bounds_latitude"].values)
    np.testing.assert_array_equal(fields["lon_bnds"].values, source["bounds_longitude"].values)
    np.testing.assert_array_equal(fields["time_bnds"].values, source["bounds_time"].values)
    assert fields["time"].encoding["units"] == fields["time_bnds"].encoding["units"]  # CF: bounds share units
    for name in ("moments/sst", "eof/sst"):
        ds = _quiet_open(run / f"{name}.zarr")
        for var in ("time_bnds", "lat_bnds", "lon_bnds"):
            xr.testing.assert_equal(ds[var], fields[var])
        assert {ds[c].attrs["bounds"] for c in ("time", "lat", "lon")} == {"time_bnds", "lat_bnds", "lon_bnds"}
    for name in STORES:  # a coordinate names bounds only when the store has them
        ds = _quiet_open(run / f"{name}.zarr")
        named = [ds[c].attrs["bounds"] for c in ("time", "lat", "lon") if c in ds.coords and "bounds" in ds[c].attrs]
        assert all(b in ds.data_vars and ds[b].dims[1] == "bnds" for b in named), name


def test_an_aggregated_field_gets_block_bounds_and_cell_methods(run):
    ds = _quiet_open(run / "fields" / "sstmax.zarr")
    assert ds["field"].attrs["cell_methods"] == "time: maximum"
    years = ds["time"].dt.year.values
    np.testing.assert_array_equal(ds["time_bnds"].values[:, 0], [np.datetime64(f"{y}-01-01") for y in years])
    np.testing.assert_array_equal(ds["time_bnds"].values[:, 1], [np.datetime64(f"{y + 1}-01-01") for y in years])
    assert ((ds["time_bnds"][:, 0] <= ds["time"]) & (ds["time"] < ds["time_bnds"][:, 1])).all()
    moments = _quiet_open(run / "moments" / "x.zarr")
    assert moments["mean"].attrs["cell_methods"] == "time: mean"
    assert moments["std"].attrs["cell_methods"] == "time: standard_deviation"


def _rewrite(run: Path, name: str, target: Path, output: dict) -> Path:
    """The run's store ``name`` written again by ``io.write_store`` with ``output`` options."""
    ds = io.open_store(run / f"{name}.zarr")
    params = json.loads(ds.attrs["pipeline_config"])
    return io.write_store(ds, target / f"{name}.zarr", stage=STAGE[name.split("/")[0]], params=params, output=output)


def test_zarr_format_2_stores_reopen_equal_to_the_format_3_ones(run, tmp_path):
    for name in STORES:
        v2 = _rewrite(run, name, tmp_path, {"zarr_format": 2})
        assert (v2 / ".zgroup").is_file() and (v2 / ".zmetadata").is_file() and not (v2 / "zarr.json").exists()
        assert io.check_store(v2), name  # the manifest (in .zattrs) lists the format-2 chunk files
        xr.testing.assert_identical(_without_provenance(_quiet_open(v2)),
                                    _without_provenance(_quiet_open(run / f"{name}.zarr")))
        xr.testing.assert_identical(_without_provenance(io.open_store(v2)),
                                    _without_provenance(io.open_store(run / f"{name}.zarr")))
    source = st.ZarrSource(tmp_path / "fields" / "x.zarr")  # the streaming reader reads format 2 too
    np.testing.assert_array_equal(source.read(st.plan_tiles(source, 10**9)[0]),
                                  _quiet_open(run / "fields" / "x.zarr")["field"].values)


def test_a_damaged_chunk_of_a_format_2_store_is_named(run, tmp_path):
    store = _rewrite(run, "eof/x", tmp_path, {"zarr_format": 2})
    chunk = sorted((store / "eof").glob("*.*.*"))[0]
    chunk.write_bytes(chunk.read_bytes()[::-1])
    with pytest.raises(io.CorruptStoreError, match=re.escape(f"chunk file eof/{chunk.name} of variable 'eof' does not")):
        io.open_store(store, "eof store")


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_a_netcdf_copy_reads_equal_to_its_store(run, tmp_path, zarr_format):
    for name in STORES:
        store = _rewrite(run, name, tmp_path, {"zarr_format": zarr_format, "netcdf": True})
        nc = io.netcdf_path(store)
        assert nc.name == f"{store.name}.nc" and not list(store.parent.glob(".*.tmp-*"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with xr.open_dataset(nc) as copy:
                xr.testing.assert_identical(copy.load(), _without_manifest(_quiet_open(store)))
    io.write_store(io.open_store(store), store, stage="posterior")  # rewritten without a copy: the stale one goes
    assert not nc.exists()


def test_a_large_variable_is_copied_into_netcdf_block_by_block(run, tmp_path, monkeypatch):
    monkeypatch.setattr(io, "NETCDF_BLOCK_BYTES", 2000)  # field x: 40 x 10 x 16 float64 in chunks of 2 latitudes
    copied = []
    original = io._copy_in_blocks
    monkeypatch.setattr(io, "_copy_in_blocks", lambda var, nc, name: (copied.append(name), original(var, nc, name)))
    ds = io.open_store(run / "fields" / "x.zarr")
    ds["field"].encoding["chunks"] = (40, 2, 16)
    store = io.write_store(ds, tmp_path / "x.zarr", stage="ingest", output={"netcdf": True})
    assert copied == ["field", "true_eof"]
    with xr.open_dataset(io.netcdf_path(store)) as copy:
        xr.testing.assert_identical(copy.load(), _without_manifest(_quiet_open(store)))


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_a_streamed_ingest_writes_the_same_labelled_store_in_either_format(tmp_path, zarr_format):
    spec = {"source": "netcdf", "path": str(SST), "variable": "sst", "units": "K"}
    whole = tmp_path / "whole.zarr"
    streamed = tmp_path / "streamed.zarr"
    ingest.run("sst", whole, params=spec, output_options={"zarr_format": zarr_format})
    ingest.run("sst", streamed, params={**spec, "stream_above_mb": 0.05}, output_options={"zarr_format": zarr_format})
    assert io.is_consolidated(streamed) and io.check_store(streamed)
    a, b = _quiet_open(whole), _quiet_open(streamed)
    assert b["field"].encoding["chunks"] == (50, 1, 30)  # one latitude row a band: streamed
    xr.testing.assert_identical(_without_provenance(a), _without_provenance(b))
    assert b.cf.axes == {"X": ["lon"], "Y": ["lat"], "T": ["time"]} and b.attrs["Conventions"] == "CF-1.10"
    assert set(b.cf.bounds["T"] + b.cf.bounds["X"] + b.cf.bounds["Y"]) == {"time_bnds", "lon_bnds", "lat_bnds"}


def test_the_output_options_take_defaults_and_refuse_what_they_do_not_know():
    assert io.output_options(None) == {"zarr_format": 3, "netcdf": False}
    assert io.output_options({"zarr_format": 2}) == {"zarr_format": 2, "netcdf": False}
    with pytest.raises(ValueError, match="output.zarr_format must be 2 or 3; got 4"):
        io.output_options({"zarr_format": 4})
    with pytest.raises(ValueError, match="output has unknown key"):
        io.output_options({"format": 2})
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    section = schema["properties"]["output"]["properties"]
    assert {k: v["default"] for k, v in section.items()} == io.OUTPUT_DEFAULTS


def test_cf_labelling_leaves_the_dataset_passed_in_alone():
    ds = xr.Dataset({"v": (("lat", "lon"), np.zeros((2, 3)))}, coords={"lat": [0.0, 1.0], "lon": [0.0, 1.0, 2.0]})
    before = ds.copy(deep=True)
    labelled = io.cf_labelled(ds)
    xr.testing.assert_identical(ds, before)
    assert labelled["lat"].attrs == {"axis": "Y", "standard_name": "latitude", "long_name": "latitude",
                                     "units": "degrees_north"}


def test_a_streamed_synthetic_field_gets_its_netcdf_copy_when_asked(tmp_path):
    spec = {"source": "synthetic", "stream": True, "units": "K",
            "options": {"n_time": 6, "n_lat": 4, "n_lon": 5, "chunks": [6, 2, 5], "seed": 1}}
    store = tmp_path / "big.zarr"
    ingest.run("big", store, params=spec, output_options={"netcdf": True})
    with xr.open_dataset(io.netcdf_path(store)) as copy:
        xr.testing.assert_identical(copy.load(), _without_manifest(_quiet_open(store)))
    ingest.run("big", store, params=spec)
    assert not io.netcdf_path(store).exists()  # rewritten without a copy: the stale one goes
