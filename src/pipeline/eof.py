"""The eof stage: leading EOFs, PCs and their diagnostics, streamed.

Reads a field (``fields/{field}.zarr``) and its moments store and writes
``eof/{field}.zarr`` as described in ``docs/stores.md``. The field is read in
blocks within ``memory_budget_mb``; anomalies are formed on the fly from the
stored mean, weighted by the stored latitude weight, over the complete cells.

Methods (``docs/methods.md`` gives passes, memory and accuracy):

* ``gram`` -- eigendecomposition of the ``n × n`` Gram matrix kept by the
  moments stage, then one projection pass over spatial tiles giving the EOFs
  and the correlation/covariance maps.
* ``space`` -- eigendecomposition of the ``p × p`` covariance kept by the
  moments stage, then one pass over time blocks giving the PCs and the maps.
* ``randomized`` -- randomized block Krylov on the time side (Musco & Musco
  2015): ``power_iterations + 1`` passes, each adding an ``n × l`` block to an
  orthonormal basis and keeping ``X_wᵀ`` of it, then a Rayleigh–Ritz step on
  the small ``B Bᵀ``; the tiles are used raw (centring and weighting enter as
  rank-one corrections). Needs no covariance.
* ``exact`` -- the thin SVD of the whole weighted anomaly matrix, in memory.

``auto`` (see :func:`choose_method`) takes ``exact`` for small matrices,
otherwise the covariance the moments stage kept, otherwise ``randomized``.
The aliases ``time`` and ``svd`` mean ``gram`` and ``exact``.

Sign rule (``eof.sign``, :mod:`pipeline.eof_sign`): by default the
largest-magnitude element of each EOF is positive; rules can instead fix a
mode's sign at a point or by its PC's correlation with a reference series. Its
PC and maps flip with it, and the store records the convention in the
attribute ``sign_convention``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import numpy as np
import xarray as xr

from pipeline import eof_sign, grid, io, moments, stream
from pipeline.backend import Backend, halve_budget_on_oom, resolve, to_numpy
from pipeline.kernels import eof as kernels
from pipeline.kernels import streaming as ks

log = logging.getLogger(__name__)

STAGE = "eof"
METHODS = ("auto", "gram", "space", "randomized", "exact")
ALIASES = {"time": "gram", "svd": "exact"}
DEFAULTS: dict[str, Any] = {
    "n_modes": 5,
    "method": "auto",
    "memory_budget_mb": 1024,
    "precision": "float64",
    "power_iterations": 4,
    "oversample": 4,
    "seed": 0,
    "exact_max_mb": 64,
}
CENTRE_ABOVE = 10.0
"""``|mean|/std`` above which ``randomized`` centres raw tiles before float32 products."""


def _params(params: dict[str, Any]) -> dict[str, Any]:
    """The config section with defaults, validated; method aliases resolved."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict (the 'eof' config section); got {type(params).__name__}.")
    p = {**DEFAULTS, **{k: v for k, v in params.items() if k != "fields"}}
    n_modes = p["n_modes"]
    if isinstance(n_modes, bool) or not isinstance(n_modes, int) or n_modes < 1:
        raise ValueError(f"eof.n_modes must be an integer of at least 1; got {n_modes!r}.")
    p["method"] = ALIASES.get(p["method"], p["method"])
    if p["method"] not in METHODS:
        raise ValueError(f"eof.method must be one of {', '.join(METHODS)}; got {params.get('method')!r}.")
    if p["precision"] not in moments.PRECISIONS:
        raise ValueError(f"eof.precision must be one of {', '.join(moments.PRECISIONS)}; got {p['precision']!r}.")
    for key in ("power_iterations", "oversample", "seed"):
        if isinstance(p[key], bool) or not isinstance(p[key], int) or p[key] < 0:
            raise ValueError(f"eof.{key} must be a non-negative integer; got {p[key]!r}.")
    p["sign"] = eof_sign.check(p.get("sign", eof_sign.DEFAULT), n_modes)
    return p


