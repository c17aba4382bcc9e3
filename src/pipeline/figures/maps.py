"""Map panels for every map figure: projection chosen by the domain, coastlines, gridlines, layout.

One helper serves all figure families: :func:`map_spec` reads a store's
``(lat, lon)`` grid and picks a projection, :func:`map_panels` lays out
``n`` map axes for it (:func:`add_map` sets up one map in any grid slot),
:func:`draw_field` draws one ``(lat, lon)`` variable in a panel, and
:func:`add_colorbar` labels its colour scale, per panel or shared.

Projection rule (:func:`choose_projection`; ``figures.projection`` overrides it)
----------------------------------------------------------------------------
With the grid's cell edges (longitudes made one eastward run, so 120..250 or
170..-170 are one domain across the date line; latitudes clipped to ±90):

* **all longitudes** (a 360° band or a global grid):

  - a **polar cap** -- the domain lies in one hemisphere, reaches beyond
    60° and stays poleward of 20° (e.g. 60-90° N) -- is drawn in
    ``NorthPolarStereo`` / ``SouthPolarStereo`` inside a round frame;
  - anything else (a tropical band, a global grid) in ``Robinson``;

* **a sector** (not all longitudes):

  - poleward of 50° (the whole domain beyond 50° N or 50° S): polar
    stereographic, centred on the domain;
  - in one hemisphere, poleward of 15°, at most 180° wide: ``LambertConformal``
    (a cone, standard parallels at 1/6 and 5/6 of the latitude range), the
    map clipped to the domain's outline (a fan): shapes stay true and scale
    varies little across the mid-latitudes, where a plate carrée stretches
    the high latitudes east-west;
  - anything else (touching the tropics, or wider than 180°): ``PlateCarree``.

The central longitude is the middle of the domain (for a full circle, the
seam falls between the last and the first column), so a domain crossing the
date line is drawn whole and no cell is split at the map's edge; a round
polar cap has 0° at the bottom (180° at the bottom of a southern cap).

Coastlines come from Natural Earth 1:110m. On import, cartopy's
``pre_existing_data_dir`` is pointed at ``resources/natural_earth`` (see
resources/README.md) unless the user set one (``CARTOPY_DATA_DIR`` or
cartopy's config), so ``coastlines("110m")`` never downloads.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cartopy
import cartopy.crs as ccrs
import matplotlib.path as mpath
import numpy as np
import xarray as xr
from cartopy.mpl.geoaxes import GeoAxes
from cartopy.mpl.ticker import LatitudeFormatter, LongitudeFormatter
from matplotlib.collections import LineCollection, QuadMesh
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.gridspec import SubplotSpec
from matplotlib.transforms import ScaledTranslation

from pipeline.figures import _common as c

#: Folder holding ``shapefiles/natural_earth/physical/ne_110m_coastline.shp``.
NATURAL_EARTH = Path(__file__).resolve().parents[3] / "resources" / "natural_earth"
COASTLINE = Path("shapefiles", "natural_earth", "physical", "ne_110m_coastline.shp")
#: ``figures.projection`` values; ``auto`` applies the rule of the module docstring.
PROJECTIONS = ("auto", "plate_carree", "robinson", "lambert_conformal", "polar_stereo")
POLAR_CAP_REACH, POLAR_CAP_EDGE = 60.0, 20.0  # full circle: reaches beyond 60°, poleward of 20°
POLAR_SECTOR_EDGE = 50.0  # sector entirely poleward of 50°
CONIC_EDGE, CONIC_MAX_SPAN = 15.0, 180.0
#: Layout allowances, inches: lat labels, lon labels, panel title, colorbars, suptitle line.
LABEL_W, LABEL_H, TITLE_H, CBAR_RIGHT, CBAR_BOTTOM, LINE_H = 0.45, 0.25, 0.3, 0.95, 0.75, 0.3
MAX_FIG_H, MAX_PANEL_H = 8.0, 4.2


def use_offline_coastlines(folder: Path = NATURAL_EARTH) -> bool:
    """Point cartopy's ``pre_existing_data_dir`` at ``folder`` unless the user set one.

    Returns True when it did. Nothing changes if ``CARTOPY_DATA_DIR`` is set,
    if cartopy's config already names a folder, or if ``folder`` lacks the
    coastline (an installed package without the repository's resources/):
    cartopy then uses its own data, downloading them once when online.
    """
    current = str(cartopy.config.get("pre_existing_data_dir") or "")
    if os.environ.get("CARTOPY_DATA_DIR") or current not in ("", ".") or not (folder / COASTLINE).is_file():
        return False
    cartopy.config["pre_existing_data_dir"] = folder
    return True


use_offline_coastlines()


# ---------------------------------------------------------------- the domain and its projection
def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges: midpoints between centres, the ends half a cell out (1° cells for one centre)."""
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = 0.5 * (centres[1:] + centres[:-1])
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


@dataclass(frozen=True)
class Domain:
    """A grid's extent: longitude edges relative to the central longitude, latitude edges."""

    lon_edges: np.ndarray  # relative to ``centre``, increasing, within [-180, 180]
    lat_edges: np.ndarray  # in the grid's order, within [-90, 90]
    centre: float  # central longitude, degrees east in [-180, 180)
    full_circle: bool

    @property
    def south(self) -> float:
        return float(self.lat_edges.min())

    @property
    def north(self) -> float:
        return float(self.lat_edges.max())

    @property
    def lon_span(self) -> float:
        return float(self.lon_edges[-1] - self.lon_edges[0])


def domain(lat: np.ndarray, lon: np.ndarray) -> Domain:
    """The :class:`Domain` of cell centres ``lat`` and ``lon`` (degrees; any longitude convention)."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    if lat.ndim != 1 or lon.ndim != 1 or not lat.size or not lon.size:
        raise ValueError("A map needs one-dimensional, non-empty lat and lon coordinates.")
    run = lon[0] + np.mod(lon - lon[0], 360.0)  # one eastward run: 170..-170 -> 170..190
    edges = _edges(run)
    full = edges[-1] - edges[0] >= 360.0 - 1e-3
    if full:  # the seam halfway between the last and the first column
        seam = 0.5 * (run[-1] + run[0] + 360.0)
        edges = np.concatenate([[seam - 360.0], edges[1:-1], [seam]])
    mid = 0.5 * (edges[0] + edges[-1])
    inner = 180.0 - 1e-6  # a hair inside the seam, so no cell is split across the map's edge
    return Domain(lon_edges=np.clip(edges - mid, -inner, inner), lat_edges=np.clip(_edges(lat), -90.0, 90.0),
                  centre=float(np.mod(mid + 180.0, 360.0) - 180.0), full_circle=bool(full))


def choose_projection(dom: Domain, name: str = "auto") -> str:
    """The projection for ``dom`` by the module's rule, or ``name`` when it is not ``auto``.

    Returns one of ``plate_carree``, ``robinson``, ``lambert_conformal``,
    ``north_polar_stereo``, ``south_polar_stereo``.
    """
    if name not in PROJECTIONS:
        raise ValueError(f"figures.projection must be one of {', '.join(PROJECTIONS)}; got {name!r}.")
    north_side = dom.south + dom.north >= 0
    polar = "north_polar_stereo" if north_side else "south_polar_stereo"
    if name != "auto":
        return polar if name == "polar_stereo" else name
    one_hemisphere = dom.south >= 0 or dom.north <= 0
    equatorward = min(abs(dom.south), abs(dom.north)) if one_hemisphere else 0.0
    poleward = max(abs(dom.south), abs(dom.north))
    if dom.full_circle:
        return polar if poleward > POLAR_CAP_REACH and equatorward >= POLAR_CAP_EDGE else "robinson"
    if equatorward >= POLAR_SECTOR_EDGE:
        return polar
    if equatorward >= CONIC_EDGE and dom.lon_span <= CONIC_MAX_SPAN:
        return "lambert_conformal"
    return "plate_carree"


def projection(dom: Domain, kind: str) -> ccrs.Projection:
    """The cartopy projection ``kind`` (from :func:`choose_projection`) centred on ``dom``."""
    lon0 = 0.0 if kind.endswith("polar_stereo") and dom.full_circle else dom.centre
    if kind == "plate_carree":
        return ccrs.PlateCarree(central_longitude=lon0)
    if kind == "robinson":
        return ccrs.Robinson(central_longitude=lon0)
    if kind == "north_polar_stereo":
        return ccrs.NorthPolarStereo(central_longitude=lon0)
    if kind == "south_polar_stereo":
        return ccrs.SouthPolarStereo(central_longitude=lon0)
    if kind == "lambert_conformal":
        south, north = dom.south, dom.north
        third = (north - south) / 6.0
        return ccrs.LambertConformal(central_longitude=lon0, central_latitude=0.5 * (south + north),
                                     standard_parallels=(south + third, north - third),
                                     cutoff=-30.0 if south + north >= 0 else 30.0)
    raise ValueError(f"Unknown projection {kind!r}.")


@dataclass(frozen=True)
class MapSpec:
    """What every panel of one figure shares: domain, projection and projected limits."""

    domain: Domain
    kind: str
    crs: ccrs.Projection
    limits: tuple[float, float, float, float]  # x0, x1, y0, y1 in projected units

    @property
    def source(self) -> ccrs.PlateCarree:
        """The CRS of :attr:`Domain.lon_edges`: plate carrée around the central longitude."""
        return ccrs.PlateCarree(central_longitude=self.domain.centre)

    @property
    def aspect(self) -> float:
        """Width over height of one map."""
        x0, x1, y0, y1 = self.limits
        return (x1 - x0) / max(y1 - y0, 1e-12)

    @property
    def round(self) -> bool:
        """A polar cap of all longitudes, drawn in a round frame."""
        return self.kind.endswith("polar_stereo") and self.domain.full_circle


def outline(dom: Domain, n: int = 90) -> np.ndarray:
    """The domain's boundary as ``(lon, lat)`` vertices relative to its centre, closed, anticlockwise."""
    w, e = dom.lon_edges[0], dom.lon_edges[-1]
    s, nn = dom.south, dom.north
    lon, lat = np.linspace(w, e, n), np.linspace(s, nn, n)
    ring = np.concatenate([np.column_stack([lon, np.full(n, s)]), np.column_stack([np.full(n, e), lat]),
                           np.column_stack([lon[::-1], np.full(n, nn)]), np.column_stack([np.full(n, w), lat[::-1]])])
    return np.vstack([ring, ring[:1]])


def map_spec(ds: xr.Dataset | xr.DataArray, projection_name: str = "auto") -> MapSpec:
    """The :class:`MapSpec` of the ``(lat, lon)`` grid of ``ds``."""
    if "lat" not in ds.coords or "lon" not in ds.coords:
        raise ValueError("A map needs lat and lon coordinates in its store; see docs/stores.md.")
    dom = domain(ds["lat"].values, ds["lon"].values)
    kind = choose_projection(dom, projection_name)
    crs = projection(dom, kind)
    ring = outline(dom)
    xy = crs.transform_points(ccrs.PlateCarree(central_longitude=dom.centre), ring[:, 0], ring[:, 1])[:, :2]
    xy = xy[np.all(np.isfinite(xy), axis=1)]
    if kind == "robinson" and dom.full_circle:
        x0, x1 = crs.x_limits
    else:
        x0, x1 = float(xy[:, 0].min()), float(xy[:, 0].max())
    limits = (float(x0), float(x1), float(xy[:, 1].min()), float(xy[:, 1].max()))
    return MapSpec(domain=dom, kind=kind, crs=crs, limits=limits)


# ---------------------------------------------------------------- one map panel
def _step(span: float, most: int) -> float:
    """The smallest round step in degrees that puts at most ``most`` lines over ``span``."""
    for step in (1, 2, 5, 10, 15, 20, 30, 45, 60, 90):
        if span / step <= most:
            return float(step)
    return 90.0


def _grid_steps(spec: MapSpec) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes of the meridians and parallels drawn, at round steps."""
    dom = spec.domain
    if dom.full_circle:  # Robinson's meridians converge towards the poles: fewer labels fit along a high edge
        lon_step = 90.0 if spec.kind == "robinson" and max(-dom.south, dom.north) > 60.0 else 60.0
        lons = np.arange(-180.0, 180.0, lon_step)
    else:
        lon_step = _step(dom.lon_span, 5 if spec.aspect < 1.8 else 7)
        lons = lon_step * np.arange(math.ceil((dom.centre + dom.lon_edges[0]) / lon_step),
                                    math.floor((dom.centre + dom.lon_edges[-1]) / lon_step) + 1)
    lat_step = _step(dom.north - dom.south, 6 if dom.north - dom.south > 120.0 else 4)
    lats = lat_step * np.arange(math.ceil(dom.south / lat_step), math.floor(dom.north / lat_step) + 1)
    return np.mod(lons + 180.0, 360.0) - 180.0, lats[np.abs(lats) < 90.0]


def _gridlines(ax: GeoAxes, spec: MapSpec) -> None:
    """Dotted meridians and parallels at round steps, labelled in °E/°W and °N/°S.

    Lines and labels are projected once, here (cartopy's gridliner reprojects
    its lines and searches the frame for label places at every draw, which
    costs seconds a figure). Longitudes are labelled below the bottom edge of
    a rectangular map (plate carrée, Robinson), just outside the equatorward
    edge of a fan (cone, polar sector) and all around a round polar cap;
    latitudes left of a rectangular map, beside both side edges of a fan and
    along a meridian inside a round cap. Labels crowding a corner are left out.
    """
    lons, lats = _grid_steps(spec)
    ax.add_collection(_graticule(ax, spec, lons, lats), autolim=False)
    dom, plate = spec.domain, ccrs.PlateCarree()
    rect = spec.kind in ("plate_carree", "robinson")
    north_side = dom.south + dom.north >= 0
    pole = np.asarray(spec.crs.transform_point(0.0, 90.0 if north_side else -90.0, plate))
    edge = dom.south if rect or north_side else dom.north  # where the longitudes are labelled
    margin = (0.02 if rect else 0.06) * dom.lon_span  # a fan's lower corners also hold latitude labels
    for lon in lons:
        rel = _wrap(lon - dom.centre)
        if not spec.round and not dom.lon_edges[0] + margin < rel < dom.lon_edges[-1] - margin:
            continue
        xy = np.asarray(spec.crs.transform_point(lon, edge, plate))
        out = np.array([0.0, -1.0]) if rect else (xy - pole) / max(float(np.hypot(*(xy - pole))), 1e-12)
        _label(ax, xy, LongitudeFormatter()(lon), out)
    near, far = 0.08 * (dom.north - dom.south), 0.02 * (dom.north - dom.south)  # near the longitude labels
    low, high = (near, far) if edge == dom.south else (far, near)
    inner = [lat for lat in lats if dom.south + low < lat < dom.north - high]
    if spec.round:  # parallels are circles that meet no edge: label them along a meridian
        lon0 = spec.crs.proj4_params.get("lon_0", 0.0) + 150.0
        for lat in inner:
            xy = spec.crs.transform_point(lon0, lat, plate)
            ax.text(xy[0], xy[1], LatitudeFormatter()(lat), fontsize=6, ha="center", va="center", color="0.25",
                    gid="grid_label")
        return
    west, east = dom.centre + dom.lon_edges[0], dom.centre + dom.lon_edges[-1]
    for lat in inner:
        for lon, side in ((west, -1.0),) if rect else ((west, -1.0), (east, 1.0)):
            _label(ax, spec.crs.transform_point(lon, lat, plate), LatitudeFormatter()(lat), np.array([side, 0.0]))


def _label(ax: GeoAxes, xy: np.ndarray, text: str, direction: np.ndarray, size: float = 7.0) -> None:
    """``text`` at the projected point ``xy``, pushed 4 pt away along the unit vector ``direction``."""
    ux, uy = direction
    ha = "left" if ux > 0.35 else "right" if ux < -0.35 else "center"
    va = "bottom" if uy > 0.35 else "top" if uy < -0.35 else "center"
    shift = ScaledTranslation(4 / 72 * ux, 4 / 72 * uy, ax.figure.dpi_scale_trans)
    ax.text(xy[0], xy[1], text, transform=ax.transData + shift, ha=ha, va=va, fontsize=size, clip_on=False,
            gid="grid_label")


def _wrap(delta: float) -> float:
    """A longitude difference in [-180, 180)."""
    return float(np.mod(delta + 180.0, 360.0) - 180.0)


def _graticule(ax: GeoAxes, spec: MapSpec, lons: np.ndarray, lats: np.ndarray, n: int = 120) -> LineCollection:
    """Dotted meridians ``lons`` and parallels ``lats`` over the domain, projected once, clipped to the map."""
    dom = spec.domain
    lat = np.linspace(dom.south, dom.north, n)
    rel = np.linspace(dom.lon_edges[0], dom.lon_edges[-1], n)  # relative to the centre: never crosses the seam
    lines = [spec.crs.transform_points(ccrs.PlateCarree(), np.full(n, lon), lat)[:, :2] for lon in lons]
    lines += [spec.crs.transform_points(spec.source, rel, np.full(n, la))[:, :2] for la in lats]
    lc = LineCollection(lines, colors="0.35", linewidths=0.4, linestyles=":", alpha=0.6, transform=ax.transData,
                        zorder=1.5, gid="graticule")
    lc.set_clip_path(ax.patch)
    return lc


def setup_map(ax: GeoAxes, spec: MapSpec) -> GeoAxes:
    """Limits, frame, coastlines and labelled gridlines of one map panel."""
    x0, x1, y0, y1 = spec.limits
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    if spec.round:
        theta = np.linspace(0.0, 2.0 * np.pi, 181)
        ax.set_boundary(mpath.Path(0.5 + 0.5 * np.column_stack([np.sin(theta), np.cos(theta)])),
                        transform=ax.transAxes)
    elif spec.kind in ("lambert_conformal", "north_polar_stereo", "south_polar_stereo"):
        ax.set_boundary(mpath.Path(outline(spec.domain)), transform=spec.source)
    coast = ax.coastlines("110m", linewidth=0.6, color="0.15")
    coast.set_gid("coastline")
    _gridlines(ax, spec)
    return ax


def add_map(fig: Figure, where: SubplotSpec, spec: MapSpec) -> GeoAxes:
    """A map axes of ``spec`` in the grid slot ``where``, set up by :func:`setup_map`."""
    return setup_map(fig.add_subplot(where, projection=spec.crs), spec)


def draw_field(ax: GeoAxes, spec: MapSpec, da: xr.DataArray, cmap: Colormap, norm: Normalize,
               title: str | None = None) -> QuadMesh:
    """Draw a ``(lat, lon)`` variable as grid cells (NaN cells in :data:`~._common.MISSING_COLOUR`)."""
    values = np.ma.masked_invalid(np.asarray(da.transpose("lat", "lon").values, dtype=np.float64))
    mesh = ax.pcolormesh(spec.domain.lon_edges, spec.domain.lat_edges, values, cmap=cmap, norm=norm,
                         transform=spec.source, shading="flat", rasterized=True)
    if title:  # clear of the degree labels that a fan or a round cap has at its top
        ax.set_title(title, fontsize=9, pad=6.0 if spec.kind in ("plate_carree", "robinson") else 14.0)
    return mesh


# ---------------------------------------------------------------- layouts and colorbars
@dataclass(frozen=True)
class Grid:
    """Rows and columns of map panels, where colorbars go, one map's size and the figure's, in inches."""

    nrows: int
    ncols: int
    cbar: str  # "right" or "bottom" (one per panel), "shared" (one below all) or "none"
    map_size: tuple[float, float]
    figsize: tuple[float, float]


def panel_grid(spec: MapSpec, n: int, colorbar: str = "each", head_lines: int = 1) -> Grid:
    """The arrangement of ``n`` maps that makes them largest within :data:`~._common.FIG_WIDTH`.

    Each candidate (1..4 columns; with ``colorbar="each"``, every panel's
    colorbar right of it or below it) gives the map width the figure width
    allows; the height follows the map's aspect, capped at
    :data:`MAX_PANEL_H` and so that the figure stays under :data:`MAX_FIG_H`.
    The candidate with the largest map wins; one within 5 % of it with
    fewer columns is preferred. ``colorbar``: ``"each"``, ``"shared"`` (one
    below all panels) or ``"none"``; ``head_lines``: lines of the suptitle.
    """
    if colorbar not in ("each", "shared", "none"):
        raise ValueError(f"colorbar must be 'each', 'shared' or 'none'; got {colorbar!r}.")
    two_sided = spec.kind not in ("plate_carree", "robinson")  # labels on both sides and above
    best: Grid | None = None
    for place in ("right", "bottom") if colorbar == "each" else (colorbar,):
        extra_w = LABEL_W * (2 if two_sided else 1) + (CBAR_RIGHT if place == "right" else 0.1)
        extra_h = TITLE_H + LABEL_H * (2 if two_sided else 1) + (CBAR_BOTTOM if place == "bottom" else 0.0)
        fixed_h = LINE_H * head_lines + (CBAR_BOTTOM if place == "shared" else 0.0) + 0.1
        for ncols in range(1, min(n, 4) + 1):
            nrows = -(-n // ncols)
            width = (c.FIG_WIDTH - 0.1) / ncols - extra_w
            height = min(width / spec.aspect, MAX_PANEL_H, (MAX_FIG_H - fixed_h) / nrows - extra_h)
            width = min(width, height * spec.aspect)
            size = (ncols * (width + extra_w) + 0.1, nrows * (height + extra_h) + fixed_h)
            grid = Grid(nrows, ncols, place, (width, height), size)
            if best is None or width * height > 1.05 * best.map_size[0] * best.map_size[1]:
                best = grid
    return best


def map_panels(spec: MapSpec, n: int, colorbar: str = "each", title: str = "") -> tuple[Figure, list[GeoAxes], str]:
    """A constrained-layout figure with exactly ``n`` map axes (the last row centred) and its title.

    The title is wrapped to the figure's width (the layout makes room for its
    lines). Returns the figure, the axes and where their colorbars go
    (``Grid.cbar``, for :func:`add_colorbar`). See :func:`panel_grid` for
    ``colorbar``.
    """
    lines = title.count("\n") + 1 if title else 0
    grid = panel_grid(spec, n, colorbar, lines)
    wrapped = c.wrap_title(title, grid.figsize[0]) if title else ""
    if wrapped.count("\n") + 1 > lines:
        grid = panel_grid(spec, n, colorbar, wrapped.count("\n") + 1)
    fig = Figure(figsize=grid.figsize, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.06, h_pad=0.05, wspace=0.02, hspace=0.02)
    if wrapped:
        fig.suptitle(wrapped)
    gs = fig.add_gridspec(grid.nrows, 2 * grid.ncols)
    axes = []
    for i in range(n):
        row, col = divmod(i, grid.ncols)
        in_row = min(grid.ncols, n - row * grid.ncols)
        start = (grid.ncols - in_row) + 2 * col
        axes.append(add_map(fig, gs[row, start:start + 2], spec))
    return fig, axes, grid.cbar


def add_colorbar(mesh: QuadMesh, axes: GeoAxes | list[GeoAxes], label: str, where: str, **kw) -> Colorbar:
    """A colorbar labelled ``label`` (with its units): ``right`` of or ``bottom`` below one
    panel, or ``shared`` below a list of panels drawn on the same scale."""
    fig = mesh.axes.figure
    if where == "right":
        return fig.colorbar(mesh, ax=axes, location="right", shrink=0.85, aspect=20, pad=0.02, label=label, **kw)
    shrink, aspect = (0.6, 35) if where == "shared" else (0.75, 25)
    return fig.colorbar(mesh, ax=axes, location="bottom", shrink=shrink, aspect=aspect, pad=0.02, label=label, **kw)
