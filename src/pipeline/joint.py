"""Joint stage: joint, marginal and conditional distributions of a field against an index, per cell.

Reads a ``fields/{field}.zarr`` store (Y) and either an ``eof/{index}.zarr``
store (X = one of its PCs) or a second fields store on the same grid (X =
that field cell by cell), pairs their time steps as the regression does
(:func:`pipeline.timeaxis.align`), and writes ``joint/{field}.zarr`` (see
``docs/stores.md``): the bivariate-normal correlation and the conditional mean
and sd of Y given X = x, and the Gaussian copula over the margins of lowest AIC,
with the conditional exceedance probability ``P(Y > y_q | X > x_q)`` under both
beside the marginal one and the frequency counted in the data. The numbers come
from :mod:`pipeline.kernels.joint`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np
import xarray as xr

from pipeline import grid, io, timeaxis
from pipeline.backend import Backend, resolve, to_numpy
from pipeline.kernels import distributions as kd
from pipeline.kernels import joint as kj

log = logging.getLogger(__name__)

STAGE = "joint"
MODELS = ("normal", "copula")
MIN_SAMPLES = 5
DEFAULTS: dict[str, Any] = {"margins": ["normal", "gumbel_r", "gumbel_l"], "x_values": [-1.0, 1.0, 2.0],
                            "q_x": 0.8, "q_y": 0.8}


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """The ``joint`` section with defaults filled, refusing what cannot run in one sentence."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be the joint config section as a dict; got {type(params).__name__}.")
    p = {**DEFAULTS, **{k: v for k, v in params.items() if k != "fields"}}
    index = p.get("index")
    if not isinstance(index, dict) or "field" not in index:
        raise ValueError(f"joint.index must name the index, e.g. {{field: sst, mode: 1}}; got {index!r}.")
    p["index"] = {"mode": 1, **index}
    margins = p["margins"]
    if isinstance(margins, str) or not margins or any(m not in kd.FAMILIES or m == "gpd" for m in margins):
        raise ValueError(f"joint.margins must list families among {', '.join(f for f in kd.FAMILIES if f != 'gpd')}; "
                         f"got {margins!r}.")
    for key in ("q_x", "q_y"):
        if not 0 < float(p[key]) < 1:
            raise ValueError(f"joint.{key} must lie in (0, 1); got {p[key]!r}.")
    return p


@dataclass
class Paired:
    """Y and X on their common time steps: ``y`` (time, cell) and ``x`` (time, 1 or cell) on the host."""

    y: np.ndarray
    x: np.ndarray
    cells: grid.CellIndex
    index_name: str
    index_units: str
    period: str


def _dates(coord: xr.DataArray, what: str) -> np.ndarray:
    values = np.asarray(coord.values)
    if not timeaxis.is_dates(values):
        raise ValueError(f"The {what} time coordinate must hold dates; set the field's time_units at ingest.")
    return values


