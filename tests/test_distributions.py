"""The labelled distributions stage: series, layout, masks, return levels, store round trip, errors.

Numbers are checked against ``scipy.stats`` on single cells, xarray/numpy block
maxima and quantiles computed by hand, and planted truth: daily gamma draws
whose annual maxima have the exact law ``F**365``. The kernels themselves are
tested in ``tests/kernels/``.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from pipeline import distributions, io
from pipeline.backend import resolve
from pipeline.synthetic import planted_daily_extremes, planted_distribution

PARAMS = {"fields": ["z500"], "families": ["normal", "gumbel_r", "gumbel_l"], "goodness_of_fit": {"n_bootstrap": 19}}
VARIABLES = ("loc", "scale", "loglik", "aic", "bic", "ks", "ad", "ks_pvalue", "ad_pvalue", "loc_se", "scale_se")


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


@pytest.fixture(scope="module")
def rain() -> xr.Dataset:
    ds = planted_daily_extremes(n_years=30, n_lat=4, n_lon=5, seed=2)
    ds.attrs["field_name"] = "rain"
    return ds


def test_layout_masks_and_attributes(fields_ds, numpy_backend, caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.distributions"):
        out = distributions.compute(fields_ds, params=PARAMS, backend=numpy_backend)
    assert list(out["family"].values) == PARAMS["families"]
    np.testing.assert_array_equal(out["lat"].values, fields_ds["lat"].values)
    assert out["lat"].attrs["units"] == "degrees_north"
    for name in VARIABLES:
        assert out[name].dims == ("family", "lat", "lon")
        assert {"units", "long_name"} <= set(out[name].attrs)
        values = out[name].values
        for i, j in [(1, 2), (3, 0), (4, 5)]:
            assert np.all(np.isnan(values[:, i, j])), (name, i, j)
        assert np.isfinite(values).sum() == 3 * (5 * 6 - 3)
    assert out["cov"].dims == ("family", "param", "param_", "lat", "lon")
    assert np.isnan(out["shape"]).all()  # two-parameter location-scale families
    assert out["loc"].attrs["units"] == "m" and out["shape"].attrs["units"] == "1"
    best = out["best_family"]
    assert best.dtype == np.int8 and best.values[1, 2] == best.values[3, 0] == best.values[4, 5] == -1
    assert np.mean(best.values[best.values >= 0] == 1) >= 0.9  # planted gumbel_r
    assert out["converged"].dtype == np.int8 and out["converged"].values[:, 4, 5].sum() == 0
    assert out["return_level"].dims == ("family", "return_period", "lat", "lon")  # one value a year: levels apply
    assert "could not be fitted in 1 of 28 cells" in caplog.text


def test_cell_values_match_scipy(fields_ds, numpy_backend):
    out = distributions.compute(fields_ds, params=PARAMS, backend=numpy_backend)
    x = fields_ds["field"].values[:, 2, 3]
    loc, scale = stats.gumbel_r.fit(x)
    np.testing.assert_allclose(out["loc"].values[1, 2, 3], loc, rtol=1e-7)
    np.testing.assert_allclose(out["scale"].values[1, 2, 3], scale, rtol=1e-6)
    np.testing.assert_allclose(out["loglik"].values[1, 2, 3], stats.gumbel_r.logpdf(x, loc, scale).sum(), rtol=1e-10)
    np.testing.assert_allclose(out["ks"].values[1, 2, 3], stats.kstest(x, "gumbel_r", args=(loc, scale)).statistic,
                               rtol=1e-9)
    assert 0 < out["ks_pvalue"].values[1, 2, 3] <= 1


def _true_level(ds: xr.Dataset, T: float) -> np.ndarray:
    a, s = ds["true_shape"].values, ds["true_scale"].values
    return stats.gamma.ppf((1 - 1 / T) ** (1 / 365), a, scale=s)


def test_block_maxima_of_a_daily_record_and_their_return_levels(rain, numpy_backend):
    params = {"families": ["gumbel_r", "gev"], "series": {"kind": "block_maxima", "block": "annual"},
              "goodness_of_fit": {"n_bootstrap": 0}, "return_levels": {"periods": [10, 100], "values": [60.0]}}
    out = distributions.compute(rain, params=params, backend=numpy_backend)
    by_hand = rain["field"].groupby("time.year").max().transpose("year", "lat", "lon").values
    np.testing.assert_array_equal(out["series"].values, by_hand)
    assert out.attrs["series"] == "block_maxima" and out.attrs["n_years"] == 30.0
    level = out["return_level"].sel(family="gev")
    assert level.dims == ("return_period", "lat", "lon") and level.attrs["units"] == "mm day-1"
    p = out[["loc", "scale", "shape"]].sel(family="gev")
    np.testing.assert_allclose(level.sel(return_period=100.0).values,
                               stats.genextreme.ppf(0.99, -p["shape"].values, p["loc"].values, p["scale"].values),
                               rtol=1e-9)
    truth = _true_level(rain, 10.0)
    lo = out["return_level_profile_lower"].sel(family="gev", return_period=10.0).values
    hi = out["return_level_profile_upper"].sel(family="gev", return_period=10.0).values
    assert np.mean((lo <= truth) & (truth <= hi)) >= 0.8  # 20 cells, 95 % intervals
    assert np.all(out["return_level_lower"] < out["return_level"]) and np.all(out["return_level"] <
                                                                          out["return_level_upper"])
    np.testing.assert_array_equal(out["return_level_profile_lower"].sel(family="gumbel_r").isnull(), True)
    rp = out["return_period_of"].sel(family="gev", value=60.0).values
    with np.errstate(divide="ignore"):  # beyond a bounded tail's end point the period is infinite
        expected = 1 / stats.genextreme.sf(60.0, -p["shape"].values, p["loc"].values, p["scale"].values)
    np.testing.assert_allclose(rp, expected, rtol=1e-8)
    assert {"lr_statistic", "lr_pvalue"} <= set(out.data_vars)


def test_block_minima_levels_are_lower_quantiles(rain, numpy_backend):
    params = {"families": ["gumbel_l"], "series": {"kind": "block_minima", "block": "JJA"},
              "goodness_of_fit": {"n_bootstrap": 0}, "return_levels": {"periods": [20]}}
    out = distributions.compute(rain, params=params, backend=numpy_backend)
    jja = rain["field"].where(rain["time.month"].isin([6, 7, 8])).groupby("time.year").min()
    np.testing.assert_array_equal(out["series"].values, jja.transpose("year", "lat", "lon").values)
    p = out[["loc", "scale"]].sel(family="gumbel_l")
    np.testing.assert_allclose(out["return_level"].sel(family="gumbel_l", return_period=20.0).values,
                               stats.gumbel_l.ppf(1 / 20, p["loc"].values, p["scale"].values), rtol=1e-9)


def test_exceedances_threshold_rate_and_gpd_levels(rain, numpy_backend):
    params = {"families": ["gpd"], "series": {"kind": "exceedances", "threshold": {"quantile": 0.98}, "run": 2},
              "goodness_of_fit": {"n_bootstrap": 0}, "return_levels": {"periods": [10, 50]}}
    out = distributions.compute(rain, params=params, backend=numpy_backend)
    x = rain["field"].values
    np.testing.assert_allclose(out["threshold"].values, np.quantile(x, 0.98, axis=0), rtol=1e-12)
    # cell (0, 0) by hand: clusters end after 2 days below the threshold
    u, series = out["threshold"].values[0, 0], x[:, 0, 0]
    peaks, current, gap = [], None, 0
    for v in series:
        if v > u:
            current, gap = (v if current is None else max(current, v)), 0
        else:
            gap += 1
            if gap >= 2 and current is not None:
                peaks.append(current)
                current = None
    if current is not None:
        peaks.append(current)
    stored = out["series"].values[:, 0, 0]
    np.testing.assert_allclose(np.sort(stored[np.isfinite(stored)]), np.sort(peaks))
    np.testing.assert_allclose(out["exceedance_rate"].values[0, 0], len(peaks) / 30.0)
    sigma, xi = out["scale"].sel(family="gpd").values[0, 0], out["shape"].sel(family="gpd").values[0, 0]
    assert out["loc"].sel(family="gpd").values[0, 0] == pytest.approx(u)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c, _, s = stats.genpareto.fit(np.array(peaks) - u, floc=0)
    ll = stats.genpareto.logpdf(np.array(peaks) - u, c, 0, s).sum()
    assert out["loglik"].sel(family="gpd").values[0, 0] >= ll - 1e-6 * abs(ll)
    rate = len(peaks) / 30.0
    np.testing.assert_allclose(out["return_level"].sel(family="gpd", return_period=50.0).values[0, 0],
                               u + sigma / xi * ((50 * rate) ** xi - 1), rtol=1e-9)


def test_missing_values_in_block_and_exceedance_series(rain, numpy_backend):
    gappy = rain.copy()
    field = gappy["field"].values.copy()
    field[:, 0, 0] = np.nan  # land: never fitted
    field[400:420, 1, 1] = np.nan  # 20 missing days: the year keeps > 90 % coverage
    gappy["field"] = (("time", "lat", "lon"), field, rain["field"].attrs)
    out = distributions.compute(gappy, params={"families": ["gev"], "series": {"kind": "block_maxima"},
                                               "goodness_of_fit": {"n_bootstrap": 0}}, backend=numpy_backend)
    assert np.isnan(out["loc"].values[0, 0, 0]) and out["best_family"].values[0, 0] == -1
    assert np.isfinite(out["loc"].values[0, 1, 1])
    out = distributions.compute(gappy, params={"families": ["gpd"], "series": {"kind": "exceedances"},
                                               "goodness_of_fit": {"n_bootstrap": 0}}, backend=numpy_backend)
    assert np.isnan(out["threshold"].values[0, 0]) and np.isfinite(out["threshold"].values[1, 1])
    np.testing.assert_allclose(out["threshold"].values[1, 1], np.nanquantile(field[:, 1, 1], 0.95), rtol=1e-12)


def test_run_writes_store_that_reads_back(fields_ds, tmp_path):
    source = io.write_store(fields_ds, tmp_path / "fields" / "z500.zarr", stage="ingest")
    target = tmp_path / "distributions" / "z500.zarr"
    params = {**PARAMS, "cells": [{"lat": 0.0, "lon": 100.0}]}
    distributions.run(source, target, params=params, backend="numpy")
    back = io.open_store(target)
    expected = distributions.compute(fields_ds, params=params, backend=resolve("numpy"))
    for name in (*VARIABLES, "best_family", "cov", "series"):
        np.testing.assert_array_equal(back[name].values, expected[name].values)
        assert back[name].dims == expected[name].dims
    assert back.attrs["pipeline_stage"] == "distributions"
    assert back.attrs["plot_cells"] == "[[0.0, 100.0]]"


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"families": ["normal", "frechet"]}, "unknown family 'frechet'"),
        ({"families": []}, "non-empty list of family names"),
        ({"families": ["normal", "normal"]}, "lists a family twice"),
        ({"families": ["gpd"]}, "gpd family is fitted to exceedances"),
        ({"families": ["gev", "gpd"], "series": {"kind": "exceedances"}}, "gpd family is fitted to exceedances"),
        ({"families": ["gev"], "series": {"kind": "block_minima"}}, "gev describes maxima"),
        ({"series": {"kind": "peaks"}}, "series.kind must be one of"),
        ({"series": {"window": 3}}, "unknown key"),
        ({"series": {"kind": "exceedances", "threshold": {"quantile": 1.5}}, "families": ["gpd"]}, "in \\(0, 1\\)"),
        ({"return_levels": {"periods": [1]}}, "above 1"),
    ],
)
def test_bad_settings(fields_ds, numpy_backend, params, match):
    with pytest.raises(ValueError, match=match):
        distributions.compute(fields_ds, params=params, backend=numpy_backend)


def test_bad_dataset(fields_ds, numpy_backend):
    with pytest.raises(ValueError, match="has no 'field' variable"):
        distributions.compute(fields_ds.rename({"field": "z"}), params=PARAMS, backend=numpy_backend)
    with pytest.raises(TypeError, match="backend must be a pipeline.backend.Backend"):
        distributions.compute(fields_ds, params=PARAMS, backend="numpy")
    with pytest.raises(ValueError, match="No cell of the z500 field has 5 or more values"):
        distributions.compute(fields_ds.isel(time=slice(0, 4)), params=PARAMS, backend=numpy_backend)


def test_compute_accepts_the_dimension_aliases_in_any_order(fields_ds, numpy_backend):
    params = {**PARAMS, "goodness_of_fit": {"n_bootstrap": 0}}
    canonical = distributions.compute(fields_ds, params=params, backend=numpy_backend)
    renamed = fields_ds.rename(lat="latitude", lon="longitude")
    renamed["field"] = renamed["field"].transpose("longitude", "latitude", "time")
    got = distributions.compute(renamed, params=params, backend=numpy_backend)
    for name in ("loc", "scale", "aic", "best_family"):
        np.testing.assert_array_equal(got[name].values, canonical[name].values)


def _trend_field(slope: float, n_years: int = 60, seed: int = 7) -> xr.Dataset:
    """Yearly GEV maxima whose location rises by ``slope`` a year (xi 0.1, sigma 3), 3 x 4 cells."""
    rng = np.random.default_rng(seed)
    time = np.array([f"{y}-07-01" for y in range(1950, 1950 + n_years)], dtype="datetime64[ns]")
    mu = 20.0 + slope * np.arange(n_years)[:, None, None]
    x = stats.genextreme.rvs(-0.1, loc=mu, scale=3.0, size=(n_years, 3, 4), random_state=rng)
    return xr.Dataset({"field": (("time", "lat", "lon"), x, {"units": "mm"})},
                      coords={"time": time, "lat": [10.0, 20.0, 30.0], "lon": [0.0, 10.0, 20.0, 30.0]},
                      attrs={"field_name": "rx1day"})


def test_non_stationary_gev_recovers_a_planted_trend(numpy_backend):
    ds = _trend_field(0.15)
    params = {"families": ["gev"], "covariate": "time", "goodness_of_fit": {"n_bootstrap": 0},
              "return_levels": {"periods": [50]}}
    out = distributions.compute(ds, params=params, backend=numpy_backend)
    p = out["ns_params"]
    trend, se = p.sel(ns_param="loc_trend").values, out["ns_se"].sel(ns_param="loc_trend").values
    assert np.mean(np.abs(trend - 0.15) < 2.5 * se) >= 0.8 and abs(np.mean(trend) - 0.15) < 0.03
    assert np.mean(out["ns_lr_pvalue"].values < 0.05) >= 0.9  # 0.15 a year over 60 years is clear
    assert out.attrs["covariate"] == "years since 1950"
    np.testing.assert_array_equal(out["covariate_value"].values, [1950.0, 2009.0])
    # the level at the last year is the GEV quantile of the fitted parameters there, and near the truth
    loc_last = p.sel(ns_param="loc0") + 59 * p.sel(ns_param="loc_trend")
    level = out["ns_return_level"].sel(covariate_value=2009.0, return_period=50.0)
    np.testing.assert_allclose(level.values, stats.genextreme.ppf(0.98, -p.sel(ns_param="shape").values,
                                                                  loc_last.values, p.sel(ns_param="scale0").values),
                               rtol=1e-9)
    truth = stats.genextreme.ppf(0.98, -0.1, loc=20 + 0.15 * 59, scale=3.0)
    lo, hi = (out[f"ns_return_level_{b}"].sel(covariate_value=2009.0, return_period=50.0).values
              for b in ("lower", "upper"))
    assert np.mean((lo <= truth) & (truth <= hi)) >= 0.75
    # without a trend the test rarely rejects
    flat = distributions.compute(_trend_field(0.0, seed=8), params=params, backend=numpy_backend)
    assert np.mean(flat["ns_lr_pvalue"].values < 0.05) <= 0.25


def test_non_stationary_settings_are_checked(numpy_backend, rain):
    with pytest.raises(ValueError, match="add gev to families"):
        distributions.compute(rain, params={"families": ["gumbel_r"], "covariate": "time"}, backend=numpy_backend)
    with pytest.raises(ValueError, match="needs a series of one value a year"):
        distributions.compute(rain, params={"families": ["gev"], "covariate": "time",
                                            "goodness_of_fit": {"n_bootstrap": 0}}, backend=numpy_backend)
    with pytest.raises(ValueError, match="no EOF store of it was given"):
        distributions.compute(_trend_field(0.1), params={"families": ["gev"], "covariate": {"field": "sst"},
                                                         "goodness_of_fit": {"n_bootstrap": 0}},
                              backend=numpy_backend)


def test_a_principal_component_as_covariate(numpy_backend):
    ds = _trend_field(0.15)
    years = np.arange(60.0)
    eof = xr.Dataset({"pc": (("time", "mode"), np.stack([years - years.mean(), np.sin(years)], axis=1))},
                     coords={"time": ds["time"].values, "mode": [1, 2]})
    params = {"families": ["gev"], "covariate": {"field": "sst", "mode": 1}, "goodness_of_fit": {"n_bootstrap": 0}}
    by_pc = distributions.compute(ds, params=params, backend=numpy_backend, covariate_ds=eof)
    by_time = distributions.compute(ds, params={**params, "covariate": "time"}, backend=numpy_backend)
    # the first PC is time less its mean: the same trend, the same likelihood
    np.testing.assert_allclose(by_pc["ns_params"].sel(ns_param="loc_trend"),
                               by_time["ns_params"].sel(ns_param="loc_trend"), rtol=1e-6)
    np.testing.assert_allclose(by_pc["ns_loglik"], by_time["ns_loglik"], rtol=1e-9)
    assert by_pc.attrs["covariate"] == "sst PC 1"
