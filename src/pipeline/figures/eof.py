"""Figures of an ``eof/{field}.zarr`` store: spectrum, EOF maps, correlation maps, PC series, summary."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from pipeline.figures import _common as c
from pipeline.figures import maps


def percent_spectrum(eof_ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Variance fraction in percent and its North et al. (1982) error, same scale.

    The error bar of mode k is ``δλ_k = λ_k·sqrt(2/n)`` (the store's
    ``north_error``); in percent of the total variance ``T`` it becomes
    ``100·δλ_k / T = 100·f_k·δλ_k / λ_k`` with ``f_k = λ_k / T`` the variance
    fraction, so both are scaled by the same ``100 / T``.
    """
    eig = eof_ds["eigenvalue"].values.astype(np.float64)
    frac = 100.0 * eof_ds["variance_fraction"].values.astype(np.float64)
    north = eof_ds["north_error"].values.astype(np.float64)
    relative = np.divide(north, eig, out=np.zeros_like(eig), where=eig > 0)
    return frac, frac * relative


def mode_title(eof_ds: xr.Dataset, k: int, what: str = "EOF") -> str:
    """``"EOF 1 (49.0% of variance)"`` for the ``k``-th mode (0-based)."""
    pct = 100.0 * float(eof_ds["variance_fraction"].isel(mode=k))
    return f"{what} {eof_ds['mode'].values[k]} ({pct:.1f}% of variance)"


def period(eof_ds: xr.Dataset) -> str:
    """``"1963–2012"``: first and last year of the time axis, ``""`` without one."""
    if "time" not in eof_ds.coords or not eof_ds.sizes.get("time"):
        return ""
    years = eof_ds["time"].dt.year.values
    return f"{int(years[0])}–{int(years[-1])}"