def pair(fields_ds: xr.Dataset, index_ds: xr.Dataset, index: dict[str, Any]) -> Paired:
    """Align Y with the index X in time (and, for a field index, in space)."""
    y, name = grid.field_of(fields_ds, MIN_SAMPLES, f"the {MIN_SAMPLES} a joint fit needs")
    mode, label = int(index.get("mode", 1)), str(index["field"])
    if mode >= 1:
        pc = index_ds.get("pc")
        if pc is None or set(pc.dims) != {"time", "mode"}:
            raise ValueError(f"The EOF store of {label!r} has no 'pc(time, mode)'; joint.index needs its PCs.")
        if mode > pc.sizes["mode"]:
            raise ValueError(f"joint.index asks for PC {mode} of {label!r}, but its EOF store holds "
                             f"{pc.sizes['mode']}; lower the mode or raise eof.n_modes.")
        x = pc.transpose("time", "mode").isel(mode=mode - 1)
        index_name, units = f"{label} PC {mode}", str(pc.attrs.get("units", "1"))
    else:
        x = grid.as_field(index_ds["field"], f"index field {label!r}")
        if x.sizes["lat"] != y.sizes["lat"] or x.sizes["lon"] != y.sizes["lon"] or not (
                np.allclose(x["lat"], y["lat"]) and np.allclose(x["lon"], y["lon"])):
            raise ValueError(f"The index field {label!r} is not on the grid of {name!r}; a field index (mode 0) "
                             "must share its latitudes and longitudes (regrid one of them first).")
        index_name, units = label, str(x.attrs.get("units", index_ds.attrs.get("field_units", "")))
    it, ix, kind = timeaxis.align(_dates(y["time"], f"{name} field"), _dates(x["time"], index_name),
                                  what=(f"field {name!r}", f"index {index_name}"))
    if it.size < MIN_SAMPLES:
        raise ValueError(f"Only {it.size} {kind} steps pair up between {name!r} and the index {index_name}; a joint "
                         f"fit needs at least {MIN_SAMPLES}.")
    y = y.isel(time=it)
    valid = y.notnull().all("time")
    if mode == 0:
        valid = valid & x.isel(time=ix).notnull().all("time")
    cells = grid.CellIndex(valid=valid, flat=np.flatnonzero(valid.values.ravel()))
    if cells.n_features == 0:
        raise ValueError(f"No cell of {name!r} is complete over the {it.size} steps it shares with {index_name}.")
    xv = grid.to_matrix(x.isel(time=ix), cells) if mode == 0 else np.asarray(x.isel(time=ix).values)[:, None]
    if np.isnan(xv).any():
        raise ValueError(f"The index {index_name} has missing values on the steps it shares with {name!r}.")
    return Paired(grid.to_matrix(y, cells).astype(np.float64), xv.astype(np.float64), cells, index_name, units,
                  timeaxis.period_label(y["time"].values, kind))


def _margin(v: Any, margins: tuple[str, ...]) -> tuple[Any, Any]:
    """The probability integral transform of each column under its family of lowest AIC, and that family's index."""
    fits = kd.fit_all(v, margins)
    xp = array_api_compat.array_namespace(v)
    u = xp.zeros_like(v)
    for i, name in enumerate(margins):
        cdf = kd.family(name).cdf(v, fits["params"][i, ...])
        u = xp.where(fits["best"] == i, cdf, u)
    return u, fits["best"]


