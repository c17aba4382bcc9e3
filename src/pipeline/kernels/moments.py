"""Moments kernels: NaN-aware time statistics and the weighted covariance.

Input is a ``(sample, feature)`` matrix (time steps by grid cells). Missing
values are NaN; the statistics of a column use only its valid entries:

.. math::

    c_j = \\#\\{t : x_{tj} \\text{ valid}\\}, \\qquad
    \\bar x_j = \\frac{1}{c_j} \\sum_{t \\text{ valid}} x_{tj}, \\qquad
    s_j^2 = \\frac{1}{c_j - 1} \\sum_{t \\text{ valid}} (x_{tj} - \\bar x_j)^2 .

The covariance of the weighted anomalies ``X_w = A·diag(w)`` (complete columns
only, divisor ``n−1``) is kept in the smaller dimension: the ``n×n`` Gram
matrix ``X_w X_wᵀ/(n−1)`` (kind ``"time"``) when ``n ≤ p``, else the ``p×p``
matrix ``X_wᵀ X_w/(n−1)`` (kind ``"space"``). Both have the same non-zero
eigenvalues, so either feeds the EOF stage.

Every function takes its namespace from its input (NumPy, CuPy,
array-api-strict) and keeps the input's dtype and device.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import array_api_compat

Array = Any

COVARIANCE_KINDS = ("auto", "time", "space")


class Moments(NamedTuple):
    """Per-column time statistics of a matrix with missing values.

    Attributes
    ----------
    mean, std : (feature,) array
        Mean and standard deviation (divisor ``count − 1``) over valid entries;
        NaN where ``count`` is 0 (mean) or below 2 (std).
    count : (feature,) int64 array
        Number of valid (non-NaN) entries per column.
    anomaly : (sample, feature) array
        ``x − mean``, NaN where ``x`` is NaN.
    """

    mean: Array
    std: Array
    count: Array
    anomaly: Array


def _check_matrix(x: Array, name: str) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (sample, feature) matrix; got {x.ndim} dimensions.")


def _safe_divide(xp: Any, num: Array, den: Array, ok: Array) -> Array:
    """``num / den`` where ``ok``, NaN elsewhere, without division warnings."""
    quotient = num / xp.where(ok, den, xp.ones_like(den))
    return xp.where(ok, quotient, xp.full_like(quotient, xp.nan))


def time_moments(x: Array) -> Moments:
    """NaN-aware mean, standard deviation (ddof=1), count and anomaly along axis 0.

    Parameters
    ----------
    x : (sample, feature) floating array
        Data with NaN for missing values.

    Returns
    -------
    Moments
        ``mean``, ``std``, ``count`` and ``anomaly`` (see :class:`Moments`).
    """
    xp = array_api_compat.array_namespace(x)
    _check_matrix(x, "x")
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"x must have a real floating dtype; got {x.dtype}.")
    valid = ~xp.isnan(x)
    zero = xp.zeros_like(x)
    count = xp.sum(xp.astype(valid, x.dtype), axis=0)
    mean = _safe_divide(xp, xp.sum(xp.where(valid, x, zero), axis=0), count, count > 0)
    anomaly = x - mean
    squares = xp.where(valid, anomaly * anomaly, zero)
    var = _safe_divide(xp, xp.sum(squares, axis=0), count - 1.0, count > 1)
    return Moments(mean=mean, std=xp.sqrt(var), count=xp.astype(count, xp.int64), anomaly=anomaly)


def weight_columns(anomaly: Array, weight: Array) -> Array:
    """The weighted anomaly matrix ``X_w = A·diag(w)``.

    Parameters
    ----------
    anomaly : (sample, feature) array
        Centred data of complete cells (no NaN).
    weight : (feature,) array
        Weight of each column (e.g. sqrt(cos(lat)) of its cell); cast to the
        dtype of ``anomaly``.
    """
    xp = array_api_compat.array_namespace(anomaly, weight)
    _check_matrix(anomaly, "anomaly")
    if weight.shape != (anomaly.shape[1],):
        raise ValueError(
            f"weight must have shape ({anomaly.shape[1]},), one value per feature column; got {weight.shape}."
        )
    return anomaly * xp.astype(weight, anomaly.dtype)[None, :]


def covariance_kind(n_samples: int, n_features: int) -> str:
    """``"time"`` when ``n_samples <= n_features`` (Gram matrix is smaller), else ``"space"``."""
    return "time" if n_samples <= n_features else "space"


def weighted_covariance(anomaly: Array, weight: Array, kind: str = "auto") -> tuple[Array, str]:
    """Covariance of the weighted anomalies, divisor ``n − 1``, in the smaller dimension.

    Parameters
    ----------
    anomaly : (sample, feature) array
        Centred anomalies of complete cells; must contain no NaN.
    weight : (feature,) array
        Per-column weight ``w``.
    kind : {"auto", "time", "space"}
        ``"time"`` gives ``X_w X_wᵀ/(n−1)`` (``n×n``), ``"space"`` gives
        ``X_wᵀ X_w/(n−1)`` (``p×p``); ``"auto"`` picks
        :func:`covariance_kind` ``(n, p)``.

    Returns
    -------
    covariance : array
        The covariance matrix, dtype of ``anomaly``.
    kind : str
        ``"time"`` or ``"space"``.
    """
    xp = array_api_compat.array_namespace(anomaly, weight)
    if kind not in COVARIANCE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(COVARIANCE_KINDS)}; got {kind!r}.")
    xw = weight_columns(anomaly, weight)
    n, p = xw.shape
    if n < 2:
        raise ValueError(f"a covariance needs at least 2 samples; got {n}.")
    if bool(xp.any(xp.isnan(xw))):
        raise ValueError("anomaly contains NaN; pass only complete columns to weighted_covariance.")
    if kind == "auto":
        kind = covariance_kind(n, p)
    if kind == "time":
        return (xw @ xp.matrix_transpose(xw)) / (n - 1.0), kind
    return (xp.matrix_transpose(xw) @ xw) / (n - 1.0), kind
