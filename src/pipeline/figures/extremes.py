"""Figures of extremes: return levels, tail shape, quantile-quantile and return-level plots, joint exceedances.

Drawn from a ``distributions/{field}.zarr`` store (return levels, shape,
best family, per-cell plots) and a ``joint/{field}.zarr`` store (conditional
exceedance maps); both layouts are in docs/stores.md.

Parameterisation: every family is stored as ``(loc, scale, shape)``; the
per-cell plots draw the fitted distribution with :mod:`scipy.stats` through
:data:`SCIPY` (the GEV's ``xi > 0`` is a heavy tail, scipy's ``genextreme``
has ``c = -xi``; the GPD's ``genpareto`` has ``c = xi``).

Return periods are in years. A block series (``block_maxima``, ``field``)
has the return level ``z_T`` exceeded once in ``T`` blocks,
``z_T = F⁻¹(1 - 1/T)``; block minima fall below it once in ``T`` blocks,
``z_T = F⁻¹(1/T)``; peaks over a threshold, ``λ`` a year, have
``z_T = F⁻¹(1 - 1/(λT))`` (``λ``: the store's ``exceedance_rate`` when
present, else solved from its return levels, ``λ = 1 / (T·S(z_T))``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import cartopy.crs as ccrs
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter
from scipy import stats

from pipeline.figures import _common as c
from pipeline.figures import maps
from pipeline.figures.fits import distribution_map

#: Family -> scipy.stats frozen distribution from the stored ``(loc, scale, shape)``.
SCIPY: dict[str, Callable[[float, float, float], stats.rv_continuous]] = {
    "normal": lambda loc, scale, shape: stats.norm(loc, scale),
    "lognormal": lambda loc, scale, shape: stats.lognorm(shape, 0.0, scale),
    "gamma": lambda loc, scale, shape: stats.gamma(shape, 0.0, scale),
    "weibull": lambda loc, scale, shape: stats.weibull_min(shape, 0.0, scale),
    "gumbel_r": lambda loc, scale, shape: stats.gumbel_r(loc, scale),
    "gumbel_l": lambda loc, scale, shape: stats.gumbel_l(loc, scale),
    "gev": lambda loc, scale, shape: stats.genextreme(-shape, loc, scale),
    "gpd": lambda loc, scale, shape: stats.genpareto(shape, loc, scale),
}
#: Sign convention of the shape parameter, beside scipy's.
SHAPE_NOTE = {"gev": "ξ > 0: heavy tail (Fréchet), ξ < 0: bounded (Weibull); scipy genextreme c = −ξ",
              "gpd": "ξ > 0: heavy tail (Pareto), ξ < 0: bounded; scipy genpareto c = ξ"}
#: Colormap of interval widths (light: narrow, dark: wide).
WIDTH_CMAP = "YlOrRd"
#: Return periods of the fitted curve, years (beyond 1000 when a longer one is stored).
CURVE_PERIODS = (1.1, 1000.0)
MAX_CELLS = 12
MAX_FIG_H = 9.5  # inches, a figure of plots at cells


# ---------------------------------------------------------------- labels and checks
def series_label(ds: xr.Dataset) -> str:
    """``"annual maxima"``, ``"DJF minima"``, ``"peaks over threshold"`` or ``"values"``."""
    series, block = ds.attrs.get("series", "field"), ds.attrs.get("block", "block")
    return {"block_maxima": f"{block} maxima", "block_minima": f"{block} minima",
            "exceedances": "peaks over threshold"}.get(series, "values")


def level_label(ds: xr.Dataset) -> str:
    """``"95%"`` from the store's ``interval_level``."""
    return f"{100.0 * float(ds.attrs.get('interval_level', 0.95)):g}%"


def units(ds: xr.Dataset, name: str = "series") -> str:
    """The units of variable ``name``, else the store's ``field_units``."""
    own = ds[name].attrs.get("units") if name in ds else None
    return str(own or ds.attrs.get("field_units", ""))


