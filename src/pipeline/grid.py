"""Between labelled grids and plain matrices: the one home of the NaN policy.

The labelled layer keeps ``(time, lat, lon)`` fields; kernels want a dense
``(sample, feature)`` matrix. :func:`to_matrix` stacks ``lat``/``lon`` into one
feature axis and keeps only *complete* cells (no NaN at any time step);
:func:`from_matrix` puts feature-axis results back on the grid, NaN where a cell
was dropped. Latitude weights live here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

WEIGHTS = ("none", "coslat", "sqrt_coslat")
ALIASES = {
    "time": ("time", "t", "valid_time", "date"),
    "lat": ("lat", "latitude", "nav_lat", "y_lat", "rlat"),
    "lon": ("lon", "longitude", "nav_lon", "x_lon", "rlon"),
}
"""Dimension names recognised for each canonical axis (case-insensitive), everywhere."""


def canonical_dims(obj: xr.DataArray | xr.Dataset, what: str = "field", require: tuple[str, ...] = ("time", "lat", "lon")):
    """``obj`` with its time/latitude/longitude dimensions renamed to ``time``, ``lat``, ``lon``.

    The one vocabulary of the pipeline: ingest, the stages' ``compute``
    functions and :func:`pipeline.eof.decompose` all accept the aliases of
    :data:`ALIASES`. Axes in ``require`` must be found; others are renamed
    when present.
    """
    renames = {}
    dims = [str(d) for d in obj.dims]
    for canonical, aliases in ALIASES.items():
        found = [d for d in dims if d.lower() in aliases]
        if len(found) > 1:
            raise ValueError(f"The {what} has several {canonical} dimensions ({', '.join(found)}); rename all but one.")
        if not found:
            if canonical in require:
                raise ValueError(
                    f"The {what} has no {canonical} dimension (looked for {', '.join(aliases)}; "
                    f"it has {', '.join(dims) or 'none'})."
                )
            continue
        if found[0] != canonical:
            renames[found[0]] = canonical
    return obj.rename(renames) if renames else obj


def as_field(da: xr.DataArray, what: str = "field") -> xr.DataArray:
    """A ``(time, lat, lon)`` DataArray from any dimension names of :data:`ALIASES`, in any order."""
    if not isinstance(da, xr.DataArray):
        raise TypeError(f"The {what} must be an xarray DataArray; got {type(da).__name__}.")
    da = canonical_dims(da, what)
    extra = [str(d) for d in da.dims if d not in ("time", "lat", "lon")]
    if extra:
        raise ValueError(f"The {what} has extra dimensions {extra}; select one value of each first (da.sel(...)).")
    return da.transpose("time", "lat", "lon")


@dataclass(frozen=True)
class CellIndex:
    """Which grid cells a matrix's feature axis holds.

    Attributes
    ----------
    valid : xr.DataArray
        Boolean ``(lat, lon)`` mask, True where the cell is a matrix column.
    flat : np.ndarray
        Flat (C-order) indices of the valid cells in the ``(lat, lon)`` grid.
    """

    valid: xr.DataArray
    flat: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.flat.size)


def complete_cells(field: xr.DataArray, name: str = "field") -> CellIndex:
    """Index of the cells of ``field`` that have no NaN along ``time``.

    Raises
    ------
    ValueError
        If every cell has a NaN somewhere (nothing left to analyse).
    """
    valid = field.notnull().all("time")
    flat = np.flatnonzero(valid.values.ravel())
    if flat.size == 0:
        raise ValueError(
            f"The {name} field has no grid cell without missing values over time "
            f"({field.sizes['time']} time steps); nothing can be analysed."
        )
    return CellIndex(valid=valid, flat=flat)


def to_matrix(field: xr.DataArray, cells: CellIndex) -> np.ndarray:
    """The ``(time, feature)`` host matrix of the valid cells of a ``(time, lat, lon)`` field."""
    values = np.asarray(field.transpose("time", "lat", "lon").values)
    return values.reshape(values.shape[0], -1)[:, cells.flat]


def from_matrix(
    values: np.ndarray,
    cells: CellIndex,
    leading: dict[str, np.ndarray] | None = None,
    name: str | None = None,
    attrs: dict | None = None,
) -> xr.DataArray:
    """Scatter ``(..., feature)`` values back onto the ``(..., lat, lon)`` grid.

    Parameters
    ----------
    values : np.ndarray
        Host array whose last axis is the feature axis of ``cells``.
    cells : CellIndex
        The index the feature axis came from.
    leading : dict, optional
        Names and coordinate values of the leading axes, in order
        (e.g. ``{"mode": np.arange(k)}``).
    """
    leading = leading or {}
    values = np.asarray(values)
    shape_lead = values.shape[:-1]
    if len(shape_lead) != len(leading):
        raise ValueError(f"from_matrix got {len(shape_lead)} leading axes but {len(leading)} names.")
    nlat, nlon = cells.valid.shape
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
    grid = np.full(shape_lead + (nlat * nlon,), np.nan, dtype=dtype)
    grid[..., cells.flat] = values
    grid = grid.reshape(shape_lead + (nlat, nlon))
    coords = {**{k: v for k, v in leading.items()}, "lat": cells.valid["lat"].values, "lon": cells.valid["lon"].values}
    return xr.DataArray(grid, dims=(*leading, "lat", "lon"), coords=coords, name=name, attrs=attrs or {})


def latitude_weights(lat: xr.DataArray, kind: str = "sqrt_coslat") -> xr.DataArray:
    """Area weights per latitude.

    ``sqrt_coslat`` (the default for EOFs) makes the weighted covariance an
    area-weighted covariance; ``coslat`` weights each cell by its area; ``none``
    gives every cell weight 1. Cosines below zero (rounding at the poles) are
    clipped to zero.
    """
    if kind not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got {kind!r}.")
    coslat = np.clip(np.cos(np.deg2rad(lat.values.astype(np.float64))), 0.0, None)
    values = {"none": np.ones_like(coslat), "coslat": coslat, "sqrt_coslat": np.sqrt(coslat)}[kind]
    return xr.DataArray(
        values,
        dims=("lat",),
        coords={"lat": lat.values},
        name="weight",
        attrs={"long_name": f"latitude weight ({kind})", "units": "1", "weighting": kind},
    )


def field_of(fields_ds: xr.Dataset, min_steps: int, why: str) -> tuple[xr.DataArray, str]:
    """The validated ``field(time, lat, lon)`` of a fields store, and the field's name.

    Parameters
    ----------
    fields_ds : xr.Dataset
        A ``fields/{field}.zarr`` store, as written by the ingest stage.
    min_steps : int
        Fewest time steps the caller can work with.
    why : str
        What sets that minimum, completing "fewer than ..." in the error message
        (e.g. ``"moments.min_time_steps=3"``).
    """
    if not isinstance(fields_ds, xr.Dataset):
        raise TypeError(f"fields_ds must be an xarray Dataset; got {type(fields_ds).__name__}.")
    name = str(fields_ds.attrs.get("field_name", "field"))
    if "field" not in fields_ds.data_vars:
        raise ValueError(f"The fields store of {name} has no 'field' variable; it holds {sorted(fields_ds.data_vars)}.")
    field = as_field(fields_ds["field"], f"{name} field")
    if field.sizes["time"] < min_steps:
        raise ValueError(f"The {name} field has {field.sizes['time']} time steps, fewer than {why}.")
    if not np.issubdtype(field.dtype, np.number) or np.issubdtype(field.dtype, np.complexfloating):
        raise TypeError(f"The {name} field must hold real numbers; got dtype {field.dtype}.")
    if bool(field.isnull().all()):
        raise ValueError(f"The {name} field is entirely missing (all values NaN).")
    return field, name
