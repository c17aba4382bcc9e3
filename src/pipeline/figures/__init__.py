"""Figures: one function per figure family, and :func:`make`, which saves one.

Families (each returns a :class:`matplotlib.figure.Figure`):

========================  ======================  ====================================
kind                      store                   shows
========================  ======================  ====================================
``eof_spectrum``          ``eof/{field}``         variance per mode, North error bars
``eof_maps``              ``eof/{field}``         leading EOFs as covariance maps
``eof_correlation``       ``eof/{field}``         leading EOFs as correlation maps
``pc_timeseries``         ``eof/{field}``         standardized PCs against year
``summary``               ``eof/{field}``         EOF 1 map, PC 1 and spectrum in one
``regression_maps``       ``regression/{t}``      coefficient maps and R²
``distribution_map``      ``distributions/{f}``   best family and its AIC margin
``distribution_fits``     ``distributions/{f}``   QQ and return-level plots at chosen cells
``gev_shape``             ``distributions/{f}``   map of the GEV shape ξ
``return_level_maps``     ``distributions/{f}``   T-year return level and its interval width
``conditional_maps``      ``joint/{f}``           ρ and P(Y > y_q | X > x_q) beside P(Y > y_q)
``conditional_mean_maps`` ``joint/{f}``           shift of E[Y | X = x] and the sd X leaves
``bayes_maps``            ``bayes/{f}``           posterior T-year level, its width, R-hat, ESS
``pit_histogram``         ``bayes/{f}``           PIT of held-out years and the CRPS skill map
``sbc_ranks``             ``sbc/{case}``          SBC rank histograms per sampler and parameter
``posterior_map``         ``posterior/{t}``       P(coefficient > 0), stippled CIs
``posterior_sd``          ``posterior/{t}``       posterior sd of each coefficient
========================  ======================  ====================================

Maps (projection chosen by the domain, coastlines, labelled gridlines,
layout) come from :mod:`pipeline.figures.maps`. Figures are built on
:class:`~matplotlib.figure.Figure` directly, without ``pyplot``: nothing is
registered globally, no GUI backend is touched (PNG is rendered by Agg) and a
figure is freed as soon as it is no longer referenced.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import xarray as xr
from matplotlib.figure import Figure

from pipeline import __version__, io
from pipeline.figures._common import clean_units, count
from pipeline.figures.bayes import bayes_maps, pit_histogram
from pipeline.figures.calibration import sbc_ranks
from pipeline.figures.eof import eof_correlation, eof_maps, eof_spectrum, pc_timeseries, summary
from pipeline.figures.extremes import distribution_fits, qq_plots, return_level_maps, return_level_plot, shape_map
from pipeline.figures.joint import conditional_maps, conditional_mean_maps
from pipeline.figures.fits import distribution_map, posterior_map, posterior_sd, regression_maps
from pipeline.figures.maps import PROJECTIONS

__all__ = [
    "KINDS",
    "Options",
    "bayes_maps",
    "clean_units",
    "conditional_maps",
    "conditional_mean_maps",
    "distribution_fits",
    "distribution_map",
    "eof_correlation",
    "eof_maps",
    "eof_spectrum",
    "make",
    "pc_timeseries",
    "pit_histogram",
    "posterior_map",
    "posterior_sd",
    "qq_plots",
    "regression_maps",
    "return_level_maps",
    "return_level_plot",
    "save_png",
    "sbc_ranks",
    "shape_map",
    "summary",
]

log = logging.getLogger(__name__)


class Options(NamedTuple):
    """What the builders take from the ``figures`` config section."""

    n_maps: int = 3
    projection: str = "auto"


def plot_cells(ds: xr.Dataset) -> list[dict[str, float]]:
    """The cells a distributions store names for its per-cell plots (``distributions.cells``; none: chosen there)."""
    raw = ds.attrs.get("plot_cells", "[]")
    return [{"lat": float(la), "lon": float(lo)} for la, lo in json.loads(raw)]


#: Figure kind -> (store it reads, builder taking the Dataset and the :class:`Options`).
KINDS: dict[str, tuple[str, Callable[[xr.Dataset, Options], Figure]]] = {
    "eof_spectrum": ("eof", lambda ds, o: eof_spectrum(ds)),
    "eof_maps": ("eof", lambda ds, o: eof_maps(ds, o.n_maps, o.projection)),
    "eof_correlation": ("eof", lambda ds, o: eof_correlation(ds, o.n_maps, o.projection)),
    "pc_timeseries": ("eof", lambda ds, o: pc_timeseries(ds, o.n_maps)),
    "summary": ("eof", lambda ds, o: summary(ds, o.projection)),
    "regression_maps": ("regression", lambda ds, o: regression_maps(ds, o.n_maps, o.projection)),
    "distribution_map": ("distributions", lambda ds, o: distribution_map(ds, o.projection)),
    "distribution_fits": ("distributions", lambda ds, o: distribution_fits(ds, plot_cells(ds), None)),
    "gev_shape": ("distributions", lambda ds, o: shape_map(ds, "gev", o.projection)),
    "return_level_maps": ("distributions", lambda ds, o: return_level_maps(ds, None, None, o.projection)),
    "conditional_maps": ("joint", lambda ds, o: conditional_maps(ds, "copula", o.projection)),
    "conditional_mean_maps": ("joint", lambda ds, o: conditional_mean_maps(ds, o.projection)),
    "bayes_maps": ("bayes", lambda ds, o: bayes_maps(ds, None, o.projection)),
    "pit_histogram": ("bayes", lambda ds, o: pit_histogram(ds, o.projection)),
    "sbc_ranks": ("sbc", lambda ds, o: sbc_ranks(ds)),
    "posterior_map": ("posterior", lambda ds, o: posterior_map(ds, o.n_maps, o.projection)),
    "posterior_sd": ("posterior", lambda ds, o: posterior_sd(ds, o.n_maps, o.projection)),
}
DEFAULTS = {"n_maps": 3, "dpi": 150, "projection": "auto"}


def _check_params(params: dict[str, Any]) -> tuple[Options, float]:
    """:class:`Options` and ``dpi`` from the ``figures`` config section (defaults when absent)."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be the 'figures' config section as a dict; got {type(params).__name__}.")
    n_maps = count(params.get("n_maps", DEFAULTS["n_maps"]), 10**9, "figures.n_maps")
    dpi = params.get("dpi", DEFAULTS["dpi"])
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not 10 <= dpi <= 2400:
        raise ValueError(f"figures.dpi must be a number between 10 and 2400; got {dpi!r}.")
    projection = params.get("projection", DEFAULTS["projection"])
    if projection not in PROJECTIONS:
        raise ValueError(f"figures.projection must be one of {', '.join(PROJECTIONS)}; got {projection!r}.")
    return Options(n_maps, projection), float(dpi)


