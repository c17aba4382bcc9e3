"""The labelled moments stage: layout, NaN placement, attributes, stores, errors.

Numbers are checked against NumPy computed here on the same grid (nan-mean,
nan-std, counts, and the covariance of the sqrt(cos lat)-weighted anomalies of
the complete cells, written out independently of ``pipeline.grid``).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from pipeline import io, moments
from pipeline.backend import resolve
from pipeline.synthetic import planted_modes

BACKEND = resolve("numpy")


def _fields(n_time: int = 24, n_lat: int = 6, n_lon: int = 8, dtype: str = "float64", seed: int = 0):
    """A planted field with land, plus a few scattered gaps in ocean cells."""
    ds = planted_modes(n_time=n_time, n_lat=n_lat, n_lon=n_lon, noise_std=0.2, mean=280.0,
                       land_fraction=0.2, seed=seed)
    field = ds["field"].values.copy()
    ocean = np.argwhere(~ds["land"].values)
    for t, (i, j) in zip((0, 3, 3, n_time - 1), ocean[[1, 5, 9, 12]]):
        field[t, i, j] = np.nan
    ds["field"].values = field.astype(dtype)
    ds["field"] = ds["field"].astype(dtype)
    ds.attrs.update(field_name="sst")
    return ds


def _weighted_reference(ds, weights: str = "sqrt_coslat") -> np.ndarray:
    """X_w of the complete cells in row-major (lat, lon) order, computed with plain NumPy."""
    x = ds["field"].values.astype(np.float64)
    complete = ~np.isnan(x).any(axis=0)
    coslat = np.cos(np.deg2rad(ds["lat"].values))
    w = {"none": np.ones_like(coslat), "coslat": coslat, "sqrt_coslat": np.sqrt(coslat)}[weights]
    a = x - x.mean(axis=0)
    return (a * w[None, :, None])[:, complete]


def test_statistics_match_numpy_on_the_grid():
    ds = _fields()
    out = moments.compute(ds, params={"weights": "sqrt_coslat", "min_time_steps": 3}, backend=BACKEND)
    x = ds["field"].values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN land cells
        mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0, ddof=1)
    np.testing.assert_allclose(out["mean"].values, mean, rtol=1e-12, equal_nan=True)
    # shifted sums (by a value of the cell): relative error ~ eps * n * (1 + 2 ((mean - shift)/std)^2) on M2
    bound = np.finfo(np.float64).eps * x.shape[0] * (1 + 2 * np.nanmax(((mean - x[0]) / std) ** 2))
    np.testing.assert_allclose(out["std"].values, std, rtol=max(bound, 1e-13), equal_nan=True)
    np.testing.assert_array_equal(out["count"].values, (~np.isnan(x)).sum(axis=0))
    np.testing.assert_allclose(out["anomaly"].values, x - mean, rtol=0, atol=1e-10, equal_nan=True)


def test_nan_placement_and_valid_mask():
    ds = _fields()
    out = moments.compute(ds, params={}, backend=BACKEND)
    land = ds["land"].values
    gappy = np.isnan(ds["field"].values).any(axis=0) & ~land
    assert gappy.sum() == 4
    np.testing.assert_array_equal(out["valid"].values, ~land & ~gappy)
    assert out["valid"].dtype == bool
    assert np.isnan(out["mean"].values[land]).all() and np.isfinite(out["mean"].values[gappy]).all()
    assert (out["count"].values[land] == 0).all() and (out["count"].values[gappy] == ds.sizes["time"] - 1).all()
    np.testing.assert_array_equal(np.isnan(out["anomaly"].values), np.isnan(ds["field"].values))


@pytest.mark.parametrize("weights", ["none", "coslat", "sqrt_coslat"])
def test_time_kind_covariance_matches_numpy(weights):
    ds = _fields()  # 24 time steps, fewer than the complete cells: Gram matrix
    out = moments.compute(ds, params={"weights": weights}, backend=BACKEND)
    xw = _weighted_reference(ds, weights)
    assert xw.shape[0] <= xw.shape[1]
    assert out["covariance"].attrs["kind"] == "time" and out["covariance"].dims == ("i", "j")
    np.testing.assert_allclose(out["covariance"].values, xw @ xw.T / (xw.shape[0] - 1), rtol=1e-10, atol=1e-12)
    assert out["weight"].attrs["weighting"] == weights == out.attrs["weighting"]


def test_space_kind_covariance_matches_numpy():
    ds = _fields(n_time=40, n_lat=4, n_lon=5)  # 40 steps, at most 16 complete cells
    out = moments.compute(ds, params={"weights": "sqrt_coslat"}, backend=BACKEND)
    xw = _weighted_reference(ds)
    assert out["covariance"].attrs["kind"] == "space"
    np.testing.assert_allclose(out["covariance"].values, np.cov(xw, rowvar=False), rtol=1e-10, atol=1e-12)


def test_attributes_and_coordinates():
    ds = _fields()
    out = moments.compute(ds, params={}, backend=BACKEND)
    assert set(out.data_vars) == {"mean", "std", "count", "valid", "anomaly", "weight", "covariance"}
    assert out.attrs["field_name"] == "sst" and out.attrs["field_units"] == "K"
    for name, var in out.data_vars.items():
        assert "units" in var.attrs and "long_name" in var.attrs, name
    assert out["mean"].attrs["units"] == "K" and out["covariance"].attrs["units"] == "(K)^2"
    assert out["anomaly"].dims == ("time", "lat", "lon") and out["mean"].dims == ("lat", "lon")
    np.testing.assert_array_equal(out["time"].values, ds["time"].values)
    np.testing.assert_array_equal(out["lat"].values, ds["lat"].values)


def test_float32_field_accumulates_in_float64_by_default_and_float32_on_request():
    ds = _fields(dtype="float32")
    xw = _weighted_reference(ds)  # float64 reference from the float32 values
    ref = xw @ xw.T / (xw.shape[0] - 1)
    out = moments.compute(ds, params={}, backend=BACKEND)
    assert out["covariance"].dtype == np.float64
    np.testing.assert_allclose(out["covariance"].values, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    out32 = moments.compute(ds, params={"precision": "float32"}, backend=BACKEND)
    for name in ("anomaly", "covariance"):
        assert out32[name].dtype == np.float32, name
    np.testing.assert_allclose(out32["covariance"].values, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_errors_name_the_field_and_parameter():
    ds = _fields()
    with pytest.raises(ValueError, match="fields dataset of sst has no 'field' variable"):
        moments.compute(ds.drop_vars("field"), params={}, backend=BACKEND)
    with pytest.raises(ValueError, match=r"The sst field is entirely missing"):
        moments.compute(ds.assign(field=ds["field"] * np.nan), params={}, backend=BACKEND)
    with pytest.raises(ValueError, match=r"The sst field has 24 time steps, fewer than moments.min_time_steps=30"):
        moments.compute(ds, params={"min_time_steps": 30}, backend=BACKEND)
    with pytest.raises(ValueError, match="moments.weights must be one of none, coslat, sqrt_coslat; got 'area'"):
        moments.compute(ds, params={"weights": "area"}, backend=BACKEND)
    with pytest.raises(ValueError, match="min_time_steps must be an integer of at least 2"):
        moments.compute(ds, params={"min_time_steps": 1}, backend=BACKEND)
    with pytest.raises(ValueError, match="no grid cell without missing values"):
        gappy = ds.copy(deep=True)
        gappy["field"][0] = np.nan
        moments.compute(gappy, params={}, backend=BACKEND)


def test_run_round_trip(tmp_path):
    ds = _fields()
    source = io.write_store(ds, tmp_path / "fields" / "sst.zarr", stage="ingest")
    target = tmp_path / "moments" / "sst.zarr"
    params = {"weights": "coslat", "min_time_steps": 3}
    moments.run(source, target, params=params, backend="numpy")
    back = io.open_store(target)
    expected = moments.compute(ds, params=params, backend=BACKEND)
    for name in expected.data_vars:
        np.testing.assert_array_equal(back[name].values, expected[name].values)
    assert back["covariance"].attrs["kind"] == "time" and back["weight"].attrs["weighting"] == "coslat"
    assert back.attrs["pipeline_stage"] == "moments" and back.attrs["array_backend"] == "numpy"
    assert json.loads(back.attrs["pipeline_config"]) == params
    assert back.attrs["field_name"] == "sst" and back.attrs["field_units"] == "K"
    with pytest.raises(FileNotFoundError):
        moments.run(tmp_path / "missing.zarr", target, params=params, backend="numpy")
