"""Step kinds, alignment keys and alignment of time axes, on every CF calendar family.

References are independent of :mod:`pipeline.timeaxis`: Python's
``datetime.date.toordinal`` for the proleptic Gregorian day count, cftime's own
date arithmetic (``date + timedelta``) for consecutive days in the other
calendars, and hand-counted year lengths (360, 365, 366 days).
"""

from __future__ import annotations

import datetime

import cftime
import numpy as np
import pytest

from pipeline import timeaxis

CALENDARS = ["datetime64", "standard", "proleptic_gregorian", "julian", "noleap", "all_leap", "360_day"]


def _dates(calendar: str, ymd: list[tuple[int, int, int]]) -> np.ndarray:
    """Dates of ``calendar`` (``datetime64`` for numpy's own) from ``(year, month, day)`` triples."""
    if calendar == "datetime64":
        return np.array([f"{y:04d}-{m:02d}-{d:02d}" for y, m, d in ymd], dtype="datetime64[ns]")
    return np.array([cftime.datetime(y, m, d, calendar=calendar) for y, m, d in ymd])


def _days(calendar: str, start: tuple[int, int, int], n: int) -> np.ndarray:
    """``n`` consecutive days from ``start``, stepped by cftime's (or numpy's) own calendar arithmetic."""
    if calendar == "datetime64":
        first = np.datetime64(f"{start[0]:04d}-{start[1]:02d}-{start[2]:02d}", "ns")
        return first + np.arange(n) * np.timedelta64(1, "D")
    first = cftime.datetime(*start, calendar=calendar)
    return np.array([first + datetime.timedelta(days=i) for i in range(n)])


