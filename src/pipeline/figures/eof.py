"""Figures of an ``eof/{field}.zarr`` store: spectrum, EOF maps, PC time series."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.figures import _common as c


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


def eof_spectrum(eof_ds: xr.Dataset) -> Figure:
    """Variance explained by each mode, with North et al. (1982) sampling errors.

    Left axis: variance fraction in percent; right axis: the same points as
    eigenvalues in the field's squared units (``eigenvalue = fraction · T``).
    Neighbouring modes whose error bars overlap are not separable (North's
    rule of thumb).
    """
    c.require(eof_ds, ("eigenvalue", "variance_fraction", "north_error"), "eof_spectrum")
    mode = eof_ds["mode"].values
    frac, err = percent_spectrum(eof_ds)
    fig = Figure(figsize=(c.FIG_WIDTH * 0.75, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.errorbar(mode, frac, yerr=err, fmt="o-", capsize=4, lw=1.2, ms=5, color="C0",
                label="±1 sampling error (North et al. 1982)")
    ax.set_xlabel("Mode")
    ax.set_ylabel("Variance explained (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0.0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", frameon=False)
    n = eof_ds.attrs.get("n_samples")
    ax.set_title(f"EOF spectrum of {c.field_name(eof_ds)}" + (f" (n = {n})" if n is not None else ""))
    eig = eof_ds["eigenvalue"].values.astype(np.float64)
    positive = (frac > 0) & np.isfinite(eig)
    if positive.any():
        total = float(eig[positive][0] / (frac[positive][0] / 100.0))
        units = eof_ds["eigenvalue"].attrs.get("units") or f"({eof_ds.attrs.get('field_units', '1')})²"
        right = ax.secondary_yaxis("right", functions=(lambda p: p * total / 100.0, lambda e: e * 100.0 / total))
        right.set_ylabel(f"Eigenvalue ({units})")
    return fig


def eof_maps(eof_ds: xr.Dataset, n_maps: int | None = 3) -> Figure:
    """Maps of the leading ``n_maps`` EOFs, one panel per mode.

    Plots ``eof_covariance`` -- the covariance of the unweighted anomaly with
    the unit-variance PC, i.e. the anomaly (field units) that comes with a
    one-standard-deviation PC -- when present, else the unit-norm ``eof``. Each
    panel has its own zero-centred diverging scale ``[-max|x|, max|x|]``.
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
    fig, axes = c.map_axes(eof_ds, n)
    cmap = c.colormap("RdBu_r")
    for ax, (k, mode) in zip(axes, enumerate(eof_ds["mode"].values[:n])):
        da = eof_ds[name].isel(mode=k)
        pct = 100.0 * float(eof_ds["variance_fraction"].isel(mode=k))
        c.draw_map(ax, da, cmap, c.symmetric_norm(da.values), f"EOF {mode} ({pct:.1f}% of variance)", cbar)
    fig.suptitle(f"Leading EOFs of {field}")
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


def pc_timeseries(eof_ds: xr.Dataset, n_maps: int | None = 3) -> Figure:
    """Standardized PC time series of the leading ``n_maps`` modes, one panel each.

    The PCs are divided by their standard deviation, so a value of 1 means the
    pattern of the ``eof_maps`` panel (the covariance map) at full strength.
    """
    c.require(eof_ds, ("pc", "variance_fraction"), "pc_timeseries")
    n = c.count(n_maps, eof_ds.sizes["mode"])
    years = decimal_year(eof_ds["time"])
    pcs = standardized_pc(eof_ds).values
    fig = Figure(figsize=(c.FIG_WIDTH, 0.4 + 1.9 * n), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False, sharex=True)[:, 0]
    for k, ax in enumerate(axes):
        y = pcs[:, k]
        ax.plot(years, y, "-o", color="0.15", lw=1.0, ms=2.5)
        ax.fill_between(years, y, 0.0, where=y >= 0, color="C3", alpha=0.35, interpolate=True, lw=0)
        ax.fill_between(years, y, 0.0, where=y < 0, color="C0", alpha=0.35, interpolate=True, lw=0)
        ax.axhline(0.0, color="0.5", lw=0.8)
        pct = 100.0 * float(eof_ds["variance_fraction"].isel(mode=k))
        ax.set_title(f"PC {eof_ds['mode'].values[k]} ({pct:.1f}% of variance)")
        ax.set_ylabel("PC (standardized, σ)")
        ax.set_xlabel("Year")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"Principal components of {c.field_name(eof_ds)}")
    return fig
