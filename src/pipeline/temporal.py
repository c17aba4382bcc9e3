"""Time handling of a field at ingest: climatology, aggregation and detrending.

A field's config entry may ask for (applied in this order, each optional):

1. ``years: [first, last]`` -- steps whose *block year* falls outside are
   dropped (the block year is the calendar year, or with a season that
   crosses the new year the year the season ends in: December 1950 is in
   DJF 1951);
2. ``climatology: monthly | daily`` -- subtract the mean of each calendar
   month, or of each calendar day pooled over a circular window of
   ``smooth_days`` days, computed over ``base_period: [first, last]``
   (default: the years kept, else the whole record);
3. ``aggregate: {period, statistic, min_coverage}`` -- one value per year:
   the mean, maximum or minimum over a season (``DJF``, ``NDJFM``, ...) or
   the whole year (``annual``); a block with fewer than ``min_coverage`` of
   its expected steps in the record is dropped, a cell with fewer valid
   values than that is NaN for the block;
4. ``detrend: linear`` -- each cell less its least-squares linear trend,
   its mean kept.

:func:`plan` decides everything that depends on the time axis alone (once
per field); :func:`apply` does the arithmetic on a ``(time, ...)`` block of
cells with the kernels of :mod:`pipeline.kernels.temporal`, so a field can be
processed latitude band by latitude band within a memory budget and give the
same numbers as in one piece.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import timeaxis
from pipeline.kernels import temporal as kt

log = logging.getLogger(__name__)

CLIMATOLOGIES = ("none", "monthly", "daily")
DETRENDS = ("none", "linear")
DEFAULT_COVERAGE = 0.9
DEFAULT_SMOOTH_DAYS = 31


@dataclass(frozen=True)
class TimeSpec:
    """The time-handling keys of a field's config entry, validated."""

    years: tuple[int, int] | None = None
    climatology: str = "none"
    base_period: tuple[int, int] | None = None
    smooth_days: int = DEFAULT_SMOOTH_DAYS
    season: tuple[int, ...] | None = None
    period_name: str = ""
    statistic: str = "mean"
    min_coverage: float = DEFAULT_COVERAGE
    detrend: str = "none"

    @property
    def active(self) -> bool:
        """Whether anything beyond a years filter is asked for."""
        return self.climatology != "none" or self.season is not None or self.detrend != "none"


