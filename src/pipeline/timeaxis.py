"""The time axis: decoding, calendars, seasons and day-of-year slots.

No data here, only time coordinates. Every CF calendar is handled:
``standard``/``gregorian``, ``proleptic_gregorian``, ``julian``,
``noleap``/``365_day``, ``all_leap``/``366_day`` and ``360_day``. A time
coordinate is either ``numpy.datetime64`` (xarray's choice for the standard
calendars) or an array of ``cftime`` dates (every other calendar); both are
accepted everywhere.

* :func:`decode` turns stored numbers into dates, including the non-CF units
  ``months since ...`` and ``years since ...`` that many monthly products use;
* :func:`calendar_of`, :func:`date_fields` and :func:`ordinal_days` read
  calendar, year/month/day and a day count from decoded dates;
* :func:`season_months` parses a season (``DJF``, ``NDJFM``, ``annual``, or
  a list of month numbers);
* :func:`day_slot` numbers calendar days for a daily climatology.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

CALENDARS = ("standard", "gregorian", "proleptic_gregorian", "julian", "noleap", "365_day",
             "all_leap", "366_day", "360_day")
_CANONICAL = {"gregorian": "standard", "365_day": "noleap", "366_day": "all_leap"}
MONTH_INITIALS = "JFMAMJJASOND"
_NOLEAP = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_LEAP = np.array([31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_UNITS = re.compile(r"^\s*(\w+)\s+since\s+(.+?)\s*$", re.IGNORECASE)


def canonical_calendar(calendar: str | None) -> str:
    """The CF calendar name with aliases resolved (``gregorian`` is ``standard``, ...); ``standard`` if None."""
    cal = (calendar or "standard").lower()
    if cal not in CALENDARS:
        raise ValueError(f"calendar must be one of {', '.join(CALENDARS)}; got {calendar!r}.")
    return _CANONICAL.get(cal, cal)


def decode(values: Any, units: str, calendar: str | None = None) -> np.ndarray:
    """Dates from stored time numbers, as xarray would decode them.

    CF units (``days since 1950-01-01``, ``hours since ...``, ...) go through
    :func:`xarray.decode_cf`. ``months since`` and ``years since`` (not CF,
    but common in monthly products) count calendar months or years from the
    reference date: ``v`` months is ``floor(v)`` whole months on, then the
    fraction of the month it lands in (``0.5`` is the middle of the month).

    Returns
    -------
    np.ndarray
        ``datetime64`` for the standard calendars within range, else cftime dates.
    """
    values = np.asarray(values)
    match = _UNITS.match(str(units))
    if match is None:
        raise ValueError(f"time units must read '<unit> since <date>'; got {units!r}.")
    unit = match.group(1).lower()
    cal = canonical_calendar(calendar)
    if unit in ("month", "months", "year", "years"):
        values, units = _as_days(values, unit.rstrip("s"), match.group(2), cal)
    ds = xr.Dataset(coords={"time": ("time", values.ravel(), {"units": units, "calendar": cal})})
    return xr.decode_cf(ds)["time"].values


def _as_days(values: np.ndarray, unit: str, reference: str, calendar: str) -> tuple[np.ndarray, str]:
    """``months/years since`` as ``days since`` the same reference date, in ``calendar``."""
    import cftime

    if not np.all(np.isfinite(values.astype(np.float64))):
        raise ValueError(f"time values in '{unit}s since {reference}' must be finite.")
    day_units = f"days since {reference}"
    ref = cftime.num2date(0, day_units, calendar=calendar)
    months = values.astype(np.float64) * (12.0 if unit == "year" else 1.0)
    whole = np.floor(months).astype(np.int64)
    index = ref.year * 12 + (ref.month - 1) + whole
    years, month = index // 12, index % 12 + 1
    length = month_lengths(years, month, calendar)
    day = np.minimum(ref.day, length)
    starts = [cftime.datetime(int(y), int(m), int(d), ref.hour, ref.minute, ref.second, calendar=calendar)
              for y, m, d in zip(years, month, day)]
    days = np.asarray(cftime.date2num(starts, day_units, calendar=calendar), dtype=np.float64)
    return days + (months - whole) * length, day_units


def month_lengths(years: Any, months: Any, calendar: str) -> np.ndarray:
    """Days in each ``(year, month)`` of ``calendar`` (integer arrays of one shape)."""
    years, months = np.asarray(years, dtype=np.int64), np.asarray(months, dtype=np.int64)
    cal = canonical_calendar(calendar)
    if cal == "360_day":
        return np.full(years.shape, 30, dtype=np.int64)
    if cal == "noleap":
        return _NOLEAP[months - 1]
    if cal == "all_leap":
        return _LEAP[months - 1]
    leap = is_leap(years, cal)
    return np.where(leap, _LEAP[months - 1], _NOLEAP[months - 1])


def is_leap(years: Any, calendar: str) -> np.ndarray:
    """Whether each year has a 29 February in ``calendar``."""
    y = np.asarray(years, dtype=np.int64)
    cal = canonical_calendar(calendar)
    if cal in ("360_day", "noleap"):
        return np.zeros(y.shape, dtype=bool)
    if cal == "all_leap":
        return np.ones(y.shape, dtype=bool)
    julian = y % 4 == 0
    gregorian = julian & ((y % 100 != 0) | (y % 400 == 0))
    if cal == "julian":
        return julian
    if cal == "standard":
        return np.where(y < 1583, julian, gregorian)
    return gregorian


def calendar_of(time: Any) -> str:
    """The calendar of decoded dates: a cftime date's own, ``proleptic_gregorian`` for datetime64."""
    values = np.asarray(time)
    if values.dtype.kind == "M":
        return "proleptic_gregorian"
    if values.dtype == object and values.size and hasattr(values.flat[0], "calendar"):
        return canonical_calendar(values.flat[0].calendar or "standard")
    raise TypeError(f"the time coordinate must hold dates (datetime64 or cftime); got dtype {values.dtype}.")