def _months(calendar: str, start: tuple[int, int], n: int, day: int = 15) -> np.ndarray:
    index = start[0] * 12 + start[1] - 1 + np.arange(n)
    return _dates(calendar, [(int(i // 12), int(i % 12 + 1), day) for i in index])


@pytest.mark.parametrize("calendar", CALENDARS)
def test_step_kind_of_yearly_monthly_and_daily_axes(calendar):
    assert timeaxis.step_kind(_dates(calendar, [(y, 12, 1) for y in range(1950, 1960)])) == "yearly"
    # seasonal means stamped mid-winter: one step a year, whatever the month
    assert timeaxis.step_kind(_dates(calendar, [(1950, 12, 1), (1952, 1, 15), (1953, 2, 1)])) == "yearly"
    assert timeaxis.step_kind(_months(calendar, (1950, 11), 5)) == "monthly"
    assert timeaxis.step_kind(_days(calendar, (1951, 2, 20), 20)) == "daily"


@pytest.mark.parametrize("calendar", CALENDARS)
def test_sub_daily_or_repeated_steps_are_refused_naming_the_axis(calendar):
    days = _days(calendar, (1951, 3, 1), 3)
    if calendar == "datetime64":
        twice = np.sort(np.concatenate([days, days + np.timedelta64(12, "h")]))
    else:
        twice = np.array(sorted(list(days) + [d + datetime.timedelta(hours=12) for d in days]))
    with pytest.raises(ValueError, match=r"^The target field 'z' has more than one time step on 1951-03-01; "
                                         r"aggregate sub-daily data"):
        timeaxis.step_kind(twice, "target field 'z'")
    repeated = np.concatenate([days, days[1:2]])
    with pytest.raises(ValueError, match=r"^The PCs has more than one time step on 1951-03-02"):
        timeaxis.align(days, repeated, what=("target", "PCs"))


def test_empty_axis_is_refused():
    with pytest.raises(ValueError, match=r"^The time axis is empty"):
        timeaxis.step_kind(np.array([], dtype="datetime64[ns]"))


@pytest.mark.parametrize("calendar", CALENDARS)
def test_monthly_keys_count_months_across_the_new_year(calendar):
    keys = timeaxis.time_keys(_months(calendar, (1950, 10), 6), "monthly")
    np.testing.assert_array_equal(keys, 12 * 1950 + np.arange(9, 15))  # Oct 1950 = 12*1950 + 9
    np.testing.assert_array_equal(timeaxis.time_keys(_months(calendar, (1950, 10), 6), "yearly"),
                                  [1950, 1950, 1950, 1951, 1951, 1951])


@pytest.mark.parametrize("calendar", CALENDARS)
def test_daily_keys_of_consecutive_days_differ_by_one(calendar):
    # a span over the end of February of a year that is leap in some calendars only, and over a new year
    for start in ((1900, 2, 20), (2000, 2, 20), (1999, 12, 25)):
        keys = timeaxis.time_keys(_days(calendar, start, 15), "daily")
        np.testing.assert_array_equal(np.diff(keys), 1)


@pytest.mark.parametrize(("calendar", "year_length"), [("noleap", 365), ("all_leap", 366), ("360_day", 360)])
def test_daily_keys_count_days_of_the_calendar(calendar, year_length):
    keys = timeaxis.time_keys(_dates(calendar, [(1, 1, 1), (2, 1, 1), (11, 1, 1)]), "daily")
    np.testing.assert_array_equal(keys, [0, year_length, 10 * year_length])


def test_daily_keys_of_datetime64_are_proleptic_ordinals():
    dates = [(1970, 1, 1), (1700, 3, 1), (2024, 2, 29)]
    ref = [datetime.date(*d).toordinal() - 1 for d in dates]  # days since 0001-01-01
    np.testing.assert_array_equal(timeaxis.time_keys(_dates("datetime64", dates), "daily"), ref)
    late = np.array(["2024-02-29T23:59:59"], dtype="datetime64[ns]")
    assert timeaxis.time_keys(late, "daily")[0] == ref[2]  # the time of day does not move the day


def test_align_360_day_monthly_with_datetime64_monthly_and_a_lag():
    target = _months("360_day", (1990, 1), 24, day=30)  # Jan 1990 - Dec 1991, 30th of each month
    predictor = _months("datetime64", (1989, 7), 24, day=1)  # Jul 1989 - Jun 1991
    it, ip, kind = timeaxis.align(target, predictor, lag=3)
    assert kind == "monthly"
    # target month k pairs with predictor month k - 3: Jan 1990 with Oct 1989, ..., Sep 1991 with Jun 1991
    np.testing.assert_array_equal(it, np.arange(0, 21))
    np.testing.assert_array_equal(ip, np.arange(3, 24))
    t_keys = timeaxis.time_keys(target[it], "monthly")
    np.testing.assert_array_equal(t_keys - timeaxis.time_keys(predictor[ip], "monthly"), 3)


def test_align_noleap_daily_across_the_end_of_february():
    target = _days("noleap", (2000, 2, 25), 10)  # 2000-02-25 .. 2000-03-06, no 29 February
    predictor = _days("noleap", (2000, 2, 20), 12)  # 2000-02-20 .. 2000-03-03
    it, ip, kind = timeaxis.align(target, predictor, lag=1)
    assert kind == "daily"
    # 1 March pairs with 28 February (the day before in this calendar)
    np.testing.assert_array_equal(it, np.arange(0, 8))
    np.testing.assert_array_equal(ip, np.arange(4, 12))
    pairs = [(str(target[i])[:10], str(predictor[j])[:10]) for i, j in zip(it, ip)]
    assert ("2000-03-01", "2000-02-28") in pairs


def test_align_daily_standard_cftime_with_datetime64():
    target = _days("standard", (2000, 2, 27), 4)
    predictor = _days("datetime64", (2000, 2, 28), 4)
    it, ip, kind = timeaxis.align(target, predictor)
    assert kind == "daily"
    np.testing.assert_array_equal(it, [1, 2, 3])  # 28 Feb, 29 Feb, 1 Mar
    np.testing.assert_array_equal(ip, [0, 1, 2])


def test_align_refuses_julian_standard_dates_against_proleptic_dates():
    old = _days("standard", (1582, 10, 1), 3)
    with pytest.raises(ValueError, match=r"^The target has standard-calendar dates before 1582-10-15"):
        timeaxis.align(old, _days("proleptic_gregorian", (1582, 10, 1), 3))


def test_align_refuses_daily_axes_of_different_day_counts():
    with pytest.raises(ValueError, match=r"^The target is in the noleap calendar and the predictor in the "
                                         r"proleptic_gregorian calendar, so their days cannot be matched"):
        timeaxis.align(_days("noleap", (2000, 1, 1), 5), _days("datetime64", (2000, 1, 1), 5))


def test_align_refuses_different_step_kinds_in_one_sentence():
    monthly = _months("datetime64", (1990, 1), 24)
    yearly = _dates("datetime64", [(y, 1, 15) for y in range(1990, 2000)])
    with pytest.raises(ValueError, match=r"^The target has monthly time steps but the predictor has yearly time "
                                         r"steps; aggregate one field so that both have the same step "
                                         r"\(fields\.<name>\.aggregate gives one value a year\)\.$"):
        timeaxis.align(monthly, yearly)
    with pytest.raises(ValueError, match=r"^The lag must be an integer number of time steps; got 0.5\.$"):
        timeaxis.align(monthly, monthly, lag=0.5)


def test_align_pairs_are_ascending_by_target_whatever_the_input_order():
    target = _months("noleap", (1990, 1), 12)
    order = np.random.default_rng(0).permutation(12)
    predictor = _months("datetime64", (1990, 4), 12)
    it, ip, _ = timeaxis.align(target[order], predictor[::-1])
    keys = timeaxis.time_keys(target[order][it], "monthly")
    np.testing.assert_array_equal(keys, 12 * 1990 + np.arange(3, 12))
    np.testing.assert_array_equal(timeaxis.time_keys(predictor[::-1][ip], "monthly"), keys)


@pytest.mark.parametrize("calendar", CALENDARS)
def test_period_label(calendar):
    assert timeaxis.period_label(_dates(calendar, [(1999, 1, 1), (1950, 1, 1)]), "yearly") == "1950 .. 1999"
    assert timeaxis.period_label(_months(calendar, (1950, 1), 600), "monthly") == "1950-01 .. 1999-12"
    assert timeaxis.period_label(_days(calendar, (2001, 2, 27), 3), "daily").startswith("2001-02-27 .. ")