def choose_method(n_time: int, n_cells: int, kind: str | None, exact_max_mb: float = 64) -> str:
    """What ``auto`` picks for an ``n_time × n_cells`` matrix whose moments kept covariance ``kind``.

    ``exact`` when the float64 matrix is at most ``exact_max_mb``; otherwise
    ``gram`` or ``space`` when the moments stage kept that covariance;
    otherwise ``randomized``.
    """
    if n_time * n_cells * 8 <= exact_max_mb * 2**20:
        return "exact"
    if kind == "time":
        return "gram"
    if kind == "space":
        return "space"
    return "randomized"


class _Field:
    """The pieces every method needs: source, complete cells, mean, weights, accumulation dtype."""

    def __init__(self, src: stream.FieldSource, mom: xr.Dataset, backend: Backend, precision: str, budget_mb: float):
        self.src, self.backend, self.xp = src, backend, backend.xp
        self.name = str(mom.attrs.get("field_name", src.attrs.get("field_name", "field")))
        self.accum = getattr(self.xp, precision)
        valid = mom["valid"].values.astype(bool)
        self.cells = grid.CellIndex(valid=mom["valid"].astype(bool), flat=np.flatnonzero(valid.ravel()))
        self.valid = valid
        self.mean = np.where(valid, mom["mean"].values, 0.0)
        self.weight = np.broadcast_to(mom["weight"].values[:, None], valid.shape) * valid
        std = mom["std"].values
        self.std = np.where(valid, std, np.nan)
        self.total_variance = float(np.sum((self.weight * np.where(valid, std, 0.0)) ** 2))
        self.n = src.shape[0]
        self.budget = moments.tile_budget(budget_mb, src.dtype.itemsize, np.dtype(precision).itemsize)
        # float32 products of raw values lose about log10(|mean|/std) digits to cancellation: centre such tiles first
        spread = np.abs(self.mean) / np.where(valid & (std > 0), std, np.inf)
        self.centre_raw = precision == "float32" and bool(np.any(spread > CENTRE_ABOVE))
        self._complete: dict[int, tuple[np.ndarray, Any, Any, Any]] = {}

    def weighted(self, tile: stream.Tile, block: Any) -> tuple[Any, Any]:
        """Anomaly (NaN-free, zero off the complete cells) and weighted anomaly of one block."""
        xp = self.xp
        n_t = tile.shape[0]
        mean = self.backend.asarray(self.mean[tile.lat, tile.lon].ravel(), dtype=self.accum)
        w = self.backend.asarray(self.weight[tile.lat, tile.lon].ravel(), dtype=self.accum)
        valid = self.backend.asarray(self.valid[tile.lat, tile.lon].ravel())
        x = xp.reshape(xp.astype(block, self.accum, copy=False), (n_t, -1)) - mean[None, :]
        a = xp.where(valid[None, :], x, xp.zeros_like(x))
        return a, a * w[None, :]

    def complete(self, tile: stream.Tile, block: Any) -> tuple[Any, Any, Any, np.ndarray]:
        """The complete cells of one tile, uncentred and unweighted: ``(x, mean, w, index)``.

        ``x`` is ``(time, complete cells of the tile)`` in the accumulation
        dtype (one copy of the tile's complete columns); the weighted anomaly is
        ``(x − 1 meanᵀ) diag(w)`` and is never formed. ``index`` gives the
        columns' positions among the tile's cells. With :attr:`centre_raw`
        (float32 products of values far from zero) ``x`` comes centred and
        ``mean`` as zeros.
        """
        xp = self.xp
        if tile.index not in self._complete:  # the same tiles come back pass after pass
            index = np.flatnonzero(self.valid[tile.lat, tile.lon].ravel())
            self._complete[tile.index] = (
                index, None if index.size == tile.n_cells else self.backend.asarray(index),
                self.backend.asarray(self.mean[tile.lat, tile.lon].ravel()[index], dtype=self.accum),
                self.backend.asarray(self.weight[tile.lat, tile.lon].ravel()[index], dtype=self.accum))
        index, take, mean, w = self._complete[tile.index]
        x = xp.reshape(block, (tile.shape[0], -1))
        if take is not None:  # copy only when some cells are not complete
            x = xp.take(x, take, axis=1)
        x = xp.astype(x, self.accum, copy=False)
        if self.centre_raw:
            return x - mean[None, :], xp.zeros_like(mean), w, index
        return x, mean, w, index

    def tiles(self) -> list[stream.Tile]:
        return stream.plan_tiles(self.src, stream.tile_bytes(self.src, self.budget, self.backend))

    def stream(self, tiles: list[stream.Tile], what: str):
        return stream.stream(self.src, tiles, self.backend, label=f"{what} of {self.name}")


