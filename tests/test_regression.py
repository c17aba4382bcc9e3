"""The labelled regression stage: alignment, NaN placement, attributes, stores, errors.

The predictor store is an eof-like Dataset built here (``pc(time, mode)`` from
``planted_modes``' true PCs, years 1950-2009); the target is a planted
regression on those PCs over the years 1960-2019, so 50 years overlap. Monthly
and daily cases build their own monthly PCs and targets (numpy datetime64 and
cftime calendars) with a planted, possibly lagged, relation.
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


def test_align_uses_overlap_in_year_order(stores):
    target, eof = stores
    shuffled = target.isel(time=np.random.default_rng(3).permutation(60))
    aligned = regression.align(shuffled, eof, target="z500", predictor="sst", n_predictors=2)
    np.testing.assert_array_equal(aligned.field["time"].dt.year.values, np.arange(1960, 2010))
    np.testing.assert_array_equal(aligned.design, eof["pc"].values[10:, :2])
    assert aligned.predictors == ["sst_pc1", "sst_pc2"]
    assert (aligned.kind, aligned.lag, aligned.period, aligned.n_samples) == ("yearly", 0, "1960 .. 2009", 50)
    assert (aligned.target_units, aligned.predictor_units) == ("m", "K")


def test_align_rejects_a_monthly_step_against_yearly_pcs(stores):
    target, eof = stores
    times = target["time"].values.copy()
    times[5] = np.datetime64("1964-02-15")  # two steps in 1964, none in 1965: the target is no longer yearly
    monthly = target.assign_coords(time=times)
    with pytest.raises(ValueError, match=r"^The target field 'z500' has monthly time steps but the predictor PCs of "
                                         r"'sst' has yearly time steps; aggregate one field .*aggregate"):
        regression.align(monthly, eof, target="z500", predictor="sst", n_predictors=3)


def test_align_rejects_a_repeated_date(stores):
    target, eof = stores
    times = target["time"].values.copy()
    times[5] = times[4]
    with pytest.raises(ValueError, match=r"^The target field 'z500' has more than one time step on 1964-01-15"):
        regression.align(target.assign_coords(time=times), eof, target="z500", predictor="sst", n_predictors=3)
    pc_times = eof["time"].values.copy()
    pc_times[1] = pc_times[0]
    with pytest.raises(ValueError, match=r"^The predictor PCs of 'sst' has more than one time step on 1950-01-15"):
        regression.align(target, eof.assign_coords(time=pc_times), target="z500", predictor="sst", n_predictors=3)


def test_align_rejects_short_overlap(stores):
    target, eof = stores
    late = target.assign_coords(time=_times(range(2006, 2066)))
    with pytest.raises(ValueError, match=r"Only 4 yearly steps \(2006 \.\. 2009\) pair up .* needs at least 5"):
        regression.align(late, eof, target="z500", predictor="sst", n_predictors=3)


def test_align_rejects_too_many_predictors(stores):
    target, eof = stores
    with pytest.raises(ValueError, match=r"n_predictors is 5 but the EOF store of 'sst' holds only 4 PCs"):
        regression.compute(target, eof, params=_params(n_predictors=5), backend="numpy")


def test_align_rejects_wrong_field(stores):
    target, eof = stores
    with pytest.raises(ValueError, match=r"holds field 'sst' but the regression config names 'u850'"):
        regression.compute(target, eof, params=_params(predictor="u850"), backend="numpy")


def test_yearly_lag_pairs_each_target_year_with_an_earlier_pc_year(stores):
    target, eof = stores
    aligned = regression.align(target, eof, target="z500", predictor="sst", n_predictors=3, lag=2)
    np.testing.assert_array_equal(aligned.field["time"].dt.year.values, np.arange(1960, 2012))
    np.testing.assert_array_equal(aligned.design, eof["pc"].values[8:, :3])  # 1958-2009
    assert aligned.period == "1960 .. 2011" and aligned.lag == 2


def test_target_dims_may_use_aliases_in_any_order(stores):
    target, eof = stores
    ref = regression.compute(target, eof, params=_params(), backend="numpy")
    renamed = target.rename(lat="latitude", lon="longitude").transpose("latitude", "longitude", "time", ...)
    got = regression.compute(renamed, eof, params=_params(), backend="numpy")
    xr.testing.assert_identical(got, ref)


def test_compute_layout_nan_placement_and_attributes(stores):
    target, eof = stores
    ds = regression.compute(target, eof, params=_params(), backend="numpy")
    assert ds["coef"].dims == ("predictor", "lat", "lon")
    assert list(ds["predictor"].values) == ["sst_pc1", "sst_pc2", "sst_pc3"]
    for name in ("coef", "intercept", "r2", "alpha", "alpha_grid", "cv_score", "predictor_mean", "predictor_std"):
        assert {"units", "long_name"} <= set(ds[name].attrs), name
    assert ds["coef"].attrs["units"] == "(m)/(K)" and ds["intercept"].attrs["units"] == "m"
    assert ds.attrs["method"] == "ols" and ds.attrs["rank"] == 3 and ds.attrs["n_samples"] == 50
    assert (ds.attrs["period"], ds.attrs["alignment"], ds.attrs["lag"]) == ("1960 .. 2009", "yearly", 0)
    assert (ds.attrs["field_name"], ds.attrs["field_units"]) == ("z500", "m") and "years" not in ds.attrs
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
    assert back.attrs["method"] == "ridge" and back.attrs["period"] == "1960 .. 2009" and back.attrs["lag"] == 0
    assert list(back["predictor"].values) == ["sst_pc1", "sst_pc2", "sst_pc3"]


def _monthly(start: tuple[int, int], n: int, calendar: str | None = None) -> np.ndarray:
    """``n`` monthly dates from ``(year, month)``, day 15: datetime64, or cftime of ``calendar``."""
    index = start[0] * 12 + start[1] - 1 + np.arange(n)
    if calendar is None:
        return np.array([f"{i // 12:04d}-{i % 12 + 1:02d}-15" for i in index], dtype="datetime64[ns]")
    import cftime

    return np.array([cftime.datetime(int(i // 12), int(i % 12 + 1), 15, calendar=calendar) for i in index])


def _monthly_case(lag: int, calendar: str | None = None, seed: int = 11):
    """PCs Jan 1990 - Dec 1999 (datetime64); a target Jul 1990 - Jun 2000 with ``y(t) = 1 + X(t − lag) coef + e``."""
    rng = np.random.default_rng(seed)
    pc = rng.standard_normal((120, 2)) * [3.0, 1.0]
    eof = xr.Dataset({"pc": (("time", "mode"), pc, {"units": "K"})},
                     coords={"time": _monthly((1990, 1), 120), "mode": [1, 2]},
                     attrs={"field_name": "sst", "field_units": "K"})
    coef = np.array([2.0, -0.5])
    X = np.vstack([pc, rng.standard_normal((130, 2))])[6 - lag:126 - lag]  # target month i is PC month i + 6 - lag
    target = synthetic.planted_regression(X, coef, intercept=1.0, noise_std=0.3, n_lat=3, n_lon=4, seed=seed + 1,
                                          time=_monthly((1990, 7), 120, calendar))
    target.attrs.update(field_name="z500", field_units="m")
    return target, eof, coef


def _lstsq(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(np.column_stack([np.ones(len(y)), design]), y, rcond=None)[0]


@pytest.mark.parametrize("calendar", [None, "360_day", "noleap"])
def test_monthly_target_on_monthly_pcs_recovers_the_planted_coefficients(calendar):
    target, eof, coef = _monthly_case(lag=0, calendar=calendar)
    ds = regression.compute(target, eof, params=_params(n_predictors=2), backend="numpy")
    assert (ds.attrs["alignment"], ds.attrs["lag"], ds.attrs["n_samples"]) == ("monthly", 0, 114)
    assert ds.attrs["period"] == "1990-07 .. 1999-12"
    ref = _lstsq(eof["pc"].values[6:], target["field"].values[:114, 1, 2])  # PC months Jul 1990 - Dec 1999
    np.testing.assert_allclose(ds["coef"].values[:, 1, 2], ref[1:], rtol=1e-9)
    assert float(ds["intercept"][1, 2]) == pytest.approx(ref[0], rel=1e-9)
    se = 0.3 / np.sqrt(114) / eof["pc"].values[6:].std(axis=0)
    assert np.abs((ds["coef"].values - coef[:, None, None]) / se[:, None, None]).max() < 4.0


def test_a_one_month_lag_recovers_a_lagged_relation_and_lag_zero_does_not():
    target, eof, coef = _monthly_case(lag=1)
    lagged = regression.compute(target, eof, params=_params(n_predictors=2, lag=1), backend="numpy")
    # target Jul 1990 - Jan 2000 pairs with PCs Jun 1990 - Dec 1999
    assert (lagged.attrs["period"], lagged.attrs["n_samples"], lagged.attrs["lag"]) == ("1990-07 .. 2000-01", 115, 1)
    ref = _lstsq(eof["pc"].values[5:], target["field"].values[:115, 2, 3])
    np.testing.assert_allclose(lagged["coef"].values[:, 2, 3], ref[1:], rtol=1e-9)
    np.testing.assert_allclose(lagged["coef"].values, np.broadcast_to(coef[:, None, None], (2, 3, 4)), atol=0.15)
    assert lagged["r2"].min() > 0.98
    unlagged = regression.compute(target, eof, params=_params(n_predictors=2), backend="numpy")
    assert np.abs(unlagged["coef"].values[0]).max() < 1.0 and unlagged["r2"].max() < 0.2


def test_monthly_target_on_yearly_pcs_is_refused(stores):
    target, _, _ = _monthly_case(lag=0)
    _, eof = stores
    with pytest.raises(ValueError, match=r"^The target field 'z500' has monthly time steps but the predictor PCs of "
                                         r"'sst' has yearly time steps; aggregate one field so that both have the "
                                         r"same step \(fields\.<name>\.aggregate gives one value a year\)\.$"):
        regression.compute(target, eof, params=_params(), backend="numpy")


def test_lag_must_be_an_integer(stores):
    target, eof = stores
    with pytest.raises(ValueError, match=r"regression lag must be an integer number of time steps .*got 1.5"):
        regression.compute(target, eof, params=_params(lag=1.5), backend="numpy")