def is_dates(time: Any) -> bool:
    """Whether ``time`` holds decoded dates (datetime64 or cftime), not plain numbers."""
    try:
        calendar_of(time)
    except TypeError:
        return False
    return True


def date_fields(time: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(year, month, day)`` integer arrays of decoded dates."""
    values = np.asarray(time)
    calendar_of(values)
    if values.dtype.kind == "M":
        years = values.astype("datetime64[Y]").astype(np.int64) + 1970
        month_start = values.astype("datetime64[M]")
        months = month_start.astype(np.int64) % 12 + 1
        days = (values.astype("datetime64[D]") - month_start.astype("datetime64[D]")).astype(np.int64) + 1
        return years, months, days
    fields = np.array([(d.year, d.month, d.day) for d in values.ravel()], dtype=np.int64).reshape(-1, 3)
    return fields[:, 0], fields[:, 1], fields[:, 2]


def ordinal_days(time: Any) -> np.ndarray:
    """Days (float64, with the time of day as a fraction) since 0001-01-01 in the dates' own calendar."""
    import cftime

    values = np.asarray(time)
    cal = calendar_of(values)
    if values.dtype.kind == "M":
        epoch = cftime.date2num(cftime.datetime(1970, 1, 1, calendar=cal), "days since 0001-01-01", calendar=cal)
        return epoch + (values - np.datetime64("1970-01-01")) / np.timedelta64(1, "D")
    return np.asarray(cftime.date2num(list(values.ravel()), "days since 0001-01-01", calendar=cal), dtype=np.float64)


def days_per_year(calendar: str) -> float:
    """Mean length of a year in ``calendar`` (the unit of a linear trend per year)."""
    return {"360_day": 360.0, "noleap": 365.0, "all_leap": 366.0, "julian": 365.25}.get(
        canonical_calendar(calendar), 365.2425)


def season_months(period: Any) -> list[int]:
    """The months of a season, in order: ``"DJF"`` gives ``[12, 1, 2]``, ``"annual"`` ``[1, ..., 12]``.

    ``period`` is ``"annual"``, a run of consecutive month initials from
    ``JFMAMJJASOND`` (read circularly, so ``NDJFM`` crosses the new year;
    it must match one place only), or a list of consecutive month numbers.
    """
    if isinstance(period, str):
        text = period.strip().upper()
        if text == "ANNUAL":
            return list(range(1, 13))
        circle = MONTH_INITIALS * 2
        starts = [i for i in range(12) if circle.startswith(text, i)] if 1 < len(text) < 12 else []
        if len(starts) != 1:
            raise ValueError(
                f"season {period!r} must be 'annual' or 2 to 11 consecutive month initials that match one place "
                f"in {MONTH_INITIALS} (e.g. DJF, MAM, JJA, SON, NDJFM); or give a list of month numbers."
            )
        return [(starts[0] + k) % 12 + 1 for k in range(len(text))]
    if isinstance(period, Sequence) and period and all(isinstance(m, (int, np.integer)) and not isinstance(m, bool)
                                                        for m in period):
        months = [int(m) for m in period]
        ok = all(1 <= m <= 12 for m in months) and len(set(months)) == len(months) <= 12
        ok = ok and all((b - a) % 12 == 1 for a, b in zip(months, months[1:]))
        if ok:
            return months
    raise ValueError(f"season {period!r} must be 'annual', month initials such as 'DJF', "
                     "or a list of consecutive month numbers such as [12, 1, 2].")


def season_label_years(years: np.ndarray, months: np.ndarray, season: Sequence[int]) -> np.ndarray:
    """The year each step's season belongs to: the year the season ends in.

    For a season that crosses the new year (``DJF``, ``NDJFM``) the months
    before January count in the following year: December 1950 is in DJF 1951,
    the climate convention.
    """
    season = list(season)
    wrap = season.index(1) if 1 in season and season[0] != 1 else 0
    early = np.isin(months, season[:wrap])
    return np.asarray(years, dtype=np.int64) + early.astype(np.int64)


def day_slot(months: Any, days: Any, calendar: str) -> tuple[np.ndarray, int]:
    """Calendar-day slot (1-based) of each date for a daily climatology, and the number of slots.

    ``360_day``: ``30 (month − 1) + day`` (360 slots); ``noleap``: day of a
    365-day year; every calendar with leap years: day of a leap year (366
    slots), so 1 March is slot 61 in every year and 29 February has a slot
    of its own.
    """
    months, days = np.asarray(months, dtype=np.int64), np.asarray(days, dtype=np.int64)
    cal = canonical_calendar(calendar)
    if cal == "360_day":
        return 30 * (months - 1) + days, 360
    table = _NOLEAP if cal == "noleap" else _LEAP
    before = np.concatenate([[0], np.cumsum(table)[:-1]])
    return before[months - 1] + days, int(table.sum())


STEP_KINDS = ("yearly", "monthly", "daily")
"""Time steps two fields are matched by, coarsest first (see :func:`step_kind`)."""
_GREGORIAN = ("standard", "proleptic_gregorian")


def step_kind(time: Any, what: str = "time axis") -> str:
    """The coarsest calendar unit holding at most one step of ``time``: yearly, monthly or daily.

    ``yearly`` when every calendar year has at most one step (annual or
    seasonal means, block maxima), ``monthly`` when every ``(year, month)``
    does, ``daily`` when every day does.

    Raises
    ------
    ValueError
        If ``time`` is empty or a day holds two steps (sub-daily data, or a
        repeated date); ``what`` names the axis in the message.
    """
    values = np.asarray(time)
    if values.size == 0:
        raise ValueError(f"The {what} is empty; it needs at least one date.")
    for kind in STEP_KINDS:
        keys = time_keys(values, kind)
        if np.unique(keys).size == keys.size:
            return kind
    keys = time_keys(values, "daily")
    uniq, counts = np.unique(keys, return_counts=True)
    first = int(np.flatnonzero(keys == uniq[counts > 1][0])[0])
    y, m, d = (int(a[0]) for a in date_fields(values.ravel()[first:first + 1]))
    raise ValueError(
        f"The {what} has more than one time step on {y:04d}-{m:02d}-{d:02d}; aggregate sub-daily data to daily "
        "or coarser steps (or remove the repeated dates) first."
    )


def time_keys(time: Any, kind: str) -> np.ndarray:
    """Integer step numbers of dates for alignment: consecutive steps of ``kind`` differ by 1.

    ``yearly``: the year; ``monthly``: ``12·year + month − 1``; ``daily``:
    ``floor`` of :func:`ordinal_days`, so consecutive days differ by 1 in
    every calendar (daily keys of two different calendars are not comparable).
    """
    if kind not in STEP_KINDS:
        raise ValueError(f"kind must be one of {', '.join(STEP_KINDS)}; got {kind!r}.")
    if kind == "daily":
        return np.floor(ordinal_days(time)).astype(np.int64)
    years, months, _ = date_fields(time)
    return years if kind == "yearly" else 12 * years + months - 1


def _gregorian_day_keys(time: Any, what: str) -> np.ndarray:
    """Proleptic Gregorian day numbers of standard/proleptic dates (the two agree from 1582-10-15 on)."""
    years, months, days = date_fields(time)
    if calendar_of(time) == "standard" and np.any(years * 10000 + months * 100 + days < 15821015):
        raise ValueError(f"The {what} has standard-calendar dates before 1582-10-15 (Julian dates), which cannot "
                         "be matched day by day with proleptic Gregorian dates; give both the same calendar.")
    month_index = (years - 1970) * 12 + months - 1
    return month_index.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) + days - 1


