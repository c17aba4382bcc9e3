"""Time-axis kernels against independent references (NumPy loops, scipy.signal.detrend, numpy.polyfit)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.signal import detrend as scipy_detrend

from pipeline.kernels import temporal as kt


def _data(n=60, p=5, seed=0, holes=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(10.0, 2.0, size=(n, p))
    if holes:
        x[rng.random((n, p)) < 0.1] = np.nan
        x[:, -1] = np.nan  # a land cell
    return x


def test_monthly_climatology_is_the_nan_mean_of_each_month(xp, to_np):
    x = _data()
    groups = np.arange(60) % 12
    got = to_np(kt.climatology(xp.asarray(x), groups, 12))
    for g in range(12):
        rows = x[groups == g]
        with warnings.catch_warnings():  # the land cell: mean of an empty slice is NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmean(rows, axis=0)
        np.testing.assert_allclose(got[g], expected, rtol=1e-12, equal_nan=True)


def test_windowed_climatology_pools_the_days_of_a_circular_window(xp, to_np):
    rng = np.random.default_rng(1)
    n_groups, n = 20, 70
    groups = rng.integers(0, n_groups, size=n)
    groups[5] = -1  # outside the base period: left out
    x = rng.normal(size=(n, 3))
    x[3, 0] = np.nan
    got = to_np(kt.climatology(xp.asarray(x), groups, n_groups, window=5))
    for g in range(n_groups):
        near = [(g + k) % n_groups for k in range(-2, 3)]
        rows = x[np.isin(groups, near)]
        np.testing.assert_allclose(got[g], np.nanmean(rows, axis=0), rtol=1e-12)


def test_subtract_uses_each_steps_group(xp, to_np):
    x = _data(holes=False)
    groups = np.arange(60) % 12
    clim = kt.climatology(xp.asarray(x), groups, 12)
    got = to_np(kt.subtract(xp.asarray(x), clim, groups))
    np.testing.assert_allclose(got, x - to_np(clim)[groups], rtol=1e-12)
    # anomalies of each month average to zero
    for g in range(12):
        np.testing.assert_allclose(got[groups == g].mean(axis=0), 0.0, atol=1e-12)


@pytest.mark.parametrize("statistic", ["mean", "max", "min"])
def test_block_reduce_equals_nan_reductions_with_coverage(xp, to_np, statistic):
    x = _data(n=12, p=4, seed=2, holes=False)
    x[0, 1] = np.nan  # cell 1 misses one of the three steps of block 0
    bounds, expected = [(0, 3), (3, 6), (6, 8)], [3.0, 3.0, 3.0]  # block 2 has 2 of 3 steps
    got = to_np(kt.block_reduce(xp.asarray(x), bounds, expected, statistic, min_coverage=0.6))
    ref = {"mean": np.nanmean, "max": np.nanmax, "min": np.nanmin}[statistic]
    for k, (a, b) in enumerate(bounds):
        np.testing.assert_allclose(got[k], ref(x[a:b], axis=0), rtol=1e-12)
    strict = to_np(kt.block_reduce(xp.asarray(x), bounds, expected, statistic, min_coverage=1.0))
    assert np.isnan(strict[0, 1]) and not np.isnan(strict[0, 0])
    assert np.isnan(strict[2]).all()


def test_linear_detrend_removes_a_planted_trend_to_1e10_and_keeps_the_mean(xp, to_np):
    rng = np.random.default_rng(3)
    n, p = 80, 6
    t = np.arange(n) / 12.0 + 1950.0  # years
    slope = rng.normal(size=p)
    noise = rng.normal(size=(n, p))
    noise -= np.polynomial.polynomial.polyval(t, np.polynomial.polynomial.polyfit(t, noise, 1)).T  # trend-free noise
    x = 280.0 + slope[None, :] * (t[:, None] - 1950.0) + noise
    got, b = kt.linear_detrend(xp.asarray(x), xp.asarray(t - t.mean()))
    got, b = to_np(got), to_np(b)
    np.testing.assert_allclose(b, slope, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got, scipy_detrend(x, axis=0) + x.mean(axis=0), rtol=0, atol=1e-10)
    refit = np.polynomial.polynomial.polyfit(t, got, 1)[1]
    np.testing.assert_allclose(refit, 0.0, atol=1e-10)


def test_linear_detrend_with_missing_values_fits_the_valid_steps_only(xp, to_np):
    rng = np.random.default_rng(4)
    t = np.arange(30, dtype=float)
    x = rng.normal(size=(30, 3)) + 0.3 * t[:, None]
    x[[2, 7, 20], 0] = np.nan
    x[:, 2] = np.nan
    x[4, 2] = 1.0  # one valid value: no trend, returned as is
    got, b = kt.linear_detrend(xp.asarray(x), xp.asarray(t))
    got, b = to_np(got), to_np(b)
    ok = ~np.isnan(x[:, 0])
    expected_b = np.polyfit(t[ok], x[ok, 0], 1)[0]
    np.testing.assert_allclose(b[0], expected_b, rtol=1e-12)
    np.testing.assert_allclose(got[ok, 0], x[ok, 0] - expected_b * (t[ok] - t[ok].mean()), rtol=1e-12)
    assert np.isnan(got[~ok, 0]).all()
    assert np.isnan(b[2]) and got[4, 2] == 1.0


def test_bad_arguments_say_what(xp):
    x = xp.asarray(_data())
    with pytest.raises(ValueError, match="odd number"):
        kt.climatology(x, np.arange(60) % 12, 12, window=4)
    with pytest.raises(ValueError, match="statistic must be one of"):
        kt.block_reduce(x, [(0, 3)], [3.0], "median")
