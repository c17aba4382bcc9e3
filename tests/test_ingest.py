"""Ingest: sources become canonical (time, lat, lon) stores; bad input fails in one sentence."""

from __future__ import annotations

import hashlib
import json
import logging
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
    assert json.loads(ds.attrs["pipeline_source_sha256"]) == {SST["path"]: before}
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


# ---------------------------------------------------------------- bad data at the door: both read paths


LAT5 = np.array([-20.0, -10.0, 0.0, 10.0, 20.0])
LON4 = np.array([0.0, 90.0, 180.0, 270.0])
IN_MEMORY, STREAMED = 10_000, 0.0001  # stream_above_mb: read whole, or band by band (one cell a band here)


def _small(path, values, *, time=None, lon=LON4, units="days since 2000-01-01"):
    """A netCDF file of ``values`` (time, lat, lon) on LAT5 and ``lon``, with raw time numbers."""
    time = np.arange(values.shape[0], dtype=np.float64) if time is None else np.asarray(time, dtype=np.float64)
    ds = xr.Dataset({"tos": (("time", "lat", "lon"), values, {"units": "K"})},
                    coords={"time": ("time", time, {"units": units} if units else {}), "lat": LAT5, "lon": lon})
    ds.to_netcdf(path)
    return str(path)


def _clean(n_time=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n_time, LAT5.size, LON4.size))


@pytest.fixture
def streamed(monkeypatch):
    """Records whether ingest.run went through stream_copy."""
    calls = []
    copy = ingest.stream_copy

    def spy(*args, **kwargs):
        calls.append(True)
        return copy(*args, **kwargs)

    monkeypatch.setattr(ingest, "stream_copy", spy)
    return calls


@pytest.mark.parametrize("bad", [np.inf, -np.inf], ids=["inf", "-inf"])
@pytest.mark.parametrize("stream_above_mb", [IN_MEMORY, STREAMED], ids=["in_memory", "streamed"])
def test_an_infinite_value_names_field_file_date_and_cell_and_writes_nothing(tmp_path, streamed, bad,
                                                                              stream_above_mb):
    values = _clean()
    values[4, 3, 2] = bad
    path = _small(tmp_path / "tos.nc", values)
    with pytest.raises(ValueError) as err:
        ingest.run("tos", tmp_path / "out" / "tos.zarr",
                   params={"source": "netcdf", "path": path, "stream_above_mb": stream_above_mb})
    assert str(err.value) == (f"Field 'tos': variable 'tos' of '{path}' is {bad} at 2000-01-05, lat 10.0, lon 180.0 "
                              "(the only infinite value read); replace them with NaN in the source, or set "
                              "fields.tos.nonfinite: mask to read them as missing.")
    assert bool(streamed) == (stream_above_mb == STREAMED)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_an_infinite_value_in_the_second_of_two_files_names_that_file(tmp_path):
    values = _clean()
    values[4, 0, 1] = np.inf
    first = _small(tmp_path / "tos_a.nc", values[:3])
    second = _small(tmp_path / "tos_b.nc", values[3:], time=[3.0, 4.0, 5.0])
    with pytest.raises(ValueError) as err:
        ingest.compute("tos", {"source": "netcdf", "path": [second, first]})
    assert str(err.value) == (f"Field 'tos': variable 'tos' of '{second}' is inf at 2000-01-05, lat -20.0, lon 90.0 "
                              "(the only infinite value read); replace them with NaN in the source, or set "
                              "fields.tos.nonfinite: mask to read them as missing.")


@pytest.mark.parametrize("stream_above_mb", [IN_MEMORY, STREAMED], ids=["in_memory", "streamed"])
def test_nonfinite_mask_gives_the_field_with_nan_there_and_warns_with_the_count(tmp_path, caplog, streamed,
                                                                                  stream_above_mb):
    clean = _clean()
    values = clean.copy()
    values[1, 0, 0], values[4, 3, 2], values[5, 3, 2] = np.inf, -np.inf, np.inf
    path = _small(tmp_path / "tos.nc", values)
    params = {"source": "netcdf", "path": path, "stream_above_mb": stream_above_mb, "nonfinite": "mask"}
    with caplog.at_level(logging.WARNING, logger="pipeline.sources"):
        ingest.run("tos", tmp_path / "tos.zarr", params=params)
    expected = clean.copy()
    expected[1, 0, 0] = expected[4, 3, 2] = expected[5, 3, 2] = np.nan
    np.testing.assert_array_equal(open_store(tmp_path / "tos.zarr")["field"].values, expected)
    assert bool(streamed) == (stream_above_mb == STREAMED)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    counts = [int(m.split(" infinite values")[0].rsplit(" ", 1)[1]) for m in warned]
    assert sum(counts) == 3
    assert all(m.endswith(f"read from {path} treated as missing (nonfinite: mask)") for m in warned)


