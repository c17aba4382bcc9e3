"""The labelled posterior stage: alpha rules, layout, NaN placement, attributes, reproducibility.

Inputs are built here: an eof-like Dataset (``pc`` from ``planted_modes``) and a
planted regression target over partly overlapping years, with one cell that has
a NaN inside the overlap.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pipeline import io, posterior, regression, synthetic

TRUE_COEF = np.array([1.5, -0.8, 0.4])


def _times(years) -> np.ndarray:
    return np.array([f"{y:04d}-01-15" for y in years], dtype="datetime64[ns]")


@pytest.fixture(scope="module")
def stores():
    """(target_ds, eof_ds): predictor years 1950-1989, target years 1955-1994 (35 overlap)."""
    modes = synthetic.planted_modes(n_time=40, variances=(9.0, 4.0, 1.0), seed=5)
    eof = xr.Dataset({"pc": modes["true_pc"].assign_attrs(units="K")}, attrs={"field_name": "sst", "field_units": "K"})
    X = np.vstack([modes["true_pc"].values[5:], np.zeros((5, 3))])
    target = synthetic.planted_regression(
        X, TRUE_COEF, intercept=10.0, noise_std=0.5, n_lat=4, n_lon=5, seed=6, time=_times(range(1955, 1995))
    )
    field = target["field"].values.copy()
    field[10, 0, 3] = np.nan
    target["field"] = target["field"].copy(data=field)
    target.attrs.update(field_name="z500", field_units="m")
    return target, eof


def _reg_params(**overrides):
    p = dict(target="z500", predictor="sst", n_predictors=3, method="ridge",
             alphas=[0.01, 0.1, 1.0, 10.0], cv_folds=5, max_iter=2000, tol=1e-10)
    return {**p, **overrides}


def _params(**overrides):
    p = dict(n_draws=4000, credible_level=0.9, prior_a0=0.01, prior_b0=0.01, seed=123, chunk_cells=7)
    return {**p, **overrides}


def _run(stores, params=None, reg_params=None):
    target, eof = stores
    reg_params = reg_params or _reg_params()
    reg_ds = regression.compute(target, eof, params=reg_params, backend="numpy")
    return reg_ds, posterior.compute(target, eof, reg_ds, params=params or _params(),
                                     regression_params=reg_params, backend="numpy")


def test_layout_attributes_and_nan_placement(stores):
    reg_ds, ds = _run(stores)
    for name in ("mean", "sd", "ci_lower", "ci_upper", "p_positive"):
        assert ds[name].dims == ("predictor", "lat", "lon"), name
        assert {"units", "long_name"} <= set(ds[name].attrs), name
        assert np.isnan(ds[name].values[:, 0, 3]).all() and np.isnan(ds[name].values).sum() == 3
    assert ds["sigma"].dims == ("lat", "lon") and ds["sigma"].attrs["units"] == "m"
    assert ds["mean"].attrs["units"] == "(m)/(K)" and ds["p_positive"].attrs["units"] == "1"
    assert list(ds["predictor"].values) == ["sst_pc1", "sst_pc2", "sst_pc3"]
    assert ds.attrs["alpha"] == float(reg_ds["alpha"]) and ds.attrs["alpha_source"].startswith("regression store")
    assert {k: ds.attrs[k] for k in ("n_draws", "seed", "credible_level", "prior_a0", "prior_b0")} == {
        "n_draws": 4000, "seed": 123, "credible_level": 0.9, "prior_a0": 0.01, "prior_b0": 0.01}
    assert (ds.attrs["field_name"], ds.attrs["field_units"]) == ("z500", "m")
    assert {k: ds.attrs[k] for k in ("period", "alignment", "lag", "n_samples")} == {
        "period": "1955 .. 1989", "alignment": "yearly", "lag": 0, "n_samples": 35}


def test_posterior_mean_is_the_ridge_coefficient_and_intervals_hold_truth(stores):
    """Mean within 5 Monte-Carlo standard errors of the ridge coefficient; truth inside most intervals."""
    reg_ds, ds = _run(stores)
    se = ds["sd"] / np.sqrt(4000)
    assert (abs(ds["mean"] - reg_ds["coef"]) < 5 * se).sum() == 57  # all 19 complete cells x 3
    assert ((ds["ci_lower"] < ds["mean"]) & (ds["mean"] < ds["ci_upper"])).sum() == 57
    truth = xr.DataArray(TRUE_COEF, dims="predictor", coords={"predictor": ds["predictor"]})
    covered = ((ds["ci_lower"] <= truth) & (truth <= ds["ci_upper"])).values[~np.isnan(ds["mean"].values)]
    assert covered.mean() > 0.75  # nominal 0.9; 57 correlated intervals
    assert float(abs(ds["sigma"] - 0.5).max()) < 0.2  # planted noise sd 0.5, 35 years
    np.testing.assert_array_equal(ds["p_positive"].values[0][~np.isnan(ds["sigma"].values)], 1.0)


def test_ols_uses_alpha_zero_and_lasso_uses_gcv(stores):
    _, ds = _run(stores, reg_params=_reg_params(method="ols"))
    assert ds.attrs["alpha"] == 0.0 and ds.attrs["alpha_source"].startswith("ols")
    _, ds = _run(stores, reg_params=_reg_params(method="lasso"))
    assert ds.attrs["alpha"] in _reg_params()["alphas"] and ds.attrs["alpha_source"].startswith("gcv")


def test_ols_with_rank_deficient_design_is_rejected(stores):
    target, eof = stores
    eof = eof.copy(deep=True)
    eof["pc"][:, 2] = eof["pc"][:, 0] + eof["pc"][:, 1]
    reg_params = _reg_params(method="ols")
    reg_ds = regression.compute(target, eof, params=reg_params, backend="numpy")
    assert reg_ds.attrs["rank"] == 2
    with pytest.raises(ValueError, match=r"method was 'ols' and the standardized design has rank 2 < 3"):
        posterior.compute(target, eof, reg_ds, params=_params(), regression_params=reg_params, backend="numpy")


def test_same_seed_reproduces_and_chunk_size_does_not_matter(stores):
    _, a = _run(stores, params=_params(n_draws=500))
    _, b = _run(stores, params=_params(n_draws=500, chunk_cells=1000))
    _, c = _run(stores, params=_params(n_draws=500, seed=124))
    xr.testing.assert_allclose(a, b, rtol=1e-12)
    assert not np.allclose(a["mean"].values, c["mean"].values, equal_nan=True)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"credible_level": 1.5}, r"credible_level must lie strictly between 0 and 1"),
        ({"n_draws": 1}, r"n_draws must be an integer >= 2"),
        ({"prior_b0": -1.0}, r"prior_b0 must be a positive number"),
        ({"seed": "abc"}, r"seed must be an integer >= 0"),
    ],
)
def test_bad_params_raise_one_sentence(stores, override, message):
    target, eof = stores
    reg_ds = regression.compute(target, eof, params=_reg_params(), backend="numpy")
    with pytest.raises(ValueError, match=message):
        posterior.compute(target, eof, reg_ds, params=_params(**override), regression_params=_reg_params(), backend="numpy")


def test_stale_regression_store_is_rejected(stores):
    target, eof = stores
    reg_ds = regression.compute(target, eof, params=_reg_params(n_predictors=2), backend="numpy")
    with pytest.raises(ValueError, match=r"regression store's predictors .* differ"):
        posterior.compute(target, eof, reg_ds, params=_params(), regression_params=_reg_params(), backend="numpy")


def test_run_writes_store_that_reads_back(stores, tmp_path):
    target, eof = stores
    io.write_store(target, tmp_path / "fields.zarr", stage="ingest")
    io.write_store(eof, tmp_path / "eof.zarr", stage="eof")
    reg_params, params = _reg_params(), _params(n_draws=300)
    regression.run(tmp_path / "fields.zarr", tmp_path / "eof.zarr", tmp_path / "reg.zarr", params=reg_params, backend="numpy")
    posterior.run(tmp_path / "fields.zarr", tmp_path / "eof.zarr", tmp_path / "reg.zarr", tmp_path / "post.zarr",
                  params=params, regression_params=reg_params, backend="numpy")
    back = io.open_store(tmp_path / "post.zarr")
    _, expected = _run(stores, params=params, reg_params=reg_params)
    xr.testing.assert_allclose(back[list(expected.data_vars)], expected, rtol=1e-12)
    assert back.attrs["pipeline_stage"] == "posterior" and back.attrs["seed"] == 123


def _monthly(start_year: int, n: int) -> np.ndarray:
    return np.array([f"{start_year + i // 12:04d}-{i % 12 + 1:02d}-01" for i in range(n)], dtype="datetime64[ns]")


@pytest.fixture(scope="module")
def lagged_stores():
    """Monthly PCs 1990-1999 and a monthly target 1990-2000 with ``y(t) = 2 pc1(t − 1) − pc2(t − 1) + e``."""
    rng = np.random.default_rng(21)
    pc = rng.standard_normal((120, 2)) * [2.0, 1.0]
    eof = xr.Dataset({"pc": (("time", "mode"), pc, {"units": "K"})}, coords={"time": _monthly(1990, 120)},
                     attrs={"field_name": "sst", "field_units": "K"})
    X = np.vstack([np.zeros((1, 2)), pc, np.zeros((11, 2))])  # target month i uses PC month i - 1
    target = synthetic.planted_regression(X, np.array([2.0, -1.0]), intercept=3.0, noise_std=0.2, n_lat=3, n_lon=4,
                                          seed=22, time=_monthly(1990, 132))
    target.attrs.update(field_name="z500", field_units="m")
    return target, eof


def test_posterior_aligns_with_the_regression_lag(lagged_stores):
    target, eof = lagged_stores
    reg_params = _reg_params(n_predictors=2, lag=1)
    reg_ds, ds = _run(lagged_stores, reg_params=reg_params)
    assert {k: ds.attrs[k] for k in ("period", "alignment", "lag", "n_samples")} == {
        "period": "1990-02 .. 2000-01", "alignment": "monthly", "lag": 1, "n_samples": 120}
    # conjugate posterior mean = ridge solution on the same pairs (PC month t - 1 with target month t)
    Z = (eof["pc"].values - eof["pc"].values.mean(0)) / eof["pc"].values.std(0)
    y = target["field"].values[1:121].reshape(120, -1)
    alpha = float(reg_ds["alpha"])
    beta = np.linalg.solve(Z.T @ Z + alpha * np.eye(2), Z.T @ (y - y.mean(0))) / eof["pc"].values.std(0)[:, None]
    se = ds["sd"].values.reshape(2, -1) / np.sqrt(4000)
    assert np.all(np.abs(ds["mean"].values.reshape(2, -1) - beta) < 5 * se)
    np.testing.assert_allclose(beta, np.array([[2.0], [-1.0]]) * np.ones((1, 12)), atol=0.1)
    with pytest.raises(ValueError, match=r"regression store was aligned with .*'lag': 1.* gives .*'lag': 0"):
        posterior.compute(target, eof, reg_ds, params=_params(), regression_params=_reg_params(n_predictors=2),
                          backend="numpy")


def test_target_dims_may_use_aliases_in_any_order(stores):
    target, eof = stores
    reg_ds, ref = _run(stores, params=_params(n_draws=300))
    renamed = target.rename(lat="latitude", lon="longitude", time="t").transpose("longitude", "t", "latitude", ...)
    got = posterior.compute(renamed, eof, reg_ds, params=_params(n_draws=300), regression_params=_reg_params(),
                            backend="numpy")
    xr.testing.assert_identical(got, ref)