def lat_lon_label(lat: float, lon: float) -> str:
    """``"44.8°N, 10.2°W"`` (longitude wrapped to [-180, 180))."""
    lon = float(np.mod(lon + 180.0, 360.0) - 180.0)
    return f"{abs(lat):.4g}°{'N' if lat >= 0 else 'S'}, {abs(lon):.4g}°{'E' if lon >= 0 else 'W'}"


def fitted_families(ds: xr.Dataset) -> list[str]:
    """The store's families, in the order ``best_family`` indexes them."""
    return [str(f) for f in ds["family"].values]


def default_family(ds: xr.Dataset, with_shape: bool = False) -> str:
    """``gev``, else ``gpd`` when fitted; else (``with_shape`` False) the family that wins most cells."""
    names = fitted_families(ds)
    for name in ("gev", "gpd"):
        if name in names:
            return name
    if with_shape:
        raise ValueError(f"A shape map needs a gev or gpd fit; the store has {', '.join(names)}.")
    best = ds["best_family"].values
    return names[int(np.argmax([(best == k).sum() for k in range(len(names))]))]


def check_family(ds: xr.Dataset, family: str, what: str) -> str:
    """``family`` checked to be one of the store's fitted families."""
    names = fitted_families(ds)
    if family not in names or family not in SCIPY:
        raise ValueError(f"The {what} figure's family must be one of the fitted {', '.join(names)}; got {family!r}.")
    return family


def check_cells(ds: xr.Dataset, cells: Sequence[Mapping[str, float]] | None) -> list[tuple[int, int, str]]:
    """``(i_lat, i_lon, "nearest to ...")`` of each configured cell ``{lat, lon}`` (nearest grid cell).

    No cells (``None`` or empty): the fitted cell nearest the middle of the
    grid. Longitudes match in any convention (distance wrapped at 360°).
    """
    lat, lon = ds["lat"].values.astype(np.float64), ds["lon"].values.astype(np.float64)
    if not cells:
        fitted = ds["best_family"].transpose("lat", "lon").values >= 0
        d2 = ((np.arange(lat.size)[:, None] - (lat.size - 1) / 2) / lat.size) ** 2 + \
             ((np.arange(lon.size)[None, :] - (lon.size - 1) / 2) / lon.size) ** 2
        i, j = np.unravel_index(np.argmin(np.where(fitted, d2, np.inf)), d2.shape)
        return [(int(i), int(j), "no cell configured: grid middle")]
    if isinstance(cells, Mapping) or not isinstance(cells, Sequence) or len(cells) > MAX_CELLS:
        raise ValueError(f"cells must be a list of at most {MAX_CELLS} {{lat, lon}} mappings; got {cells!r}.")
    out = []
    for cell in cells:
        want = [cell.get(k) if isinstance(cell, Mapping) else None for k in ("lat", "lon")]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in want) or abs(want[0]) > 90:
            raise ValueError(f"Each cell must be a mapping {{lat, lon}} of degrees, |lat| <= 90; got {cell!r}.")
        i = int(np.argmin(np.abs(lat - want[0])))
        j = int(np.argmin(np.abs(np.mod(lon - want[1] + 180.0, 360.0) - 180.0)))
        out.append((i, j, f"nearest to {lat_lon_label(*want)}"))
    return out


# ---------------------------------------------------------------- numbers drawn
def gringorten(n: int) -> np.ndarray:
    """Gringorten (1963) plotting positions ``(i - 0.44) / (n + 0.12)``, ``i = 1..n`` (ascending values)."""
    return (np.arange(1, n + 1) - 0.44) / (n + 0.12)


def frozen(family: str, loc: float, scale: float, shape: float) -> stats.rv_continuous:
    """The scipy.stats distribution of ``family`` with the stored parameters (see :data:`SCIPY`)."""
    return SCIPY[family](float(loc) if np.isfinite(loc) else 0.0, float(scale), float(shape))