def save_png(fig: Figure, output: str | os.PathLike, dpi: float, metadata: dict[str, str] | None = None) -> Path:
    """Save ``fig`` as PNG at ``output`` atomically.

    The image is rendered to a hidden temporary file in the same directory and
    renamed over ``output`` only once complete (:func:`os.replace` is atomic on
    one file system), so a killed job never leaves a half-written PNG; a
    temporary file left by a killed job is removed by the next save. The
    figure is laid out once before it is rendered: map gridline labels move
    with their axes, so constrained layout needs that second pass to keep
    them inside the figure.
    """
    output = Path(output)
    if output.suffix.lower() != ".png":
        raise ValueError(f"The figure output must be a .png file; got {str(output)!r}.")
    output.parent.mkdir(parents=True, exist_ok=True)
    for stale in output.parent.glob(f".{output.name}.tmp-*"):  # left by a killed job
        stale.unlink(missing_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        fig.draw_without_rendering()
        fig.savefig(tmp, format="png", dpi=dpi, metadata=metadata)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


def make(kind: str, store: str | os.PathLike, output: str | os.PathLike, *, params: dict[str, Any]) -> None:
    """Draw the figure ``kind`` from ``store`` and save it as a PNG at ``output``.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    store : path-like
        The Zarr store the figure reads (``eof``, ``regression``,
        ``distributions`` or ``posterior`` store, see :data:`KINDS`).
    output : path-like
        The PNG to write (atomically, see :func:`save_png`).
    params : dict
        The ``figures`` config section: ``n_maps`` (maps / panels drawn,
        default 3), ``dpi`` (default 150) and ``projection`` (default
        ``auto``: chosen by the domain, see :mod:`pipeline.figures.maps`).

    Raises
    ------
    ValueError
        If ``kind`` is unknown, a parameter is invalid, or the store lacks a
        variable the figure needs.
    """
    if kind not in KINDS:
        raise ValueError(f"Figure kind must be one of {', '.join(KINDS)}; got {kind!r}.")
    options, dpi = _check_params(params)
    what, build = KINDS[kind]
    start = time.perf_counter()
    ds = io.open_store(store, what=f"{what} store")
    fig = build(ds, options)
    metadata = {
        "Title": f"{kind}: {ds.attrs.get('field_name', 'field')}",
        "Software": f"pipeline {__version__} (pipeline.figures)",
        "Source": str(store),
    }
    save_png(fig, output, dpi, metadata)
    n_panels = sum(ax.get_label() != "<colorbar>" for ax in fig.axes)
    log.info("figure %s of %s: %d panel(s) -> %s at %g dpi in %.2f s",
             kind, store, n_panels, output, dpi, time.perf_counter() - start)
