"""The labelled regression stage: year alignment, NaN placement, attributes, stores, errors.

The predictor store is an eof-like Dataset built here (``pc(time, mode)`` from
``planted_modes``' true PCs, years 1950-2009); the target is a planted
regression on those PCs over the years 1960-2019, so 50 years overlap.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pipeline import io, regression, synthetic

TRUE_COEF = np.array([1.5, -0.8, 0.4])
NOISE = 0.3


def _times(years) -> np.ndarray:
    return np.array([f"{y:04d}-01-15" for y in years], dtype="datetime64[ns]")


@pytest.fixture
def stores():
    """(target_ds, eof_ds): 60 predictor years 1950-2009, 60 target years 1960-2019."""
    modes = synthetic.planted_modes(n_time=60, variances=(9.0, 4.0, 1.0, 0.5), seed=1)
    pc = modes["true_pc"].assign_attrs(units="K")
    eof = xr.Dataset({"pc": pc}, attrs={"field_name": "sst", "field_units": "K"})
    X = np.zeros((60, 3))
    X[:50] = pc.values[10:, :3]  # target years 1960-2009 use the PCs of those years
    X[50:] = np.random.default_rng(0).standard_normal((10, 3))  # 2010-2019: no predictor
    target = synthetic.planted_regression(
        X, TRUE_COEF, intercept=2.0, noise_std=NOISE, n_lat=5, n_lon=6, seed=2, time=_times(range(1960, 2020))
    )
    field = target["field"].values.copy()
    field[3, 1, 2] = np.nan  # 1963: inside the overlap -> cell (1, 2) is dropped
    field[55, 4, 0] = np.nan  # 2015: outside the overlap -> cell (4, 0) is kept
    target["field"] = target["field"].copy(data=field)
    target.attrs.update(field_name="z500", field_units="m")
    return target, eof


def _params(**overrides):
    p = dict(target="z500", predictor="sst", n_predictors=3, method="ols",
             alphas=[0.0, 0.01, 0.1, 1.0, 10.0], cv_folds=5, max_iter=2000, tol=1e-10)
    return {**p, **overrides}


def test_align_years_uses_overlap_in_year_order(stores):
    target, eof = stores
    shuffled = target.isel(time=np.random.default_rng(3).permutation(60))
    aligned = regression.align_years(shuffled, eof, target="z500", predictor="sst", n_predictors=2)
    np.testing.assert_array_equal(aligned.years, np.arange(1960, 2010))
    np.testing.assert_array_equal(aligned.field["time"].dt.year.values, aligned.years)
    np.testing.assert_array_equal(aligned.design, eof["pc"].values[10:, :2])
    assert aligned.predictors == ["sst_pc1", "sst_pc2"]
    assert aligned.year_span == "1960-2009"
    assert (aligned.target_units, aligned.predictor_units) == ("m", "K")


def test_align_years_rejects_duplicated_years(stores):
    target, eof = stores
    times = target["time"].values.copy()
    times[5] = np.datetime64("1964-02-15")  # two steps in 1964, none in 1965
    monthly = target.assign_coords(time=times)
    with pytest.raises(ValueError, match=r"target field 'z500' has more than one time step in year 1964"):
        regression.align_years(monthly, eof, target="z500", predictor="sst", n_predictors=3)


def test_align_years_rejects_short_overlap(stores):
    target, eof = stores
    late = target.assign_coords(time=_times(range(2006, 2066)))
    with pytest.raises(ValueError, match=r"Only 4 years \(2006-2009\) overlap .* needs at least 5"):
        regression.align_years(late, eof, target="z500", predictor="sst", n_predictors=3)


def test_align_years_rejects_too_many_predictors(stores):
    target, eof = stores
    with pytest.raises(ValueError, match=r"n_predictors is 5 but the EOF store of 'sst' holds only 4 PCs"):
        regression.compute(target, eof, params=_params(n_predictors=5), backend="numpy")


def test_align_years_rejects_wrong_field(stores):
    target, eof = stores
    with pytest.raises(ValueError, match=r"holds field 'sst' but the regression config names 'u850'"):
        regression.compute(target, eof, params=_params(predictor="u850"), backend="numpy")


def test_compute_layout_nan_placement_and_attributes(stores):
    target, eof = stores
    ds = regression.compute(target, eof, params=_params(), backend="numpy")
    assert ds["coef"].dims == ("predictor", "lat", "lon")
    assert list(ds["predictor"].values) == ["sst_pc1", "sst_pc2", "sst_pc3"]
    for name in ("coef", "intercept", "r2", "alpha", "alpha_grid", "cv_score", "predictor_mean", "predictor_std"):
        assert {"units", "long_name"} <= set(ds[name].attrs), name
    assert ds["coef"].attrs["units"] == "(m)/(K)" and ds["intercept"].attrs["units"] == "m"
    assert ds.attrs["method"] == "ols" and ds.attrs["rank"] == 3 and ds.attrs["n_samples"] == 50
    assert ds.attrs["years"] == "1960-2009" and (ds.attrs["field_name"], ds.attrs["field_units"]) == ("z500", "m")
    nan = np.isnan(ds["r2"].values)
    assert nan.sum() == 1 and nan[1, 2]
    assert np.isnan(ds["coef"].values[:, 1, 2]).all() and np.isnan(ds["intercept"].values[1, 2])
    assert not np.isnan(ds["coef"].values[:, 4, 0]).any()  # NaN outside the overlap does not matter
    assert float(ds["alpha"]) == 0.0 and ds["alpha_grid"].values.tolist() == [0.0]
    np.testing.assert_allclose(ds["predictor_std"].values, eof["pc"].values[10:, :3].std(axis=0), rtol=1e-12)


def test_ols_cell_matches_lstsq_and_truth(stores):
    target, eof = stores
    ds = regression.compute(target, eof, params=_params(), backend="numpy")
    X = eof["pc"].values[10:, :3]
    y = target["field"].values[:50, 2, 3]
    A = np.column_stack([np.ones(50), X])
    ref = np.linalg.lstsq(A, y, rcond=None)[0]
    np.testing.assert_allclose(ds["coef"].values[:, 2, 3], ref[1:], rtol=1e-9)
    assert float(ds["intercept"][2, 3]) == pytest.approx(ref[0], rel=1e-9)
    Xc = X - X.mean(0)
    se = NOISE * np.sqrt(np.diag(np.linalg.inv(Xc.T @ Xc)))
    z = (ds["coef"].values - TRUE_COEF[:, None, None]) / se[:, None, None]
    assert np.nanmax(np.abs(z)) < 4.0


def test_ridge_and_lasso_choose_the_best_scored_alpha(stores):
    target, eof = stores
    for method in ("ridge", "lasso"):
        ds = regression.compute(target, eof, params=_params(method=method), backend="numpy")
        scores = ds["cv_score"].values
        assert ds["alpha_grid"].values.tolist() == [0.0, 0.01, 0.1, 1.0, 10.0]
        assert float(ds["alpha"]) == ds["alpha_grid"].values[np.argmin(scores)]
        assert scores.max() > scores.min()  # the grid is informative
        assert np.nanmin(ds["r2"].values) > 0.9


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"method": "svm"}, r"method must be one of ols, ridge, lasso; got 'svm'"),
        ({"method": "ridge", "alphas": []}, r"alphas must be a non-empty list"),
        ({"method": "lasso", "alphas": [0.1, -1.0]}, r"alphas must all be >= 0; got -1.0"),
        ({"n_predictors": 0}, r"n_predictors must be an integer >= 1"),
        ({"method": "lasso", "cv_folds": 1}, r"cv_folds must be an integer >= 2"),
    ],
)
def test_bad_params_raise_one_sentence(stores, override, message):
    target, eof = stores
    with pytest.raises(ValueError, match=message):
        regression.compute(target, eof, params=_params(**override), backend="numpy")


def test_constant_predictor_is_rejected(stores):
    target, eof = stores
    eof = eof.copy(deep=True)
    eof["pc"][:, 1] = 1.0
    with pytest.raises(ValueError, match=r"Predictor sst_pc2 is constant"):
        regression.compute(target, eof, params=_params(), backend="numpy")


def test_run_writes_store_that_reads_back(stores, tmp_path):
    target, eof = stores
    io.write_store(target, tmp_path / "fields.zarr", stage="ingest")
    io.write_store(eof, tmp_path / "eof.zarr", stage="eof")
    params = _params(method="ridge")
    regression.run(tmp_path / "fields.zarr", tmp_path / "eof.zarr", tmp_path / "out.zarr", params=params, backend="numpy")
    back = io.open_store(tmp_path / "out.zarr")
    expected = regression.compute(target, eof, params=params, backend="numpy")
    xr.testing.assert_allclose(back[list(expected.data_vars)], expected, rtol=1e-12)
    assert back.attrs["pipeline_stage"] == "regression" and back.attrs["array_backend"] == "numpy"
    assert back.attrs["method"] == "ridge" and back.attrs["years"] == "1960-2009"
    assert list(back["predictor"].values) == ["sst_pc1", "sst_pc2", "sst_pc3"]
