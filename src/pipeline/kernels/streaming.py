"""Streaming kernels: statistics and decompositions accumulated block by block.

A field too large for memory is read in blocks: *tiles* (all time steps, some
cells) or *time blocks* (all cells, some time steps). Each function here takes
one block, or the running state and one block, and returns the updated state,
so that one pass over the blocks gives the same numbers as the in-memory
computation.

* Per-cell count, mean and sum of squared deviations ``M2`` merge across time
  blocks by the pairwise update of Chan, Golub & LeVeque (1983):
  ``δ = m_b − m_a``, ``m = m_a + δ n_b/n``, ``M2 = M2_a + M2_b + δ² n_a n_b/n``;
  within a block, from float64 sums of ``x`` and ``x²`` (exact squares of
  float32 input) and counts over sub-blocks of at most 64 rows, merged the
  same way.
* The co-moment matrix ``C = Σ (x − m)(x − m)ᵀ`` of complete columns merges the
  same way, ``C = C_a + C_b + δ δᵀ n_a n_b/n``.
* The Gram matrix of weighted anomalies is a sum over tiles,
  ``G = Σ_tiles X_w,t X_w,tᵀ``, since tiles split the cells.
* A randomized block Krylov pass on the time side (Musco & Musco 2015) needs
  only ``n × l`` state: ``Z_t = X_w,tᵀ Q`` per tile and ``Y = Σ_t X_w,t Z_t``;
  the ``implicit_*`` functions compute these from the raw tile, with centring
  and weighting as rank-one corrections, and :func:`extend_basis` keeps the
  time-side blocks orthonormal.

Accumulators are held in the dtype the caller chooses (float64 by default in
the stages); blocks are cast to it before any product.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import array_api_compat

Array = Any


class RunningMoments(NamedTuple):
    """Per-column count, mean and sum of squared deviations (``M2``)."""

    count: Array
    mean: Array
    m2: Array


class RunningComoment(NamedTuple):
    """Sample count, column means and co-moment matrix of complete columns."""

    count: int
    mean: Array
    comoment: Array


SUB_BLOCK_ROWS = 64
"""Rows whose raw sums :func:`block_moments` takes at once (bounds its cancellation error)."""


def block_moments(x: Array, dtype: Any = None) -> RunningMoments:
    """NaN-aware count, mean and ``M2`` of each column of a ``(sample, feature)`` block.

    From the raw sums of ``x`` and ``x²`` (missing values as zeros, with their
    count) over sub-blocks of at most :data:`SUB_BLOCK_ROWS` rows, each giving
    ``M2 = Σx² − (Σx)²/r``, Chan-merged: no temporary of the block's size when
    nothing is missing, one (the zero-filled copy) otherwise. The relative
    error of ``M2`` is about ``eps·r·(mean/std)²`` with ``eps`` that of
    ``dtype``: keep the float64 default for float32 input.

    Parameters
    ----------
    x : (sample, feature) array
        One block, NaN for missing values.
    dtype : dtype, optional
        Accumulation dtype (default: float64).
    """
    xp = array_api_compat.array_namespace(x)
    dtype = xp.float64 if dtype is None else dtype
    n = x.shape[0]
    total = xp.sum(x, axis=0, dtype=dtype)
    valid = None
    if not bool(xp.all(xp.isfinite(total))):  # some values missing (or infinite)
        valid = ~xp.isnan(x)
        x = xp.where(valid, x, xp.zeros((), dtype=x.dtype))
    state = None
    for start in range(0, n, SUB_BLOCK_ROWS):
        stop = min(start + SUB_BLOCK_ROWS, n)
        sub = x[start:stop, ...]
        s1 = total if valid is None and stop - start == n else xp.sum(sub, axis=0, dtype=dtype)
        if valid is None:
            count = xp.full_like(s1, stop - start)
        else:
            count = xp.astype(xp.count_nonzero(valid[start:stop, ...], axis=0), dtype)
        mean = s1 / xp.where(count > 0, count, xp.ones_like(count))
        m2 = xp.clip(_sum_of_squares(xp, sub, dtype) - s1 * mean, min=0.0)
        part = RunningMoments(count, mean, m2)
        state = part if state is None else merge_moments(state, part)
    return state


def _sum_of_squares(xp: Any, x: Array, dtype: Any) -> Array:
    """``Σ x²`` down the columns in ``dtype``; NumPy squares in ``dtype`` without a temporary copy."""
    if array_api_compat.is_numpy_namespace(xp):
        return xp.einsum("ij,ij->j", x, x, dtype=dtype)
    x = xp.astype(x, dtype, copy=False)
    return xp.sum(x * x, axis=0)


def merge_moments(a: RunningMoments, b: RunningMoments) -> RunningMoments:
    """Chan et al. (1983) pairwise merge of two :class:`RunningMoments` of the same columns."""
    xp = array_api_compat.array_namespace(a.mean, b.mean)
    n = a.count + b.count
    safe = xp.where(n > 0, n, xp.ones_like(n))
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / safe)
    m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / safe)
    return RunningMoments(n, mean, m2)


def finish_moments(m: RunningMoments) -> tuple[Array, Array]:
    """Mean (NaN where no valid value) and standard deviation (ddof=1, NaN below 2 values)."""
    xp = array_api_compat.array_namespace(m.mean)
    nan = xp.full_like(m.mean, xp.nan)
    mean = xp.where(m.count > 0, m.mean, nan)
    var = m.m2 / xp.where(m.count > 1, m.count - 1.0, xp.ones_like(m.count))
    return mean, xp.where(m.count > 1, xp.sqrt(var), nan)


def block_comoment(x: Array, dtype: Any = None) -> RunningComoment:
    """Count, column means and co-moment ``(x − m)ᵀ(x − m)`` of a ``(sample, feature)`` block.

    Columns with NaN give NaN only in their own row and column of the
    co-moment, so the caller can drop incomplete columns at the end.
    """
    xp = array_api_compat.array_namespace(x)
    if dtype is not None:
        x = xp.astype(x, dtype, copy=False)
    mean = xp.mean(x, axis=0)
    dev = x - mean[None, :]
    return RunningComoment(int(x.shape[0]), mean, xp.matrix_transpose(dev) @ dev)


def merge_comoment(a: RunningComoment, b: RunningComoment) -> RunningComoment:
    """Chan et al. merge of two co-moment states over disjoint samples."""
    n = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    outer = delta[:, None] * delta[None, :]
    return RunningComoment(n, mean, a.comoment + b.comoment + outer * (a.count * b.count / n))


def gram_update(gram: Array, xw: Array) -> Array:
    """Add ``X_w X_wᵀ`` of one tile ``X_w`` (sample, cells of the tile) to ``gram``, in place; returns ``gram``.

    In place, so that an ``n × n`` accumulator is never held twice.
    """
    xp = array_api_compat.array_namespace(gram, xw)
    xw = xp.astype(xw, gram.dtype, copy=False)
    gram += xw @ xp.matrix_transpose(xw)
    return gram


def project(xw: Array, u: Array, s: Array) -> Array:
    """EOF rows of one tile: ``X_wᵀ U / s`` (cells of the tile, mode)."""
    xp = array_api_compat.array_namespace(xw, u, s)
    return (xp.matrix_transpose(xp.astype(xw, u.dtype, copy=False)) @ u) / s[None, :]


def pc_moments(anomaly: Array, pc: Array) -> Array:
    """``Aᵀ P`` for one tile or time block: the cross-products behind the EOF maps.

    With centred anomalies ``A`` and centred PCs ``P`` (both over all time
    steps), covariance and correlation maps follow from ``Aᵀ P``, ``n`` and
    the norms of the columns; summing this over time blocks gives the same
    result as over the whole record.
    """
    xp = array_api_compat.array_namespace(anomaly, pc)
    return xp.matrix_transpose(xp.astype(anomaly, pc.dtype, copy=False)) @ pc


def implicit_range(x: Array, mean: Array, w: Array, q: Array) -> Array:
    """``X_wᵀ Q = diag(w) (xᵀ Q − mean (1ᵀ Q))`` for one tile, without forming ``X_w``.

    Computed as ``(Qᵀ x)ᵀ``, the faster GEMM shape for a tall ``x`` and few
    columns in ``Q``; the result is a transposed view.
    """
    xp = array_api_compat.array_namespace(x, q)
    zt = xp.matrix_transpose(q) @ xp.astype(x, q.dtype, copy=False) - xp.sum(q, axis=0)[:, None] * mean[None, :]
    return xp.matrix_transpose(zt * w[None, :])


def implicit_krylov_step(x: Array, mean: Array, w: Array, q: Array, image: bool = True) -> tuple[Array, Array | None]:
    """One tile of a block Krylov pass: ``Z_t = X_w,tᵀ Q`` and, if ``image``, ``X_w,t Z_t``.

    Both products use the same raw tile (two GEMMs while it is in cache);
    centring and weighting enter as rank-one corrections, as in
    :func:`implicit_range`. Summing ``X_w,t Z_t`` over the tiles gives
    ``X_w X_wᵀ Q``. Returns ``(Z_t, X_w,t Z_t)``, or ``(Z_t, None)``.
    """
    xp = array_api_compat.array_namespace(x, q)
    z = implicit_range(x, mean, w, q)
    if not image:
        return z, None
    wz = w[:, None] * z
    return z, xp.astype(x, q.dtype, copy=False) @ wz - (mean @ wz)[None, :]


def extend_basis(basis: Array, y: Array) -> Array:
    """Orthonormal columns spanning ``y`` beyond the orthonormal ``basis`` (``n × m``).

    The Householder QR of ``[basis, y]``: its last ``y.shape[1]`` columns are
    orthogonal to ``basis`` to working precision even where ``y`` is (nearly)
    in its span, in which case they complete the basis arbitrarily.
    """
    xp = array_api_compat.array_namespace(basis, y)
    q, _ = xp.linalg.qr(xp.concat([basis, xp.astype(y, basis.dtype)], axis=1))
    return q[:, basis.shape[1] :]
