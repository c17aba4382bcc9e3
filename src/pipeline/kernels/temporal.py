"""Time-axis kernels: climatology, block aggregation and linear detrending, per column.

Input is a ``(sample, feature)`` block (time steps by grid cells, NaN for
missing values); every column is treated on its own, so a block may hold any
subset of the cells and the result equals that of the whole field. Which
steps form a group or a block is decided by the caller from the time axis
(:mod:`pipeline.temporal`) and passed in as host integer arrays.

* :func:`climatology` -- the mean of each calendar group (month, or calendar
  day pooled over a circular window of days), over the valid values;
* :func:`block_reduce` -- the mean, maximum or minimum of each block of
  consecutive steps (a season or a year), NaN where fewer than
  ``min_coverage`` of the block's expected steps are valid;
* :func:`linear_detrend` -- each column less its least-squares slope,
  keeping its mean.

Every function takes its namespace from its input (NumPy, CuPy,
array-api-strict) and accumulates in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat
import numpy as np

Array = Any
STATISTICS = ("mean", "max", "min")


def _valid_zeroed(xp: Any, x: Array) -> tuple[Array, Array]:
    """``(x with NaN set to 0, 1.0 where valid)`` in float64."""
    x = xp.astype(x, xp.float64)
    valid = ~xp.isnan(x)
    return xp.where(valid, x, xp.zeros_like(x)), xp.astype(valid, xp.float64)


def climatology(x: Array, groups: np.ndarray, n_groups: int, window: int = 1) -> Array:
    """Mean of each calendar group over valid values, pooled over a circular window of groups.

    .. math::

        c_g = \\frac{\\sum_{|h - g| \\le w/2} S_h}{\\sum_{|h - g| \\le w/2} N_h},

    with ``S_h`` and ``N_h`` the sum and count of the valid values of group
    ``h`` and distances taken around the circle of ``n_groups`` (a running
    mean of ``window`` calendar days that weighs every day by its samples, so
    a 29 February with few years counts for little).

    Parameters
    ----------
    x : (sample, feature) array
        Values, NaN for missing.
    groups : (sample,) host int array
        Group of each step, ``0 <= g < n_groups``; ``-1`` leaves a step out.
    n_groups : int
        Number of groups (12 months, or 360/365/366 calendar days).
    window : int
        Odd width of the circular window in groups (1: each group alone).

    Returns
    -------
    (n_groups, feature) float64 array
        NaN where the window holds no valid value.
    """
    xp = array_api_compat.array_namespace(x)
    groups = np.asarray(groups, dtype=np.int64)
    if x.ndim != 2 or groups.shape != (x.shape[0],):
        raise ValueError(f"x must be (sample, feature) with one group per sample; got {x.shape} and {groups.shape}.")
    if window < 1 or window % 2 == 0 or window > n_groups:
        raise ValueError(f"window must be an odd number of groups between 1 and {n_groups}; got {window}.")
    device = array_api_compat.device(x)
    order = np.argsort(groups, kind="stable")  # one gather: each group becomes a contiguous run of rows
    edges = np.searchsorted(groups[order], np.arange(-1, n_groups + 1))
    take = xp.asarray(order[edges[1]:], device=device)
    xz, valid = _valid_zeroed(xp, xp.take(x, take, axis=0))
    zero = xp.zeros(x.shape[1], dtype=xp.float64, device=device)
    sums, counts = [], []
    for g in range(n_groups):
        a, b = edges[g + 1] - edges[1], edges[g + 2] - edges[1]
        sums.append(xp.sum(xz[a:b, :], axis=0) if b > a else zero)
        counts.append(xp.sum(valid[a:b, :], axis=0) if b > a else zero)
    s, n = xp.stack(sums), xp.stack(counts)
    if window > 1:
        half = window // 2
        s = sum(xp.roll(s, k, axis=0) for k in range(-half, half + 1))
        n = sum(xp.roll(n, k, axis=0) for k in range(-half, half + 1))
    return xp.where(n > 0, s / xp.where(n > 0, n, xp.ones_like(n)), xp.full_like(s, xp.nan))


def subtract(x: Array, clim: Array, groups: np.ndarray) -> Array:
    """``x`` less the climatology of each step's group (float64; NaN stays NaN)."""
    xp = array_api_compat.array_namespace(x, clim)
    take = xp.asarray(np.asarray(groups, dtype=np.int64), device=array_api_compat.device(x))
    return xp.astype(x, xp.float64) - xp.take(clim, take, axis=0)