def test_years_on_a_time_axis_of_plain_numbers_says_to_set_time_units(tmp_path):
    path = _small(tmp_path / "plain.nc", _clean(), units=None)
    with pytest.raises(ValueError) as err:
        ingest.compute("tos", {"source": "netcdf", "path": path, "years": [2000, 2001]})
    assert str(err.value) == (f"Field 'tos': the time axis of '{path}' has no units; set fields.tos.time_units "
                              "(e.g. 'days since 1950-01-01' or 'months since 1958-01-01').")
    ok = ingest.compute("tos", {"source": "netcdf", "path": path, "years": [2000, 2001],
                                "time_units": "days since 2001-12-30"})
    assert ok["time"].dt.year.values.tolist() == [2001, 2001]  # 30 and 31 December 2001 kept


def test_unsorted_time_steps_are_sorted_with_a_log_line_and_equal_the_sorted_file(tmp_path, caplog):
    values = _clean(n_time=36) + np.arange(36)[:, None, None] * 0.1  # a trend: detrending depends on the order
    order = np.random.default_rng(1).permutation(36)
    units = "months since 2000-01-01"
    unsorted = _small(tmp_path / "unsorted.nc", values[order], time=order, units=units)
    ordered = _small(tmp_path / "sorted.nc", values, units=units)
    spec = {"source": "netcdf", "climatology": "monthly", "detrend": "linear"}
    with caplog.at_level(logging.INFO, logger="pipeline.sources"):
        ingest.run("tos", tmp_path / "u.zarr", params={**spec, "path": unsorted, "stream_above_mb": STREAMED})
    assert f"field tos: the 36 time steps of {unsorted} are not in order; sorted them" in caplog.messages
    ingest.run("tos", tmp_path / "s.zarr", params={**spec, "path": ordered})
    u, s = open_store(tmp_path / "u.zarr"), open_store(tmp_path / "s.zarr")
    for name in ("field", "climatology", "trend"):
        np.testing.assert_allclose(u[name].values, s[name].values, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(u["time"].values, s["time"].values)


@pytest.mark.parametrize("stream_above_mb", [IN_MEMORY, STREAMED], ids=["in_memory", "streamed"])
def test_a_date_line_wrap_ingests_like_the_same_data_on_170_to_215(tmp_path, stream_above_mb):
    values = _clean()
    straight = np.array([170.0, 185.0, 200.0, 215.0])
    wrapped = np.where(straight >= 180.0, straight - 360.0, straight)  # 170, -175, -160, -145
    params = {"source": "netcdf", "stream_above_mb": stream_above_mb, "climatology": "none"}
    ingest.run("tos", tmp_path / "w.zarr", params={**params, "path": _small(tmp_path / "w.nc", values, lon=wrapped)})
    ingest.run("tos", tmp_path / "s.zarr", params={**params, "path": _small(tmp_path / "s.nc", values, lon=straight)})
    w, s = open_store(tmp_path / "w.zarr"), open_store(tmp_path / "s.zarr")
    xr.testing.assert_identical(w["field"], s["field"])
    np.testing.assert_array_equal(w["lon"].values, straight)


@pytest.mark.parametrize("stream_above_mb", [IN_MEMORY, STREAMED], ids=["in_memory", "streamed"])
def test_the_level_select_used_is_recorded_in_the_store(tmp_path, stream_above_mb):
    values = _clean()
    ds = xr.Dataset({"ta": (("time", "level", "lat", "lon"), np.stack([values, values + 1.0], axis=1))},
                    coords={"time": ("time", np.arange(6.0), {"units": "days since 2000-01-01"}),
                            "level": [1000.0, 500.0], "lat": LAT5, "lon": LON4})
    ds.to_netcdf(tmp_path / "ta.nc")
    ingest.run("ta", tmp_path / "ta.zarr", params={"source": "netcdf", "path": str(tmp_path / "ta.nc"),
                                                   "select": {"level": 850}, "select_tolerance": 150,
                                                   "stream_above_mb": stream_above_mb})
    out = open_store(tmp_path / "ta.zarr")
    assert out["field"].attrs["selected"] == "level=1000.0"
    np.testing.assert_array_equal(out["field"].values, values)