def draw_spectrum(ax: Axes, eof_ds: xr.Dataset, highlight: int | None = None, eigen_axis: bool = True) -> None:
    """Variance fraction (%) per mode with North et al. (1982) error bars on ``ax``.

    ``highlight``: a mode (0-based) drawn in red; ``eigen_axis``: a right axis
    with the same points as eigenvalues in the field's squared units
    (``eigenvalue = fraction · T``).
    """
    mode = eof_ds["mode"].values
    frac, err = percent_spectrum(eof_ds)
    ax.errorbar(mode, frac, yerr=err, fmt="o-", capsize=4, lw=1.2, ms=5, color="C0",
                label="±1 sampling error (North et al. 1982)")
    if highlight is not None:
        ax.plot(mode[highlight], frac[highlight], "o", ms=7, color="C3", zorder=3)
    ax.set_xlabel("Mode")
    ax.set_ylabel("Variance explained (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0.0)
    ax.grid(True, alpha=0.3)
    eig = eof_ds["eigenvalue"].values.astype(np.float64)
    positive = (frac > 0) & np.isfinite(eig)
    if eigen_axis and positive.any():
        total = float(eig[positive][0] / (frac[positive][0] / 100.0))
        units = eof_ds["eigenvalue"].attrs.get("units") or f"({eof_ds.attrs.get('field_units', '1')})^2"
        right = ax.secondary_yaxis("right", functions=(lambda p: p * total / 100.0, lambda e: e * 100.0 / total))
        right.set_ylabel(c.label(None, "Eigenvalue", units))
        scaled = ScalarFormatter(useMathText=True)  # 6·10⁵ rather than 600000
        scaled.set_powerlimits((-3, 4))
        right.yaxis.set_major_formatter(scaled)


def eof_spectrum(eof_ds: xr.Dataset) -> Figure:
    """Variance explained by each mode, with North et al. (1982) sampling errors.

    Left axis: variance fraction in percent; right axis: the same points as
    eigenvalues in the field's squared units. Neighbouring modes whose error
    bars overlap are not separable (North's rule of thumb).
    """
    c.require(eof_ds, ("eigenvalue", "variance_fraction", "north_error"), "eof_spectrum")
    fig = Figure(figsize=(c.FIG_WIDTH * 0.75, 3.6), layout="constrained")
    ax = fig.subplots()
    draw_spectrum(ax, eof_ds)
    ax.legend(loc="upper right", frameon=False)
    n = eof_ds.attrs.get("n_samples")
    ax.set_title(f"EOF spectrum of {c.field_name(eof_ds)}" + (f" (n = {n})" if n is not None else ""))
    return fig


def eof_maps(eof_ds: xr.Dataset, n_maps: int | None = 3, projection: str = "auto") -> Figure:
    """Maps of the leading ``n_maps`` EOFs, one panel per mode.

    Plots ``eof_covariance`` -- the covariance of the unweighted anomaly with
    the unit-variance PC, i.e. the anomaly (field units) that comes with a
    one-standard-deviation PC -- when present, else the unit-norm ``eof``. Each
    panel has its own zero-centred diverging scale ``[-v, v]``, ``v`` the 99th
    percentile of ``|x|`` (see :func:`~._common.symmetric_norm`), and colorbar.
    """
    c.require(eof_ds, ("variance_fraction",), "eof_maps")
    name = "eof_covariance" if "eof_covariance" in eof_ds else "eof"
    c.require(eof_ds, (name,), "eof_maps")
    n = c.count(n_maps, eof_ds.sizes["mode"])
    field = c.field_name(eof_ds)
    if name == "eof_covariance":
        units = eof_ds[name].attrs.get("units", eof_ds.attrs.get("field_units"))
        cbar = c.label(eof_ds[name], f"{field} anomaly per σ of PC", units)
    else:
        cbar = c.label(eof_ds[name], "EOF loading (weighted, unit norm)", "1")
    spec = maps.map_spec(eof_ds, projection)
    fig, axes, where = maps.map_panels(spec, n, "each", f"Leading EOFs of {field}")
    cmap = c.colormap(c.DIVERGING)
    for k, ax in enumerate(axes):
        da = eof_ds[name].isel(mode=k)
        norm, extend = c.symmetric_norm(da.values)
        mesh = maps.draw_field(ax, spec, da, cmap, norm, mode_title(eof_ds, k))
        maps.add_colorbar(mesh, ax, cbar, where, extend=extend)
    return fig


def eof_correlation(eof_ds: xr.Dataset, n_maps: int | None = 3, projection: str = "auto") -> Figure:
    """Maps of the correlation between the field at each cell and the leading ``n_maps`` PCs.

    Drawn from ``eof_correlation`` on one shared diverging scale from −1 to 1
    (one colorbar); a cell near ±1 varies almost entirely with that mode.
    """
    c.require(eof_ds, ("eof_correlation", "variance_fraction"), "eof_correlation")
    n = c.count(n_maps, eof_ds.sizes["mode"])
    spec = maps.map_spec(eof_ds, projection)
    title = f"Correlation of {c.field_name(eof_ds)} with its leading PCs"
    fig, axes, _ = maps.map_panels(spec, n, "shared", title)
    cmap, norm = c.colormap(c.DIVERGING), Normalize(-1.0, 1.0)
    meshes = [maps.draw_field(ax, spec, eof_ds["eof_correlation"].isel(mode=k), cmap, norm, mode_title(eof_ds, k))
              for k, ax in enumerate(axes)]
    maps.add_colorbar(meshes[0], axes, "correlation with the PC", "shared", ticks=np.linspace(-1.0, 1.0, 5))
    return fig


def decimal_year(time: xr.DataArray) -> np.ndarray:
    """Time as decimal years (``year + (day_of_year - 1) / days_in_year``)."""
    dt = time.dt
    return (dt.year + (dt.dayofyear - 1) / dt.days_in_year).values.astype(np.float64)


def standardized_pc(eof_ds: xr.Dataset) -> xr.DataArray:
    """The PCs divided by their standard deviation (divisor n−1): unit variance, no units."""
    pc = eof_ds["pc"].transpose("time", "mode")
    sd = pc.std("time", ddof=1)
    return pc / sd.where(sd > 0)


def draw_pc(ax: Axes, years: np.ndarray, y: np.ndarray) -> None:
    """One standardized PC against year: a line, red above zero, blue below."""
    ax.plot(years, y, "-o", color="0.15", lw=1.0, ms=2.5)
    ax.fill_between(years, y, 0.0, where=y >= 0, color="C3", alpha=0.35, interpolate=True, lw=0)
    ax.fill_between(years, y, 0.0, where=y < 0, color="C0", alpha=0.35, interpolate=True, lw=0)
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_ylabel("PC (standardized, σ)")
    ax.set_xlabel("Year")
    ax.grid(True, alpha=0.3)


def pc_timeseries(eof_ds: xr.Dataset, n_maps: int | None = 3) -> Figure:
    """Standardized PC time series of the leading ``n_maps`` modes, one panel each.

    The PCs are divided by their standard deviation, so a value of 1 means the
    pattern of the ``eof_maps`` panel (the covariance map) at full strength.
    """
    c.require(eof_ds, ("pc", "variance_fraction"), "pc_timeseries")
    n = c.count(n_maps, eof_ds.sizes["mode"])
    years = decimal_year(eof_ds["time"])
    pcs = standardized_pc(eof_ds).values
    fig = Figure(figsize=(c.FIG_WIDTH, 0.5 + 1.9 * n), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False, sharex=True)[:, 0]
    for k, ax in enumerate(axes):
        draw_pc(ax, years, pcs[:, k])
        ax.set_title(mode_title(eof_ds, k, "PC"))
        ax.set_xlabel("Year" if k == n - 1 else "")  # the panels share the time axis
    fig.suptitle(f"Principal components of {c.field_name(eof_ds)}")
    return fig


def summary(eof_ds: xr.Dataset, projection: str = "auto") -> Figure:
    """One panel per field for a talk: EOF 1 map, PC 1 series and the spectrum.

    The map (``eof_covariance``, else ``eof``) fills the top row when it is
    wider than tall, with the PC and the spectrum (mode 1 in red, North
    errors) side by side below; a taller map takes the left column instead.
    """
    c.require(eof_ds, ("pc", "eigenvalue", "variance_fraction", "north_error"), "summary")
    name = "eof_covariance" if "eof_covariance" in eof_ds else "eof"
    c.require(eof_ds, (name,), "summary")
    field = c.field_name(eof_ds)
    spec = maps.map_spec(eof_ds, projection)
    wide = spec.aspect >= 1.25
    where = "right" if wide and spec.aspect <= 2.2 else "bottom"  # a colorbar no longer than the map is tall
    if wide:
        map_h = min((c.FIG_WIDTH - (1.6 if where == "right" else 0.6)) / spec.aspect, maps.MAX_PANEL_H)
        top = map_h + (0.6 if where == "right" else 0.35 + maps.CBAR_BOTTOM)  # + title and labels (+ colorbar)
        fig = Figure(figsize=(c.FIG_WIDTH, top + 2.8), layout="constrained")
        gs = fig.add_gridspec(2, 2, height_ratios=(top, 2.4), width_ratios=(3, 2))
        slots = gs[0, :], gs[1, 0], gs[1, 1]
    else:
        map_w = min(3.4 * spec.aspect, 3.8)
        fig = Figure(figsize=(c.FIG_WIDTH, 4.8), layout="constrained")
        gs = fig.add_gridspec(2, 2, width_ratios=(map_w + 0.8, c.FIG_WIDTH - map_w - 0.8))
        slots = gs[:, 0], gs[0, 1], gs[1, 1]
    ax_map = maps.add_map(fig, slots[0], spec)
    da = eof_ds[name].isel(mode=0)
    norm, extend = c.symmetric_norm(da.values)
    mesh = maps.draw_field(ax_map, spec, da, c.colormap(c.DIVERGING), norm, "EOF 1")
    units = da.attrs.get("units", eof_ds.attrs.get("field_units")) if name == "eof_covariance" else "1"
    text = f"{field} anomaly per σ of PC 1" if name == "eof_covariance" else "EOF 1 loading"
    maps.add_colorbar(mesh, ax_map, c.label(da, text, units), where, extend=extend)
    ax_pc, ax_sp = fig.add_subplot(slots[1]), fig.add_subplot(slots[2])
    draw_pc(ax_pc, decimal_year(eof_ds["time"]), standardized_pc(eof_ds).values[:, 0])
    ax_pc.set_title("PC 1")
    draw_spectrum(ax_sp, eof_ds, highlight=0, eigen_axis=False)
    ax_sp.set_title("Spectrum (North errors)")
    when = period(eof_ds)
    fig.suptitle(c.wrap_title(f"{field}{', ' + when if when else ''}: the leading mode explains "
                              f"{100.0 * float(eof_ds['variance_fraction'][0]):.1f}% of the variance",
                              fig.get_figwidth()))
    return fig
