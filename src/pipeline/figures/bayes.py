"""Figures of the bayes stage (``bayes/{field}.zarr``): return-level posteriors, sampler diagnostics, calibration."""

from __future__ import annotations

import cartopy.crs as ccrs
import numpy as np
import xarray as xr
from cartopy.mpl.geoaxes import GeoAxes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from scipy import stats

from pipeline.figures import _common as c
from pipeline.figures import maps

#: Marker of the cells whose posterior HMC drew instead of the configured sampler.
FALLBACK = {"marker": "x", "s": 9.0, "c": "k", "linewidths": 0.6}
#: Marker of the cells that fail the diagnostics (``failed``).
FAILED = {"marker": "o", "s": 3.0, "c": "k", "linewidths": 0}


def _mark(ax: GeoAxes, ds: xr.Dataset, mask: xr.DataArray, style: dict) -> bool:
    """Put ``style``'s marker on the cells of ``mask`` (lat, lon); whether there were any."""
    where = mask.transpose("lat", "lon").values.astype(bool)
    if not where.any():
        return False
    lat, lon = np.meshgrid(ds["lat"].values, ds["lon"].values, indexing="ij")
    ax.scatter(lon[where], lat[where], transform=ccrs.PlateCarree(), **style)
    return True


def _fallback(ds: xr.Dataset) -> xr.DataArray | None:
    """Cells re-sampled by HMC (``method`` is hmc where the sampler was not), or None."""
    sampler = str(ds.attrs.get("sampler", "hmc"))
    if "method" not in ds or sampler in ("hmc", "rwm"):
        return None
    meanings = str(ds["method"].attrs.get("flag_meanings", "")).split()
    values = list(np.asarray(ds["method"].attrs.get("flag_values", [])))
    if "hmc" not in meanings or len(values) != len(meanings):
        return None
    return ds["method"] == values[meanings.index("hmc")]


def _rhat_panel(ax: GeoAxes, spec: maps.MapSpec, ds: xr.Dataset, where: str) -> bool:
    rhat = ds["rhat"].max("param")
    top = max(1.05, float(np.nanpercentile(rhat.values, 99))) if np.isfinite(rhat.values).any() else 1.05
    mesh = maps.draw_field(ax, spec, rhat, c.colormap(c.SEQUENTIAL), Normalize(1.0, top),
                           f"worst R-hat (flagged above {ds.attrs.get('rhat_max', 1.01):g})")
    maps.add_colorbar(mesh, ax, "R-hat", where, extend="max")
    return "failed" in ds and _mark(ax, ds, ds["failed"] == 1, FAILED)


def _ess_panel(ax: GeoAxes, spec: maps.MapSpec, ds: xr.Dataset, where: str) -> None:
    ess = ds["ess_bulk"].min("param")
    enorm, eext = c.upper_norm(ess.values)
    mesh = maps.draw_field(ax, spec, ess, c.colormap(c.SEQUENTIAL), Normalize(0.0, enorm.vmax),
                           f"smallest bulk ESS (flagged below {ds.attrs.get('ess_min', 400):g})")
    maps.add_colorbar(mesh, ax, "effective draws", where, extend=eext)


def _acceptance_panel(ax: GeoAxes, spec: maps.MapSpec, ds: xr.Dataset, where: str) -> None:
    rate = ds["rejection_acceptance"]
    norm, ext = c.upper_norm(rate.values, 100.0)
    mesh = maps.draw_field(ax, spec, rate, c.colormap(c.SEQUENTIAL), Normalize(0.0, norm.vmax),
                           "acceptance rate of the t envelope")
    maps.add_colorbar(mesh, ax, "accepted / proposed", where, extend=ext)


def _khat_panel(ax: GeoAxes, spec: maps.MapSpec, ds: xr.Dataset, where: str) -> None:
    khat = ds["khat"]
    limit = float(ds.attrs.get("khat_max", 0.7))
    finite = khat.values[np.isfinite(khat.values)]
    top = max(1.0, float(np.percentile(finite, 99))) if finite.size else 1.0
    mesh = maps.draw_field(ax, spec, khat, c.colormap("YlOrRd"), Normalize(0.0, top),
                           rf"PSIS $\hat{{k}}$ of the VI fit (fails above {limit:g})")
    extend = "max" if finite.size and finite.max() > top else "neither"
    bar = maps.add_colorbar(mesh, ax, r"$\hat{k}$", where, extend=extend)
    (bar.ax.axvline if where != "right" else bar.ax.axhline)(limit, color="k", lw=1.0)


