"""Maps of the per-cell fits: regression, distributions and posterior stores."""

from __future__ import annotations

import numpy as np
import xarray as xr
import cartopy.crs as ccrs
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.figures import _common as c
from pipeline.figures import maps

#: Class edges of the AIC difference (Burnham & Anderson 2002: below 2 both
#: families are supported, 4-7 considerably less, above 10 essentially none).
DELTA_AIC_LEVELS = (0.0, 2.0, 4.0, 7.0, 10.0)


def regression_title(ds: xr.Dataset) -> str:
    """Two lines: ``"Ridge regression of z500 on 3 predictors, 1950 .. 2020"`` (and the lag) and the penalty."""
    method = str(ds.attrs.get("method", "regression"))
    alpha = float(ds["alpha"]) if "alpha" in ds else 0.0
    penalty = "no penalty" if alpha == 0.0 else f"penalty α = {alpha:.3g} (for standardized predictors)"
    name = method.upper() if method == "ols" else method.capitalize()
    period = ds.attrs.get("period", ds.attrs.get("years"))
    lag = int(ds.attrs.get("lag", 0) or 0)
    head = f"{name} regression of {c.field_name(ds)} on {ds.sizes['predictor']} predictors"
    head += f", {period}" if period else ""
    head += f", predictors leading by {lag} step{'s' if abs(lag) != 1 else ''}" if lag else ""
    return head + "\n" + penalty


def regression_maps(regression_ds: xr.Dataset, n_maps: int | None = None, projection: str = "auto") -> Figure:
    """One map per regression coefficient (at most ``n_maps``) and one of R².

    Coefficients (target units per predictor unit) have each their own
    zero-centred scale ``[-v, v]``, ``v`` the 99th percentile of ``|b|``; R² is drawn on a sequential
    scale from 0 to its 99th percentile over the cells (an arrow on the
    colorbar when some cells exceed it), so a weak fit still shows its pattern.
    """
    c.require(regression_ds, ("coef", "r2"), "regression_maps")
    n = c.count(n_maps, regression_ds.sizes["predictor"])
    spec = maps.map_spec(regression_ds, projection)
    fig, axes, where = maps.map_panels(spec, n + 1, "each", regression_title(regression_ds))
    coef = regression_ds["coef"]
    cmap = c.colormap(c.DIVERGING)
    for k, ax in enumerate(axes[:n]):
        da = coef.isel(predictor=k)
        predictor = str(regression_ds["predictor"].values[k])
        norm, extend = c.symmetric_norm(da.values)
        mesh = maps.draw_field(ax, spec, da, cmap, norm, f"Coefficient of {predictor}")
        maps.add_colorbar(mesh, ax, c.label(coef, "coefficient"), where, extend=extend)
    r2 = regression_ds["r2"]
    norm, extend = c.upper_norm(r2.values)
    mesh = maps.draw_field(axes[n], spec, r2, c.colormap(c.SEQUENTIAL), norm, "Coefficient of determination")
    maps.add_colorbar(mesh, axes[n], c.label(r2, "R²", "1"), where, extend=extend)
    return fig


def family_names(ds: xr.Dataset) -> list[str]:
    """The fitted families, in the order ``best_family`` indexes them."""
    return [str(f) for f in ds["family"].values]


def aic_difference(ds: xr.Dataset) -> xr.DataArray:
    """AIC of the second-best family minus AIC of the best one, NaN where no fit.

    ``ΔAIC ≥ 0``; the larger it is, the more clearly the best family wins.
    """
    aic = ds["aic"].transpose("family", "lat", "lon").values.astype(np.float64)
    ordered = np.sort(aic, axis=0)  # NaN last
    delta = ordered[1] - ordered[0]
    delta = np.where(ds["best_family"].transpose("lat", "lon").values >= 0, delta, np.nan)
    return xr.DataArray(delta, dims=("lat", "lon"), coords={"lat": ds["lat"], "lon": ds["lon"]},
                        name="delta_aic", attrs={"units": "1", "long_name": "AIC(second best) − AIC(best)"})


def best_ks(ds: xr.Dataset) -> xr.DataArray:
    """The KS statistic of the best family in each cell, NaN where no fit."""
    best = ds["best_family"]
    ks = ds["ks"].isel(family=best.clip(min=0).astype(int))
    return ks.where(best >= 0).drop_vars("family", errors="ignore")


