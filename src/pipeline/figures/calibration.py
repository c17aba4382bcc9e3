"""Figures of the calibration checks: SBC rank histograms (``sbc/{case}.zarr``)."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from scipy import stats

from pipeline.figures import _common as c

PASS_COLOUR, FAIL_COLOUR, BAND_COLOUR = "#4c72b0", "#c44e52", "0.55"
#: Readable names of the unconstrained parameters the kernels use.
PARAM_LABELS = {"log_sigma2": "log σ²", "log_sigma": "log σ", "mu": "μ", "mu_z": "μ (location)",
                "log_sigma_z": "log σ (scale)", "xi": "ξ (shape)"}


def param_label(name: str) -> str:
    """``beta_2`` -> ``β₂``; the others from :data:`PARAM_LABELS`."""
    if name.startswith("beta_"):
        return "β" + name[5:].translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))
    return PARAM_LABELS.get(name, name)


def sbc_ranks(ds: xr.Dataset) -> Figure:
    """Rank histograms of simulation-based calibration: one row per sampler, one panel per parameter.

    Each panel shows the cells per rank bin, the count expected under uniform
    ranks (line) and the central 99 % band of a binomial count per bin
    (grey; Talts et al. 2018, fig. 3), with the chi-squared p-value in its title,
    red when the test rejects uniformity at the store's level.
    """
    c.require(ds, ("counts", "p_value", "sampler", "param"), "sbc_ranks")
    samplers = list(dict.fromkeys(str(s) for s in ds["sampler"].values))
    params = list(dict.fromkeys(str(s) for s in ds["param"].values))
    n_bins = ds.sizes["bin"]
    cells = int(ds.attrs.get("cells", int(ds["counts"].isel(test=0).sum())))
    level = float(ds.attrs.get("level", 0.01))
    expected = cells / n_bins
    lo, hi = stats.binom.ppf([0.005, 0.995], cells, 1.0 / n_bins)
    fig = Figure(figsize=(2.6 * len(params) + 0.6, 2.1 * len(samplers) + 0.9), layout="constrained")
    axes = fig.subplots(len(samplers), len(params), squeeze=False, sharex=True, sharey=True)
    top = max(float(ds["counts"].max()), hi) * 1.08
    L = int(ds.attrs.get("n_ranks", n_bins - 1))
    width = (L + 1) / n_bins
    left = np.arange(n_bins) * width
    for i, sampler in enumerate(samplers):
        for j, param in enumerate(params):
            ax = axes[i, j]
            sel = (ds["sampler"] == sampler) & (ds["param"] == param)
            if not bool(sel.any()):
                ax.set_axis_off()
                continue
            row = ds.isel(test=int(np.flatnonzero(sel.values)[0]))
            pval = float(row["p_value"])
            ok = pval > level
            ax.axhspan(lo, hi, color=BAND_COLOUR, alpha=0.45, zorder=3, linewidth=0, label="99 % band if uniform")
            ax.bar(left, row["counts"].values, width=width, align="edge", color=PASS_COLOUR if ok else FAIL_COLOUR,
                   edgecolor="white", linewidth=0.5, zorder=1)
            ax.axhline(expected, color="0.3", linewidth=0.8, zorder=2, label="expected")
            ax.set_ylim(0, top)
            ax.set_xlim(0, L + 1)
            ax.set_title(f"{sampler}, {param_label(param)}: p = {pval:.2g}", fontsize=9,
                         color="black" if ok else FAIL_COLOUR)
            ax.set_ylabel("cells per bin" if j == 0 else "cells")
            if i == len(samplers) - 1:
                ax.set_xlabel(f"rank among {L} draws")
    axes[0, 0].legend(fontsize=7, loc="lower left", frameon=True)
    fig.suptitle(f"Simulation-based calibration of the {ds.attrs.get('case', c.field_name(ds))} model: "
                 f"{cells} simulated cells, χ² test at level {level:g}", fontsize=10)
    return fig
