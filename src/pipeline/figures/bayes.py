"""Maps of the bayes stage (``bayes/{field}.zarr``): return-level posteriors and sampler diagnostics."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from pipeline.figures import _common as c
from pipeline.figures import maps


def bayes_maps(ds: xr.Dataset, return_period: float | None = None, projection: str = "auto") -> Figure:
    """Posterior median of the T-year level, its credible-interval width, and the worst R-hat and bulk ESS.

    ``T`` is the longest stored period unless given. R-hat is drawn from 1 to
    ``max(1.05, its 99th percentile)`` with the flag threshold marked on the
    colorbar; ESS on a sequential scale from 0, the threshold marked too. Cells
    that fail the diagnostics carry a dot.
    """
    c.require(ds, ("return_level_median", "return_level_lower", "return_level_upper", "rhat", "ess_bulk"),
              "bayes_maps")
    periods = [float(t) for t in ds["return_period"].values]
    T = max(periods) if return_period is None else float(return_period)
    if T not in periods:
        raise ValueError(f"The bayes_maps figure's return period must be one of {periods}; got {T!r}.")
    level = float(ds.attrs.get("credible_level", 0.9))
    title = (f"Bayesian GEV of {c.field_name(ds)} ({ds.attrs.get('series', 'block maxima')})\n"
             f"{ds.attrs.get('sampler', 'mcmc').upper()}, {ds.attrs.get('chains', '?')} chains × "
             f"{ds.attrs.get('draws', '?')} draws")
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
    rhat = ds["rhat"].max("param")
    top = max(1.05, float(np.nanpercentile(rhat.values, 99))) if np.isfinite(rhat.values).any() else 1.05
    mesh = maps.draw_field(axes[2], spec, rhat, c.colormap(c.SEQUENTIAL), Normalize(1.0, top),
                           f"worst R-hat (flagged above {ds.attrs.get('rhat_max', 1.01):g})")
    maps.add_colorbar(mesh, axes[2], "R-hat", where, extend="max")
    ess = ds["ess_bulk"].min("param")
    enorm, eext = c.upper_norm(ess.values)
    mesh = maps.draw_field(axes[3], spec, ess, c.colormap(c.SEQUENTIAL), Normalize(0.0, enorm.vmax),
                           f"smallest bulk ESS (flagged below {ds.attrs.get('ess_min', 400):g})")
    maps.add_colorbar(mesh, axes[3], "effective draws", where, extend=eext)
    return fig