def distribution_map(distributions_ds: xr.Dataset, projection: str = "auto") -> Figure:
    """Categorical map of the best family (lowest AIC) and a map of how clearly it wins.

    The second panel shows ``ΔAIC`` (second best minus best) in the classes
    of :data:`DELTA_AIC_LEVELS`; with a single family it shows that family's
    Kolmogorov-Smirnov statistic instead (0 to its maximum).
    """
    ds = distributions_ds
    c.require(ds, ("best_family", "aic", "ks"), "distribution_map")
    names = family_names(ds)
    best = ds["best_family"].transpose("lat", "lon")
    spec = maps.map_spec(ds, projection)
    fig, (ax_best, ax_delta), where = maps.map_panels(spec, 2, "each",
                                                      f"Distribution of {c.field_name(ds)} per grid cell")
    cmap = ListedColormap([f"C{k % 10}" for k in range(len(names))]).with_extremes(bad=c.MISSING_COLOUR)
    norm = BoundaryNorm(np.arange(len(names) + 1) - 0.5, len(names))
    valid = int((best >= 0).sum())
    mesh = maps.draw_field(ax_best, spec, best.where(best >= 0), cmap, norm, "Best family (lowest AIC)")
    cbar = maps.add_colorbar(mesh, ax_best, "family", where, ticks=np.arange(len(names)))
    share = [100.0 * int((best == k).sum()) / max(valid, 1) for k in range(len(names))]
    cbar.set_ticklabels([f"{n} ({s:.0f}%)" for n, s in zip(names, share)])
    cbar.minorticks_off()
    if len(names) > 1:
        dnorm = BoundaryNorm(DELTA_AIC_LEVELS, 256, extend="max")
        mesh = maps.draw_field(ax_delta, spec, aic_difference(ds), c.colormap(c.SEQUENTIAL), dnorm,
                               "Margin of the best family")
        maps.add_colorbar(mesh, ax_delta, "ΔAIC, second best − best", where, extend="max")
    else:
        ks = best_ks(ds)
        knorm = Normalize(0.0, c.symmetric_limit(ks.values))  # 0 .. max KS
        mesh = maps.draw_field(ax_delta, spec, ks, c.colormap(c.SEQUENTIAL), knorm, f"KS statistic of {names[0]}")
        maps.add_colorbar(mesh, ax_delta, "KS statistic", where)
    return fig


def credible_excludes_zero(ds: xr.Dataset) -> xr.DataArray:
    """True where the credible interval lies entirely above or below 0."""
    return (ds["ci_lower"] > 0) | (ds["ci_upper"] < 0)


def credible_label(ds: xr.Dataset) -> str:
    """``"90% credible interval"`` from the store's ``credible_level``."""
    level = ds.attrs.get("credible_level")
    return f"{100 * float(level):.0f}% credible interval" if level is not None else "credible interval"


def posterior_map(posterior_ds: xr.Dataset, n_maps: int | None = None, projection: str = "auto") -> Figure:
    """``P(coefficient > 0)`` per predictor (at most ``n_maps``), stippled where significant.

    The diverging colormap is centred on 0.5 (no evidence either way) on
    ``[0, 1]``, one colorbar for all panels; a dot marks each cell whose
    equal-tailed credible interval excludes zero.
    """
    ds = posterior_ds
    c.require(ds, ("p_positive", "ci_lower", "ci_upper"), "posterior_map")
    n = c.count(n_maps, ds.sizes["predictor"])
    spec = maps.map_spec(ds, projection)
    fig, axes, _ = maps.map_panels(spec, n, "shared", f"Posterior sign of the coefficients of {c.field_name(ds)}")
    cmap = c.colormap(c.DIVERGING)
    lat, lon = np.meshgrid(ds["lat"].values, ds["lon"].values, indexing="ij")
    for k, ax in enumerate(axes):
        predictor = str(ds["predictor"].values[k])
        mesh = maps.draw_field(ax, spec, ds["p_positive"].isel(predictor=k), cmap, TwoSlopeNorm(0.5, 0.0, 1.0),
                               f"P(coefficient of {predictor} > 0)")
        mask = credible_excludes_zero(ds.isel(predictor=k)).transpose("lat", "lon").values
        ax.scatter(lon[mask], lat[mask], s=3.0, c="k", marker="o", linewidths=0, transform=ccrs.PlateCarree())
    maps.add_colorbar(mesh, axes, "posterior probability", "shared", ticks=np.linspace(0, 1, 5))
    dot = Line2D([], [], ls="", marker="o", ms=2.5, color="k", label=f"{credible_label(ds)} excludes 0")
    fig.legend(handles=[dot], loc="outside lower center", frameon=False)
    return fig


def posterior_sd(posterior_ds: xr.Dataset, n_maps: int | None = None, projection: str = "auto") -> Figure:
    """Posterior standard deviation of each coefficient (at most ``n_maps``), one map per predictor.

    Drawn from the store's ``sd`` (from the draws; target units per
    predictor unit, the same for every predictor) on one sequential scale from
    0 to the 99th percentile over all panels, so the panels compare: a darker
    panel is a better-constrained coefficient. The title gives the median
    width of the credible interval (``ci_upper - ci_lower``) in sd.
    """
    ds = posterior_ds
    c.require(ds, ("sd", "ci_lower", "ci_upper"), "posterior_sd")
    n = c.count(n_maps, ds.sizes["predictor"])
    sd = ds["sd"].isel(predictor=slice(0, n))
    width = (ds["ci_upper"] - ds["ci_lower"]).isel(predictor=slice(0, n)).values
    ok = np.isfinite(width) & np.isfinite(sd.values) & (sd.values > 0)
    ratio = f"{np.median(width[ok] / sd.values[ok]):.2f} sd" if ok.any() else "– sd"
    draws = ds.attrs.get("n_draws")
    title = (f"Posterior sd of the coefficients of {c.field_name(ds)}\n"
             + (f"{draws} draws; " if draws is not None else "")
             + f"{credible_label(ds).replace(' credible', '')} {ratio} wide (median)")
    spec = maps.map_spec(ds, projection)
    fig, axes, _ = maps.map_panels(spec, n, "shared", title)
    norm, extend = c.upper_norm(sd.values)
    cmap = c.colormap(c.SEQUENTIAL)
    for k, ax in enumerate(axes):
        title = f"Coefficient of {sd['predictor'].values[k]}"
        mesh = maps.draw_field(ax, spec, sd.isel(predictor=k), cmap, norm, title)
    maps.add_colorbar(mesh, axes, c.label(ds["sd"], "posterior standard deviation"), "shared", extend=extend)
    return fig
