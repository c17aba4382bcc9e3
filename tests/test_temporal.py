"""Time handling (pipeline.temporal): hand computations on monthly and daily axes of every calendar family."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pipeline import temporal, timeaxis

CALENDARS = ["standard", "proleptic_gregorian", "noleap", "all_leap", "360_day"]


def _monthly(start="1950-01-01", periods=48, calendar="standard"):
    return xr.date_range(start, periods=periods, freq="MS", calendar=calendar, use_cftime=calendar != "standard").values


def _daily(start="1950-01-01", end="1953-12-31", calendar="standard"):
    return xr.date_range(start, end, freq="D", calendar=calendar, use_cftime=calendar != "standard").values


def _run(time, values, **spec):
    p = temporal.plan(time, temporal.spec_of("f", spec), "f")
    return p, temporal.apply(values, p)


def test_djf_means_by_hand_with_december_in_the_following_winter():
    time = _monthly(periods=48)  # Jan 1950 .. Dec 1953
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 3))
    x[13, 1] = np.nan  # Feb 1951, cell 1
    p, out = _run(time, x, aggregate={"period": "DJF", "min_coverage": 0.6})
    # winters: 1950 (Jan, Feb 1950: 2 of 3 months), 1951, 1952, 1953 (Dec of the year before + Jan, Feb), 1954 (Dec 1953 only)
    years, months, _ = timeaxis.date_fields(p.time)
    assert years.tolist() == [1950, 1951, 1952, 1953] and (months == 1).all()
    expected = np.stack([
        x[[0, 1]].mean(0),
        np.nanmean(x[[11, 12, 13]], 0),
        x[[23, 24, 25]].mean(0),
        x[[35, 36, 37]].mean(0),
    ])
    np.testing.assert_allclose(out.field, expected, rtol=1e-13)
    # the default coverage (0.9) needs all three months: winter 1950 goes, and cell 1 of 1951 is NaN
    p, out = _run(time, x, aggregate="DJF")
    assert timeaxis.date_fields(p.time)[0].tolist() == [1951, 1952, 1953]
    assert np.isnan(out.field[0, 1]) and not np.isnan(out.field[0, [0, 2]]).any()
    np.testing.assert_allclose(out.field[1:], expected[2:], rtol=1e-13)


def test_years_select_winters_by_the_year_they_end_in():
    time = _monthly(periods=48)
    x = np.arange(48.0)[:, None]
    p, out = _run(time, x, aggregate="DJF", years=[1952, 1953])
    np.testing.assert_allclose(out.field[:, 0], [np.mean([23, 24, 25]), np.mean([35, 36, 37])])


@pytest.mark.parametrize("statistic", ["max", "min"])
def test_annual_block_extremes_of_daily_data(statistic):
    time = _daily("1950-01-01", "1952-12-31", "noleap")
    rng = np.random.default_rng(1)
    x = rng.gumbel(size=(time.size, 2))
    x[:40, 0] = np.nan  # 40 of 365 days missing: 89 % coverage
    p, out = _run(time, x, aggregate={"period": "annual", "statistic": statistic})
    reduce = np.nanmax if statistic == "max" else np.nanmin
    expected = np.stack([reduce(x[365 * k:365 * (k + 1)], axis=0) for k in range(3)])
    expected[0, 0] = np.nan  # below 0.9 coverage
    np.testing.assert_allclose(out.field, expected, rtol=0, equal_nan=True)
    assert p.expected == [365.0] * 3


@pytest.mark.parametrize("calendar", CALENDARS)
def test_djf_expected_days_follow_the_calendar(calendar):
    time = _daily("1951-12-01", "1953-03-01", calendar)  # the March day is outside the season
    p = temporal.plan(time, temporal.spec_of("f", {"aggregate": "DJF"}), "f")
    # DJF 1952 holds 29 February in every calendar that has leap years; 360_day months have 30 days
    expected = {"standard": [91, 90], "proleptic_gregorian": [91, 90], "noleap": [90, 90],
                "all_leap": [91, 91], "360_day": [90, 90]}[calendar]
    assert p.expected == [float(e) for e in expected]
    assert [b - a for a, b in p.bounds] == expected  # steps in the record: all of them
    assert timeaxis.date_fields(p.time)[0].tolist() == [1952, 1953]


@pytest.mark.parametrize("calendar", CALENDARS)
def test_monthly_and_daily_climatologies_on_every_calendar(calendar):
    rng = np.random.default_rng(2)
    time = _monthly("1950-01-01", 60, calendar)
    months = timeaxis.date_fields(time)[1]
    cycle = 10.0 * np.cos(2 * np.pi * (months - 1) / 12)
    x = cycle[:, None] + rng.normal(size=(60, 2))
    p, out = _run(time, x, climatology="monthly")
    for m in range(1, 13):
        np.testing.assert_allclose(out.climatology[m - 1], x[months == m].mean(0), rtol=1e-12)
        np.testing.assert_allclose(out.field[months == m], x[months == m] - x[months == m].mean(0), rtol=1e-12)

    time = _daily("1950-01-01", "1953-12-30" if calendar == "360_day" else "1953-12-31", calendar)
    _, mo, dd = timeaxis.date_fields(time)
    slots, n_slots = timeaxis.day_slot(mo, dd, calendar)
    assert n_slots == {"360_day": 360, "noleap": 365}.get(calendar, 366)
    x = rng.normal(size=(time.size, 2))
    p, out = _run(time, x, climatology="daily", smooth_days=1)
    for s in (1, 60, 61, n_slots):
        np.testing.assert_allclose(out.climatology[s - 1], x[slots == s].mean(0), rtol=1e-12)
    p, out = _run(time, x, climatology="daily", smooth_days=5)
    near = np.isin(slots, [(60 + k - 1) % n_slots + 1 for k in range(-2, 3)])
    np.testing.assert_allclose(out.climatology[59], x[near].mean(0), rtol=1e-12)


def test_base_period_sets_the_climatology_and_every_step_keeps_its_anomaly():
    time = _monthly(periods=60)
    years, months, _ = timeaxis.date_fields(time)
    x = np.random.default_rng(3).normal(size=(60, 2)) + (years - 1950)[:, None]
    p, out = _run(time, x, climatology="monthly", base_period=[1951, 1952])
    base = (years >= 1951) & (years <= 1952)
    for m in (1, 7):
        clim = x[base & (months == m)].mean(0)
        np.testing.assert_allclose(out.climatology[m - 1], clim, rtol=1e-12)
        np.testing.assert_allclose(out.field[months == m], x[months == m] - clim, rtol=1e-12)
    with pytest.raises(ValueError, match="base_period 1900-1910 holds no time step"):
        _run(time, x, climatology="monthly", base_period=[1900, 1910])


def test_detrend_after_aggregation_removes_a_planted_trend_to_1e10():
    time = _monthly(periods=12 * 30)
    years, months, _ = timeaxis.date_fields(time)
    rng = np.random.default_rng(4)
    x = 5.0 + 0.03 * (years - 1950)[:, None] + rng.normal(size=(time.size, 3)) * np.array([1.0, 0.0, 0.5])
    p, out = _run(time, x, aggregate="JJA", detrend="linear")
    t = timeaxis.ordinal_days(p.time) / 365.2425
    raw = np.stack([x[(years == y) & np.isin(months, [6, 7, 8])].mean(0) for y in range(1950, 1980)])
    slope = np.polyfit(t, raw, 1)[0]
    np.testing.assert_allclose(out.trend, slope, rtol=1e-10)
    # the noise-free cell: the planted 0.03 a year, up to the leap days between the block stamps
    np.testing.assert_allclose(out.trend[1], 0.03, rtol=1e-4)
    np.testing.assert_allclose(np.polyfit(t, out.field, 1)[0], 0.0, atol=1e-10)
    np.testing.assert_allclose(out.field.mean(0), raw.mean(0), rtol=1e-12)  # the mean is kept


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"climatology": "weekly"}, "climatology must be one of"),
        ({"aggregate": "DFJ"}, "consecutive month initials"),
        ({"aggregate": {"period": "DJF", "statistic": "median"}}, "statistic must be one of"),
        ({"aggregate": {"period": "DJF", "min_coverage": 0}}, "min_coverage must be a fraction"),
        ({"aggregate": {"season": "DJF"}}, "needs|must be a period|'period'"),
        ({"detrend": "quadratic"}, "detrend must be one of"),
        ({"smooth_days": 4}, "smooth_days must be an odd number"),
        ({"base_period": [2000, 1990]}, "first <= last"),
    ],
)
def test_bad_time_keys_fail_with_one_sentence(spec, message):
    with pytest.raises(ValueError, match=message):
        temporal.spec_of("f", spec)


def test_a_winter_record_too_short_for_any_block_says_what_to_do():
    time = _monthly("1950-12-01", 2)  # Dec 1950, Jan 1951
    with pytest.raises(ValueError, match="lower aggregate.min_coverage"):
        temporal.plan(time, temporal.spec_of("f", {"aggregate": "DJF"}), "f")


@pytest.mark.parametrize("spec", [{"years": [2000, 2001]}, {"climatology": "monthly"}])
def test_years_or_time_handling_on_plain_numbers_says_to_set_time_units(spec):
    with pytest.raises(ValueError) as err:
        temporal.plan(np.arange(24), temporal.spec_of("tos", spec), "tos")
    assert str(err.value) == ("Field 'tos': the time axis holds plain numbers, not dates; set fields.tos.time_units "
                              "(e.g. 'days since 1950-01-01') to use years or time handling.")
    assert temporal.plan(np.arange(24), temporal.spec_of("tos", {}), "tos").identity  # nothing asked: kept as it is
