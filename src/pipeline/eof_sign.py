"""Sign conventions of the EOF stage: which of ``±(eof, pc)`` each mode keeps.

An EOF and its PC are defined up to one common sign. The default,
``max_positive``, makes the largest-magnitude element of each EOF positive.
``eof.sign`` may instead be a list of rules, so that chosen modes follow a
published index convention; modes without a rule keep ``max_positive``:

* a point rule ``{mode, lat, lon, sign}`` gives the EOF at the complete grid
  cell nearest the point (longitudes compared modulo 360) the rule's sign --
  the NAO convention, z500 EOF 1 negative near Iceland, is
  ``{mode: 1, lat: 65, lon: -20, sign: negative}``;
* a series rule ``{mode, series, sign}`` gives the PC's correlation with a
  reference series, over the time steps both have
  (:func:`pipeline.timeaxis.align`, lag 0), the rule's sign. The series is a
  file (netCDF or Zarr with one 1-D variable along time, ``variable`` to pick
  one; or a CSV file with a date column and a value column) or, from Python,
  an ``xr.DataArray`` along ``time``.

A rule with ``field`` applies to that field only, otherwise to every field.
:func:`check` validates the rules (at the door of the stage);
:func:`apply` chooses the signs once, on host arrays, after any method and
backend, and flips each mode's EOF, PC, correlation and covariance maps
together, so the result is the same whichever solver produced it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from pipeline import grid, timeaxis

DEFAULT = "max_positive"
SIGNS = ("positive", "negative")
RULE_KEYS = ("mode", "sign", "field", "lat", "lon", "series", "variable")
MIN_SHARED_STEPS = 3


def _number(value: Any) -> bool:
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return real and math.isfinite(value)


def check(sign: Any, n_modes: int) -> str | list[dict[str, Any]]:
    """``eof.sign`` validated: ``"max_positive"``, or its rules as new dicts with ``sign`` filled in.

    Raises
    ------
    ValueError
        On anything but ``max_positive`` or a list of rules, an unknown key,
        a mode outside ``1..n_modes``, a sign other than positive/negative,
        a rule with both or neither of a point and a series, a latitude
        outside [-90, 90], a series file that does not exist, or two rules
        for the same mode of one field.
    """
    if isinstance(sign, str):
        if sign != DEFAULT:
            raise ValueError(f"eof.sign must be 'max_positive' or a list of rules (mode, sign, and lat/lon or series); "
                             f"got {sign!r}.")
        return DEFAULT
    if not isinstance(sign, (list, tuple)):
        raise ValueError(f"eof.sign must be 'max_positive' or a list of rules (mode, sign, and lat/lon or series); "
                         f"got {type(sign).__name__}.")
    rules = [_check_rule(rule, f"eof.sign[{i}]", n_modes) for i, rule in enumerate(sign)]
    for i, rule in enumerate(rules):
        for j, other in enumerate(rules[:i]):
            fields = {rule.get("field"), other.get("field")}
            if rule["mode"] == other["mode"] and (None in fields or len(fields) == 1):
                scope = f"field {rule['field']!r}" if rule.get("field") else "every field"
                raise ValueError(f"eof.sign[{j}] and eof.sign[{i}] both set the sign of mode {rule['mode']} for "
                                 f"{scope}; keep one of them.")
    return rules


def _check_rule(rule: Any, label: str, n_modes: int) -> dict[str, Any]:
    """One rule validated, as a new dict with the default sign."""
    if not isinstance(rule, Mapping):
        raise ValueError(f"{label} must be a mapping with mode, sign, and lat/lon or series; got {rule!r}.")
    unknown = sorted(str(k) for k in rule if k not in RULE_KEYS)
    if unknown:
        raise ValueError(f"{label} has unknown key(s) {', '.join(unknown)}; the keys are {', '.join(RULE_KEYS)}.")
    out = {"sign": "positive", **rule}
    mode = out.get("mode")
    if not isinstance(mode, (int, np.integer)) or isinstance(mode, bool) or not 1 <= mode <= n_modes:
        raise ValueError(f"{label}.mode must be an integer from 1 to eof.n_modes ({n_modes}); got {mode!r}.")
    if out["sign"] not in SIGNS:
        raise ValueError(f"{label}.sign must be one of {', '.join(SIGNS)}; got {out['sign']!r}.")
    if "field" in out and not isinstance(out["field"], str):
        raise ValueError(f"{label}.field must be a field name (a string); got {out['field']!r}.")
    point, series = "lat" in out or "lon" in out, "series" in out
    if point == series:
        raise ValueError(f"{label} needs either lat and lon (a point) or series (a reference series), not "
                         f"{'both' if point else 'neither'}.")
    if point:
        lat, lon = out.get("lat"), out.get("lon")
        if not (_number(lat) and _number(lon) and -90 <= lat <= 90):
            raise ValueError(f"{label} needs lat in [-90, 90] and a finite lon, in degrees; "
                             f"got lat {lat!r}, lon {lon!r}.")
        if "variable" in out:
            raise ValueError(f"{label}.variable names a variable of a series file; it has no meaning for a point rule.")
        return out
    ref = out["series"]
    if isinstance(ref, xr.DataArray):
        if "variable" in out:
            raise ValueError(f"{label}.variable names a variable of a series file; drop it when series is a DataArray.")
        _as_series(ref, f"reference series of {label}")
    elif isinstance(ref, (str, os.PathLike)):
        if not os.path.exists(ref):
            raise ValueError(f"{label}.series {os.fspath(ref)!r} does not exist; give the path of a netCDF, Zarr or "
                             "CSV file.")
        if "variable" in out and not isinstance(out["variable"], str):
            raise ValueError(f"{label}.variable must be a variable name (a string); got {out['variable']!r}.")
    else:
        raise ValueError(f"{label}.series must be a file path or an xarray DataArray along time; "
                         f"got {type(ref).__name__}.")
    return out


def apply(out: dict[str, np.ndarray], sign: str | list[dict[str, Any]], *, field: str, lat: np.ndarray,
          lon: np.ndarray, time: np.ndarray) -> dict[str, Any]:
    """Choose each mode's sign and flip ``eof``, ``pc``, ``correlation`` and ``covariance`` in place.

    Parameters
    ----------
    out : dict of np.ndarray
        Host arrays ``eof``, ``correlation``, ``covariance`` ``(mode, lat, lon)``
        (NaN off the complete cells) and ``pc`` ``(time, mode)``.
    sign : str or list of dict
        A value returned by :func:`check`.
    field : str
        The field's name (rules with another ``field`` are skipped).
    lat, lon, time : np.ndarray
        The grid's coordinates and the PCs' dates.

    Returns
    -------
    dict
        The convention, for the store's ``sign_convention`` attribute:
        ``{"default": "max_positive", "rules": [...]}`` with, for each rule
        applied, the grid cell used or the correlation and its number of steps.
    """
    eof = out["eof"]
    n_modes = eof.shape[0]
    flat = eof.reshape(n_modes, -1)
    peak = flat[np.arange(n_modes), np.nanargmax(np.abs(flat), axis=1)]
    factor = np.where(peak < 0, -1.0, 1.0)
    applied = []
    for i, rule in enumerate([] if sign == DEFAULT else sign):
        if rule.get("field", field) != field:
            continue
        label, m = f"eof.sign[{i}]", rule["mode"] - 1
        if m >= n_modes:
            raise ValueError(f"{label} sets mode {rule['mode']} but only {n_modes} modes were computed; "
                             "raise eof.n_modes or drop the rule.")
        if "series" in rule:
            value, record = _series_value(out["pc"][:, m], time, rule, label)
        else:
            value, record = _point_value(eof[m], lat, lon, rule, label)
        factor[m] = (1.0 if rule["sign"] == "positive" else -1.0) * math.copysign(1.0, value)
        if "correlation" in record:
            record["correlation"] *= factor[m]  # as the stored PC has it
        applied.append({"rule": i, "mode": int(rule["mode"]), "sign": rule["sign"],
                        **({"field": rule["field"]} if "field" in rule else {}), **record})
    for key in ("eof", "correlation", "covariance"):
        out[key] *= factor[:, None, None]
    out["pc"] *= factor[None, :]
    return {"default": DEFAULT, "rules": applied}


def _spacing(values: np.ndarray) -> float:
    steps = np.diff(np.sort(values))
    return float(steps.max()) if steps.size else math.inf


def _point_value(eof_m: np.ndarray, lat: np.ndarray, lon: np.ndarray, rule: dict[str, Any],
                 label: str) -> tuple[float, dict[str, Any]]:
    """The EOF at the grid cell nearest the rule's point, and what to record of it."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    d_lat = lat - float(rule["lat"])
    d_lon = (lon - float(rule["lon"]) + 180.0) % 360.0 - 180.0
    i, j = int(np.argmin(np.abs(d_lat))), int(np.argmin(np.abs(d_lon)))
    point = f"({rule['lat']:g}, {rule['lon']:g})"
    if abs(d_lat[i]) > _spacing(lat) or abs(d_lon[j]) > _spacing(lon):
        raise ValueError(f"{label}: the point {point} lies outside the grid (latitudes {lat.min():g} to "
                         f"{lat.max():g}, longitudes {lon.min():g} to {lon.max():g}); choose a point on it.")
    value = float(eof_m[i, j])
    cell = f"({lat[i]:g}, {lon[j]:g})"
    if not math.isfinite(value):
        raise ValueError(f"{label}: the grid cell {cell} nearest the point {point} is not a complete cell (it has "
                         "missing values); move the point to a cell with data.")
    if value == 0.0:
        raise ValueError(f"{label}: the EOF is exactly zero at the grid cell {cell} nearest {point}, so it has no "
                         "sign there; choose another point.")
    return value, {"lat": float(rule["lat"]), "lon": float(rule["lon"]), "cell": [float(lat[i]), float(lon[j])]}


