"""Shared pieces of the figure families: checks, labels, norms and map panels.

Everything here works on host NumPy values taken from xarray objects; figures
are built with :class:`matplotlib.figure.Figure` directly (never ``pyplot``), so
no GUI backend, global figure registry or ``plt.close`` is involved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.collections import QuadMesh
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure

#: Colour of cells with no value (not a complete cell, or a failed fit).
MISSING_COLOUR = "0.82"
#: Width of every figure, in inches (a full text width in most journals).
FIG_WIDTH = 7.0
LON_LABEL = "Longitude (°E)"
LAT_LABEL = "Latitude (°N)"


def require(ds: xr.Dataset, names: Sequence[str], what: str) -> None:
    """Raise if ``ds`` is not a Dataset or lacks one of the variables ``names``.

    Raises
    ------
    TypeError
        If ``ds`` is not an :class:`xarray.Dataset`.
    ValueError
        If a variable is missing, naming it and the store it should come from.
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"The {what} figure needs an xarray.Dataset; got {type(ds).__name__}.")
    missing = [name for name in names if name not in ds.variables]
    if missing:
        raise ValueError(
            f"The {what} figure needs the variable(s) {', '.join(missing)} in its store "
            f"(field {field_name(ds)!r}); see docs/stores.md."
        )


def count(n: int | None, available: int, name: str = "n_maps") -> int:
    """``n`` panels checked to be a positive integer, capped at ``available`` (``None``: all)."""
    if n is None:
        return available
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive integer; got {n!r}.")
    return min(int(n), available)


def field_name(ds: xr.Dataset) -> str:
    """The ``field_name`` attribute of a store, or ``"field"``."""
    return str(ds.attrs.get("field_name", "field"))


def label(da: xr.DataArray, text: str | None = None, units: str | None = None) -> str:
    """An axis label ``"text (units)"`` from a variable's ``long_name``/``units`` attributes.

    Dimensionless quantities (units ``"1"`` or none) get no parenthesis.
    """
    text = text if text is not None else str(da.attrs.get("long_name", da.name))
    units = units if units is not None else da.attrs.get("units")
    return f"{text} ({units})" if units not in (None, "", "1") else text


def colormap(name: str) -> Colormap:
    """A copy of a registered colormap that draws NaN cells in :data:`MISSING_COLOUR`."""
    return colormaps[name].with_extremes(bad=MISSING_COLOUR)


def symmetric_limit(values: np.ndarray) -> float:
    """The colour limit ``v`` of a diverging map drawn on ``[-v, v]``.

    ``v = max |x|`` over the finite values, so the colour scale is centred on
    zero and nothing is clipped; 1 when there is no finite non-zero value.
    """
    finite = np.abs(values[np.isfinite(values)])
    vmax = float(finite.max()) if finite.size else 0.0
    return vmax if vmax > 0 else 1.0


def symmetric_norm(values: np.ndarray) -> Normalize:
    """A :class:`~matplotlib.colors.Normalize` on ``[-v, v]``, ``v`` from :func:`symmetric_limit`."""
    vmax = symmetric_limit(values)
    return Normalize(vmin=-vmax, vmax=vmax)


def map_aspect(lat: np.ndarray) -> float:
    """Axes aspect (y/x data units) making a degree look right at the central latitude.

    A degree of longitude is ``cos(latitude)`` times a degree of latitude, so
    the aspect is ``1 / cos(lat_mid)`` (clipped at 75° to stay finite).
    """
    mid = 0.5 * (float(np.min(lat)) + float(np.max(lat)))
    return 1.0 / np.cos(np.deg2rad(min(abs(mid), 75.0)))


def map_layout(ds: xr.Dataset, n_panels: int) -> tuple[int, int, tuple[float, float]]:
    """Rows, columns and figure size for ``n_panels`` maps of the grid of ``ds``.

    Wide domains (a panel more than 1.4 times wider than tall) get one column,
    others two; the height follows the map aspect.
    """
    lat, lon = ds["lat"].values, ds["lon"].values
    lat_span = max(float(np.ptp(lat)), 1e-6)
    panel_ratio = float(np.ptp(lon)) / (lat_span * map_aspect(lat))
    ncols = 1 if (panel_ratio > 1.4 or n_panels == 1) else 2
    nrows = -(-n_panels // ncols)
    map_width = FIG_WIDTH / ncols - 1.7  # the rest: tick labels, axis label, colorbar
    row_height = float(np.clip(map_width / max(panel_ratio, 1e-6), 1.2, 4.5)) + 0.5  # + title, x label
    return nrows, ncols, (FIG_WIDTH, nrows * row_height + 0.4)  # + suptitle


def map_axes(ds: xr.Dataset, n_panels: int) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with ``n_panels`` map axes (unused grid slots removed)."""
    nrows, ncols, size = map_layout(ds, n_panels)
    fig = Figure(figsize=size, layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    axes = list(grid.ravel())
    for ax in axes[n_panels:]:
        ax.remove()
    return fig, axes[:n_panels]


def draw_map(
    ax: Axes,
    da: xr.DataArray,
    cmap: Colormap,
    norm: Normalize,
    title: str,
    cbar_label: str,
    **cbar_kw,
) -> QuadMesh:
    """Draw a ``(lat, lon)`` variable with ``pcolormesh`` at cell centres, with a colorbar.

    NaN cells are masked (drawn in :data:`MISSING_COLOUR`); longitudes are used
    as given; the axes aspect comes from :func:`map_aspect`.
    """
    values = np.ma.masked_invalid(np.asarray(da.transpose("lat", "lon").values, dtype=np.float64))
    lon, lat = da["lon"].values, da["lat"].values
    mesh = ax.pcolormesh(lon, lat, values, cmap=cmap, norm=norm, shading="nearest")
    ax.set_aspect(map_aspect(lat))
    ax.set_xlabel(LON_LABEL)
    ax.set_ylabel(LAT_LABEL)
    ax.set_title(title)
    ax.figure.colorbar(mesh, ax=ax, label=cbar_label, **cbar_kw)
    return mesh