def _check_rank(values: np.ndarray, shape: tuple[int, int], n_modes: int, name: str) -> int:
    rank = kernels.numerical_rank(values, shape)
    if n_modes > rank:
        raise ValueError(f"n_modes={n_modes} exceeds the rank ({rank}) of the {name} anomalies; ask for at most {rank} modes.")
    return rank


def _leading_eigenpairs(f: _Field, matrix: np.ndarray, n_modes: int) -> tuple[Any, Any, int]:
    """The ``n_modes`` leading eigenvalues and vectors of a stored covariance, and its numerical rank."""
    xp = f.xp
    values, vectors = xp.linalg.eigh(f.backend.asarray(matrix, dtype=f.accum))
    values, vectors = xp.flip(values, axis=0), xp.flip(vectors, axis=1)
    rank = _check_rank(values, (f.n, f.cells.n_features), n_modes, f.name)
    return values[:n_modes], vectors[:, :n_modes], rank


def _grids(f: _Field, per_cell: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``(mode, lat, lon)`` grids from ``(complete cell, mode)`` host arrays, NaN elsewhere."""
    nlat, nlon = f.cells.valid.shape
    grids = {}
    for key, values_fk in per_cell.items():
        full = np.full((values_fk.shape[1], nlat * nlon), np.nan)
        full[:, f.cells.flat] = values_fk.T
        grids[key] = full.reshape(-1, nlat, nlon)
    return grids


def _projection_pass(f: _Field, u: Any, s: Any) -> dict[str, np.ndarray]:
    """EOFs and maps from time-side singular vectors ``u`` and values ``s``: one pass, one product per tile.

    Per tile ``G_t = A_tᵀ U`` from the raw complete columns (centring as a
    rank-one correction); then ``EOF = W G / s`` and ``Aᵀ PC = G s``, whose
    quotients by the stored standard deviations and the PC norms are the
    maps, written into the grids tile by tile.
    """
    xp = f.xp
    k = u.shape[1]
    u_acc = xp.astype(u, f.accum)
    s_host = to_numpy(s)
    pc = to_numpy(u) * s_host[None, :]
    pc_norm = np.linalg.norm(pc, axis=0)

    def step(tile: stream.Tile, block: Any) -> tuple[Any, np.ndarray]:
        x, mean, w, cells = f.complete(tile, block)
        return ks.implicit_range(x, mean, xp.ones_like(w), u_acc), cells

    nlat, nlon = f.cells.valid.shape
    out = {key: np.full((k, nlat, nlon), np.nan) for key in ("eof", "correlation", "covariance")}
    for tile, (g, cells) in stream.imap(step, f.src, f.tiles(), f.backend, label=f"eof projection of {f.name}"):
        g = to_numpy(g)
        w = f.weight[tile.lat, tile.lon].ravel()[cells]
        std = f.std[tile.lat, tile.lon].ravel()[cells]
        maps = _cell_maps(f, w[:, None] * g / s_host[None, :], g * s_host[None, :], std, pc_norm)
        for key, values in maps.items():
            box = np.full((k, tile.n_cells), np.nan)
            box[:, cells] = values.T
            out[key][:, tile.lat, tile.lon] = box.reshape(k, *tile.shape[1:])
    out["pc"] = pc
    return out


def _gram(f: _Field, mom: xr.Dataset, n_modes: int) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    lam, u, rank = _leading_eigenpairs(f, mom["covariance"].values, n_modes)
    return _projection_pass(f, u, f.xp.sqrt(lam * (f.n - 1.0))), to_numpy(lam), rank


def _randomized(f: _Field, p: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """Randomized block Krylov on the time side, finished by Rayleigh–Ritz (Musco & Musco 2015).

    The time-side basis starts from a random ``n × l`` block orthogonal to the
    constant (as the anomalies' columns are) and grows by one block per pass:
    pass ``i`` computes, tile by tile, ``Z_i = X_wᵀ Q_i`` and
    ``Y_i = X_w Z_i = X_w X_wᵀ Q_i`` (two products while the tile is in cache);
    ``Q_{i+1}`` is ``Y_i`` orthonormalized against every earlier block. With
    ``Q = [Q_0 … Q_b]`` the Ritz pairs ``(s², Ũ)`` are those of
    ``Qᵀ X_w X_wᵀ Q``, the PCs ``Q Ũ s`` and the EOFs ``X_wᵀ Q Ũ / s``. Two
    finishes, the same numbers:

    * when the ``Z_i`` fit in half of ``memory_budget_mb`` they are kept, the
      last pass computes only ``Z_b``, ``Qᵀ X_w X_wᵀ Q = B Bᵀ`` with
      ``Bᵀ = [Z_0 … Z_b]``, the EOFs are ``Bᵀ Ũ / s`` and the maps follow from
      the stored standard deviations: ``b + 1`` passes;
    * otherwise ``Qᵀ X_w X_wᵀ Q = Qᵀ [Y_0 … Y_b]`` from the time side alone
      and one projection pass (as for ``gram``) gives the EOFs and maps:
      ``b + 2`` passes, memory independent of the number of cells.
    """
    xp, k, n = f.xp, p["n_modes"], f.n
    width = max(1, min(-(-(k + p["oversample"]) // 8) * 8, n - 1))  # a multiple of 8: free with SIMD GEMM kernels
    n_blocks = max(1, min(p["power_iterations"] + 1, (n - 1) // width))
    size = width * n_blocks
    keep_z = f.cells.n_features * size * np.dtype(p["precision"]).itemsize <= p["memory_budget_mb"] * 2**20 / 2
    tiles = f.tiles()
    rng = np.random.default_rng(p["seed"])
    basis = f.backend.asarray(np.full((n, 1), 1.0 / math.sqrt(n)))
    q = ks.extend_basis(basis, f.backend.asarray(rng.standard_normal((n, width))))
    z_tiles: dict[int, list[Any]] = {tile.index: [] for tile in tiles}
    index: dict[int, np.ndarray] = {}
    images = []
    for i in range(n_blocks):
        image = not (keep_z and i == n_blocks - 1)
        q_acc, y = xp.astype(q, f.accum), xp.zeros((n, width), dtype=f.accum)

        def step(tile: stream.Tile, block: Any, q_acc=q_acc, image=image) -> tuple[Any, Any, np.ndarray]:
            x, mean, w, cells = f.complete(tile, block)
            return (*ks.implicit_krylov_step(x, mean, w, q_acc, image=image), cells)

        label = f"randomized pass {i + 1}/{n_blocks} of {f.name}"
        for tile, (z, y_t, index[tile.index]) in stream.imap(step, f.src, tiles, f.backend, label=label):
            if keep_z:
                z_tiles[tile.index].append(z)
            y = y + y_t if image else y
        basis = xp.concat([basis, q], axis=1)
        if not keep_z:
            images.append(xp.astype(y, xp.float64))
        if i < n_blocks - 1:
            q = ks.extend_basis(basis, y)
    q_all = basis[:, 1:]
    if keep_z:
        ritz = xp.zeros((size, size), dtype=xp.float64)  # B Bᵀ
        for tile in tiles:
            b_t = xp.astype(xp.concat(z_tiles[tile.index], axis=1), xp.float64)
            ritz = ritz + xp.matrix_transpose(b_t) @ b_t
    else:
        ritz = xp.matrix_transpose(q_all) @ xp.concat(images, axis=1)
        ritz = (ritz + xp.matrix_transpose(ritz)) / 2.0
    values, vectors = xp.linalg.eigh(ritz)
    values, vectors = to_numpy(xp.flip(values, axis=0)) / (n - 1.0), xp.flip(vectors, axis=1)
    rank = _check_rank(values, (n, f.cells.n_features), k, f.name)
    sing = np.sqrt(values[:k] * (n - 1.0))
    if not keep_z:
        log.info("randomized EOFs of %s: the Krylov blocks (%.0f MB) exceed half of memory_budget_mb; "
                 "one projection pass instead", f.name, f.cells.n_features * size * np.dtype(p["precision"]).itemsize / 2**20)
        return _projection_pass(f, q_all @ vectors[:, :k], f.backend.asarray(sing)), values[:k], rank
    to_eof = vectors[:, :k] / f.backend.asarray(sing)[None, :]
    nlat, nlon = f.cells.valid.shape
    eof = np.zeros((k, nlat, nlon))
    for tile in tiles:
        b_t = xp.astype(xp.concat(z_tiles.pop(tile.index), axis=1), xp.float64)
        e_tile = np.zeros((k, tile.n_cells))
        e_tile[:, index[tile.index]] = to_numpy(xp.matrix_transpose(b_t @ to_eof))
        eof[:, tile.lat, tile.lon] = e_tile.reshape(k, *tile.shape[1:])
    eof_fk = eof.reshape(k, -1)[:, f.cells.flat].T
    pc = to_numpy(q_all @ vectors[:, :k]) * sing[None, :]
    return _maps_from_eofs(f, eof_fk, pc, sing), values[:k], rank


def _maps_from_eofs(f: _Field, eof_fk: np.ndarray, pc: np.ndarray, sing: np.ndarray) -> dict[str, np.ndarray]:
    """Grids of the EOFs and their maps when ``X_wᵀ pc = eof · s²`` is known without a pass.

    The unweighted anomaly of cell c is ``X_w[:, c] / w_c``, so its cross
    product with PC m is ``eof_cm s_m² / w_c``. Cells of zero weight get NaN maps.
    """
    w = f.weight.ravel()[f.cells.flat]
    cross = eof_fk * sing[None, :] ** 2 / np.where(w > 0, w, np.nan)[:, None]
    grids = _grids(f, _cell_maps(f, eof_fk, cross, f.std.ravel()[f.cells.flat], np.linalg.norm(pc, axis=0)))
    grids["pc"] = pc
    return grids


def _cell_maps(f: _Field, eof: np.ndarray, cross: np.ndarray, std: np.ndarray, pc_norm: np.ndarray) -> dict[str, np.ndarray]:
    """``eof``, ``correlation`` and ``covariance`` (cell × mode) of some complete cells from ``cross = Aᵀ PC``.

    Correlation ``cross / (‖a_c‖ ‖pc‖)`` with ``‖a_c‖ = std_c sqrt(n−1)`` from
    the moments store (NaN for a constant cell); covariance with the
    unit-variance PC ``cross / ((n−1) σ_pc)``.
    """
    a_norm = np.nan_to_num(std) * math.sqrt(f.n - 1.0)
    return {
        "eof": eof,
        "correlation": cross / np.where(a_norm > 0, a_norm, np.nan)[:, None] / pc_norm[None, :],
        "covariance": cross / (f.n - 1.0) / (pc_norm / math.sqrt(f.n - 1.0))[None, :],
    }


def _space(f: _Field, mom: xr.Dataset, n_modes: int) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    xp = f.xp
    lam, v, rank = _leading_eigenpairs(f, mom["covariance"].values, n_modes)
    flat = f.backend.asarray(f.cells.flat)
    pcs, cross = [], xp.zeros((f.cells.n_features, n_modes), dtype=f.accum)
    for tile, block in f.stream(stream.plan_time_blocks(f.src, f.budget), "eof pcs"):
        a, xw = f.weighted(tile, block)
        pc_b = xp.take(xw, flat, axis=1) @ v
        cross = cross + ks.pc_moments(xp.take(a, flat, axis=1), pc_b)
        pcs.append(to_numpy(pc_b))
    pc = np.concatenate(pcs)
    pc_norm = np.linalg.norm(pc, axis=0)
    std = np.sqrt(np.asarray(mom["std"].values).ravel()[f.cells.flat] ** 2 * (f.n - 1.0))
    cross = to_numpy(cross)
    grids = _grids(f, {
        "eof": to_numpy(v),
        "correlation": cross / std[:, None] / pc_norm[None, :],
        "covariance": cross / (f.n - 1.0) / (pc_norm / math.sqrt(f.n - 1.0))[None, :],
    })
    grids["pc"] = pc
    return grids, to_numpy(lam), rank


def _exact(f: _Field, p: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    xp = f.xp
    need = f.n * f.cells.n_features * np.dtype(p["precision"]).itemsize
    if need > p["memory_budget_mb"] * 2**20:
        raise ValueError(
            f"eof.method 'exact' needs the whole {f.name} matrix in memory ({need / 2**20:.0f} MB), more than "
            f"eof.memory_budget_mb={p['memory_budget_mb']}; use gram or randomized."
        )
    flat = f.backend.asarray(f.cells.flat)
    whole = stream.Tile(0, slice(0, f.n), slice(0, f.src.shape[1]), slice(0, f.src.shape[2]))
    for _, block in f.stream([whole], "exact read"):
        a, xw = f.weighted(whole, block)
    res = kernels.eof_decomposition(xp.take(xw, flat, axis=1), p["n_modes"], method="svd", label=f.name)
    a_c = xp.take(a, flat, axis=1)
    grids = _grids(f, {key: to_numpy(values) for key, values in (
        ("eof", res.eof), ("correlation", kernels.eof_correlation(a_c, res.pc)),
        ("covariance", kernels.eof_covariance(a_c, res.pc)))})
    grids["pc"] = to_numpy(res.pc)
    return grids, to_numpy(res.eigenvalue), res.rank


def _apply_sign_rule(out: dict[str, np.ndarray], sign: str | list[dict[str, Any]], f: _Field) -> str:
    """The sign convention ``eof.sign`` applied in place to the host results; its record as JSON.

    Modes without a rule get the largest-magnitude element of their EOF
    positive; see :func:`pipeline.eof_sign.apply`. PCs and maps flip with the EOFs.
    """
    grid_coords = f.cells.valid
    record = eof_sign.apply(out, sign, field=f.name, lat=grid_coords["lat"].values, lon=grid_coords["lon"].values,
                            time=np.asarray(f.src.time))
    return json.dumps(record, sort_keys=True)


def compute(source: Any, moments_ds: xr.Dataset, *, params: dict[str, Any], backend: Backend) -> xr.Dataset:
    """EOF analysis of a field, streamed, given its moments.

    Parameters
    ----------
    source : path, xr.Dataset, xr.DataArray or FieldSource
        The field (see :func:`pipeline.stream.open_source`).
    moments_ds : xr.Dataset
        Its moments store (``mean``, ``std``, ``valid``, ``weight`` and, for
        ``gram``/``space``, ``covariance``).
    params : dict
        The ``eof`` config section.
    backend : Backend
        Array backend.

    Returns
    -------
    xr.Dataset
        The eof store of ``docs/stores.md``.
    """
    p = _params(params)
    src = stream.open_source(source)
    for var in ("mean", "std", "valid", "weight"):
        if var not in moments_ds:
            raise ValueError(f"The moments store lacks {var!r}; rerun the moments stage.")
    f = _Field(src, moments_ds, backend, p["precision"], p["memory_budget_mb"])
    kind = moments_ds["covariance"].attrs.get("kind") if "covariance" in moments_ds else None
    method = p["method"]
    if method == "auto":
        method = choose_method(f.n, f.cells.n_features, kind, p["exact_max_mb"])
    if method in ("gram", "space") and kind != {"gram": "time", "space": "space"}[method]:
        need = "time" if method == "gram" else "space"
        raise ValueError(
            f"eof.method {method!r} needs the {need} covariance, but the moments store of {f.name} kept "
            f"{kind or 'none'}; set moments.covariance: {need} or choose another method."
        )
    start = time.perf_counter()
    if method == "gram":
        out, lam, rank = _gram(f, moments_ds, p["n_modes"])
    elif method == "space":
        out, lam, rank = _space(f, moments_ds, p["n_modes"])
    elif method == "randomized":
        out, lam, rank = _randomized(f, p)
    else:
        out, lam, rank = _exact(f, p)
    convention = _apply_sign_rule(out, p["sign"], f)
    log.info("eof of %s: %d modes of %d x %d by %s (%.1f%% of variance), %.2f s on %s", f.name, p["n_modes"], f.n,
             f.cells.n_features, method, 100 * lam.sum() / f.total_variance, time.perf_counter() - start, backend.name)
    ds = _dataset(out, lam, rank, method, f, moments_ds)
    ds.attrs["sign_convention"] = convention
    return ds


def _dataset(out, lam, rank, method, f: _Field, mom: xr.Dataset) -> xr.Dataset:
    name = f.name
    units = str(mom.attrs.get("field_units", f.src.units or "1"))
    mode = np.arange(1, lam.size + 1)
    grid_coords = {"lat": mom["lat"], "lon": mom["lon"]}

    def maps(key, long, unit):
        return xr.DataArray(out[key], dims=("mode", "lat", "lon"), coords=grid_coords,
                            attrs={"long_name": long, "units": unit})

    return xr.Dataset(
        {
            "eof": maps("eof", f"EOF of {name} (unit norm in weighted space)", "1"),
            "pc": (("time", "mode"), out["pc"], {"long_name": f"principal component of {name} (unscaled)", "units": units}),
            "eigenvalue": ("mode", lam, {"long_name": f"variance of the {name} mode", "units": f"({units})^2"}),
            "variance_fraction": ("mode", lam / f.total_variance,
                                  {"long_name": "fraction of total weighted variance", "units": "1"}),
            "north_error": ("mode", lam * math.sqrt(2.0 / f.n),
                            {"long_name": "North et al. (1982) eigenvalue sampling error", "units": f"({units})^2"}),
            "eof_correlation": maps("correlation", f"correlation of {name} anomaly with the PC", "1"),
            "eof_covariance": maps("covariance", f"covariance of {name} anomaly with the unit-variance PC", units),
        },
        coords={"time": ("time", f.src.time, {"standard_name": "time"}),
                "mode": ("mode", mode, {"long_name": "EOF mode number", "units": "1"})},
        attrs={"field_name": name, "field_units": units, "method": method,
               "weighting": str(mom["weight"].attrs.get("weighting", mom.attrs.get("weighting", "unknown"))),
               "n_samples": int(f.n), "rank": int(rank), "total_variance": f.total_variance},
    )


def decompose(source: Any, *, n_modes: int, method: str = "auto", weights: str = "sqrt_coslat",
              backend: str = "auto", memory_budget_mb: int = 512, precision: str = "float64",
              power_iterations: int = 4, oversample: int = 4, seed: int = 0,
              sign: str | list[dict[str, Any]] = "max_positive") -> xr.Dataset:
    """Moments and EOFs of a field in one call (what the two stages do, without stores in between).

    ``source`` is a fields-store path, an ``xr.Dataset`` with ``field`` or a
    ``(time, lat, lon)`` ``xr.DataArray``. The moments pass keeps the covariance
    only when ``method`` needs it. ``sign`` is ``"max_positive"`` or a list of
    rules (:mod:`pipeline.eof_sign`), e.g. ``[{"mode": 1, "lat": 65, "lon": -20,
    "sign": "negative"}]`` or ``[{"mode": 1, "series": nao_index}]`` with a
    DataArray along ``time``.
    """
    b = resolve(backend)
    method = ALIASES.get(method, method)
    covariance = {"gram": "time", "space": "space", "randomized": "none", "exact": "none"}.get(method, "auto")
    mom_params = {"weights": weights, "covariance": covariance, "memory_budget_mb": memory_budget_mb,
                  "precision": precision, "store_anomaly_mb": 0}
    src = stream.open_source(source)
    mom = moments.compute(src, params=mom_params, backend=b)
    eof_params = {"n_modes": n_modes, "method": method, "memory_budget_mb": memory_budget_mb,
                  "precision": precision, "power_iterations": power_iterations, "oversample": oversample, "seed": seed,
                  "sign": sign}
    return compute(src, mom, params=eof_params, backend=b)


def run(field_store: str | os.PathLike, moments_store: str | os.PathLike, output: str | os.PathLike, *,
        params: dict[str, Any], backend: str = "auto", output_options: dict[str, Any] | None = None) -> None:
    """Read a field and its moments store, compute the EOFs and write the eof store.

    An out-of-memory error on the device retries once with ``memory_budget_mb``
    halved (:func:`pipeline.backend.halve_budget_on_oom`). The store keeps the
    field's grid bounds (:func:`pipeline.io.with_bounds`); ``output_options``:
    the ``output`` config section.
    """
    b = resolve(backend)
    moments_ds = io.open_store(moments_store, what="moments store")
    path = os.fspath(field_store)
    if not os.path.exists(path):
        raise FileNotFoundError(f"The fields store {path} does not exist; run the ingest stage first.")
    ds = halve_budget_on_oom(lambda p: compute(path, moments_ds, params=p, backend=b), params, section=STAGE,
                             default_mb=DEFAULTS["memory_budget_mb"], what=f"the EOFs of {path}")
    io.write_store(io.with_bounds(ds, path), output, stage=STAGE, params=params, backend=b.name,
                   output=output_options)