def _series_value(pc_m: np.ndarray, time: np.ndarray, rule: dict[str, Any], label: str) -> tuple[float, dict[str, Any]]:
    """The correlation of the PC with the rule's reference series over their shared steps, and its record."""
    what = f"reference series of {label}"
    ref = rule["series"]
    if isinstance(ref, xr.DataArray):
        series, source = _as_series(ref, what), f"DataArray {ref.name!r}"
    else:
        series, source = read_series(ref, rule.get("variable"), what), os.fspath(ref)
    it, ir, kind = timeaxis.align(np.asarray(time), series["time"].values, what=("PC", what))
    x, y = np.asarray(pc_m, dtype=np.float64)[it], np.asarray(series.values, dtype=np.float64)[ir]
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < MIN_SHARED_STEPS:
        raise ValueError(f"{label}: the PC and its reference series share {n} {kind} time steps with values, fewer "
                         f"than {MIN_SHARED_STEPS}; give a series that covers the field's period.")
    xc, yc = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    denom = math.sqrt(float(xc @ xc) * float(yc @ yc))
    if denom == 0.0 or float(xc @ yc) == 0.0:
        raise ValueError(f"{label}: the PC is uncorrelated with its reference series over their {n} shared steps "
                         "(or one is constant), so it gives no sign; give another series.")
    r = float(xc @ yc) / denom
    record = {"series": source, **({"variable": rule["variable"]} if "variable" in rule else {}),
              "correlation": r, "n_steps": n}
    return r, record


