"""Linear regression of many cells on a few predictors: OLS, ridge (GCV), lasso (CV).

Raw arrays in, raw arrays out, written against the Python array API. The data
matrix ``Y`` is ``(sample, cell)``: every grid cell is one response, and all
cells are fitted at once against the same ``(sample, predictor)`` design.

The predictors are standardized (:func:`standardize`, divisor ``n``, i.e.
``ddof=0``) and both design and responses are centred, so the intercept is
unpenalized and drops out of every fit; :func:`to_original_units` maps the
standardized coefficients back. Penalties therefore refer to standardized
predictors:

* ridge minimizes ``||y - Z b||^2 + alpha ||b||^2``;
* lasso minimizes ``(1/(2n)) ||y - Z b||^2 + alpha ||b||_1`` (scikit-learn's
  convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import array_api_compat

Array = Any


class Standardized(NamedTuple):
    """A standardized design: ``Z = (X - mean) / std`` with ``std`` of divisor n."""

    Z: Array
    mean: Array
    std: Array


class Diagnostics(NamedTuple):
    """Numerical rank and 2-norm condition number of a design."""

    rank: int
    condition_number: float


class LassoFit(NamedTuple):
    """Lasso coefficients ``(predictor, cell)`` and how the descent ended."""

    beta: Array
    n_sweeps: int
    converged: bool


def standardize(X: Array) -> Standardized:
    """Centre each predictor and scale it to unit standard deviation (divisor n).

    ``Z[:, j] = (X[:, j] - mean_j) / std_j`` with
    ``std_j = sqrt(mean_t (X[t, j] - mean_j)^2)`` (``ddof=0``), so that
    ``Z^T Z / n`` is the correlation matrix of the predictors. A constant
    predictor (``std_j == 0``) is left at zero instead of divided by zero; the
    labelled layer rejects such designs before they get here.
    """
    xp = array_api_compat.array_namespace(X)
    mean = xp.mean(X, axis=0)
    std = xp.std(X, axis=0)
    safe = xp.where(std > 0, std, xp.ones_like(std))
    return Standardized(Z=(X - mean) / safe, mean=mean, std=std)


def center(Y: Array) -> tuple[Array, Array]:
    """``(Y - ybar, ybar)`` with ``ybar`` the mean over samples of each cell."""
    xp = array_api_compat.array_namespace(Y)
    ybar = xp.mean(Y, axis=0)
    return Y - ybar, ybar


def _rank_tolerance(Z: Array, s: Array) -> float:
    """NumPy's ``matrix_rank`` default: ``s_max * max(n, k) * eps``."""
    xp = array_api_compat.array_namespace(Z)
    return float(xp.max(s)) * max(Z.shape) * float(xp.finfo(Z.dtype).eps)


def diagnostics(Z: Array) -> Diagnostics:
    """Numerical rank and 2-norm condition number ``s_max / s_min`` of ``Z``.

    The rank counts singular values above ``s_max * max(n, k) * eps`` (NumPy's
    ``matrix_rank`` rule); the condition number is ``inf`` when ``s_min == 0``.
    """
    xp = array_api_compat.array_namespace(Z)
    s = xp.linalg.svdvals(Z)
    rank = int(xp.sum(xp.astype(s > _rank_tolerance(Z, s), xp.int64)))
    s_max, s_min = float(xp.max(s)), float(xp.min(s))
    return Diagnostics(rank=rank, condition_number=s_max / s_min if s_min > 0 else float("inf"))


def ols(Z: Array, Yc: Array) -> Array:
    """Least-squares coefficients ``pinv(Z) @ Yc`` of shape ``(predictor, cell)``.

    With a rank-deficient design this is the minimum-norm solution.
    """
    xp = array_api_compat.array_namespace(Z, Yc)
    return xp.linalg.pinv(Z) @ Yc


