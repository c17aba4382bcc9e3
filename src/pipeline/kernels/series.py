"""Per-cell series operations: quantiles and declustered threshold exceedances.

Data come as an ``(n_time, cells)`` matrix, one column per grid cell, with NaN
marking missing values. Nothing here loops over cells or over time steps: the
per-cluster maxima of :func:`exceedances` come from a segmented scan of
``ceil(log2 n)`` doubling steps (Hillis & Steele), and the compaction of the
peaks to the top rows from one stable sort.

Runs declustering (Coles 2001, sec. 5.3.2; Ferro & Segers 2003): an
exceedance of the threshold ``u`` starts a new cluster unless it follows the
previous exceedance within ``run`` time steps, i.e. a cluster ends once ``run``
consecutive non-exceedances have been seen. Missing values count as
non-exceedances (they are never exceedances, and they do not bridge clusters
any differently from values below ``u``). ``run = 0`` keeps every exceedance as
its own cluster. The runs estimate of the extremal index is
``theta = (number of clusters) / (number of exceedances)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat


def _check_series(x: Any) -> Any:
    xp = array_api_compat.array_namespace(x)
    if x.ndim != 2 or not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"x must be a 2-D real floating (n_time, cells) array; got {x.ndim}-D {x.dtype}.")
    return xp


def _shift_down(a: Any, k: int, fill: Any, xp: Any) -> Any:
    """Rows of ``a`` moved down by ``k`` (row ``t`` holds old row ``t - k``), the top ``k`` rows set to ``fill``."""
    head = xp.full((k, a.shape[1]), fill, dtype=a.dtype, device=array_api_compat.device(a))
    return xp.concat([head, a[:-k, ...]], axis=0)


# ----------------------------------------------------------------- quantiles


def quantile(x: Any, q: float | Sequence[float], valid: Any = None) -> Any:
    """Per-column quantiles, NumPy's default (type 7, "linear") definition, ignoring missing values.

    With the ``m`` usable values of a column sorted, ``x_(0) <= ... <= x_(m-1)``,
    and ``h = (m - 1) q``: ``Q(q) = x_(floor h) + (h - floor h) (x_(floor h + 1) - x_(floor h))``,
    as ``numpy.quantile(x, q, method="linear")`` (Hyndman & Fan 1996, type 7).

    Parameters
    ----------
    x : array, shape (n, cells)
        Real floating data; NaN values are missing.
    q : float or sequence of float
        Probabilities in [0, 1].
    valid : array of bool, shape (n, cells), optional
        Usable values; entries outside it are treated as missing.

    Returns
    -------
    array, shape (cells,) for a scalar ``q``, else (len(q), cells)
        NaN in columns without usable values.
    """
    xp = _check_series(x)
    scalar = isinstance(q, int | float)
    probs = [float(q)] if scalar else [float(p) for p in q]
    if not probs or not all(0.0 <= p <= 1.0 for p in probs):
        raise ValueError(f"q must be a probability or a non-empty sequence of probabilities in [0, 1]; got {q!r}.")
    if valid is not None:
        if valid.shape != x.shape:
            raise ValueError(f"valid must have the shape of x {tuple(x.shape)}; got {tuple(valid.shape)}.")
        x = xp.where(valid, x, xp.nan)
    dev = array_api_compat.device(x)
    s = xp.sort(x, axis=0)  # NaN sorts last, so the usable values lead each column
    m = xp.sum(xp.astype(~xp.isnan(x), xp.int64), axis=0)
    last = xp.maximum(m - 1, 0)
    qs = xp.asarray(probs, dtype=x.dtype, device=dev)[:, None]
    h = qs * xp.astype(last, x.dtype)  # (nq, cells)
    lo = xp.astype(xp.floor(h), xp.int64)
    hi = xp.minimum(lo + 1, last)
    a = xp.take_along_axis(s, lo, axis=0)
    b = xp.take_along_axis(s, hi, axis=0)
    out = a + (h - xp.astype(lo, x.dtype)) * (b - a)
    out = xp.where(m > 0, out, xp.nan)
    return out[0, ...] if scalar else out


# ------------------------------------------------------------- exceedances


def _check_threshold(x: Any, threshold: Any, run: int, xp: Any) -> Any:
    if isinstance(run, bool) or not isinstance(run, int) or run < 0:
        raise ValueError(f"run must be a non-negative int (0: no declustering); got {run!r}.")
    if isinstance(threshold, int | float):
        return xp.full((x.shape[1],), float(threshold), dtype=x.dtype, device=array_api_compat.device(x))
    if threshold.shape != (x.shape[1],):
        raise ValueError(f"threshold must be a number or have shape (cells,) = ({x.shape[1]},); got {tuple(threshold.shape)}.")
    return xp.astype(threshold, x.dtype)


def _cluster_starts(x: Any, threshold: Any, run: int, xp: Any) -> tuple[Any, Any]:
    """Exceedance mask and cluster-start mask, both (n, cells) bool.

    An exceedance at ``t`` starts a cluster when none of the ``run`` steps before
    it exceeded: with ``C`` the cumulative count of exceedances, ``C[t-1] - C[t-run-1] == 0``.
    """
    exc = x > threshold  # NaN compares False: missing is never an exceedance
    if run == 0:
        return exc, exc
    c = xp.cumulative_sum(xp.astype(exc, xp.int64), axis=0, include_initial=True)  # (n + 1, cells)
    n = x.shape[0]
    before = c[:n, ...]  # exceedances in rows < t
    earlier = _shift_down(before, min(run, n), 0, xp) if run < n else xp.zeros_like(before)
    return exc, exc & (before - earlier == 0)


def runs_extremal_index(x: Any, threshold: Any, *, run: int = 1) -> Any:
    """Runs estimate of the extremal index, ``theta = clusters / exceedances``, per cell.

    Parameters
    ----------
    x : array, shape (n_time, cells)
        Real floating series; NaN = missing (never an exceedance).
    threshold : float or array, shape (cells,)
        Exceedance means ``x > threshold``.
    run : int
        Clusters end after ``run`` consecutive non-exceedances (module docstring).

    Returns
    -------
    array, shape (cells,)
        In (0, 1]; NaN where a cell has no exceedance.
    """
    xp = _check_series(x)
    threshold = _check_threshold(x, threshold, run, xp)
    exc, start = _cluster_starts(x, threshold, run, xp)
    return _theta(xp.sum(xp.astype(start, xp.int64), axis=0), xp.sum(xp.astype(exc, xp.int64), axis=0), x.dtype, xp)


def _theta(n_clusters: Any, n_exceed: Any, dtype: Any, xp: Any) -> Any:
    some = n_exceed > 0
    ratio = xp.astype(n_clusters, dtype) / xp.astype(xp.where(some, n_exceed, 1), dtype)
    return xp.where(some, ratio, xp.nan)


def exceedances(x: Any, threshold: Any, *, run: int = 1) -> dict[str, Any]:
    """Cluster peaks of the exceedances of a per-cell threshold, compacted to the top rows.

    Exceedances ``x > threshold`` are grouped into clusters by runs
    declustering (module docstring) and each cluster is represented by its
    maximum (the first one on ties). A segmented prefix maximum carries
    ``(value, time)`` pairs within each cluster in ``ceil(log2 n)`` doubling
    steps; the cluster's peak is read at its last row, and one stable sort moves
    those rows to the top of each column, in time order.

    The number of output rows ``m`` is the largest number of peaks in any cell:
    a data-dependent size, read on the host once (``int(max(n_peaks))``, one
    device synchronization). No boolean indexing or data-dependent-shape
    function is used, so the kernel runs under array-api-strict with both off.

    Parameters
    ----------
    x : array, shape (n_time, cells)
        Real floating series; NaN = missing, never an exceedance (it counts as
        a non-exceedance for the run length).
    threshold : float or array, shape (cells,)
        Exceedance means ``x > threshold``; a NaN threshold gives no exceedance.
    run : int
        A cluster ends after ``run`` consecutive non-exceedances; 0 keeps every
        exceedance (no declustering).

    Returns
    -------
    dict
        ``values`` (m, cells): peak values ``x`` (not excesses), NaN-padded below
        each cell's peaks; ``valid`` (m, cells) bool; ``index`` (m, cells) int64,
        the time row of each peak, -1 in padding; ``n_peaks`` (cells,) int64
        (= number of clusters); ``n_exceed`` (cells,) int64; ``extremal_index``
        (cells,) ``n_peaks / n_exceed`` (NaN without exceedances).
    """
    xp = _check_series(x)
    threshold = _check_threshold(x, threshold, run, xp)
    n, cells = x.shape
    dev = array_api_compat.device(x)
    exc, start = _cluster_starts(x, threshold, run, xp)
    seg = xp.cumulative_sum(xp.astype(start, xp.int64), axis=0)  # cluster id, 0 before the first
    value = xp.where(exc, x, -xp.inf)
    time = xp.broadcast_to(xp.arange(n, dtype=xp.int64, device=dev)[:, None], (n, cells))
    k = 1
    while k < n:  # segmented prefix max of (value, -time): ceil(log2 n) steps
        v_prev = _shift_down(value, k, -xp.inf, xp)
        take = (_shift_down(seg, k, -1, xp) == seg) & (v_prev >= value)  # >=: earlier time wins ties
        value = xp.where(take, v_prev, value)
        time = xp.where(take, _shift_down(time, k, 0, xp), time)
        k *= 2
    next_start = xp.concat([start[1:, ...], xp.ones((1, cells), dtype=xp.bool, device=dev)], axis=0)
    is_end = (seg > 0) & next_start  # last row of each cluster: holds its peak
    n_peaks = seg[-1, ...] if n else xp.zeros((cells,), dtype=xp.int64, device=dev)
    n_exceed = xp.sum(xp.astype(exc, xp.int64), axis=0)
    m = int(xp.max(n_peaks)) if n and cells else 0  # host sync: the output size depends on the data
    order = xp.argsort(xp.astype(~is_end, xp.int8), axis=0, stable=True)[:m, ...]
    valid = xp.take_along_axis(is_end, order, axis=0)
    return {
        "values": xp.where(valid, xp.take_along_axis(value, order, axis=0), xp.nan),
        "valid": valid,
        "index": xp.where(valid, xp.take_along_axis(time, order, axis=0), -1),
        "n_peaks": n_peaks,
        "n_exceed": n_exceed,
        "extremal_index": _theta(n_peaks, n_exceed, x.dtype, xp),
    }


__all__ = ["exceedances", "quantile", "runs_extremal_index"]