def bayes_maps(ds: xr.Dataset, return_period: float | None = None, projection: str = "auto") -> Figure:
    """Posterior median of the T-year level, its credible-interval width, and two diagnostics of the sampler.

    ``T`` is the longest stored period unless given. MCMC (``hmc``, ``rwm``):
    the worst R-hat, drawn from 1 to ``max(1.05, its 99th percentile)``, and the
    smallest bulk ESS on a sequential scale from 0. ``rejection``: the envelope's
    acceptance rate and the worst R-hat; ``vi``: the PSIS k̂ of each cell's fit
    (its threshold drawn on the colorbar) and the worst R-hat. Independent draws
    enter R-hat as pseudo-chains, so there it mostly speaks for the cells HMC
    re-sampled, which carry a cross on the third panel. Cells that fail the
    diagnostics (``failed``) carry a dot on the R-hat panel.
    """
    c.require(ds, ("return_level_median", "return_level_lower", "return_level_upper", "rhat", "ess_bulk"),
              "bayes_maps")
    periods = [float(t) for t in ds["return_period"].values]
    T = max(periods) if return_period is None else float(return_period)
    if T not in periods:
        raise ValueError(f"The bayes_maps figure's return period must be one of {periods}; got {T!r}.")
    sampler = str(ds.attrs.get("sampler", "mcmc"))
    third = {"rejection": "rejection_acceptance", "vi": "khat"}.get(sampler)
    if third is not None:
        c.require(ds, (third,), f"bayes_maps ({sampler})")
    level = float(ds.attrs.get("credible_level", 0.9))
    size = (f"{ds.attrs.get('chains', '?')} chains × {ds.attrs.get('draws', '?')} draws" if third is None else
            f"{int(ds.attrs.get('chains', 1)) * int(ds.attrs.get('draws', 0))} independent draws")
    label = {"vi": f"{ds.attrs.get('vi_family', '')} VI".strip(), "rejection": "exact rejection"}.get(sampler,
                                                                                                     sampler.upper())
    title = f"Bayesian GEV of {c.field_name(ds)} ({ds.attrs.get('series', 'block maxima')})\n{label}, {size}"
    spec = maps.map_spec(ds, projection)
    fig, axes, where = maps.map_panels(spec, 4, "each", title)
    units = c.clean_units(str(ds["return_level_median"].attrs.get("units", "")))
    med = ds["return_level_median"].sel(return_period=T)
    norm, extend = c.upper_norm(med.values)
    lo = float(np.nanpercentile(med.values, 1)) if np.isfinite(med.values).any() else 0.0
    norm = Normalize(lo, norm.vmax)
    mesh = maps.draw_field(axes[0], spec, med, c.colormap(c.SEQUENTIAL), norm, f"{T:g}-year level, posterior median")
    maps.add_colorbar(mesh, axes[0], f"return level ({units})", where, extend="both")
    width = (ds["return_level_upper"] - ds["return_level_lower"]).sel(return_period=T)
    wnorm, wext = c.upper_norm(width.values)
    mesh = maps.draw_field(axes[1], spec, width, c.colormap("YlOrRd"), Normalize(0.0, wnorm.vmax),
                           f"{100 * level:g}% credible interval width")
    maps.add_colorbar(mesh, axes[1], f"width ({units})", where, extend=wext)
    handles = []
    if third is None:
        dots = _rhat_panel(axes[2], spec, ds, where)
        _ess_panel(axes[3], spec, ds, where)
    else:
        (_acceptance_panel if sampler == "rejection" else _khat_panel)(axes[2], spec, ds, where)
        fallback = _fallback(ds)
        if fallback is not None and _mark(axes[2], ds, fallback, FALLBACK):
            limit = float(ds.attrs.get("khat_max", 0.7))
            why = "envelope failed" if sampler == "rejection" else rf"$\hat{{k}}$ > {limit:g}"
            handles.append(Line2D([], [], ls="", marker="x", ms=4, mew=0.8, color="k",
                                  label=f"re-sampled by HMC ({why})"))
        dots = _rhat_panel(axes[3], spec, ds, where)
    if dots:
        handles.append(Line2D([], [], ls="", marker="o", ms=2.5, color="k", label="fails the diagnostics"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", frameon=False, ncols=len(handles))
    return fig


def pit_counts(pit: np.ndarray, n_bins: int) -> tuple[np.ndarray, int]:
    """Counts of the finite PIT values in ``n_bins`` equal bins of [0, 1], and how many there are."""
    values = np.asarray(pit, dtype=np.float64)
    values = values[np.isfinite(values)]
    counts = np.bincount(np.clip(np.floor(values * n_bins), 0, n_bins - 1).astype(np.int64), minlength=n_bins)
    return counts, int(values.size)


def pit_histogram(ds: xr.Dataset, projection: str = "auto") -> Figure:
    """The PIT of the held-out values pooled over cells and years, and a map of the CRPS skill.

    Left: the histogram of the randomized PIT in ``pit_bins`` equal bins, the
    count each bin expects under calibration and its pointwise 99 % binomial
    band, and the chi-squared test of the store (optimistic: values of one year
    are correlated across cells). A hump means an overdispersed predictive, a U
    an underdispersed one, a slope a biased one. Beside it (below it, for a
    wide domain): ``crps_skill`` = 1 − CRPS / CRPS of the training values as an
    ensemble, diverging and centred on 0 (> 0: the posterior predictive beats
    climatology).
    """
    c.require(ds, ("pit", "crps_skill"), "pit_histogram")
    n_bins = int(ds.attrs.get("pit_bins", 10))
    counts, n = pit_counts(ds["pit"].values, n_bins)
    if n == 0:
        raise ValueError(f"The pit_histogram figure needs finite PIT values; the store of {c.field_name(ds)!r} has "
                         "none (did every cell fail?).")
    spec = maps.map_spec(ds, projection)
    if spec.aspect >= 1.8:  # a wide map on top, the histogram below
        extras = maps.TITLE_H + 2 * maps.LABEL_H + maps.CBAR_BOTTOM
        map_h = min((c.FIG_WIDTH - 2 * maps.LABEL_W - 0.3) / spec.aspect, maps.MAX_FIG_H - 3.2 - extras)
        top = map_h + extras
        fig = Figure(figsize=(c.FIG_WIDTH, top + 3.0), layout="constrained")
        gs = fig.add_gridspec(2, 1, height_ratios=(top, 2.6))
        slots = gs[1, 0], gs[0, 0]
    else:  # side by side
        map_h = min((4.3 - 2 * maps.LABEL_W) / spec.aspect, maps.MAX_PANEL_H)
        fig = Figure(figsize=(c.FIG_WIDTH, max(3.4, map_h + 2.0)), layout="constrained")
        gs = fig.add_gridspec(1, 2, width_ratios=(c.FIG_WIDTH - 4.3, 4.3))
        slots = gs[0, 0], gs[0, 1]
    ax = fig.add_subplot(slots[0])
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    expected = n / n_bins
    lo, hi = stats.binom.ppf([0.005, 0.995], n, 1.0 / n_bins)
    ax.axhspan(lo, hi, color="0.85", zorder=0)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4c72b0", edgecolor="white", zorder=1)
    ax.axhline(expected, color="k", ls="--", lw=1.0, zorder=2)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.4 * max(float(counts.max()), hi))
    ax.set_xlabel("PIT of the held-out value")
    ax.set_ylabel("count")
    n_cells = int(np.isfinite(ds["pit"].values).any(axis=0).sum())
    ax.set_title(f"{n_cells} cells × {ds.sizes['heldout']} held-out values", fontsize=9)
    p_value = ds.attrs.get("pit_chi2_pvalue")
    handles = [Line2D([], [], color="k", ls="--", lw=1.0, label="expected"), Patch(color="0.85", label="99% band")]
    ax.legend(handles=handles, loc="upper right", fontsize=7, frameon=False)
    if p_value is not None:
        ax.text(0.03, 0.97, f"χ² = {float(ds.attrs.get('pit_chi2', np.nan)):.1f}\np = {float(p_value):.2g}",
                transform=ax.transAxes, ha="left", va="top", fontsize=7)
    ax_map = maps.add_map(fig, slots[1], spec)
    skill = ds["crps_skill"]
    norm, extend = c.symmetric_norm(skill.values)
    mesh = maps.draw_field(ax_map, spec, skill, c.colormap(c.DIVERGING), norm, "CRPS skill against climatology")
    maps.add_colorbar(mesh, ax_map, "1 − CRPS / CRPS of the training values", "bottom", extend=extend)
    sampler = str(ds.attrs.get("sampler", "mcmc"))
    sampler = {"vi": "VI", "rejection": "exact rejection"}.get(sampler, sampler.upper())
    fig.suptitle(c.wrap_title(f"Posterior-predictive calibration of {c.field_name(ds)} on its last "
                              f"{ds.sizes['heldout']} values ({sampler})", c.FIG_WIDTH))
    return fig