def _svd(Z: Array) -> tuple[Array, Array, Array]:
    """Thin SVD ``Z = U diag(s) Vt`` with singular values below the rank tolerance set to 0."""
    xp = array_api_compat.array_namespace(Z)
    U, s, Vt = xp.linalg.svd(Z, full_matrices=False)
    s = xp.where(s > _rank_tolerance(Z, s), s, xp.zeros_like(s))
    return U, s, Vt


def _filter(s: Array, alpha: float) -> tuple[Array, Array]:
    """Ridge filter ``f = s^2/(s^2+alpha)`` and ``g = s/(s^2+alpha)``, both 0 where ``s == 0``."""
    xp = array_api_compat.array_namespace(s)
    denom = s * s + alpha
    safe = xp.where(denom > 0, denom, xp.ones_like(denom))
    return s * s / safe, s / safe


def ridge(Z: Array, Yc: Array, alpha: float) -> Array:
    """Ridge coefficients ``(Z^T Z + alpha I)^{-1} Z^T Yc`` through one thin SVD.

    ``beta = V diag(s/(s^2+alpha)) U^T Yc``; with ``alpha = 0`` this is the
    pseudoinverse (minimum-norm OLS) solution.
    """
    xp = array_api_compat.array_namespace(Z, Yc)
    U, s, Vt = _svd(Z)
    _, g = _filter(s, alpha)
    return xp.matrix_transpose(Vt) @ (g[:, None] * (xp.matrix_transpose(U) @ Yc))


def ridge_gcv(Z: Array, Yc: Array, alphas: Sequence[float]) -> Array:
    """Generalized cross-validation score of ridge for each alpha, summed over cells.

    The hat matrix of the full fit (intercept included) is
    ``H = 11^T/n + Z (Z^T Z + alpha I)^{-1} Z^T`` with
    ``tr H = 1 + sum_i s_i^2 / (s_i^2 + alpha)``, and

    ``GCV(alpha) = sum_cells n ||y - H y||^2 / (n - tr H)^2``.

    One thin SVD of ``Z`` serves every alpha and cell.
    """
    xp = array_api_compat.array_namespace(Z, Yc)
    n = Z.shape[0]
    U, s, _ = _svd(Z)
    UtY = xp.matrix_transpose(U) @ Yc
    scores = []
    for alpha in alphas:
        f, _ = _filter(s, float(alpha))
        resid = Yc - U @ (f[:, None] * UtY)
        dof = 1.0 + float(xp.sum(f))
        scores.append(n * xp.sum(resid * resid) / (n - dof) ** 2)
    return xp.stack(scores)


def _soft(x: Array, t: float) -> Array:
    """Soft thresholding ``sign(x) max(|x| - t, 0)``."""
    xp = array_api_compat.array_namespace(x)
    return xp.sign(x) * xp.clip(xp.abs(x) - t, min=0.0)


def lasso(
    Z: Array, Yc: Array, alpha: float, *, max_iter: int, tol: float, beta0: Array | None = None
) -> LassoFit:
    """Lasso by cyclic coordinate descent, all cells at once.

    Minimizes ``(1/(2n)) ||y - Z b||^2 + alpha ||b||_1`` per cell. With the Gram
    matrix ``G = Z^T Z / n`` and ``c = Z^T Yc / n`` the update of coordinate j is

    ``b_j <- S(c_j - sum_{l != j} G_jl b_l, alpha) / G_jj``

    (``S`` the soft threshold), applied to every cell at once. Sweeps over the
    predictors repeat until the largest change of any coefficient in a sweep is
    below ``tol`` or ``max_iter`` sweeps have run.
    """
    xp = array_api_compat.array_namespace(Z, Yc)
    n, k = Z.shape
    G = xp.matrix_transpose(Z) @ Z / n
    c = xp.matrix_transpose(Z) @ Yc / n
    beta = xp.zeros((k, Yc.shape[1]), dtype=Yc.dtype, device=array_api_compat.device(Yc)) if beta0 is None else beta0
    rows = [beta[j, :] for j in range(k)]
    diag = [float(G[j, j]) for j in range(k)]
    for sweep in range(1, max_iter + 1):
        changes = []
        for j in range(k):
            if diag[j] <= 0:  # an all-zero column keeps a zero coefficient
                continue
            partial = c[j, :] - G[j, :] @ xp.stack(rows) + diag[j] * rows[j]
            new = _soft(partial, alpha) / diag[j]
            changes.append(xp.max(xp.abs(new - rows[j])))
            rows[j] = new
        if not changes or float(xp.max(xp.stack(changes))) < tol:
            return LassoFit(beta=xp.stack(rows), n_sweeps=sweep, converged=True)
    return LassoFit(beta=xp.stack(rows), n_sweeps=max_iter, converged=False)