def block_reduce(x: Array, bounds: Sequence[tuple[int, int]], expected: Sequence[float], statistic: str = "mean",
                 min_coverage: float = 0.9) -> Array:
    """Mean, maximum or minimum of each block of consecutive steps, over valid values.

    Parameters
    ----------
    x : (sample, feature) array
        Values, NaN for missing.
    bounds : sequence of (start, stop)
        The steps of each block, ``x[start:stop]``.
    expected : sequence of float
        Steps a complete block holds (e.g. 90 days for a DJF of daily data).
    statistic : {"mean", "max", "min"}
        What each block becomes.
    min_coverage : float
        Fewest fraction of ``expected`` that must be valid; a cell below it
        is NaN for that block.

    Returns
    -------
    (block, feature) float64 array
    """
    xp = array_api_compat.array_namespace(x)
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}; got {statistic!r}.")
    if len(bounds) != len(expected):
        raise ValueError(f"bounds and expected must have one entry per block; got {len(bounds)} and {len(expected)}.")
    x = xp.astype(x, xp.float64)
    out = []
    for (a, b), n_exp in zip(bounds, expected):
        block = x[a:b, :]
        valid = ~xp.isnan(block)
        count = xp.sum(xp.astype(valid, xp.float64), axis=0)
        if statistic == "mean":
            value = xp.sum(xp.where(valid, block, xp.zeros_like(block)), axis=0) / xp.where(count > 0, count, 1.0)
        else:
            fill = xp.full_like(block, -xp.inf if statistic == "max" else xp.inf)
            reduce = xp.max if statistic == "max" else xp.min
            value = reduce(xp.where(valid, block, fill), axis=0)
        ok = (count > 0) & (count >= min_coverage * float(n_exp) - 1e-9)
        out.append(xp.where(ok, value, xp.full_like(value, xp.nan)))
    if not out:
        return xp.zeros((0, x.shape[1]), dtype=xp.float64, device=array_api_compat.device(x))
    return xp.stack(out)


def linear_detrend(x: Array, t: Array) -> tuple[Array, Array]:
    """Each column less its least-squares linear trend in ``t``, its mean kept.

    Over the valid steps of column ``j`` (two passes, centred on the
    column's own mean time so the sums do not cancel):

    .. math::

        b_j = \\frac{\\sum_t (t - \\bar t_j)(x_{tj} - \\bar x_j)}{\\sum_t (t - \\bar t_j)^2},
        \\qquad x'_{tj} = x_{tj} - b_j (t - \\bar t_j).

    Parameters
    ----------
    x : (sample, feature) array
        Values, NaN for missing.
    t : (sample,) array
        Time of each step (e.g. years), same namespace as ``x``.

    Returns
    -------
    detrended : (sample, feature) float64 array
        NaN where ``x`` is NaN; a column with fewer than two valid steps is
        returned as is.
    slope : (feature,) float64 array
        ``b_j`` per unit of ``t``; NaN where it is undefined.
    """
    xp = array_api_compat.array_namespace(x, t)
    if x.ndim != 2 or t.shape != (x.shape[0],):
        raise ValueError(f"x must be (sample, feature) and t (sample,); got {x.shape} and {t.shape}.")
    xz, valid = _valid_zeroed(xp, x)
    t = xp.astype(t, xp.float64)[:, None]
    count = xp.sum(valid, axis=0)
    safe = xp.where(count > 0, count, xp.ones_like(count))
    t_mean = xp.sum(valid * t, axis=0) / safe
    x_mean = xp.sum(xz, axis=0) / safe
    dt = (t - t_mean[None, :]) * valid
    sxx = xp.sum(dt * dt, axis=0)
    sxy = xp.sum(dt * (xz - x_mean[None, :]), axis=0)
    ok = (count >= 2) & (sxx > 0)
    slope = xp.where(ok, sxy / xp.where(ok, sxx, xp.ones_like(sxx)), xp.full_like(sxx, xp.nan))
    step = xp.where(ok, slope, xp.zeros_like(slope))
    return xp.astype(x, xp.float64) - step[None, :] * (t - t_mean[None, :]), slope
