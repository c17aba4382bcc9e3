"""EOF kernels: the decomposition of a weighted anomaly matrix and its diagnostics.

Given the weighted anomaly matrix ``X_w`` (``n`` samples by ``p`` features) with
thin SVD ``X_w = U S Vᵀ``, the EOFs are the columns of ``V``, the (unscaled)
principal components are ``U S = X_w V`` and the eigenvalues of the covariance
are ``λ = S²/(n−1)``. Three routes give the same result:

* ``"time"``: ``eigh`` of the ``n×n`` Gram matrix ``G = X_w X_wᵀ/(n−1) = U Λ Uᵀ``;
  EOFs ``X_wᵀ U / s`` with ``s = ‖X_wᵀ u‖ = sqrt(λ(n−1))``, PCs ``U s``.
  Cheapest when ``n ≤ p``.
* ``"space"``: ``eigh`` of the ``p×p`` covariance ``C = X_wᵀ X_w/(n−1) = V Λ Vᵀ``;
  PCs ``X_w V``. Cheapest when ``p < n``.
* ``"svd"``: the thin SVD of ``X_w`` directly (most accurate, most costly).

Total variance is the trace of the covariance, the sum of all eigenvalues. The
numerical rank counts eigenvalues above ``max(n, p)·eps·λ_max``.

Sign rule: the element of largest magnitude of each EOF is made positive (the
first such element if several tie) and its PC flips with it, so results do not
depend on the solver.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import array_api_compat

Array = Any

METHODS = ("time", "space", "svd")


class EOFResult(NamedTuple):
    """Leading modes of a weighted anomaly matrix.

    Attributes
    ----------
    eof : (feature, mode) array
        Unit-norm EOFs, sign rule applied.
    pc : (sample, mode) array
        Unscaled principal components ``X_w·eof``.
    eigenvalue : (mode,) array
        Variance of each mode, ``S²/(n−1)``.
    total_variance : float
        Trace of the weighted covariance (sum of all eigenvalues).
    rank : int
        Numerical rank of ``X_w``.
    method : str
        The route taken: ``"time"``, ``"space"`` or ``"svd"``.
    """

    eof: Array
    pc: Array
    eigenvalue: Array
    total_variance: float
    rank: int
    method: str


def _eigh_descending(xp: Any, matrix: Array) -> tuple[Array, Array]:
    evals, evecs = xp.linalg.eigh(matrix)
    return xp.flip(evals, axis=0), xp.flip(evecs, axis=1)


def _spectrum(xp: Any, xw: Array, method: str, covariance: Array | None) -> tuple[Array, Array]:
    """All eigenvalues (descending) and the matching vectors of ``method``.

    Returns ``U`` (sample, ·) for ``"time"``, ``V`` (feature, ·) for ``"space"``
    and the pair ``(U·S, V)`` stacked as a tuple for ``"svd"``.
    """
    n = xw.shape[0]
    if method == "svd":
        u, s, vh = xp.linalg.svd(xw, full_matrices=False)
        return s * s / (n - 1.0), (u * s[None, :], xp.matrix_transpose(vh))
    if covariance is None:
        if method == "time":
            covariance = (xw @ xp.matrix_transpose(xw)) / (n - 1.0)
        else:
            covariance = (xp.matrix_transpose(xw) @ xw) / (n - 1.0)
    return _eigh_descending(xp, xp.astype(covariance, xw.dtype))


def numerical_rank(eigenvalues: Array, shape: tuple[int, int]) -> int:
    """Number of eigenvalues above ``max(shape)·eps·max(eigenvalues)``.

    Parameters
    ----------
    eigenvalues : (m,) array
        Eigenvalues of the covariance of an ``shape`` data matrix.
    shape : (int, int)
        ``(n_samples, n_features)`` of the data matrix.
    """
    xp = array_api_compat.array_namespace(eigenvalues)
    largest = float(xp.max(eigenvalues))
    if not largest > 0.0:
        return 0
    tol = max(shape) * float(xp.finfo(eigenvalues.dtype).eps) * largest
    return int(xp.sum(xp.astype(eigenvalues > tol, xp.int64)))


def apply_sign_rule(eof: Array, pc: Array) -> tuple[Array, Array]:
    """Flip each mode so the largest-magnitude element of its EOF is positive.

    Parameters
    ----------
    eof : (feature, mode) array
    pc : (sample, mode) array

    Returns
    -------
    eof, pc : arrays
        Both multiplied by the same ±1 per mode.
    """
    xp = array_api_compat.array_namespace(eof, pc)
    idx = xp.argmax(xp.abs(eof), axis=0)
    rows = xp.arange(eof.shape[0], device=array_api_compat.device(eof))
    pick = rows[:, None] == xp.astype(idx, rows.dtype)[None, :]
    peak = xp.sum(xp.where(pick, eof, xp.zeros_like(eof)), axis=0)
    sign = xp.where(peak < 0, -xp.ones_like(peak), xp.ones_like(peak))
    return eof * sign[None, :], pc * xp.astype(sign, pc.dtype)[None, :]


def _check_inputs(xw: Array, n_modes: int, method: str, covariance: Array | None) -> None:
    if xw.ndim != 2:
        raise ValueError(f"xw must be a 2-D (sample, feature) matrix; got {xw.ndim} dimensions.")
    if xw.shape[0] < 2:
        raise ValueError(f"EOFs need at least 2 samples; got {xw.shape[0]}.")
    if isinstance(n_modes, bool) or not isinstance(n_modes, int) or n_modes < 1:
        raise ValueError(f"n_modes must be an integer of at least 1; got {n_modes!r}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    if covariance is not None and method != "svd":
        size = xw.shape[0] if method == "time" else xw.shape[1]
        if tuple(covariance.shape) != (size, size):
            raise ValueError(
                f"covariance has shape {tuple(covariance.shape)} but method {method!r} needs ({size}, {size})."
            )


def eof_decomposition(
    xw: Array,
    n_modes: int,
    *,
    method: str = "svd",
    covariance: Array | None = None,
    label: str = "input",
) -> EOFResult:
    """The leading ``n_modes`` EOFs, PCs and eigenvalues of ``X_w``.

    Parameters
    ----------
    xw : (sample, feature) array
        Weighted, centred anomalies of complete cells.
    n_modes : int
        Number of modes to return, at least 1 and at most the numerical rank.
    method : {"time", "space", "svd"}
        Route to the decomposition (see the module docstring).
    covariance : array, optional
        A precomputed covariance of the kind ``method`` needs (``n×n`` for
        ``"time"``, ``p×p`` for ``"space"``); computed from ``xw`` when absent,
        ignored for ``"svd"``.
    label : str
        Name of the data used in error messages (e.g. the field name).

    Returns
    -------
    EOFResult

    Raises
    ------
    ValueError
        On a bad ``method`` or ``n_modes``, a covariance of the wrong shape, or
        ``n_modes`` above the numerical rank.
    """
    xp = array_api_compat.array_namespace(xw)
    _check_inputs(xw, n_modes, method, covariance)
    n, p = xw.shape
    evals, vectors = _spectrum(xp, xw, method, covariance)
    rank = numerical_rank(evals, (n, p))
    if n_modes > rank:
        raise ValueError(
            f"n_modes={n_modes} exceeds the rank ({rank}) of the {label} anomalies; "
            f"ask for at most {rank} modes."
        )
    k = n_modes
    if method == "svd":
        pc, eof = vectors[0][:, :k], vectors[1][:, :k]
    elif method == "space":
        eof = vectors[:, :k]
        pc = xw @ eof
    else:
        u = vectors[:, :k]
        raw = xp.matrix_transpose(xw) @ u
        s = xp.linalg.vector_norm(raw, axis=0)
        eof, pc = raw / s[None, :], u * s[None, :]
    eof, pc = apply_sign_rule(eof, pc)
    return EOFResult(eof, pc, evals[:k], float(xp.sum(evals)), rank, method)


def north_error(eigenvalue: Array, n_samples: int) -> Array:
    """North et al. (1982) rule-of-thumb sampling error ``δλ = λ·sqrt(2/n)``."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer; got {n_samples!r}.")
    return eigenvalue * math.sqrt(2.0 / n_samples)


