"""Streaming kernels: statistics and decompositions accumulated block by block.

A field too large for memory is read in blocks: *tiles* (all time steps, some
cells) or *time blocks* (all cells, some time steps). Each function here takes
one block, or the running state and one block, and returns the updated state,
so that one pass over the blocks gives the same numbers as the in-memory
computation.

* Per-cell count, mean and sum of squared deviations ``M2`` merge across time
  blocks by the pairwise update of Chan, Golub & LeVeque (1983):
  ``δ = m_b − m_a``, ``m = m_a + δ n_b/n``, ``M2 = M2_a + M2_b + δ² n_a n_b/n``;
  within a block, from float64 sums of ``x − c`` and ``(x − c)²`` with ``c``
  a value of the column (shifted sums), and counts.
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


CHUNK_BYTES = 2 * 2**20
"""Working bytes of one column chunk in :func:`block_moments` on NumPy (stays in a core's L2 cache)."""


def block_moments(x: Array, dtype: Any = None) -> RunningMoments:
    """NaN-aware count, mean and ``M2`` of each column of a ``(sample, feature)`` block.

    Shifted sums: with ``c`` the first value of a column and ``d = x − c`` in
    ``dtype``, ``mean = c + Σd/r`` and ``M2 = Σd² − (Σd)²/r``. The sums
    cancel as ``(m − c)/σ`` does, not as ``m/σ``: the relative error of
    ``M2`` is about ``eps·r·(1 + 2((m − c)/σ)²)`` with ``eps`` that of
    ``dtype``, whatever the offset of the data, and at most about
    ``2·eps·r²`` (no value lies more than ``sqrt(r − 1)`` standard deviations
    from the mean). A column with missing values is shifted by the mean of its
    valid values instead, the missing ones counted out. NumPy works through
    chunks of columns in one cache-sized buffer of ``dtype``; other
    namespaces cast the block at once.

    Parameters
    ----------
    x : (sample, feature) array
        One block, NaN for missing values.
    dtype : dtype, optional
        Accumulation dtype (default: float64; keep it for float32 input).
    """
    xp = array_api_compat.array_namespace(x)
    dtype = xp.float64 if dtype is None else dtype
    n, p = x.shape
    if not array_api_compat.is_numpy_namespace(xp):
        return _shifted_moments(xp, x, xp.astype(x, dtype, copy=True))
    out = RunningMoments(*(xp.empty(p, dtype=dtype) for _ in range(3)))
    step = max(1, CHUNK_BYTES // (max(n, 1) * xp.dtype(dtype).itemsize))
    buf = xp.empty((n, min(step, p)), dtype=dtype)
    for start in range(0, p, step):
        cols = slice(start, min(start + step, p))
        d = buf[:, : cols.stop - start]
        xp.copyto(d, x[:, cols])
        for target, value in zip(out, _shifted_moments(xp, x[:, cols], d)):
            target[cols] = value
    return out


def _shifted_moments(xp: Any, x: Array, d: Array) -> RunningMoments:
    """:func:`block_moments` of the columns of ``x``; ``d`` holds ``x`` in the accumulation dtype and is overwritten."""
    shift = xp.asarray(d[0, :], copy=True)
    d -= shift[None, :]
    moments = _from_deviations(xp, d, shift, xp.full_like(shift, d.shape[0]))
    missing = ~xp.isfinite(moments.mean)
    if not bool(xp.any(missing)):
        return moments
    if array_api_compat.is_numpy_namespace(xp):  # redo only the columns with missing values
        cols = xp.flatnonzero(missing)
        for target, value in zip(moments, _masked_moments(xp, x[:, cols], d.dtype)):
            target[cols] = value
        return moments
    return RunningMoments(*(xp.where(missing, a, b) for a, b in zip(_masked_moments(xp, x, d.dtype), moments)))


def _masked_moments(xp: Any, x: Array, dtype: Any) -> RunningMoments:
    """:func:`block_moments` of columns with missing values: shifted by the mean of the valid ones."""
    valid = ~xp.isnan(x)
    zero = xp.zeros((), dtype=dtype)
    count = xp.astype(xp.count_nonzero(valid, axis=0), dtype)
    d = xp.where(valid, xp.astype(x, dtype), zero)
    shift = xp.sum(d, axis=0) / xp.where(count > 0, count, xp.ones_like(count))
    return _from_deviations(xp, xp.where(valid, d - shift[None, :], zero), shift, count)


def _from_deviations(xp: Any, d: Array, shift: Array, count: Array) -> RunningMoments:
    """Count, mean and ``M2`` from the deviations ``d`` of each column from its ``shift`` (zeros where missing)."""
    s1 = xp.sum(d, axis=0)
    safe = xp.where(count > 0, count, xp.ones_like(count))
    return RunningMoments(count, shift + s1 / safe, xp.clip(_sum_of_squares(xp, d) - s1 * s1 / safe, min=0.0))


def _sum_of_squares(xp: Any, d: Array) -> Array:
    """``Σ d²`` down the columns; NumPy without a temporary copy."""
    if array_api_compat.is_numpy_namespace(xp):
        return xp.einsum("ij,ij->j", d, d)
    return xp.sum(d * d, axis=0)


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