def _axis_keys(
    target_time: Any, predictor_time: Any, kind: str, what: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """Comparable keys of two axes of one step kind (daily keys need calendars that count days alike)."""
    if kind != "daily":
        return time_keys(target_time, kind), time_keys(predictor_time, kind)
    cals = (calendar_of(target_time), calendar_of(predictor_time))
    if cals[0] == cals[1]:
        return time_keys(target_time, kind), time_keys(predictor_time, kind)
    if set(cals) <= set(_GREGORIAN):
        return _gregorian_day_keys(target_time, what[0]), _gregorian_day_keys(predictor_time, what[1])
    raise ValueError(
        f"The {what[0]} is in the {cals[0]} calendar and the {what[1]} in the {cals[1]} calendar, so "
        "their days cannot be matched; convert one to the other's calendar (xarray's convert_calendar) or "
        "align monthly or yearly aggregates."
    )


def align(
    target_time: Any, predictor_time: Any, *, lag: int = 0, what: tuple[str, str] = ("target", "predictor")
) -> tuple[np.ndarray, np.ndarray, str]:
    """Pair the steps of two time axes of the same step kind, the predictor leading by ``lag`` steps.

    Target step ``k`` (a key of :func:`time_keys`) pairs with predictor step
    ``k − lag``: ``lag`` counts years, months or days by the axes' common
    :func:`step_kind`. Months and years pair across calendars (a ``360_day``
    January is a January); days pair within one calendar, or between the
    standard and proleptic Gregorian calendars.

    Parameters
    ----------
    target_time, predictor_time : array-like of dates
        ``datetime64`` or cftime dates, in any order.
    lag : int
        Steps by which the predictor leads the target (negative: it lags).
    what : tuple of str
        Names of the two axes in error messages (e.g. ``"target field 'z500'"``).

    Returns
    -------
    target_index, predictor_index : np.ndarray
        Positions in each axis of the pairs present in both, ascending by target key.
    kind : str
        The common step kind.

    Raises
    ------
    ValueError
        If ``lag`` is not an integer, an axis repeats a date (or holds
        sub-daily steps), or the step kinds differ.
    """
    if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)):
        raise ValueError(f"The lag must be an integer number of time steps; got {lag!r}.")
    kinds = [step_kind(t, w) for t, w in zip((target_time, predictor_time), what)]
    if kinds[0] != kinds[1]:
        raise ValueError(
            f"The {what[0]} has {kinds[0]} time steps but the {what[1]} has {kinds[1]} time steps; "
            "aggregate one field so that both have the same step (fields.<name>.aggregate gives one value a year)."
        )
    keys_t, keys_p = _axis_keys(target_time, predictor_time, kinds[0], what)
    _, target_index, predictor_index = np.intersect1d(keys_t, keys_p + int(lag), assume_unique=True,
                                                      return_indices=True)
    return target_index, predictor_index, kinds[0]


def period_label(time: Any, kind: str) -> str:
    """``"first .. last"`` of dates at the precision of ``kind``: ``1950 .. 1999``, ``1950-01 .. 1999-12``, ..."""
    values = np.asarray(time)
    if values.size == 0:
        return ""
    years, months, days = date_fields(values)
    lo, hi = int(np.argmin(time_keys(values, kind))), int(np.argmax(time_keys(values, kind)))
    parts = {"yearly": "{y:04d}", "monthly": "{y:04d}-{m:02d}", "daily": "{y:04d}-{m:02d}-{d:02d}"}[kind]
    first, last = (parts.format(y=int(years[i]), m=int(months[i]), d=int(days[i])) for i in (lo, hi))
    return f"{first} .. {last}"
