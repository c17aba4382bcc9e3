"""Maps of the joint stage: a field Y against an index X, cell by cell (``joint/{field}.zarr``).

* :func:`conditional_maps` -- ρ and the exceedance probability of Y, marginal
  and given that X exceeds its quantile (fitted and counted);
* :func:`conditional_mean_maps` -- how far the mean of Y given X = x moves from
  Y's mean at each configured x, and how much of Y's spread X leaves.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.figure import Figure

from pipeline.figures import _common as c
from pipeline.figures import maps

#: Power of the probability colour scale (0..1) and its ticks: room for small tail probabilities.
PROBABILITY_GAMMA, PROBABILITY_TICKS = 0.5, (0.0, 0.02, 0.1, 0.25, 0.5, 1.0)
MODEL_NAMES = {"normal": "bivariate normal", "copula": "Gaussian copula"}
_SUBSCRIPT = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _subscript(q: float) -> str:
    """``0.9`` -> ``"₉₀"``: the percentile as a subscript."""
    return f"{100.0 * q:.4g}".translate(_SUBSCRIPT)


def _ordinal(q: float) -> str:
    """``0.9`` -> ``"90th"``, ``0.975`` -> ``"97.5th"``, ``0.01`` -> ``"1st"``."""
    pct = f"{100.0 * q:.4g}"
    tail = int(pct[-1]) if pct[-1].isdigit() and "." not in pct else 0
    teen = pct.endswith(("11", "12", "13"))
    return pct + ("th" if teen else {1: "st", 2: "nd", 3: "rd"}.get(tail, "th"))


def conditional_maps(joint_ds: xr.Dataset, model: str = "copula", projection: str = "auto") -> Figure:
    """Maps of ``ρ`` and of ``P(Y > y_q)``, ``P(Y > y_q | X > x_q)`` (``model`` and empirical).

    ``Y`` is the field, ``X`` the index series, ``y_q``/``x_q`` their
    ``q_y``/``q_x`` quantiles. ``ρ`` is drawn on a diverging scale centred on
    0 (``[-v, v]``, ``v`` the 99th percentile of ``|ρ|``, at most 1); the three
    probabilities on one sequential scale from 0 to 1, in its square root
    (:data:`PROBABILITY_GAMMA`): tail probabilities of 0.01-0.2 are what
    these maps are about, and a linear scale would draw them all alike.
    """
    ds = joint_ds
    c.require(ds, ("rho", "p_exceed", "p_exceed_given", "p_exceed_given_empirical"), "conditional_maps")
    models = [str(m) for m in ds["model"].values]
    if model not in models:
        raise ValueError(f"The conditional_maps figure's model must be one of {', '.join(models)}; got {model!r}.")
    name = MODEL_NAMES.get(model, model)
    sy, sx = _subscript(float(ds.attrs.get("q_y", 0.9))), _subscript(float(ds.attrs.get("q_x", 0.9)))
    index = str(ds.attrs.get("index_name", "index"))
    title = (f"Exceedances of {c.field_name(ds)} (Y) given {index} (X), {name}\n"
             f"y{sy}: {_ordinal(float(ds.attrs.get('q_y', 0.9)))} percentile of Y's fitted margin; "
             f"x{sx}: {_ordinal(float(ds.attrs.get('q_x', 0.9)))} percentile of X")
    spec = maps.map_spec(ds, projection)
    fig, axes, where = maps.map_panels(spec, 4, "each", title)
    rho = ds["rho"].sel(model=model)
    norm, extend = c.symmetric_norm(rho.values)
    if norm.vmax >= 1.0:
        norm, extend = Normalize(-1.0, 1.0), "neither"
    mesh = maps.draw_field(axes[0], spec, rho, c.colormap(c.DIVERGING), norm, f"Correlation ρ, {name}")
    maps.add_colorbar(mesh, axes[0], "correlation ρ", where, extend=extend)
    cond = f"P(Y > y{sy} | X > x{sx})"
    panels = [(ds["p_exceed"], f"P(Y > y{sy}), marginal"), (ds["p_exceed_given"].sel(model=model), f"{cond}, {name}"),
              (ds["p_exceed_given_empirical"], f"{cond}, empirical")]
    prob, cmap = PowerNorm(PROBABILITY_GAMMA, 0.0, 1.0), c.colormap(c.SEQUENTIAL)
    for ax, (da, text) in zip(axes[1:], panels):
        mesh = maps.draw_field(ax, spec, da, cmap, prob, text)
        maps.add_colorbar(mesh, ax, "probability", where, ticks=PROBABILITY_TICKS, format="%g")
    return fig


def _x_label(k: float) -> str:
    """``2.0`` -> ``"X = mean + 2 sd"``."""
    if k == 0:
        return "X = its mean"
    return f"X = mean {'+' if k > 0 else '−'} {abs(k):g} sd"


def conditional_mean_maps(joint_ds: xr.Dataset, projection: str = "auto") -> Figure:
    """Maps of ``E[Y | X = x] − E[Y]`` for each configured ``x`` and of ``sd[Y | X] / sd[Y]``.

    The shifts share one diverging scale centred on 0 in Y's units, so the
    maps of several ``x`` compare at a glance; the last map shows the share of
    Y's standard deviation left once X is known, ``sqrt(1 − ρ²)``, from 0 to 1
    (bivariate normal).
    """
    ds = joint_ds
    c.require(ds, ("conditional_mean", "conditional_sd", "mean_y", "sd_y"), "conditional_mean_maps")
    ks = [float(k) for k in ds["x_value"].values]
    shift = ds["conditional_mean"] - ds["mean_y"]
    index = str(ds.attrs.get("index_name", "index"))
    title = f"{c.field_name(ds)} (Y) given {index} (X): bivariate normal, {ds.attrs.get('period', '')}".rstrip(", ")
    spec = maps.map_spec(ds, projection)
    fig, axes, where = maps.map_panels(spec, len(ks) + 1, "each", title)
    norm, extend = c.symmetric_norm(shift.values)
    units = c.clean_units(str(ds["conditional_mean"].attrs.get("units", "")))
    for ax, k in zip(axes, ks):
        mesh = maps.draw_field(ax, spec, shift.sel(x_value=k), c.colormap(c.DIVERGING), norm,
                               f"E[Y | {_x_label(k)}] − E[Y]")
        maps.add_colorbar(mesh, ax, f"shift of the mean ({units})" if units else "shift of the mean", where,
                          extend=extend)
    ratio = (ds["conditional_sd"].isel(x_value=0) / ds["sd_y"]).drop_vars("x_value")
    mesh = maps.draw_field(axes[-1], spec, ratio, c.colormap(c.SEQUENTIAL), Normalize(0.0, 1.0),
                           "sd[Y | X] / sd[Y] = √(1 − ρ²)")
    maps.add_colorbar(mesh, axes[-1], "share of the sd left", where)
    return fig