def _as_series(da: xr.DataArray, what: str) -> xr.DataArray:
    """A 1-D DataArray along ``time`` (any alias of :data:`pipeline.grid.ALIASES`) holding dates."""
    da = grid.canonical_dims(da, what, require=("time",))
    if da.dims != ("time",):
        raise ValueError(f"The {what} must be 1-D along time; it has dimensions {', '.join(map(str, da.dims))}.")
    if not timeaxis.is_dates(da["time"].values):
        raise ValueError(f"The time coordinate of {what} must hold dates (datetime64 or cftime); "
                         f"got dtype {da['time'].dtype}.")
    return da


def read_series(path: str | os.PathLike, variable: str | None = None, what: str = "reference series") -> xr.DataArray:
    """A reference time series from a file: netCDF or Zarr (one 1-D variable along time) or CSV.

    A CSV file has a header, a date column (named ``time``, ``date``, ... or
    else the first column; ISO dates, or integer years read as 1 January)
    and one value column (or ``variable`` names it). netCDF/Zarr times may
    use CF units or ``months/years since`` (see :func:`pipeline.timeaxis.decode`).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"The {what} file {path} does not exist.")
    if path.lower().endswith(".csv"):
        return _read_csv(path, variable, what)
    try:
        opened = (xr.open_zarr(path, consolidated=False, decode_times=False) if os.path.isdir(path)
                  else xr.open_dataset(path, decode_times=False))
    except Exception as err:  # noqa: BLE001 -- any reader error means the same thing to the user
        raise ValueError(f"The {what} file {path} could not be read as netCDF or Zarr ({err}); "
                         "give a netCDF, Zarr or CSV file.") from err
    with opened as ds:
        ds = grid.canonical_dims(ds.load(), what, require=("time",))
    names = [str(v) for v in ds.data_vars if ds[v].dims == ("time",)]
    if variable is None and len(names) != 1:
        raise ValueError(f"The {what} file {path} has {len(names)} 1-D variables along time "
                         f"({', '.join(names) or 'none'}); name one with 'variable'.")
    name = variable if variable is not None else names[0]
    if name not in names:
        raise ValueError(f"The {what} file {path} has no 1-D variable {name!r} along time; it has "
                         f"{', '.join(names) or 'none'}.")
    attrs = ds["time"].attrs
    if "units" not in attrs:
        raise ValueError(f"The time of the {what} file {path} has no units attribute, so its dates are unknown.")
    dates = timeaxis.decode(ds["time"].values, attrs["units"], attrs.get("calendar"))
    return xr.DataArray(ds[name].values, dims="time", coords={"time": dates}, name=name)


def _read_csv(path: str, variable: str | None, what: str) -> xr.DataArray:
    import pandas as pd

    frame = pd.read_csv(path, skipinitialspace=True)
    columns = [str(c).strip() for c in frame.columns]
    frame.columns = columns
    date = next((c for c in columns if c.lower() in grid.ALIASES["time"]), columns[0])
    values = [c for c in columns if c != date]
    if variable is None and len(values) != 1:
        raise ValueError(f"The {what} file {path} has {len(values)} value columns besides the date column "
                         f"{date!r}; name one with 'variable'.")
    name = variable if variable is not None else values[0]
    if name not in values:
        raise ValueError(f"The {what} file {path} has no column {name!r}; it has {', '.join(columns)}.")
    raw = frame[date]
    try:
        if pd.api.types.is_integer_dtype(raw):
            dates = np.array([f"{int(y):04d}-01-01" for y in raw], dtype="datetime64[ns]")
        else:
            dates = pd.to_datetime(raw.astype(str)).to_numpy(dtype="datetime64[ns]")
    except (ValueError, TypeError) as err:
        raise ValueError(f"The date column {date!r} of the {what} file {path} could not be read as dates ({err}); "
                         "write ISO dates such as 1950-01-31.") from err
    numbers = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(numbers).any():
        raise ValueError(f"The value column {name!r} of the {what} file {path} holds no numbers.")
    return xr.DataArray(numbers, dims="time", coords={"time": dates}, name=name)