def fold_bounds(n: int, n_folds: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` blocks of sizes ``n // K`` or ``n // K + 1``."""
    base, extra = divmod(n, n_folds)
    bounds, start = [], 0
    for i in range(n_folds):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def lasso_cv(
    Z: Array, Yc: Array, alphas: Sequence[float], *, n_folds: int, max_iter: int, tol: float
) -> Array:
    """K-fold cross-validated squared error of the lasso for each alpha.

    Folds are contiguous blocks in time. In each fold the training design and
    responses are re-centred on their own means (intercept refitted), the lasso
    is fitted for every alpha (largest first, warm-started), and the held-out
    samples are predicted. The score of an alpha is
    ``sum_cells (1/n) sum_t (y_tc - yhat_tc)^2``: the out-of-fold mean squared
    error summed over cells.
    """
    xp = array_api_compat.array_namespace(Z, Yc)
    n = Z.shape[0]
    order = sorted(range(len(alphas)), key=lambda i: -float(alphas[i]))
    sse = [0.0] * len(alphas)
    for start, stop in fold_bounds(n, n_folds):
        Ztr = xp.concat([Z[:start, :], Z[stop:, :]], axis=0)
        Ytr = xp.concat([Yc[:start, :], Yc[stop:, :]], axis=0)
        zbar, ybar = xp.mean(Ztr, axis=0), xp.mean(Ytr, axis=0)
        beta = None
        for i in order:
            beta = lasso(Ztr - zbar, Ytr - ybar, float(alphas[i]), max_iter=max_iter, tol=tol, beta0=beta).beta
            err = Yc[start:stop, :] - ybar - (Z[start:stop, :] - zbar) @ beta
            sse[i] += float(xp.sum(err * err))
    return xp.asarray([v / n for v in sse], dtype=Z.dtype, device=array_api_compat.device(Z))


def r2_score(Y: Array, fitted: Array) -> Array:
    """Coefficient of determination per cell, ``1 - SS_res / SS_tot``.

    NaN for a cell whose response is constant (``SS_tot == 0``).
    """
    xp = array_api_compat.array_namespace(Y, fitted)
    resid = Y - fitted
    dev = Y - xp.mean(Y, axis=0)
    ss_res, ss_tot = xp.sum(resid * resid, axis=0), xp.sum(dev * dev, axis=0)
    safe = xp.where(ss_tot > 0, ss_tot, xp.ones_like(ss_tot))
    return xp.where(ss_tot > 0, 1.0 - ss_res / safe, xp.full_like(ss_tot, float("nan")))


def to_original_units(beta_std: Array, mean: Array, std: Array, ybar: Array) -> tuple[Array, Array]:
    """Coefficients and intercept for the unstandardized predictors.

    ``coef_j = beta_std_j / std_j`` and ``intercept = ybar - sum_j coef_j mean_j``.
    """
    xp = array_api_compat.array_namespace(beta_std, mean, std, ybar)
    coef = beta_std / std[:, None]
    return coef, ybar - xp.sum(coef * mean[:, None], axis=0)
