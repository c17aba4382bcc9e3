"""Figures: one function per figure family, and :func:`make`, which saves one.

Families (each returns a :class:`matplotlib.figure.Figure`):

========================  ======================  ====================================
kind                      store                   shows
========================  ======================  ====================================
``eof_spectrum``          ``eof/{field}``         variance per mode, North error bars
``eof_maps``              ``eof/{field}``         leading EOFs as covariance maps
``pc_timeseries``         ``eof/{field}``         standardized PCs against year
``regression_maps``       ``regression/{t}``      coefficient maps and R²
``distribution_map``      ``distributions/{f}``   best family and its AIC margin
``posterior_map``         ``posterior/{t}``       P(coefficient > 0), stippled CIs
========================  ======================  ====================================

Figures are built on :class:`~matplotlib.figure.Figure` directly, without
``pyplot``: nothing is registered globally, no GUI backend is touched (PNG is
rendered by Agg) and a figure is freed as soon as it is no longer referenced.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xarray as xr
from matplotlib.figure import Figure

from pipeline import __version__, io
from pipeline.figures._common import count
from pipeline.figures.eof import eof_maps, eof_spectrum, pc_timeseries
from pipeline.figures.fits import distribution_map, posterior_map, regression_maps

__all__ = [
    "KINDS",
    "distribution_map",
    "eof_maps",
    "eof_spectrum",
    "make",
    "pc_timeseries",
    "posterior_map",
    "regression_maps",
    "save_png",
]

log = logging.getLogger(__name__)

#: Figure kind -> (store it reads, builder taking the Dataset and ``n_maps``).
KINDS: dict[str, tuple[str, Callable[[xr.Dataset, int], Figure]]] = {
    "eof_spectrum": ("eof", lambda ds, n: eof_spectrum(ds)),
    "eof_maps": ("eof", eof_maps),
    "pc_timeseries": ("eof", pc_timeseries),
    "regression_maps": ("regression", regression_maps),
    "distribution_map": ("distributions", lambda ds, n: distribution_map(ds)),
    "posterior_map": ("posterior", posterior_map),
}
DEFAULTS = {"n_maps": 3, "dpi": 150}


def _check_params(params: dict[str, Any]) -> tuple[int, float]:
    """``n_maps`` and ``dpi`` from the ``figures`` config section (defaults when absent)."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be the 'figures' config section as a dict; got {type(params).__name__}.")
    n_maps = count(params.get("n_maps", DEFAULTS["n_maps"]), 10**9, "figures.n_maps")
    dpi = params.get("dpi", DEFAULTS["dpi"])
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not 10 <= dpi <= 2400:
        raise ValueError(f"figures.dpi must be a number between 10 and 2400; got {dpi!r}.")
    return n_maps, float(dpi)


def save_png(fig: Figure, output: str | os.PathLike, dpi: float, metadata: dict[str, str] | None = None) -> Path:
    """Save ``fig`` as PNG at ``output`` atomically.

    The image is rendered to a hidden temporary file in the same directory and
    renamed over ``output`` only once complete (:func:`os.replace` is atomic on
    one file system), so a killed job never leaves a half-written PNG; a
    temporary file left by a killed job is removed by the next save.
    """
    output = Path(output)
    if output.suffix.lower() != ".png":
        raise ValueError(f"The figure output must be a .png file; got {str(output)!r}.")
    output.parent.mkdir(parents=True, exist_ok=True)
    for stale in output.parent.glob(f".{output.name}.tmp-*"):  # left by a killed job
        stale.unlink(missing_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
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
        default 3) and ``dpi`` (default 150).

    Raises
    ------
    ValueError
        If ``kind`` is unknown, a parameter is invalid, or the store lacks a
        variable the figure needs.
    """
    if kind not in KINDS:
        raise ValueError(f"Figure kind must be one of {', '.join(KINDS)}; got {kind!r}.")
    n_maps, dpi = _check_params(params)
    what, build = KINDS[kind]
    start = time.perf_counter()
    ds = io.open_store(store, what=f"{what} store")
    fig = build(ds, n_maps)
    metadata = {
        "Title": f"{kind}: {ds.attrs.get('field_name', 'field')}",
        "Software": f"pipeline {__version__} (pipeline.figures)",
        "Source": str(store),
    }
    save_png(fig, output, dpi, metadata)
    n_panels = sum(ax.get_label() != "<colorbar>" for ax in fig.axes)
    log.info("figure %s of %s: %d panel(s) -> %s at %g dpi in %.2f s",
             kind, store, n_panels, output, dpi, time.perf_counter() - start)
