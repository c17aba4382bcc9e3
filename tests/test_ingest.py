"""Ingest: sources become canonical (time, lat, lon) stores; bad input fails in one sentence."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy.linalg import subspace_angles

from pipeline import eof as eof_stage
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


# ---------------------------------------------------------------- real-world layouts and time handling


def _monthly_planted(n_years=30, cycle=20.0, seed=5, calendar="standard"):
    """Planted anomaly modes on a monthly axis plus a strong seasonal cycle of known pattern."""
    n = 12 * n_years
    truth = synthetic.planted_modes(n_time=n, n_lat=12, n_lon=20, variances=(9.0, 4.0, 1.0), noise_std=0.01,
                                    land_fraction=0.1, seed=seed)
    time = xr.date_range("1960-01-01", periods=n, freq="MS", calendar=calendar, use_cftime=calendar != "standard")
    months = np.arange(n) % 12
    lat = truth["lat"].values
    pattern = np.cos(np.deg2rad(lat))[:, None] * (1.0 + 0.5 * np.sin(np.deg2rad(truth["lon"].values)))[None, :]
    field = truth["field"].values + 280.0 + cycle * np.cos(2 * np.pi * months / 12)[:, None, None] * pattern[None]
    ds = xr.Dataset({"tos": (("time", "latitude", "longitude"), field, {"units": "K"})},
                    coords={"time": time.values, "latitude": lat, "longitude": truth["lon"].values})
    return ds, truth, pattern


def _angles_deg(a, b):
    """Angle (degrees) between each pair of columns of two (cells, mode) matrices."""
    a, b = a / np.linalg.norm(a, axis=0), b / np.linalg.norm(b, axis=0)
    return np.degrees(np.arccos(np.clip(np.abs(np.sum(a * b, axis=0)), 0.0, 1.0)))


def test_monthly_climatology_recovers_the_planted_modes_and_without_it_eof1_is_the_seasonal_cycle(tmp_path):
    ds, truth, pattern = _monthly_planted()
    ds.to_netcdf(tmp_path / "tos.nc")
    spec = {"source": "netcdf", "path": str(tmp_path / "tos.nc")}
    ocean = ~truth["land"].values.ravel()
    w = np.sqrt(np.cos(np.deg2rad(truth["lat"].values)))[:, None] * np.ones(pattern.shape)

    anomalies = ingest.compute("tos", {**spec, "climatology": "monthly"})
    assert anomalies["climatology"].dims == ("month", "lat", "lon")
    eof = eof_stage.decompose(anomalies, n_modes=3, method="exact", backend="numpy")
    got = eof["eof"].values.reshape(3, -1)[:, ocean].T
    true = truth["true_eof"].values.reshape(3, -1)[:, ocean].T
    assert _angles_deg(got, true).max() < 1.0
    assert subspace_angles(got, true).max() < np.radians(1.0)

    raw = eof_stage.decompose(ingest.compute("tos", spec), n_modes=3, method="exact", backend="numpy")
    cycle = (pattern * w).ravel()[ocean][:, None]
    assert _angles_deg(raw["eof"].values.reshape(3, -1)[:, ocean].T[:, :1], cycle)[0] < 1.0
    assert raw["variance_fraction"].values[0] > 0.9


def test_a_glob_over_decade_files_equals_the_single_file(tmp_path):
    ds, _, _ = _monthly_planted(n_years=30)
    ds.to_netcdf(tmp_path / "one.nc")
    for k, (a, b) in enumerate([(0, 120), (120, 240), (240, 360)]):
        ds.isel(time=slice(a, b)).to_netcdf(tmp_path / f"tos_Omon_{1960 + 10 * k}01-{1969 + 10 * k}12.nc")
    common = {"source": "netcdf", "variable": "tos", "climatology": "monthly", "base_period": [1961, 1990],
              "aggregate": "DJF", "detrend": "linear"}
    single = ingest.compute("tos", {**common, "path": str(tmp_path / "one.nc")})
    many = ingest.compute("tos", {**common, "path": str(tmp_path / "tos_Omon_*.nc")})
    listed = ingest.compute("tos", {**common, "path": [str(p) for p in sorted(tmp_path.glob("tos_Omon_*.nc"))][::-1]})
    for other in (many, listed):
        for name in ("field", "climatology", "trend"):
            np.testing.assert_array_equal(other[name].values, single[name].values)
        np.testing.assert_array_equal(other["time"].values, single["time"].values)
    assert single.sizes["time"] == 29  # DJF 1961 .. 1989: the first winter lacks December 1959


def test_months_since_units_decode_to_the_first_of_each_month(tmp_path):
    values = np.random.default_rng(0).normal(size=(14, 3, 4))
    ds = xr.Dataset({"sst": (("time", "lat", "lon"), values)},
                    coords={"time": ("time", np.arange(14.0), {"units": "months since 1958-1-1"}),
                            "lat": [-10.0, 0.0, 10.0], "lon": [0.0, 90.0, 180.0, 270.0]})
    ds.to_netcdf(tmp_path / "raw.nc")
    out = ingest.compute("sst", {"source": "netcdf", "path": str(tmp_path / "raw.nc")})
    expected = np.array([f"{1958 + m // 12}-{m % 12 + 1:02d}-01" for m in range(14)], dtype="datetime64[ns]")
    np.testing.assert_array_equal(out["time"].values.astype("datetime64[ns]"), expected)
    np.testing.assert_array_equal(out["field"].values, values)


def test_streamed_ingest_with_a_climatology_stays_within_its_budget_and_equals_the_in_memory_result(tmp_path):
    n_lat, n_lon = 40, 60
    time = xr.date_range("1950-01-01", "1952-12-31", freq="D", calendar="noleap", use_cftime=True)
    rng = np.random.default_rng(1)
    doy = np.arange(time.size) % 365
    values = (10.0 * np.cos(2 * np.pi * doy / 365)[:, None, None]
              + rng.normal(size=(time.size, n_lat, n_lon))).astype(np.float64)
    values[:, :3, :5] = np.nan
    src = xr.Dataset({"tas": (("time", "lat", "lon"), values, {"units": "K"})},
                     coords={"time": time.values, "lat": np.linspace(-60, 60, n_lat), "lon": np.arange(n_lon) * 6.0})
    src.to_zarr(tmp_path / "src.zarr", zarr_format=3, consolidated=False,
                encoding={"tas": {"chunks": (365, 2, n_lon)}})
    spec = {"source": "zarr", "path": str(tmp_path / "src.zarr"), "climatology": "daily", "detrend": "linear",
            "stream_above_mb": 4}
    assert values.nbytes > 4 * spec["stream_above_mb"] * 2**20
    ingest.run("tas", tmp_path / "warm.zarr", params=spec)  # first use imports modules: not the working set
    tracemalloc.start()
    try:
        ingest.run("tas", tmp_path / "out.zarr", params=spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * spec["stream_above_mb"] * 2**20, f"peak {peak / 2**20:.1f} MB"
    streamed = open_store(tmp_path / "out.zarr")
    whole = ingest.compute("tas", {**spec, "stream_above_mb": 10_000})
    for name in ("field", "climatology", "trend"):
        np.testing.assert_allclose(streamed[name].values, whole[name].values, rtol=1e-12, equal_nan=True)
    assert streamed.attrs["time_processing"] == whole.attrs["time_processing"]