def cell_distribution(cell: xr.Dataset, family: str) -> stats.rv_continuous | None:
    """The fitted distribution of ``family`` in one cell, ``None`` where it was not fitted."""
    p = [float(cell[k].sel(family=family)) for k in ("loc", "scale", "shape")]
    needs_shape = family in ("lognormal", "gamma", "weibull", "gev", "gpd")
    if not np.isfinite(p[1]) or (needs_shape and not np.isfinite(p[2])):
        return None
    return frozen(family, *p)


def return_level_curve(dist: stats.rv_continuous, periods: np.ndarray, series: str, rate: float = 1.0) -> np.ndarray:
    """Return levels at ``periods`` (years) of a block series, or of peaks ``rate`` a year (module docstring)."""
    periods = np.asarray(periods, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 1.0 / (rate * periods)  # chance per block (per peak) of a more extreme value
        p = np.where((p > 0) & (p < 1), p, np.nan)
    return dist.ppf(p) if series == "block_minima" else dist.isf(p)


def empirical_periods(n: int, series: str, rate: float = 1.0) -> np.ndarray:
    """Return periods (years) of the ascending sorted series, from :func:`gringorten` positions."""
    f = gringorten(n)
    return 1.0 / f if series == "block_minima" else 1.0 / (rate * (1.0 - f))


def exceedance_rate(ds: xr.Dataset, cell: xr.Dataset, family: str, dist: stats.rv_continuous) -> float:
    """Peaks a year in one cell: ``exceedance_rate`` if stored, else ``1 / (T·S(z_T))`` from its return levels."""
    if "exceedance_rate" in cell:
        return float(cell["exceedance_rate"])
    if "return_level" in cell:
        z = cell["return_level"].sel(family=family).values.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = 1.0 / (ds["return_period"].values * dist.sf(z))
        rate = rate[np.isfinite(rate) & (rate > 0)]
        if rate.size:
            return float(np.median(rate))
    return float("nan")


def interval_width(ds: xr.Dataset, family: str, period: float) -> tuple[xr.DataArray, str]:
    """Width of the return-level interval and how it was computed.

    Profile likelihood (``return_level_profile_*``) where present and finite,
    the delta method elsewhere; the text says which (and in how many cells
    the delta method stands in).
    """
    sel = {"family": family, "return_period": period}
    width = (ds["return_level_upper"] - ds["return_level_lower"]).sel(sel)
    if "return_level_profile_upper" not in ds or "return_level_profile_lower" not in ds:
        return width, "delta method"
    profile = (ds["return_level_profile_upper"] - ds["return_level_profile_lower"]).sel(sel)
    use = np.isfinite(profile)
    n_delta = int((~use & np.isfinite(width)).sum())
    if not bool(use.any()):
        return width, "delta method"
    method = "profile likelihood" + (f"\n(delta method in {n_delta} cells)" if n_delta else "")
    return profile.where(use, width), method


def range_norm(values: np.ndarray, q: float = 1.0) -> tuple[Normalize, str]:
    """Sequential scale from the ``q``-th to the ``100 - q``-th percentile, and the colorbar ``extend``."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return Normalize(0.0, 1.0), "neither"
    lo, hi = (float(v) for v in np.percentile(finite, [q, 100.0 - q]))
    if hi <= lo:  # a constant map
        pad = 0.05 * abs(lo) if lo else 1.0
        lo, hi = lo - pad, hi + pad
    below, above = bool(finite.min() < lo), bool(finite.max() > hi)
    return Normalize(lo, hi), "both" if below and above else "min" if below else "max" if above else "neither"


# ---------------------------------------------------------------- maps
def return_level_maps(ds: xr.Dataset, family: str | None = "gev", return_period: float | None = 100,
                      projection: str = "auto") -> Figure:
    """The ``return_period``-year return level of ``family`` and the width of its interval.

    Return levels on a sequential scale from the 1st to the 99th percentile
    of the cells (field units); the interval width (upper − lower, profile
    likelihood where stored and finite, else delta method: the panel title
    says which) from 0 to its 99th percentile. ``family=None``: gev, else gpd,
    else the family best in most cells; ``return_period=None``: the longest stored.
    """
    need = ("return_level", "return_level_lower", "return_level_upper", "best_family")
    c.require(ds, need, "return_level_maps")
    family = check_family(ds, family or default_family(ds), "return_level_maps")
    periods = ds["return_period"].values.astype(np.float64)
    period = float(periods.max()) if return_period is None else return_period
    ok = not isinstance(period, bool) and isinstance(period, (int, float, np.number))
    match = np.isclose(periods, float(period), rtol=1e-9) if ok else np.zeros(periods.size, bool)
    if not match.any():
        raise ValueError(f"return_period must be one of the stored {', '.join(f'{p:g}' for p in periods)} "
                         f"years; got {return_period!r}.")
    period = float(periods[match][0])
    level = ds["return_level"].sel(family=family, return_period=period)
    width, method = interval_width(ds, family, period)
    u = units(ds, "return_level")
    title = (f"{period:g}-year return level of {c.field_name(ds)} ({series_label(ds)})\n"
             f"{family} fit, {level_label(ds)} interval")
    spec = maps.map_spec(ds, projection)
    fig, (ax_level, ax_width), where = maps.map_panels(spec, 2, "each", title)
    norm, extend = range_norm(level.values)
    mesh = maps.draw_field(ax_level, spec, level, c.colormap(c.SEQUENTIAL), norm, f"{period:g}-year return level")
    maps.add_colorbar(mesh, ax_level, c.label(None, "return level", u), where, extend=extend)
    norm, extend = c.upper_norm(width.values)
    mesh = maps.draw_field(ax_width, spec, width, c.colormap(WIDTH_CMAP), norm,
                           f"{level_label(ds)} interval width, {method}")
    maps.add_colorbar(mesh, ax_width, c.label(None, "upper − lower", u), where, extend=extend)
    return fig


def significant_shape(ds: xr.Dataset, family: str) -> tuple[xr.DataArray | None, str]:
    """Cells where ξ differs from 0, and how that was tested (``None`` when the store cannot tell).

    gev with ``lr_pvalue``: the likelihood-ratio test of Gumbel within GEV
    rejects at ``1 - interval_level``; otherwise the Wald interval
    ``ξ ± z·se`` (``shape_se``) excludes 0.
    """
    level = float(ds.attrs.get("interval_level", 0.95))
    if family == "gev" and "lr_pvalue" in ds:
        return ds["lr_pvalue"] < 1.0 - level, f"Gumbel rejected (likelihood ratio, p < {1.0 - level:g})"
    if "shape_se" in ds:
        z = float(stats.norm.isf(0.5 * (1.0 - level)))
        xi, se = ds["shape"].sel(family=family), ds["shape_se"].sel(family=family)
        return abs(xi) > z * se, f"{level_label(ds)} interval of ξ excludes 0 (Wald)"
    return None, ""


def shape_map(ds: xr.Dataset, family: str | None = "gev", projection: str = "auto") -> Figure:
    """Map of the shape ``ξ`` of a gev or gpd fit, diverging and centred on 0, stippled where ``ξ ≠ 0``.

    The scale is ``[-v, v]``, ``v`` the 99th percentile of ``|ξ|``. The title
    states the sign convention (``ξ > 0`` heavy tail; scipy's ``c = −ξ`` for
    genextreme). Dots mark the cells of :func:`significant_shape`.
    """
    c.require(ds, ("shape",), "shape_map")
    family = check_family(ds, family or default_family(ds, with_shape=True), "shape_map")
    if family not in SHAPE_NOTE:
        raise ValueError(f"The shape_map figure draws the ξ of gev or gpd; got {family!r}.")
    xi = ds["shape"].sel(family=family)
    title = f"Shape ξ of the {family} fits to {c.field_name(ds)} ({series_label(ds)})\n{SHAPE_NOTE[family]}"
    spec = maps.map_spec(ds, projection)
    fig, (ax,), where = maps.map_panels(spec, 1, "each", title)
    norm, extend = c.symmetric_norm(xi.values)
    mesh = maps.draw_field(ax, spec, xi, c.colormap(c.DIVERGING), norm, f"Shape ξ ({family})")
    maps.add_colorbar(mesh, ax, "shape ξ (> 0: heavy tail)", where, extend=extend)
    mask, test = significant_shape(ds, family)
    if mask is not None:
        mask = mask.transpose("lat", "lon").values
        lat, lon = np.meshgrid(ds["lat"].values, ds["lon"].values, indexing="ij")
        ax.scatter(lon[mask], lat[mask], s=3.0, c="k", marker="o", linewidths=0, transform=ccrs.PlateCarree())
        dot = Line2D([], [], ls="", marker="o", ms=2.5, color="k", label=test)
        fig.legend(handles=[dot], loc="outside lower center", frameon=False)
    return fig


def best_family_map(ds: xr.Dataset, projection: str = "auto") -> Figure:
    """The best family per cell and its AIC margin: :func:`~pipeline.figures.fits.distribution_map`."""
    return distribution_map(ds, projection)


# ---------------------------------------------------------------- plots at configured cells
class CellFit(NamedTuple):
    """One configured cell: its sorted series, the family drawn and its fitted law (``None``: no fit)."""

    cell: xr.Dataset
    x: np.ndarray
    family: str | None
    dist: stats.rv_continuous | None
    head: str  # panel title: where, the family, which cell was asked for


def cell_fits(ds: xr.Dataset, cells: Sequence[Mapping[str, float]] | None, family: str | None,
              what: str) -> list[CellFit]:
    """The :class:`CellFit` of each cell of :func:`check_cells`; ``family=None``: each cell's best family."""
    if family is not None:
        check_family(ds, family, what)
    names, out = fitted_families(ds), []
    for i, j, note in check_cells(ds, cells):
        cell = ds.isel(lat=i, lon=j)
        x = cell["series"].values.astype(np.float64)
        best = int(cell["best_family"])
        name = family if family is not None else names[best] if 0 <= best < len(names) else None
        name = name if name in SCIPY else None
        where = lat_lon_label(float(cell["lat"]), float(cell["lon"]))
        out.append(CellFit(cell, np.sort(x[np.isfinite(x)]), name, cell_distribution(cell, name) if name else None,
                           f"{where}{', ' + name if name else ''}\n{note}"))
    return out


def _cell_panels(n: int, title: str, ncols: int | None = None) -> tuple[Figure, list[Axes]]:
    """``n`` square-ish panels, ``ncols`` a row (default up to 3, the last row centred), title and legend room."""
    ncols = ncols or (1 if n == 1 else 2 if n in (2, 4) else 3)
    nrows = -(-n // ncols)
    width = 4.0 if ncols == 1 else c.FIG_WIDTH
    title = c.wrap_title(title, width)
    side = width / ncols - 0.6  # less the tick labels and the y label
    height = 0.35 * (title.count("\n") + 1) + nrows * (side + 0.85) + 0.45  # titles, x labels, the legend
    fig = Figure(figsize=(width, min(height, MAX_FIG_H)), layout="constrained")
    fig.suptitle(title)
    grid = fig.add_gridspec(nrows, 2 * ncols)
    axes = []
    for k in range(n):
        row, col = divmod(k, ncols)
        start = (ncols - min(ncols, n - row * ncols)) + 2 * col
        axes.append(fig.add_subplot(grid[row, start:start + 2]))
    return fig, axes


def _no_fit(ax: Axes, text: str = "no fit in this cell") -> None:
    """A panel without a fit: the text in the middle, no ticks (the axis labels stay)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.minorticks_off()


def _legend(fig: Figure, artists: list) -> None:
    """One legend below the panels, the first artist of each label (two columns when there is room)."""
    handles = {}
    for artist in artists:
        handles.setdefault(artist.get_label(), artist)
    if handles:
        fig.legend(handles=list(handles.values()), loc="outside lower center", frameon=False, fontsize=8,
                   ncols=2 if fig.get_figwidth() > 5 else 1)


def qq_panel(ax: Axes, ds: xr.Dataset, fit: CellFit) -> list:
    """Sorted series against the fitted quantiles at :func:`gringorten` positions, 1:1 line, KS p-value."""
    u = units(ds)
    ax.set_title(fit.head, fontsize=8)
    ax.set_xlabel(c.label(None, "Fitted quantile", u))  # the family is in the title
    ax.set_ylabel(c.label(None, "Empirical quantile", u))
    ax.grid(True, alpha=0.3)
    ax.set_box_aspect(1)
    if fit.dist is None or fit.x.size < 2:
        _no_fit(ax)
        return []
    x, q = fit.x, fit.dist.ppf(gringorten(fit.x.size))
    drawn = ax.plot(q, x, "o", ms=3, mfc="none", color="k", label=f"{series_label(ds)} (Gringorten positions)")
    ends = [np.nanmin([q.min(), x.min()]), np.nanmax([q.max(), x.max()])]
    drawn += ax.plot(ends, ends, "-", color="0.35", lw=0.9, label="1:1 line")
    pad = 0.04 * (ends[1] - ends[0])
    ax.set_xlim(ends[0] - pad, ends[1] + pad)  # the same range on both axes: the 1:1 line is the diagonal
    ax.set_ylim(ends[0] - pad, ends[1] + pad)
    if "ks_pvalue" in fit.cell and np.isfinite(p := float(fit.cell["ks_pvalue"].sel(family=fit.family))):
        ax.text(0.04, 0.96, f"KS p = {p:.2g}", transform=ax.transAxes, va="top", fontsize=8)
    return drawn


INTERVALS = (("return_level_lower", "return_level_upper", 1.0, "C1", "delta method"),
             ("return_level_profile_lower", "return_level_profile_upper", 1.12, "C3", "profile likelihood"))


def return_level_panel(ax: Axes, ds: xr.Dataset, fit: CellFit) -> list:
    """The fitted curve, the stored levels with their intervals and the series at Gringorten periods.

    Profile intervals sit a little right of the delta-method ones at the same
    stored periods. Returns the artists drawn, in order, for the legend.
    """
    series, stored = str(ds.attrs.get("series", "field")), ds["return_period"].values.astype(np.float64)
    periods = np.geomspace(CURVE_PERIODS[0], max(CURVE_PERIODS[1], 1.2 * float(stored.max())), 200)
    ax.set_title(fit.head, fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 1, 10, 100 rather than 10⁰, 10¹
    ax.set_xlabel("Return period (years)")
    ax.set_ylabel(c.label(None, "Return level", units(ds, "return_level")))
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="x", alpha=0.12)
    ax.set_xlim(1.0, periods[-1])
    if fit.dist is None:
        _no_fit(ax)
        return []
    name, dist, cell = fit.family, fit.dist, fit.cell
    rate = exceedance_rate(ds, cell, name, dist) if series == "exceedances" else 1.0
    if rate > 1.0:  # peaks more often than yearly: return periods below a year are defined down to 1/λ
        periods = np.concatenate([np.geomspace(periods[0] / rate, periods[0], 30, endpoint=False), periods])
    drawn = ax.plot(periods, return_level_curve(dist, periods, series, rate), "-", color="C0", lw=1.4,
                    label=f"fitted {name}")
    rl = cell["return_level"].sel(family=name).values.astype(np.float64)
    for lower, upper, shift, colour, method in INTERVALS:
        if lower not in cell or upper not in cell:
            continue
        lo, hi = (cell[v].sel(family=name).values.astype(np.float64) for v in (lower, upper))
        ok = np.isfinite(rl) & np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            err = np.maximum([rl[ok] - lo[ok], hi[ok] - rl[ok]], 0.0)  # never negative from rounding
            drawn.append(ax.errorbar(stored[ok] * shift, rl[ok], yerr=err, fmt="s", ms=3, capsize=3, lw=1.0,
                                     color=colour, label=f"{level_label(ds)} interval, {method}"))
    if fit.x.size and np.isfinite(rate):
        empirical = empirical_periods(fit.x.size, series, rate)
        drawn += ax.plot(empirical, fit.x, "o", ms=3, mfc="none", color="k",
                         label=f"{series_label(ds)} (Gringorten positions)")  # as in the quantile plot
        ax.set_xlim(left=min(1.0, 0.9 * float(empirical.min()), float(periods[0])))
    elif fit.x.size:
        _no_fit(ax, "exceedance rate unknown:\nno empirical points")
    return drawn


def _fits_title(ds: xr.Dataset, what: str, family: str | None) -> str:
    fits = "best family per cell" if family is None else f"{family} fits"
    return f"{what} of {c.field_name(ds)} ({series_label(ds)}), {fits}"


def qq_plots(ds: xr.Dataset, cells: Sequence[Mapping[str, float]] | None = None, family: str | None = None) -> Figure:
    """Empirical quantiles of the fitted ``series`` against the fitted family's, one panel per cell.

    The sorted series of the nearest grid cell is plotted against the fitted
    quantiles at the Gringorten positions ``(i - 0.44)/(n + 0.12)``, with the
    1:1 line; ``family=None`` draws each cell's best family. The KS p-value
    is shown where the store has it. No ``cells``: see :func:`check_cells`.
    """
    c.require(ds, ("series", "loc", "scale", "shape", "best_family"), "qq_plots")
    fits = cell_fits(ds, cells, family, "qq_plots")
    fig, axes = _cell_panels(len(fits), _fits_title(ds, "Quantile-quantile plots", family))
    _legend(fig, [a for ax, fit in zip(axes, fits) for a in qq_panel(ax, ds, fit)])
    return fig


RETURN_LEVELS = ("return_level", "return_level_lower", "return_level_upper")


def return_level_plot(ds: xr.Dataset, cells: Sequence[Mapping[str, float]] | None = None,
                      family: str | None = "gev") -> Figure:
    """Return level against return period at each cell: fitted curve, intervals and the data.

    The curve is the fitted family's return level over 1.1..1000 years (see
    the module docstring; log axis); the stored return levels carry their
    delta-method and, where stored, profile-likelihood intervals; the sorted
    series is drawn at Gringorten return periods. ``family=None``: each
    cell's best family. One legend below the panels.
    """
    c.require(ds, ("series", "loc", "scale", "shape", "best_family", *RETURN_LEVELS), "return_level_plot")
    fits = cell_fits(ds, cells, family, "return_level_plot")
    fig, axes = _cell_panels(len(fits), _fits_title(ds, "Return levels", family))
    _legend(fig, [a for ax, fit in zip(axes, fits) for a in return_level_panel(ax, ds, fit)])
    return fig


def distribution_fits(ds: xr.Dataset, cells: Sequence[Mapping[str, float]] | None = None,
                      family: str | None = None) -> Figure:
    """The fits at each cell, one row a cell: quantile-quantile plot and, when stored, return levels.

    A store without return levels (``series: field``) gives :func:`qq_plots`.
    """
    if "return_level" not in ds:
        return qq_plots(ds, cells, family)
    c.require(ds, ("series", "loc", "scale", "shape", "best_family", *RETURN_LEVELS), "distribution_fits")
    fits = cell_fits(ds, cells, family, "distribution_fits")
    fig, axes = _cell_panels(2 * len(fits), _fits_title(ds, "Fits", family), ncols=2)
    drawn = []
    for k, fit in enumerate(fits):
        drawn += qq_panel(axes[2 * k], ds, fit) + return_level_panel(axes[2 * k + 1], ds, fit)
    _legend(fig, drawn)
    return fig