def _centre(xp: Any, a: Array) -> Array:
    return a - xp.mean(a, axis=0)[None, :]


def _check_pair(anomaly: Array, pc: Array) -> None:
    if anomaly.ndim != 2 or pc.ndim != 2 or anomaly.shape[0] != pc.shape[0]:
        raise ValueError(
            f"anomaly (sample, feature) and pc (sample, mode) must be 2-D with the same number of "
            f"samples; got shapes {tuple(anomaly.shape)} and {tuple(pc.shape)}."
        )
    if anomaly.shape[0] < 2:
        raise ValueError(f"correlations need at least 2 samples; got {anomaly.shape[0]}.")


def eof_correlation(anomaly: Array, pc: Array) -> Array:
    """Pearson correlation over samples of each anomaly column with each PC.

    ``r_jm = Σ_t a'_tj p'_tm / (‖a'_j‖ ‖p'_m‖)`` with primes for centred
    columns; NaN for a constant column.

    Parameters
    ----------
    anomaly : (sample, feature) array
        Unweighted anomalies of complete cells.
    pc : (sample, mode) array

    Returns
    -------
    (feature, mode) array
    """
    xp = array_api_compat.array_namespace(anomaly, pc)
    _check_pair(anomaly, pc)
    a, b = _centre(xp, anomaly), _centre(xp, xp.astype(pc, anomaly.dtype))
    num = xp.matrix_transpose(a) @ b
    den = xp.linalg.vector_norm(a, axis=0)[:, None] * xp.linalg.vector_norm(b, axis=0)[None, :]
    ok = den > 0
    corr = num / xp.where(ok, den, xp.ones_like(den))
    return xp.where(ok, corr, xp.full_like(corr, xp.nan))


def eof_covariance(anomaly: Array, pc: Array) -> Array:
    """Covariance (divisor ``n−1``) of each anomaly column with each unit-variance PC.

    ``c_jm = Σ_t a'_tj p'_tm / ((n−1) σ_m)`` with ``σ_m`` the standard
    deviation (ddof=1) of PC ``m``: the anomaly, in field units, that goes with
    a one-standard-deviation excursion of the PC.

    Parameters
    ----------
    anomaly : (sample, feature) array
        Unweighted anomalies of complete cells.
    pc : (sample, mode) array
        PCs with non-zero variance.

    Returns
    -------
    (feature, mode) array
    """
    xp = array_api_compat.array_namespace(anomaly, pc)
    _check_pair(anomaly, pc)
    n = anomaly.shape[0]
    b = _centre(xp, xp.astype(pc, anomaly.dtype))
    sigma = xp.std(b, axis=0, correction=1)
    if not bool(xp.all(sigma > 0)):
        raise ValueError("every PC passed to eof_covariance must have non-zero variance.")
    return (xp.matrix_transpose(_centre(xp, anomaly)) @ (b / sigma[None, :])) / (n - 1.0)
