"""The labelled distributions stage: layout, masks, attributes, store round trip, errors.

Numbers are checked against ``scipy.stats`` fits of single cells; the kernels
themselves are tested in ``tests/kernels/test_distributions.py``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from pipeline import distributions, io
from pipeline.backend import resolve
from pipeline.synthetic import planted_distribution

PARAMS = {"fields": ["z500"], "families": ["normal", "gumbel_r", "gumbel_l"]}
VARIABLES = ("loc", "scale", "loglik", "aic", "ks")


@pytest.fixture
def numpy_backend():
    return resolve("numpy")


@pytest.fixture
def fields_ds() -> xr.Dataset:
    """Gumbel (maxima) z500-like field with one gappy cell, one all-NaN cell, one constant cell."""
    ds = planted_distribution("gumbel_r", loc=5500.0, scale=40.0, n_time=120, n_lat=5, n_lon=6, seed=1)
    field = ds["field"].values.copy()
    field[7, 1, 2] = np.nan  # one missing step: not a complete cell
    field[:, 3, 0] = np.nan  # land
    field[:, 4, 5] = 5500.0  # constant series
    ds["field"].values = field
    ds["field"].attrs.update(units="m", long_name="500 hPa geopotential height")
    ds.attrs["field_name"] = "z500"
    return ds


def test_layout_masks_and_attributes(fields_ds, numpy_backend):
    out = distributions.compute(fields_ds, params=PARAMS, backend=numpy_backend)
    assert list(out["family"].values) == PARAMS["families"]
    np.testing.assert_array_equal(out["lat"].values, fields_ds["lat"].values)
    np.testing.assert_array_equal(out["lon"].values, fields_ds["lon"].values)
    assert out["lat"].attrs["units"] == "degrees_north"
    for name in VARIABLES:
        assert out[name].dims == ("family", "lat", "lon")
        assert {"units", "long_name"} <= set(out[name].attrs)
        values = out[name].values
        for i, j in [(1, 2), (3, 0), (4, 5)]:
            assert np.all(np.isnan(values[:, i, j])), (name, i, j)
        assert np.isfinite(values).sum() == 3 * (5 * 6 - 3)
    assert out["loc"].attrs["units"] == "m" and out["scale"].attrs["units"] == "m"
    best = out["best_family"]
    assert best.dims == ("lat", "lon") and best.dtype == np.int8
    assert best.values[1, 2] == best.values[3, 0] == best.values[4, 5] == -1
    assert np.mean(best.values[best.values >= 0] == 1) >= 0.9  # planted gumbel_r
    np.testing.assert_array_equal(best.attrs["flag_values"], [-1, 0, 1, 2])
    assert best.attrs["flag_meanings"] == "not_fitted normal gumbel_r gumbel_l"
    assert out.attrs["field_name"] == "z500" and out.attrs["field_units"] == "m"
    assert out.attrs["n_samples"] == 120 and out.attrs["n_constant_cells"] == 1


def test_cell_values_match_scipy(fields_ds, numpy_backend):
    out = distributions.compute(fields_ds, params=PARAMS, backend=numpy_backend)
    series = fields_ds["field"].values[:, 2, 4]
    for family, dist in [("normal", stats.norm), ("gumbel_r", stats.gumbel_r), ("gumbel_l", stats.gumbel_l)]:
        cell = out.sel(family=family).isel(lat=2, lon=4)
        ref_loc, ref_scale = dist.fit(series)
        np.testing.assert_allclose([cell["loc"], cell["scale"]], [ref_loc, ref_scale], rtol=1e-6)
        loglik = dist.logpdf(series, float(cell["loc"]), float(cell["scale"])).sum()
        np.testing.assert_allclose(float(cell["loglik"]), loglik, rtol=1e-10)
        np.testing.assert_allclose(float(cell["aic"]), 4 - 2 * loglik, rtol=1e-10)
        ks = stats.kstest(series, dist.cdf, args=(float(cell["loc"]), float(cell["scale"]))).statistic
        np.testing.assert_allclose(float(cell["ks"]), ks, atol=1e-10)
    aic = out["aic"].isel(lat=2, lon=4).values
    assert out["best_family"].values[2, 4] == np.argmin(aic)


def test_family_subset_keeps_config_order(fields_ds, numpy_backend):
    full = distributions.compute(fields_ds, params=PARAMS, backend=numpy_backend)
    sub = distributions.compute(fields_ds, params={"families": ["gumbel_l", "normal"]}, backend=numpy_backend)
    assert list(sub["family"].values) == ["gumbel_l", "normal"]
    xr.testing.assert_allclose(sub["loc"], full["loc"].sel(family=["gumbel_l", "normal"]))
    fitted = full["best_family"].values >= 0
    expected = np.argmin(sub["aic"].values, axis=0)
    np.testing.assert_array_equal(sub["best_family"].values[fitted], expected[fitted])


def test_float32_field_stays_float32(fields_ds, numpy_backend):
    ds32 = fields_ds.copy()
    ds32["field"] = ds32["field"].astype(np.float32)
    out32 = distributions.compute(ds32, params=PARAMS, backend=numpy_backend)
    out64 = distributions.compute(fields_ds, params=PARAMS, backend=numpy_backend)
    assert out32["loc"].dtype == np.float32
    np.testing.assert_allclose(out32["loc"].values, out64["loc"].values, rtol=1e-5)
    np.testing.assert_allclose(out32["scale"].values, out64["scale"].values, rtol=1e-3)


def test_constant_cell_is_logged(fields_ds, numpy_backend, caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.distributions"):
        distributions.compute(fields_ds, params=PARAMS, backend=numpy_backend)
    assert "1 complete cells are constant" in caplog.text
    assert "28 complete cells x 120 time steps" in caplog.text


def test_run_writes_store_that_reads_back(fields_ds, tmp_path):
    source = io.write_store(fields_ds, tmp_path / "fields" / "z500.zarr", stage="ingest")
    target = tmp_path / "distributions" / "z500.zarr"
    distributions.run(source, target, params=PARAMS, backend="numpy")
    back = io.open_store(target)
    expected = distributions.compute(fields_ds, params=PARAMS, backend=resolve("numpy"))
    assert [str(f) for f in back["family"].values] == PARAMS["families"]
    for name in (*VARIABLES, "best_family"):
        np.testing.assert_array_equal(back[name].values, expected[name].values)
        assert back[name].dims == expected[name].dims
    assert back["best_family"].dtype == np.int8
    assert back.attrs["pipeline_stage"] == "distributions"
    assert back.attrs["array_backend"] == "numpy"
    assert '"families": ["normal", "gumbel_r", "gumbel_l"]' in back.attrs["pipeline_config"]
    assert back.attrs["field_name"] == "z500"


def test_run_missing_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="fields store"):
        distributions.run(tmp_path / "nope.zarr", tmp_path / "out.zarr", params=PARAMS, backend="numpy")


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"families": ["normal", "weibull"]}, ValueError, "unknown family 'weibull'; valid families are normal, gumbel_r, gumbel_l"),
        ({"families": []}, ValueError, "families is empty; name at least one of normal, gumbel_r, gumbel_l"),
        ({"families": ["normal", "normal"]}, ValueError, "lists a family twice"),
        ({"families": "normal"}, TypeError, "must be a list of family names"),
    ],
)
def test_bad_families(fields_ds, numpy_backend, params, error, match):
    with pytest.raises(error, match=match):
        distributions.compute(fields_ds, params=params, backend=numpy_backend)


def test_too_few_time_steps(fields_ds, numpy_backend):
    with pytest.raises(ValueError, match="The z500 field has 2 time steps, fewer than the 3 a two-parameter fit needs"):
        distributions.compute(fields_ds.isel(time=slice(0, 2)), params=PARAMS, backend=numpy_backend)


def test_all_cells_constant(fields_ds, numpy_backend):
    flat = fields_ds.copy()
    flat["field"] = xr.full_like(fields_ds["field"], 3.0)
    with pytest.raises(ValueError, match="Every complete cell of the field 'z500' is constant"):
        distributions.compute(flat, params=PARAMS, backend=numpy_backend)


def test_no_complete_cell(fields_ds, numpy_backend):
    gappy = fields_ds.copy()
    gappy["field"] = fields_ds["field"].where(fields_ds["time"] != fields_ds["time"][3])
    with pytest.raises(ValueError, match="no grid cell without missing values"):
        distributions.compute(gappy, params=PARAMS, backend=numpy_backend)


def test_bad_dataset(fields_ds, numpy_backend):
    with pytest.raises(ValueError, match="has no 'field' variable"):
        distributions.compute(fields_ds.rename({"field": "z"}), params=PARAMS, backend=numpy_backend)
    with pytest.raises(TypeError, match="fields_ds must be an xarray Dataset"):
        distributions.compute(fields_ds["field"], params=PARAMS, backend=numpy_backend)
    with pytest.raises(TypeError, match="backend must be a pipeline.backend.Backend"):
        distributions.compute(fields_ds, params=PARAMS, backend="numpy")


def test_compute_accepts_the_dimension_aliases_in_any_order(fields_ds, numpy_backend):
    canonical = distributions.compute(fields_ds, params={}, backend=numpy_backend)
    renamed = fields_ds.rename(lat="latitude", lon="longitude")
    renamed["field"] = renamed["field"].transpose("longitude", "latitude", "time")
    got = distributions.compute(renamed, params={}, backend=numpy_backend)
    for name in ("loc", "scale", "aic", "best_family"):
        np.testing.assert_array_equal(got[name].values, canonical[name].values)
