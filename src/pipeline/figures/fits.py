"""Maps of the per-cell fits: regression, distributions and posterior stores."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.figures import _common as c

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


def regression_maps(regression_ds: xr.Dataset, n_maps: int | None = None) -> Figure:
    """One map per regression coefficient (at most ``n_maps``) and one of R².

    Coefficients (target units per predictor unit) share nothing but the
    colormap: each panel has its own zero-centred scale ``[-max|b|, max|b|]``.
    R² is drawn on a fixed sequential 0..1 scale.
    """
    c.require(regression_ds, ("coef", "r2"), "regression_maps")
    n = c.count(n_maps, regression_ds.sizes["predictor"])
    fig, axes = c.map_axes(regression_ds, n + 1)
    coef = regression_ds["coef"]
    cmap = c.colormap("RdBu_r")
    for k, ax in enumerate(axes[:n]):
        da = coef.isel(predictor=k)
        predictor = str(regression_ds["predictor"].values[k])
        c.draw_map(ax, da, cmap, c.symmetric_norm(da.values), f"Coefficient of {predictor}",
                   c.label(coef, "coefficient"))
    c.draw_map(axes[n], regression_ds["r2"], c.colormap("viridis"), Normalize(0.0, 1.0),
               "Coefficient of determination", c.label(regression_ds["r2"], "R²", "1"))
    fig.suptitle(regression_title(regression_ds))
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


def distribution_map(distributions_ds: xr.Dataset) -> Figure:
    """Categorical map of the best family (lowest AIC) and a map of how clearly it wins.

    The second panel shows ``ΔAIC`` (second best minus best) in the classes
    of :data:`DELTA_AIC_LEVELS`; with a single family it shows that family's
    Kolmogorov-Smirnov statistic instead.
    """
    ds = distributions_ds
    c.require(ds, ("best_family", "aic", "ks"), "distribution_map")
    names = family_names(ds)
    best = ds["best_family"].transpose("lat", "lon")
    fig, (ax_best, ax_delta) = c.map_axes(ds, 2)
    cmap = ListedColormap([f"C{k % 10}" for k in range(len(names))]).with_extremes(bad=c.MISSING_COLOUR)
    norm = BoundaryNorm(np.arange(len(names) + 1) - 0.5, len(names))
    valid = int((best >= 0).sum())
    mesh = c.draw_map(ax_best, best.where(best >= 0), cmap, norm, "Best family (lowest AIC)", "family",
                      ticks=np.arange(len(names)))
    share = [100.0 * int((best == k).sum()) / max(valid, 1) for k in range(len(names))]
    mesh.colorbar.set_ticklabels([f"{n} ({s:.0f}%)" for n, s in zip(names, share)])
    mesh.colorbar.minorticks_off()
    if len(names) > 1:
        dnorm = BoundaryNorm(DELTA_AIC_LEVELS, 256, extend="max")
        c.draw_map(ax_delta, aic_difference(ds), c.colormap("viridis"), dnorm, "Margin of the best family",
                   "ΔAIC, second best − best", extend="max")
    else:
        ks = best_ks(ds)
        knorm = Normalize(0.0, c.symmetric_limit(ks.values))  # 0 .. max KS
        c.draw_map(ax_delta, ks, c.colormap("viridis"), knorm, f"KS statistic of {names[0]}", "KS statistic")
    fig.suptitle(f"Distribution of {c.field_name(ds)} per grid cell")
    return fig


def credible_excludes_zero(ds: xr.Dataset) -> xr.DataArray:
    """True where the credible interval lies entirely above or below 0."""
    return (ds["ci_lower"] > 0) | (ds["ci_upper"] < 0)


def posterior_map(posterior_ds: xr.Dataset, n_maps: int | None = None) -> Figure:
    """``P(coefficient > 0)`` per predictor (at most ``n_maps``), stippled where significant.

    The diverging colormap is centred on 0.5 (no evidence either way) on
    ``[0, 1]``; a dot marks each cell whose equal-tailed credible interval
    excludes zero.
    """
    ds = posterior_ds
    c.require(ds, ("p_positive", "ci_lower", "ci_upper"), "posterior_map")
    n = c.count(n_maps, ds.sizes["predictor"])
    level = ds.attrs.get("credible_level")
    ci = f"{100 * float(level):.0f}% credible interval" if level is not None else "credible interval"
    fig, axes = c.map_axes(ds, n)
    cmap = c.colormap("RdBu_r")
    for k, ax in enumerate(axes):
        predictor = str(ds["predictor"].values[k])
        c.draw_map(ax, ds["p_positive"].isel(predictor=k), cmap, TwoSlopeNorm(0.5, 0.0, 1.0),
                   f"P(coefficient of {predictor} > 0)", "posterior probability", ticks=np.linspace(0, 1, 5))
        mask = credible_excludes_zero(ds.isel(predictor=k)).transpose("lat", "lon").values
        lat, lon = np.meshgrid(ds["lat"].values, ds["lon"].values, indexing="ij")
        ax.scatter(lon[mask], lat[mask], s=4.0, c="k", marker="o", linewidths=0)
    dot = Line2D([], [], ls="", marker="o", ms=2.5, color="k", label=f"{ci} excludes 0")
    fig.legend(handles=[dot], loc="outside lower center", frameon=False)
    fig.suptitle(f"Posterior sign of the regression coefficients of {c.field_name(ds)}")
    return fig