def _year_pair(value: Any, key: str, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    ok = ok and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    if not ok or value[0] > value[1]:
        raise ValueError(f"Field {name!r}: {key} must be [first, last] years with first <= last; got {value!r}.")
    return int(value[0]), int(value[1])


def spec_of(name: str, spec: dict[str, Any]) -> TimeSpec:
    """The :class:`TimeSpec` of field ``name``'s config entry, with one-sentence errors."""
    clim = spec.get("climatology", "none") or "none"
    if clim not in CLIMATOLOGIES:
        raise ValueError(f"Field {name!r}: climatology must be one of {', '.join(CLIMATOLOGIES)}; got {clim!r}.")
    detrend = spec.get("detrend", "none") or "none"
    if detrend not in DETRENDS:
        raise ValueError(f"Field {name!r}: detrend must be one of {', '.join(DETRENDS)}; got {detrend!r}.")
    smooth = spec.get("smooth_days", DEFAULT_SMOOTH_DAYS)
    if isinstance(smooth, bool) or not isinstance(smooth, (int, np.integer)) or smooth < 1 or smooth % 2 == 0:
        raise ValueError(f"Field {name!r}: smooth_days must be an odd number of days >= 1; got {smooth!r}.")
    agg = spec.get("aggregate")
    season, period_name, statistic, coverage = None, "", "mean", DEFAULT_COVERAGE
    if agg not in (None, "none"):
        agg = {"period": agg} if isinstance(agg, (str, list, tuple)) else agg
        if not isinstance(agg, dict) or "period" not in agg:
            raise ValueError(f"Field {name!r}: aggregate must be a period such as DJF or annual, or a mapping with "
                             f"'period' (and optionally 'statistic', 'min_coverage'); got {agg!r}.")
        unknown = set(agg) - {"period", "statistic", "min_coverage"}
        if unknown:
            raise ValueError(f"Field {name!r}: aggregate has unknown key(s) {', '.join(sorted(unknown))}; "
                             "allowed: period, statistic, min_coverage.")
        try:
            season = tuple(timeaxis.season_months(agg["period"]))
        except ValueError as err:
            raise ValueError(f"Field {name!r}: aggregate {err}") from err
        period = agg["period"]
        period_name = period.upper() if isinstance(period, str) and period.lower() != "annual" else (
            "annual" if isinstance(period, str) else "months " + ",".join(map(str, season)))
        statistic = agg.get("statistic", "mean")
        if statistic not in kt.STATISTICS:
            raise ValueError(f"Field {name!r}: aggregate.statistic must be one of {', '.join(kt.STATISTICS)}; "
                             f"got {statistic!r}.")
        coverage = agg.get("min_coverage", DEFAULT_COVERAGE)
        if isinstance(coverage, bool) or not isinstance(coverage, (int, float)) or not 0 < coverage <= 1:
            raise ValueError(f"Field {name!r}: aggregate.min_coverage must be a fraction in (0, 1]; got {coverage!r}.")
    return TimeSpec(
        years=_year_pair(spec.get("years"), "years", name), climatology=clim,
        base_period=_year_pair(spec.get("base_period"), "base_period", name), smooth_days=int(smooth),
        season=season, period_name=period_name, statistic=statistic, min_coverage=float(coverage), detrend=detrend,
    )


@dataclass(frozen=True)
class TimePlan:
    """What :func:`apply` does to a field with ``n_in`` time steps, decided from the time axis alone.

    Attributes
    ----------
    spec : TimeSpec
        The request.
    calendar : str
        The time axis' calendar.
    keep : np.ndarray
        Indices of the input steps analysed (years filter, season).
    groups : np.ndarray or None
        Climatology group of every input step.
    in_base : np.ndarray or None
        Whether each input step is in the climatology's base period.
    n_groups, window : int
        Climatology groups (12 months or 360/365/366 calendar days) and window width.
    group_dim : str
        ``month`` or ``dayofyear``.
    bounds, expected : list
        With an aggregation: ``(start, stop)`` of each block among the kept
        steps and the steps a complete block holds.
    time : np.ndarray
        The output time coordinate.
    years : np.ndarray or None
        With ``detrend``: the output steps in years from their mean (the trend's abscissa).
    """

    spec: TimeSpec
    calendar: str
    n_in: int
    keep: np.ndarray
    groups: np.ndarray | None
    in_base: np.ndarray | None
    n_groups: int
    window: int
    group_dim: str
    bounds: list[tuple[int, int]]
    expected: list[float]
    time: np.ndarray
    years: np.ndarray | None = None

    @property
    def identity(self) -> bool:
        """Whether the plan leaves the field as it is."""
        return not self.spec.active and self.keep.size == self.n_in

    def describe(self) -> str:
        """What the plan does, in words (for attributes and logs)."""
        s, parts = self.spec, []
        if s.climatology != "none":
            base = s.base_period or s.years
            base = f"{base[0]}-{base[1]}" if base else "the whole record"
            extra = f", {s.smooth_days}-day window" if s.climatology == "daily" and s.smooth_days > 1 else ""
            parts.append(f"anomaly from the {s.climatology} climatology of {base}{extra}")
        if s.season is not None:
            parts.append(f"{s.period_name} {s.statistic} (min coverage {s.min_coverage:g})")
        if s.detrend != "none":
            parts.append("linear trend removed")
        return "; ".join(parts)


def plan(time: Any, spec: TimeSpec, name: str = "field") -> TimePlan:
    """The :class:`TimePlan` of a field whose input time coordinate is ``time``."""
    time = np.asarray(time)
    if not timeaxis.is_dates(time):
        if spec.active or spec.years:
            raise ValueError(f"Field {name!r}: the time axis holds plain numbers, not dates; set "
                             f"fields.{name}.time_units (e.g. 'days since 1950-01-01') to use years or time handling.")
        return TimePlan(spec, "", time.size, np.arange(time.size), None, None, 0, 1, "", [], [], time)
    calendar = timeaxis.calendar_of(time)
    years, months, days = timeaxis.date_fields(time)
    label = years if spec.season is None else timeaxis.season_label_years(years, months, spec.season)
    keep = np.ones(time.size, dtype=bool) if spec.season is None else np.isin(months, spec.season)
    if spec.years is not None:
        keep &= (label >= spec.years[0]) & (label <= spec.years[1])
        if not keep.any():
            raise ValueError(f"Field {name!r}: no time step falls in years {spec.years[0]}-{spec.years[1]}.")
    if not keep.any():
        raise ValueError(f"Field {name!r}: no time step falls in the season {spec.period_name}.")
    keep_idx = np.flatnonzero(keep)
    groups, in_base, n_groups, window, group_dim = _climatology_groups(spec, calendar, years, months, days, keep_idx,
                                                                       name)
    bounds, expected, out_time = [], [], time[keep_idx]
    if spec.season is not None:
        bounds, expected, out_time = _blocks(spec, calendar, time[keep_idx], label[keep_idx], name)
    t = None
    if spec.detrend == "linear":
        t = timeaxis.ordinal_days(out_time) / timeaxis.days_per_year(calendar)
        t = t - t.mean()
    return TimePlan(spec, calendar, time.size, keep_idx, groups, in_base, n_groups, window, group_dim, bounds, expected,
                    out_time, t)


def _climatology_groups(spec: TimeSpec, calendar: str, years: np.ndarray, months: np.ndarray, days: np.ndarray,
                        keep_idx: np.ndarray, name: str) -> tuple[np.ndarray | None, np.ndarray | None, int, int, str]:
    if spec.climatology == "none":
        return None, None, 0, 1, ""
    if spec.climatology == "monthly":
        groups, n_groups, window, dim = months - 1, 12, 1, "month"
    else:
        slots, n_groups = timeaxis.day_slot(months, days, calendar)
        groups, window, dim = slots - 1, min(spec.smooth_days, n_groups - (1 - n_groups % 2)), "dayofyear"
    base = spec.base_period or spec.years
    in_base = np.ones(years.size, dtype=bool) if base is None else (years >= base[0]) & (years <= base[1])
    if not in_base.any():
        raise ValueError(f"Field {name!r}: base_period {base[0]}-{base[1]} holds no time step of the record "
                         f"({int(years.min())}-{int(years.max())}).")
    present = np.zeros(n_groups, dtype=bool)
    present[groups[in_base]] = True
    if window > 1:  # a calendar day is covered when any day of its window is
        half = window // 2
        present = np.any([np.roll(present, k) for k in range(-half, half + 1)], axis=0)
    needed = np.unique(groups[keep_idx])
    missing = needed[~present[needed]]
    if missing.size:
        what = "month" if dim == "month" else "calendar day"
        period = f"base_period {base[0]}-{base[1]}" if base else "the record"
        raise ValueError(f"Field {name!r}: {period} holds no value for {what} {int(missing[0]) + 1}, so its "
                         "climatology is undefined; widen base_period.")
    return groups, in_base, n_groups, window, dim


def _blocks(spec: TimeSpec, calendar: str, time: np.ndarray, label: np.ndarray,
            name: str) -> tuple[list[tuple[int, int]], list[float], np.ndarray]:
    """Blocks of consecutive kept steps sharing a block year; incomplete ones dropped."""
    ordinal = timeaxis.ordinal_days(time)
    step = float(np.median(np.diff(ordinal))) if time.size > 1 else 1.0
    monthly = 27.0 <= step <= 32.0
    change = np.flatnonzero(np.diff(label)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [label.size]])
    bounds, expected, stamps, dropped = [], [], [], []
    season = list(spec.season)
    for a, b in zip(starts, stops):
        year = int(label[a])
        first, last = _season_span(year, season, calendar)
        if monthly:
            n_exp = float(len(season))
        else:
            n_exp = float(max(1, round((last - first) / step)))
        if (b - a) < spec.min_coverage * n_exp - 1e-9:
            dropped.append(year)
            continue
        bounds.append((int(a), int(b)))
        expected.append(n_exp)
        middle = first + (last - first) / 2.0
        stamps.append(middle if _year_of(middle, calendar) == year else _ordinal(year, 1, 1, calendar))
    if dropped:
        log.info("field %s: %s blocks of %d dropped as incomplete (fewer than %g of their steps in the record)",
                 name, spec.period_name, len(dropped), spec.min_coverage)
    if not bounds:
        raise ValueError(f"Field {name!r}: no {spec.period_name} block has at least min_coverage="
                         f"{spec.min_coverage:g} of its time steps in the record; lower aggregate.min_coverage.")
    return bounds, expected, _from_ordinal(np.asarray(stamps), time)


