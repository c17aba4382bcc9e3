"""The moments stage: time statistics and the weighted covariance, streamed.

Reads a ``fields/{field}.zarr`` store (or any :class:`pipeline.stream.FieldSource`)
in blocks whose size is set by a memory budget, never the whole field at once,
and writes ``moments/{field}.zarr`` as described in ``docs/stores.md``:
per-cell ``mean``, ``std`` (divisor n−1) and ``count`` over valid time steps,
the ``valid`` mask of complete cells, the latitude ``weight``, the weighted
``covariance`` of the complete cells kept in the smaller dimension (attribute
``kind``), and the ``anomaly`` field when the field is small enough to keep.

How the covariance is accumulated depends on its kind:

* ``time`` (``n_time ≤ n_cells``): one pass over spatial *tiles* holding all
  time steps; each tile's statistics are exact (two-pass within the tile) and
  its share of the Gram matrix ``X_w X_wᵀ`` is added to the accumulator. Tiles
  can be split across jobs (``part``) and their partial sums merged by
  :func:`reduce`.
* ``space`` (``n_cells < n_time``): one pass over *time blocks* holding all
  cells, merging statistics and the co-moment matrix by Chan et al. (1983).
* ``none``: statistics only (for the randomized EOF solver, or when the
  covariance would exceed ``max_covariance_mb``).

Config section ``moments``: ``weights``, ``min_time_steps``, ``covariance``
(``auto`` | ``time`` | ``space`` | ``none``), ``memory_budget_mb``,
``precision`` (``float64`` | ``float32`` accumulation of the covariance; the
per-cell statistics are always accumulated in float64), ``max_covariance_mb``,
``store_anomaly_mb`` (keep ``anomaly`` when the field is at most this size),
``n_tiles`` (workflow: jobs the tile pass is split into).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from pipeline import grid, io, stream
from pipeline.backend import Backend, halve_budget_on_oom, resolve, to_numpy
from pipeline.kernels import streaming as ks

log = logging.getLogger(__name__)

STAGE = "moments"
KINDS = ("auto", "time", "space", "none")
PRECISIONS = ("float64", "float32")
DEFAULTS: dict[str, Any] = {
    "weights": "sqrt_coslat",
    "min_time_steps": 3,
    "covariance": "auto",
    "memory_budget_mb": 1024,
    "precision": "float64",
    "max_covariance_mb": 4096,
    "store_anomaly_mb": 256,
}


def _params(params: dict[str, Any]) -> dict[str, Any]:
    """The config section with defaults filled in, validated."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict (the 'moments' config section); got {type(params).__name__}.")
    p = {**DEFAULTS, **{k: v for k, v in params.items() if k != "n_tiles"}}
    if p["weights"] not in grid.WEIGHTS:
        raise ValueError(f"moments.weights must be one of {', '.join(grid.WEIGHTS)}; got {p['weights']!r}.")
    steps = p["min_time_steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"moments.min_time_steps must be an integer of at least 2; got {steps!r}.")
    if p["covariance"] not in KINDS:
        raise ValueError(f"moments.covariance must be one of {', '.join(KINDS)}; got {p['covariance']!r}.")
    if p["precision"] not in PRECISIONS:
        raise ValueError(f"moments.precision must be one of {', '.join(PRECISIONS)}; got {p['precision']!r}.")
    for key in ("memory_budget_mb", "max_covariance_mb", "store_anomaly_mb"):
        if not isinstance(p[key], (int, float)) or p[key] < 0:
            raise ValueError(f"moments.{key} must be a non-negative number; got {p[key]!r}.")
    return p


def tile_budget(memory_budget_mb: float, itemsize: int, accum_itemsize: int) -> int:
    """Bytes of stored data per tile so that a stage stays within ``memory_budget_mb``.

    Alive at once: the prefetched tiles (``stream`` keeps up to 4 host tiles)
    and, on the compute side, the temporaries of the kernels: about ten
    tile-sized arrays in the accumulation dtype (cast, masks, deviations,
    anomaly, weighted anomaly, products), measured with tracemalloc.
    Per-cell outputs (statistics, EOF maps) and the covariance come on top.
    """
    copies = 4 + 10 * accum_itemsize / itemsize
    return max(1, int(memory_budget_mb * 2**20 / copies))


def covariance_kind(requested: str, n_time: int, n_cells: int, max_mb: float) -> str:
    """The covariance to keep: the smaller dimension under ``auto``, ``none`` if too large."""
    kind = ("time" if n_time <= n_cells else "space") if requested == "auto" else requested
    size = {"time": n_time, "space": n_cells, "none": 0}[kind]
    if requested == "auto" and size * size * 8 > max_mb * 2**20:
        log.info("the %s covariance (%d x %d) exceeds max_covariance_mb=%s; keeping statistics only",
                 kind, size, size, max_mb)
        return "none"
    return kind


def _field_info(src: stream.FieldSource, min_steps: int) -> tuple[str, str]:
    name = str(src.attrs.get("field_name", "field"))
    if src.shape[0] < min_steps:
        raise ValueError(f"The {name} field has {src.shape[0]} time steps, fewer than moments.min_time_steps={min_steps}.")
    return name, src.units or str(src.attrs.get("field_units", "1"))


def _tile_pass(src, tiles, backend, weight_lat, accum, keep_gram, anomaly_out):
    """One pass over spatial tiles: per-cell statistics and the Gram sum."""
    xp = backend.xp
    n_time, n_lat, n_lon = src.shape
    stats = {k: np.full((n_lat, n_lon), np.nan) for k in ("mean", "m2", "count")}
    gram = xp.zeros((n_time, n_time), dtype=accum) if keep_gram else None
    w_all = backend.asarray(weight_lat, dtype=accum)
    for tile, block in stream.stream(src, tiles, backend, label=f"moments of {src.attrs.get('field_name', 'field')}"):
        raw = xp.reshape(block, (n_time, -1))
        m = ks.block_moments(raw, dtype=xp.float64)
        nlat_t, nlon_t = tile.shape[1:]
        for key, value in zip(("count", "mean", "m2"), m):
            stats[key][tile.lat, tile.lon] = to_numpy(value).reshape(nlat_t, nlon_t)
        if anomaly_out is None and gram is None:
            continue  # statistics only
        complete = m.count == n_time
        if anomaly_out is not None or not bool(xp.all(complete)):
            anomaly = xp.astype(raw, accum, copy=False) - xp.astype(m.mean, accum)[None, :]
            if anomaly_out is not None:
                anomaly_out[:, tile.lat, tile.lon] = to_numpy(anomaly).reshape(n_time, nlat_t, nlon_t)
            xw = xp.where(complete[None, :], anomaly, xp.zeros_like(anomaly))
        else:  # no missing values: one copy, centred in place
            xw = xp.astype(raw, accum, copy=True)
            xw -= xp.astype(m.mean, accum)[None, :]
        if gram is not None:
            w = xp.reshape(xp.broadcast_to(w_all[tile.lat][:, None], (nlat_t, nlon_t)), (-1,))
            xw *= w[None, :]
            gram = ks.gram_update(gram, xw)
    stats["count"] = np.nan_to_num(stats["count"]).astype(np.int64)
    return stats, gram


def _time_pass(src, blocks, backend, accum, anomaly_out, keep_comoment=True):
    """One pass over time blocks: Chan-merged statistics and (if asked) co-moment of all cells."""
    xp = backend.xp

    def block_stats(tile: stream.Tile, block: Any) -> tuple[ks.RunningMoments, ks.RunningComoment | None]:
        x = xp.reshape(block, (tile.shape[0], -1))
        if anomaly_out is not None:
            anomaly_out[tile.time] = to_numpy(x).reshape(tile.shape)  # centred after the pass
        como = ks.block_comoment(xp.astype(x, accum, copy=False)) if keep_comoment else None
        return ks.block_moments(x, dtype=xp.float64), como

    state, como = None, None
    label = f"moments of {src.attrs.get('field_name', 'field')}"
    for _, (part, part_c) in stream.imap(block_stats, src, blocks, backend, label=label):
        state = part if state is None else ks.merge_moments(state, part)
        if part_c is not None:
            como = part_c if como is None else ks.merge_comoment(como, part_c)
    shape = src.shape[1:]
    stats = {k: to_numpy(v).reshape(shape) for k, v in zip(("count", "mean", "m2"), state)}
    stats["count"] = stats["count"].astype(np.int64)
    if anomaly_out is not None:
        anomaly_out -= np.where(stats["count"] > 0, stats["mean"], np.nan)[None]
    return stats, None if como is None else como.comoment


def compute(
    source: Any,
    *,
    params: dict[str, Any],
    backend: Backend,
    part: tuple[int, int] | None = None,
) -> xr.Dataset:
    """Moments of a field, streamed in blocks within ``memory_budget_mb``.

    Parameters
    ----------
    source : path, xr.Dataset, xr.DataArray or FieldSource
        The field (see :func:`pipeline.stream.open_source`).
    params : dict
        The ``moments`` config section.
    backend : Backend
        Array backend for the kernels.
    part : (i, n), optional
        Compute only the i-th of n groups of spatial tiles and return a
        *partial* Dataset (statistics of those cells, unnormalized Gram sum)
        for :func:`reduce`; only for the ``time`` and ``none`` kinds.

    Returns
    -------
    xr.Dataset
        The moments store of ``docs/stores.md`` (or a partial one).
    """
    p = _params(params)
    src = stream.open_source(source)
    name, units = _field_info(src, p["min_time_steps"])
    n_time, n_lat, n_lon = src.shape
    accum = getattr(backend.xp, p["precision"])
    kind = covariance_kind(p["covariance"], n_time, n_lat * n_lon, p["max_covariance_mb"])
    if part is not None and kind == "space":
        raise ValueError(f"The {name} field needs the space covariance, which cannot be split over tiles; set moments.n_tiles: 1.")
    weight = grid.latitude_weights(xr.DataArray(src.lat, dims="lat", coords={"lat": src.lat}), p["weights"])
    keep_anomaly = part is None and src.nbytes <= p["store_anomaly_mb"] * 2**20
    anomaly = np.empty(src.shape, dtype=np.dtype(p["precision"])) if keep_anomaly else None
    budget = tile_budget(p["memory_budget_mb"], src.dtype.itemsize, np.dtype(p["precision"]).itemsize)
    if part is not None:  # at least as many tiles as parts, so that every job gets a share
        budget = min(budget, max(1, src.nbytes // part[1]))

    start = time.perf_counter()
    if kind == "space":
        stats, comoment = _time_pass(src, stream.plan_time_blocks(src, budget), backend, accum, anomaly)
    elif kind == "none" and part is None and src.in_memory:  # contiguous time blocks: no strided reductions
        stats, comoment = _time_pass(src, stream.plan_time_blocks(src, budget), backend, accum, anomaly, False)
    else:
        tiles = stream.plan_tiles(src, stream.tile_bytes(src, budget, backend), part=part)
        stats, comoment = _tile_pass(src, tiles, backend, weight.values, accum, kind == "time", anomaly)
    log.info("moments of %s: %d time steps x %d x %d cells, %s covariance, %s accumulation, %.2f s on %s",
             name, n_time, n_lat, n_lon, kind, p["precision"], time.perf_counter() - start, backend.name)
    ds = _statistics({"lat": src.lat, "lon": src.lon, "time": src.time}, name, units, stats, weight, anomaly)
    if part is not None:
        ds["m2"] = (("lat", "lon"), stats["m2"], {"long_name": "sum of squared deviations", "units": f"({units})^2"})
        if comoment is not None:
            ds["gram_sum"] = (("i", "j"), to_numpy(comoment), {"long_name": "partial Gram sum", "units": f"({units})^2"})
        ds.attrs.update(kind=kind, part=f"{part[0]}/{part[1]}")
        return ds
    return _with_covariance(ds, kind, comoment, weight, units)


def _statistics(axes: dict[str, np.ndarray], name: str, units: str, stats: dict[str, np.ndarray],
                weight: xr.DataArray, anomaly: np.ndarray | None) -> xr.Dataset:
    """The per-cell part of the store from host statistics (count, mean, m2) on the grid ``axes``."""
    coords = {"lat": ("lat", axes["lat"], {"units": "degrees_north", "standard_name": "latitude"}),
              "lon": ("lon", axes["lon"], {"units": "degrees_east", "standard_name": "longitude"}),
              "time": ("time", axes["time"], {"standard_name": "time"})}
    n_time = axes["time"].size
    count = stats["count"]
    mean = np.where(count > 0, stats["mean"], np.nan)
    std = np.sqrt(stats["m2"] / np.where(count > 1, count - 1, 1)) * np.where(count > 1, 1.0, np.nan)
    long = name
    ds = xr.Dataset(
        {
            "mean": (("lat", "lon"), mean, {"long_name": f"time mean over valid steps of {long}", "units": units,
                                            "cell_methods": "time: mean"}),
            "std": (("lat", "lon"), std, {"long_name": f"standard deviation (ddof=1) over valid steps of {long}",
                                          "units": units, "cell_methods": "time: standard_deviation"}),
            "count": (("lat", "lon"), count, {"long_name": f"number of valid time steps of {long}", "units": "1"}),
            "valid": (("lat", "lon"), count == n_time, {"long_name": f"complete cell (no missing time step) of {long}", "units": "1"}),
            "weight": weight,
        },
        coords=coords,
        attrs={"field_name": name, "field_units": units, "weighting": weight.attrs["weighting"],
               "n_samples": int(n_time), "n_complete_cells": int(np.sum(count == n_time))},
    )
    if anomaly is not None:
        ds["anomaly"] = (("time", "lat", "lon"), anomaly, {"long_name": f"anomaly of {long}", "units": units})
    return ds


def _with_covariance(ds: xr.Dataset, kind: str, comoment: Any, weight: xr.DataArray, units: str) -> xr.Dataset:
    """Finish the store: the weighted covariance of the complete cells, divisor n − 1."""
    n = ds.attrs["n_samples"]
    valid = ds["valid"].values
    if not (ds["count"].values > 0).any():
        raise ValueError(f"The {ds.attrs['field_name']} field is entirely missing (all values NaN).")
    if not valid.any():
        raise ValueError(
            f"The {ds.attrs['field_name']} field has no grid cell without missing values over time "
            f"({n} time steps); nothing can be analysed."
        )
    if kind == "none":
        return ds
    matrix = to_numpy(comoment)
    if kind == "space":
        flat = np.flatnonzero(valid.ravel())
        w = np.broadcast_to(weight.values[:, None], valid.shape).ravel()[flat]
        matrix = matrix[np.ix_(flat, flat)] * w[:, None] * w[None, :]
    ds["covariance"] = (("i", "j"), matrix / (n - 1.0), {
        "long_name": f"weighted covariance of {ds.attrs['field_name']} ({kind}, divisor n-1)",
        "units": f"({units})^2", "kind": kind})
    return ds


def reduce(partials: Sequence[xr.Dataset], *, params: dict[str, Any]) -> xr.Dataset:
    """Merge the partial Datasets of :func:`compute` (``part=...``) into the moments store.

    The parts hold disjoint cells, so statistics combine cell by cell and the
    Gram sums add.
    """
    _params(params)
    if not partials:
        raise ValueError("moments.reduce needs at least one partial result.")
    first = partials[0]
    kinds = {d.attrs.get("kind") for d in partials}
    if len(kinds) != 1:
        raise ValueError(f"The partial moments disagree on the covariance kind: {sorted(map(str, kinds))}.")
    count = sum(d["count"].values for d in partials)
    stats = {"count": count}
    for key in ("mean", "m2"):
        stats[key] = np.nansum([np.where(d["count"].values > 0, d[key].values, 0.0) for d in partials], axis=0)
    units = first.attrs["field_units"]
    weight = first["weight"]
    axes = {k: first[k].values for k in ("lat", "lon", "time")}
    ds = _statistics(axes, first.attrs["field_name"], units, stats, weight, None)
    gram = sum(d["gram_sum"].values for d in partials) if "gram_sum" in first else None
    return _with_covariance(ds, kinds.pop(), gram, weight, units)


def run(field_store: str | os.PathLike, output: str | os.PathLike, *, params: dict[str, Any],
        backend: str = "auto", part: tuple[int, int] | None = None,
        output_options: dict[str, Any] | None = None) -> None:
    """Read a fields store, compute its moments (or one part of them) and write the store.

    An out-of-memory error on the device retries once with ``memory_budget_mb``
    halved (:func:`pipeline.backend.halve_budget_on_oom`). The store keeps the
    field's grid bounds (:func:`pipeline.io.with_bounds`). ``output_options``:
    the ``output`` config section (a partial store of a tile job gets no netCDF copy).
    """
    b = resolve(backend)
    path = os.fspath(field_store)
    if not os.path.exists(path):
        raise FileNotFoundError(f"The fields store {path} does not exist; run the ingest stage first.")
    ds = halve_budget_on_oom(lambda p: compute(path, params=p, backend=b, part=part), params, section=STAGE,
                             default_mb=DEFAULTS["memory_budget_mb"], what=f"the moments of {path}")
    options = io.output_options(output_options)
    if part is not None:
        options["netcdf"] = False
    io.write_store(io.with_bounds(ds, path), output, stage=STAGE if part is None else f"{STAGE}_tile",
                   params=params, backend=b.name, output=options)


def run_reduce(partial_stores: Sequence[str | os.PathLike], output: str | os.PathLike, *,
               params: dict[str, Any], output_options: dict[str, Any] | None = None) -> None:
    """Merge the partial stores of the tile jobs into the moments store (with their grid bounds)."""
    partials = [io.open_store(s, what="partial moments store") for s in partial_stores]
    ds = io.with_bounds(reduce(partials, params=params), partials[0])
    io.write_store(ds, output, stage=STAGE, params=params, output=output_options)