def compute(fields_ds: xr.Dataset, index_ds: xr.Dataset, *, params: dict[str, Any], backend: Backend) -> xr.Dataset:
    """The joint store of a field against its index (see the module docstring and ``docs/stores.md``)."""
    p = check_params(params)
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be a pipeline.backend.Backend (see backend.resolve); got {type(backend).__name__}.")
    name = str(fields_ds.attrs.get("field_name", "field"))
    pr = pair(fields_ds, index_ds, p["index"])
    start = time.perf_counter()
    y, x = backend.asarray(pr.y), backend.asarray(pr.x)
    xp = backend.xp
    bvn = kj.bivariate_normal(x if pr.x.shape[1] > 1 else x[:, 0], y)
    # x_values are in index standard deviations, (x - mean_x) / sd_x = k: the conditional law in those units
    k = backend.asarray(np.asarray(p["x_values"], dtype=np.float64))
    cond = kj.conditional_normal(xp.zeros_like(bvn.mean_y), xp.ones_like(bvn.sd_y), bvn.mean_y, bvn.sd_y, bvn.rho, k)
    sd_x_host, mean_x_host = to_numpy(bvn.sd_x), to_numpy(bvn.mean_x)
    margins = tuple(p["margins"])
    u_y, best_y = _margin(y, margins)
    u_x, best_x = _margin(x, margins)
    cop = kj.gaussian_copula(u_x if pr.x.shape[1] > 1 else u_x[:, 0], u_y)
    q_x, q_y = float(p["q_x"]), float(p["q_y"])
    ex_n = kj.conditional_exceedance(bvn.rho, q_x, q_y)
    ex_c = kj.conditional_exceedance(cop.rho, q_x, q_y)
    emp = kj.empirical_conditional_exceedance(x if pr.x.shape[1] > 1 else x[:, 0], y, q_x, q_y)
    log.info("%s: joint law with %s over %s (%d steps) in %d cells on %s in %.2f s", name, pr.index_name, pr.period,
             pr.y.shape[0], pr.y.shape[1], backend.name, time.perf_counter() - start)
    cells = pr.cells
    units = str(fields_ds["field"].attrs.get("units", fields_ds.attrs.get("field_units", "")))
    xvals = np.asarray(p["x_values"], dtype=np.float64)
    h = {
        "rho": np.stack([to_numpy(bvn.rho), to_numpy(cop.rho)]),
        "mean_y": to_numpy(bvn.mean_y), "sd_y": to_numpy(bvn.sd_y),
        "conditional_mean": to_numpy(cond.mean),
        "conditional_sd": to_numpy(cond.sd),
        "p_exceed": to_numpy(ex_n.marginal),
        "p_exceed_given": np.stack([to_numpy(ex_n.conditional), to_numpy(ex_c.conditional)]),
        "p_exceed_given_empirical": to_numpy(emp.conditional),
        "margin_y": to_numpy(best_y).astype(np.float64),
    }
    mod, xk = {"model": np.array(MODELS)}, {"x_value": xvals}
    spec = {
        "rho": (mod, "1", "correlation of Y with the index"),
        "mean_y": ({}, units, "mean of Y"), "sd_y": ({}, units, "standard deviation of Y (divisor n)"),
        "conditional_mean": (xk, units, "mean of Y given X = x (bivariate normal)"),
        "conditional_sd": (xk, units, "standard deviation of Y given X = x (bivariate normal)"),
        "p_exceed": ({}, "1", f"P(Y > y_q), y_q the {q_y:g} quantile of Y"),
        "p_exceed_given": (mod, "1", f"P(Y > y_q | X > x_q), quantile levels {q_y:g} and {q_x:g}"),
        "p_exceed_given_empirical": ({}, "1", "P(Y > y_q | X > x_q) counted in the data"),
        "margin_y": ({}, "1", "index into the margins attribute of the family of Y's margin (lowest AIC)"),
    }
    data = {k: grid.from_matrix(h[k], cells, leading=lead, name=k, attrs={"units": u, "long_name": ln})
            for k, (lead, u, ln) in spec.items()}
    ds = xr.Dataset(data)
    ds["x_value"].attrs.update(units="1", long_name="index value in standard deviations from its mean")
    ds["model"].attrs.update(long_name="joint law: bivariate normal, or Gaussian copula over fitted margins")
    for dim in ("lat", "lon"):
        ds[dim].attrs.update(fields_ds[dim].attrs)
    index_margin = int(to_numpy(best_x).ravel()[0]) if pr.x.shape[1] == 1 else -1
    ds.attrs.update(field_name=name, field_units=units, index_name=pr.index_name, index_units=pr.index_units,
                    index_mean=float(np.mean(mean_x_host)) if pr.x.shape[1] == 1 else float("nan"),
                    index_sd=float(np.mean(sd_x_host)) if pr.x.shape[1] == 1 else float("nan"),
                    index_margin=margins[index_margin] if index_margin >= 0 else "per cell",
                    margins=" ".join(margins), q_x=q_x, q_y=q_y, n_samples=int(pr.y.shape[0]), period=pr.period)
    return ds


def run(field_store: str | os.PathLike, index_store: str | os.PathLike, output: str | os.PathLike, *,
        params: dict[str, Any], backend: str = "auto", output_options: dict[str, Any] | None = None) -> None:
    """Read the field and index stores, fit the joint laws, write the joint store."""
    fields_ds = io.open_store(field_store, what="fields store")
    index_ds = io.open_store(index_store, what="index store")
    b = resolve(backend)
    ds = compute(fields_ds, index_ds, params=params, backend=b)
    io.write_store(io.with_bounds(ds, fields_ds), output, stage=STAGE, params=params, backend=b.name,
                   output=output_options)
    log.info("wrote %s", output)