def _ordinal(year: int, month: int, day: int, calendar: str) -> float:
    import cftime

    return float(cftime.date2num(cftime.datetime(year, month, day, calendar=calendar), "days since 0001-01-01",
                                 calendar=calendar))


def _season_span(year: int, season: list[int], calendar: str) -> tuple[float, float]:
    """Ordinal days of the first day of the season of block year ``year`` and of the day after it."""
    wrap = season.index(1) if 1 in season and season[0] != 1 else 0
    start_year = year - 1 if wrap else year
    end_month = season[-1] % 12 + 1
    end_year = year + (1 if season[-1] == 12 else 0)
    return _ordinal(start_year, season[0], 1, calendar), _ordinal(end_year, end_month, 1, calendar)


def _year_of(ordinal: float, calendar: str) -> int:
    import cftime

    return int(cftime.num2date(ordinal, "days since 0001-01-01", calendar=calendar).year)


def _from_ordinal(ordinal: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Dates from ordinal days, of the same kind (datetime64 or cftime) and calendar as ``like``."""
    import cftime

    calendar = timeaxis.calendar_of(like)
    if like.dtype.kind == "M":
        epoch = _ordinal(1970, 1, 1, calendar)
        seconds = np.round((ordinal - epoch) * 86400.0).astype(np.int64)
        return (np.datetime64("1970-01-01T00:00:00", "s") + seconds.astype("timedelta64[s]")).astype(like.dtype)
    dates = cftime.num2date(ordinal, "days since 0001-01-01", calendar=calendar)
    return np.asarray(dates, dtype=object)


def block_bounds(p: temporal.TimePlan) -> np.ndarray:
    """``(n_blocks, 2)`` dates: the first day of each aggregated block's season and the day after it ends.

    A DJF block of 1951 runs from 1 December 1950 to 1 March 1951; every
    output step of an aggregated axis lies within its block.
    """
    years = timeaxis.date_fields(p.time)[0]  # a block's time stamp falls in its block year
    spans = np.array([_season_span(int(y), list(p.spec.season), p.calendar) for y in years])
    return _from_ordinal(spans.ravel(), p.time).reshape(spans.shape)


@dataclass
class Processed:
    """The result of :func:`apply` on a block of cells: ``(time, ...)`` arrays on the host."""

    field: np.ndarray
    climatology: np.ndarray | None
    trend: np.ndarray | None


def apply(values: Any, p: TimePlan, backend: Any = None) -> Processed:
    """Apply a :class:`TimePlan` to ``values`` of shape ``(n_in, ...)`` (any cells).

    Parameters
    ----------
    values : array
        The input steps of some cells, NaN for missing.
    p : TimePlan
        From :func:`plan` on the input time axis.
    backend : pipeline.backend.Backend, optional
        Where the arithmetic runs (default: NumPy on the host).

    Returns
    -------
    Processed
        ``field`` (output steps, ...), ``climatology`` (groups, ...) or None,
        ``trend`` (...) per year or None; host float64 arrays.
    """
    from pipeline.backend import resolve, to_numpy

    values = np.asarray(values)
    if values.shape[0] != p.n_in:
        raise ValueError(f"values have {values.shape[0]} time steps; the plan was made for {p.n_in}.")
    cells = values.shape[1:]
    if p.identity:
        return Processed(values, None, None)
    b = backend or resolve("numpy")
    xp = b.xp
    x = b.asarray(values.reshape(p.n_in, -1))
    clim = None
    if p.groups is not None:
        clim = kt.climatology(x, np.where(p.in_base, p.groups, -1), p.n_groups, p.window)
        kept = xp.take(x, b.asarray(p.keep), axis=0) if p.keep.size < p.n_in else x
        x = kt.subtract(kept, clim, p.groups[p.keep])
    elif p.keep.size < p.n_in:
        x = xp.take(x, b.asarray(p.keep), axis=0)
    if p.spec.season is not None:
        x = kt.block_reduce(x, p.bounds, p.expected, p.spec.statistic, p.spec.min_coverage)
    slope = None
    if p.spec.detrend == "linear":
        x, slope = kt.linear_detrend(x, b.asarray(p.years))
    field = to_numpy(x).reshape((x.shape[0], *cells))
    return Processed(
        field,
        None if clim is None else to_numpy(clim).reshape((p.n_groups, *cells)),
        None if slope is None else to_numpy(slope).reshape(cells),
    )
