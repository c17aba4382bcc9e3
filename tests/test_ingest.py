"""Ingest: sources become canonical (time, lat, lon) stores; bad input fails in one sentence."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline import ingest, synthetic
from pipeline.io import open_store

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
SST = {"source": "netcdf", "path": str(RESOURCES / "sst_ndjfm_anom.nc"), "variable": "sst", "units": "K"}
Z500 = {"source": "netcdf", "path": str(RESOURCES / "hgt_djf.nc"), "variable": "z", "units": "m"}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_embedded_sst_matches_the_file_and_leaves_it_untouched(tmp_path):
    before = _digest(RESOURCES / "sst_ndjfm_anom.nc")
    ingest.run("sst", tmp_path / "sst.zarr", params=SST)
    ds = open_store(tmp_path / "sst.zarr")
    raw = xr.open_dataset(RESOURCES / "sst_ndjfm_anom.nc")["sst"]
    assert ds["field"].dims == ("time", "lat", "lon")
    assert ds["field"].shape == (50, 18, 30)
    assert ds["time"].dt.year.values[[0, -1]].tolist() == [1963, 2012]
    np.testing.assert_array_equal(ds["field"].values, raw.transpose("time", "latitude", "longitude").values)
    assert np.isnan(ds["field"].values).any()  # land cells are NaN
    assert ds["field"].attrs["units"] == "K"
    assert ds.attrs["field_name"] == "sst" and ds.attrs["pipeline_stage"] == "ingest"
    assert _digest(RESOURCES / "sst_ndjfm_anom.nc") == before


def test_embedded_z500_squeezes_pressure_and_sorts_latitude():
    ds = ingest.compute("z500", Z500)
    assert ds["field"].dims == ("time", "lat", "lon")
    assert ds["field"].shape == (65, 29, 49)
    assert np.all(np.diff(ds["lat"].values) > 0)
    assert ds["time"].dt.year.values[[0, -1]].tolist() == [1948, 2012]
    raw = xr.open_dataset(RESOURCES / "hgt_djf.nc")["z"].isel(pressure=0).sortby("latitude")
    np.testing.assert_array_equal(ds["field"].values, raw.values)


def test_aliases_zarr_source_and_descending_latitude(tmp_path):
    truth = synthetic.planted_modes(n_time=8, n_lat=5, n_lon=6)
    src = truth["field"].rename(lat="latitude", lon="longitude").isel(latitude=slice(None, None, -1))
    src = src.expand_dims(level=[850.0], axis=1).to_dataset(name="ta")
    src.to_zarr(tmp_path / "src.zarr", zarr_format=3, consolidated=False)
    ds = ingest.compute("ta", {"source": "zarr", "path": str(tmp_path / "src.zarr")})
    xr.testing.assert_allclose(ds["field"], truth["field"].reset_coords(drop=True), rtol=0, atol=0)


def test_synthetic_regression_source_uses_the_planted_pcs_of_its_predictor():
    modes = {"source": "synthetic", "kind": "modes", "options": {"n_time": 30, "seed": 3}}
    spec = {
        "source": "synthetic",
        "kind": "regression",
        "options": {"coef": [1.0, -2.0, 0.5], "noise_std": 0.0, "intercept": 4.0},
        "predictors_spec": modes,
    }
    y = ingest.compute("y", spec)
    pcs = synthetic.planted_modes(n_time=30, seed=3)["true_pc"].values
    expected = 4.0 + pcs @ np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(y["field"].values[:, 0, 0], expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"source": "netcdf", "path": "nowhere.nc"}, "does not exist"),
        ({**SST, "variable": "tos"}, "variable 'tos' is not in the source"),
        ({"source": "ftp", "path": "x"}, "source must be one of"),
        ({**SST, "years": [1800, 1810]}, "no time step falls in years 1800-1810"),
        ({"source": "synthetic", "kind": "regression"}, "needs 'predictors_from'"),
    ],
)
def test_bad_sources_fail_with_one_sentence(spec, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        ingest.compute("bad", spec)


def test_missing_dimension_and_extra_axis_and_all_nan(tmp_path):
    da = xr.DataArray(np.ones((4, 3, 2)), dims=("time", "y", "x"), name="v")
    da.to_dataset().to_netcdf(tmp_path / "nolat.nc")
    with pytest.raises(ValueError, match="has no lat dimension"):
        ingest.compute("f", {"source": "netcdf", "path": str(tmp_path / "nolat.nc")})

    field = synthetic.planted_modes(n_time=4, n_lat=3, n_lon=2)["field"]
    field.expand_dims(level=[1.0, 2.0], axis=1).to_dataset(name="v").to_netcdf(tmp_path / "levels.nc")
    with pytest.raises(ValueError, match="extra dimensions"):
        ingest.compute("f", {"source": "netcdf", "path": str(tmp_path / "levels.nc")})
    picked = ingest.compute("f", {"source": "netcdf", "path": str(tmp_path / "levels.nc"), "select": {"level": 2.0}})
    np.testing.assert_allclose(picked["field"].values, field.values)

    (field * np.nan).to_dataset(name="v").to_netcdf(tmp_path / "nan.nc")
    with pytest.raises(ValueError, match="missing \\(NaN\\) everywhere"):
        ingest.compute("f", {"source": "netcdf", "path": str(tmp_path / "nan.nc")})


def test_a_failed_write_leaves_no_store(tmp_path, monkeypatch):
    out = tmp_path / "f.zarr"

    def boom(*args, **kwargs):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(xr.Dataset, "to_zarr", boom)
    with pytest.raises(RuntimeError):
        ingest.run("sst", out, params=SST)
    assert list(tmp_path.iterdir()) == []
