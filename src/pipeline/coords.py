"""Coordinate checks of a source field: exact ``select``, latitude and longitude axes.

Used by :mod:`pipeline.sources` on every file of a field, before any data
are read:

* :func:`select` picks a value of an extra axis exactly, or the nearest
  within ``select_tolerance``, and says which value it used;
* :func:`checked_axis` refuses NaN, repeated values and latitudes beyond
  +-90;
* :func:`lat_order` and :func:`lon_order` give the reading order that makes
  latitudes ascending and longitudes one increasing run (a date-line wrap
  rolled, values moved by whole turns into [-180, 360)), so the field is
  read through index arrays and never copied to reorder it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import xarray as xr

log = logging.getLogger("pipeline.sources")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def tolerances(name: str, spec: dict[str, Any]) -> dict[str, float]:
    """``select_tolerance`` as a distance per axis of ``select`` (axes left out: exact match)."""
    tol = spec.get("select_tolerance")
    select = {str(k): v for k, v in (spec.get("select") or {}).items()}
    if tol is None:
        return {}
    if is_number(tol) and tol >= 0:
        return {dim: float(tol) for dim in select}
    if isinstance(tol, dict) and all(is_number(v) and v >= 0 for v in tol.values()):
        unknown = [str(k) for k in tol if str(k) not in select]
        if unknown:
            raise ValueError(f"Field {name!r}: select_tolerance names {unknown[0]!r}, which fields.{name}.select does "
                             f"not pick; name only axes of select ({', '.join(select) or 'none'}).")
        return {str(k): float(v) for k, v in tol.items()}
    raise ValueError(f"Field {name!r}: select_tolerance must be a number >= 0 or a mapping from axes of select to "
                     f"numbers >= 0; got {tol!r}.")


def fmt(value: Any) -> str:
    """A coordinate value as written in messages and the ``selected`` attribute (``1000.0``, ``850``, ``'a'``)."""
    value = np.asarray(value)[()]
    if isinstance(value, np.floating):
        return np.format_float_positional(value, trim="0")
    if isinstance(value, float):
        return np.format_float_positional(np.float64(value), trim="0")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(value.item() if isinstance(value, np.generic) else value)


def select(da: xr.DataArray, dim: str, value: Any, tol: float | None, name: str,
            where: str) -> tuple[xr.DataArray, Any]:
    """``da`` at ``dim=value`` exactly, or at the nearest value within ``tol``; and the value used."""
    coord = np.asarray(da[dim].values)
    asked = f"{dim}={fmt(value)}"
    if coord.dtype.kind not in "iuf" or not is_number(value):  # labels, dates: exact only
        try:
            picked = da.sel({dim: value})
        except (KeyError, ValueError, TypeError) as err:
            shown = ", ".join(fmt(v) for v in coord[:6]) + (", ..." if coord.size > 6 else "")
            raise ValueError(f"Field {name!r}: {asked} of fields.{name}.select is not a value of {dim!r} in {where}, "
                             f"which has {shown}; select one of those.") from err
        if dim in picked.dims:
            raise ValueError(f"Field {name!r}: {asked} of fields.{name}.select appears more than once in {dim!r} of "
                             f"{where}; remove the repeated {dim} from the source.")
        return picked, value
    same = coord == (coord.dtype.type(value) if coord.dtype.kind == "f" else value)
    hits = np.flatnonzero(same)
    if hits.size > 1:
        raise ValueError(f"Field {name!r}: {asked} of fields.{name}.select appears {hits.size} times in {dim!r} of "
                         f"{where}; remove the repeated {dim} from the source.")
    if hits.size == 1:
        return da.isel({dim: int(hits[0])}), coord[hits[0]]
    distance = np.abs(coord.astype(np.float64) - float(value))
    if coord.size and not np.all(np.isnan(distance)):
        near = int(np.nanargmin(distance))
        if tol is not None and distance[near] <= tol:
            return da.isel({dim: near}), coord[near]
    below, above = coord[coord < value], coord[coord > value]
    nearest = [v for v in (below.max() if below.size else None, above.min() if above.size else None) if v is not None]
    listed = " and ".join(fmt(v) for v in nearest) or "none"
    beyond = "" if tol is None else f" (more than select_tolerance {fmt(tol)} away)"
    raise ValueError(f"Field {name!r}: {asked} of fields.{name}.select is not a value of {dim!r} in {where}; the "
                     f"nearest {'is' if len(nearest) == 1 else 'are'} {listed}{beyond}; select one of them, or set "
                     f"fields.{name}.select_tolerance to take the nearest value within that distance.")


_ROW = {"time": "time step", "lat": "latitude row", "lon": "longitude column"}


def missing_coordinate(axis: str, position: int, size: int, name: str, where: str) -> None:
    raise ValueError(f"Field {name!r}: the {axis} coordinate of {where} is NaN at position {position} of {size}; "
                     f"give that {_ROW[axis]} its value in the source, or remove it.")


def checked_axis(da: xr.DataArray, axis: str, name: str, where: str) -> np.ndarray:
    """The ``lat`` or ``lon`` values of ``da`` as float64, after checking for NaN and repeats (and +-90 for lat)."""
    values = np.asarray(da[axis].values, dtype=np.float64)
    missing = np.flatnonzero(np.isnan(values))
    if missing.size:
        missing_coordinate(axis, int(missing[0]), values.size, name, where)
    if axis == "lat" and np.any(np.abs(values) > 90.0):
        worst = values[np.argmax(np.abs(values))]
        raise ValueError(f"Field {name!r}: the lat coordinate of {where} holds {fmt(worst)}, outside [-90, 90]; "
                         "latitudes must be degrees north, so check the source's lat axis (lat and lon swapped?).")
    uniq, counts = np.unique(values, return_counts=True)
    if np.any(counts > 1):
        k = int(np.argmax(counts > 1))
        times = "twice" if counts[k] == 2 else f"{counts[k]} times"
        raise ValueError(f"Field {name!r}: the {axis} coordinate of {where} holds {fmt(uniq[k])} {times}; each "
                         f"{axis} value must appear once, so remove the repeated {_ROW[axis]}s from the source.")
    return values


def lat_order(lat: np.ndarray) -> np.ndarray:
    """Positions that sort ``lat`` ascending (a reversed range for a descending axis)."""
    n = lat.size
    if n < 2 or np.all(np.diff(lat) >= 0):
        return np.arange(n)
    if np.all(np.diff(lat) < 0):
        return np.arange(n)[::-1]
    return np.argsort(lat, kind="stable")


def _into_range(lon: np.ndarray) -> np.ndarray:
    """Longitudes brought into [-180, 360) by whole turns; values already there are kept as they are."""
    out = lon.copy()
    high, low = lon >= 360.0, lon < -180.0
    out[high] = np.mod(lon[high], 360.0)
    out[low] = np.mod(lon[low] + 180.0, 360.0) - 180.0
    return out


def _walk(lon: np.ndarray) -> np.ndarray | None:
    """``lon`` as one increasing run starting at its first value (in [-180, 360)), or None if it turns back.

    Each value moves by whole turns only (so values already on the run are
    kept bit for bit): 170, 179.5, -180, -170 becomes 170, 179.5, 180, 190.
    """
    start = _into_range(lon[:1])[0]
    turn = np.mod(lon - start, 360.0)
    if np.any(np.diff(turn) <= 0):
        return None
    return lon + 360.0 * np.round((start + turn - lon) / 360.0)


def lon_order(lon: np.ndarray, name: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions and values that make ``lon`` one increasing run of less than a full turn.

    In stored order if that walks east once around at most (a date-line wrap
    is rolled: values after it gain 360), else reversed if the axis is
    descending, else sorted; values outside [-180, 360) move by whole turns.
    """
    n = lon.size
    if n == 0:
        return np.arange(0), lon
    meridian = np.mod(lon, 360.0)
    uniq, counts = np.unique(meridian, return_counts=True)
    if np.any(counts > 1):
        k = int(np.argmax(counts > 1))
        both = lon[meridian == uniq[k]][:2]
        raise ValueError(f"Field {name!r}: the lon coordinate of {where} holds {fmt(both[0])} and "
                         f"{fmt(both[1])}, the same meridian, so it cannot be made one increasing run; remove one of "
                         "the two longitude columns from the source.")
    index = np.arange(n)[::-1] if n > 1 and np.all(np.diff(lon) < 0) else np.arange(n)
    how = "reversed" if n > 1 and index[0] != 0 else ""
    values = _walk(lon[index])
    if values is None:
        index = np.argsort(np.mod(lon - _into_range(lon).min(), 360.0), kind="stable")
        values, how = _walk(lon[index]), "sorted"
    if how or not np.array_equal(values, lon[index]):
        moved = "" if np.array_equal(values, lon[index]) else ", values moved by whole turns of 360"
        log.info("field %s: the longitudes of %s, stored %s .. %s, are read as one increasing run %s .. %s (%s%s)",
                 name, where, fmt(lon[0]), fmt(lon[-1]), fmt(values[0]), fmt(values[-1]), how or "in stored order",
                 moved)
    return index, values
