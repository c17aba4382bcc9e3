"""Regression kernels against independent references.

References: ``numpy.linalg.lstsq`` with an intercept column, planted truth from
``pipeline.synthetic``, ``numpy.linalg.matrix_rank``/``cond``, the ridge normal
equations solved densely, GCV from an explicit hat matrix, the lasso KKT
conditions, soft thresholding for an orthogonal design, and closed-form CV
limits (all-zero coefficients, OLS per fold). All data are float64; "exact"
comparisons use rtol 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import synthetic
from pipeline.kernels import regression as kr

RTOL = 1e-10


def _data(seed: int = 0, n: int = 40, k: int = 3, cells: int = 25):
    """An unstandardized design (offsets, unequal scales, correlation) and responses."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, k)) @ rng.standard_normal((k, k)) * np.array([1.0, 10.0, 0.1][:k]) + 5.0
    beta = rng.standard_normal((k, cells))
    Y = 3.0 + X @ beta + 0.5 * rng.standard_normal((n, cells))
    return X, Y


def _standardize_np(X):
    return (X - X.mean(axis=0)) / X.std(axis=0)


def test_standardize_is_ddof0(xp, to_np):
    X, _ = _data()
    std = kr.standardize(xp.asarray(X))
    np.testing.assert_allclose(to_np(std.Z), _standardize_np(X), rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(to_np(std.std), X.std(axis=0, ddof=0), rtol=RTOL)
    np.testing.assert_allclose(to_np(std.mean), X.mean(axis=0), rtol=RTOL)


def test_ols_matches_lstsq_with_intercept(xp, to_np):
    X, Y = _data()
    std = kr.standardize(xp.asarray(X))
    Yc, ybar = kr.center(xp.asarray(Y))
    coef, intercept = kr.to_original_units(kr.ols(std.Z, Yc), std.mean, std.std, ybar)
    A = np.column_stack([np.ones(len(X)), X])
    ref = np.linalg.lstsq(A, Y, rcond=None)[0]
    np.testing.assert_allclose(to_np(coef), ref[1:], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(to_np(intercept), ref[0], rtol=1e-9, atol=1e-10)


def test_r2_matches_definition_and_nan_for_constant_cell(xp, to_np):
    X, Y = _data()
    Y[:, 0] = 4.0  # constant response: R^2 undefined
    A = np.column_stack([np.ones(len(X)), X])
    fitted = A @ np.linalg.lstsq(A, Y, rcond=None)[0]
    ref = 1 - ((Y - fitted) ** 2).sum(0) / np.maximum(((Y - Y.mean(0)) ** 2).sum(0), 1e-300)
    r2 = to_np(kr.r2_score(xp.asarray(Y), xp.asarray(fitted)))
    assert np.isnan(r2[0])
    np.testing.assert_allclose(r2[1:], ref[1:], rtol=1e-9)


def test_planted_coefficients_recovered_within_standard_errors(xp, to_np):
    """OLS on planted PCs recovers the planted coefficients to within 4 standard errors."""
    modes = synthetic.planted_modes(n_time=80, variances=(9.0, 4.0, 1.0), seed=3)
    X = modes["true_pc"].values
    true_coef, noise = np.array([1.5, -0.8, 0.4]), 0.3
    field = synthetic.planted_regression(X, true_coef, intercept=2.0, noise_std=noise, n_lat=6, n_lon=8, seed=4)
    Y = field["field"].values.reshape(80, -1)
    std = kr.standardize(xp.asarray(X))
    Yc, ybar = kr.center(xp.asarray(Y))
    coef, intercept = kr.to_original_units(kr.ols(std.Z, Yc), std.mean, std.std, ybar)
    Xc = X - X.mean(0)
    se = noise * np.sqrt(np.diag(np.linalg.inv(Xc.T @ Xc)))  # exact standard errors, known noise
    z = (to_np(coef) - true_coef[:, None]) / se[:, None]
    assert np.max(np.abs(z)) < 4.0
    assert abs(np.mean(z)) < 4.0 / np.sqrt(z.size)  # no bias across the 144 estimates
    se_icpt = noise * np.sqrt(1 / 80 + X.mean(0) @ np.linalg.inv(Xc.T @ Xc) @ X.mean(0))
    assert np.max(np.abs(to_np(intercept) - 2.0)) < 4.0 * se_icpt


def test_diagnostics_full_rank(xp):
    X, _ = _data()
    Z = _standardize_np(X)
    diag = kr.diagnostics(xp.asarray(Z))
    assert diag.rank == np.linalg.matrix_rank(Z) == 3
    assert diag.condition_number == pytest.approx(np.linalg.cond(Z), rel=1e-9)
    assert diag.condition_number > 1.5  # the design is correlated, not trivially conditioned


def test_rank_deficient_design(xp, to_np):
    """An exactly collinear predictor: rank 2, huge condition number, min-norm OLS."""
    X, Y = _data(k=3)
    X[:, 2] = X[:, 0] - 2.0 * X[:, 1]
    Z = _standardize_np(X)
    diag = kr.diagnostics(xp.asarray(Z))
    assert diag.rank == np.linalg.matrix_rank(Z) == 2
    assert diag.condition_number > 1e12
    Yc = Y - Y.mean(0)
    beta = to_np(kr.ols(xp.asarray(Z), xp.asarray(Yc)))
    ref = np.linalg.lstsq(Z, Yc, rcond=None)[0]  # minimum-norm solution
    np.testing.assert_allclose(beta, ref, rtol=1e-8, atol=1e-8)


def test_ridge_matches_normal_equations(xp, to_np):
    X, Y = _data()
    Z, Yc, alpha = _standardize_np(X), Y - Y.mean(0), 2.5
    ref = np.linalg.solve(Z.T @ Z + alpha * np.eye(3), Z.T @ Yc)
    beta = to_np(kr.ridge(xp.asarray(Z), xp.asarray(Yc), alpha))
    np.testing.assert_allclose(beta, ref, rtol=RTOL, atol=1e-12)


def _gcv_brute_force(Z, Y, alpha):
    n = len(Z)
    H = np.full((n, n), 1.0 / n) + Z @ np.linalg.solve(Z.T @ Z + alpha * np.eye(Z.shape[1]), Z.T)
    resid = Y - H @ Y
    return n * np.sum(resid**2) / (n - np.trace(H)) ** 2


@pytest.mark.parametrize("collinear", [False, True])
def test_ridge_gcv_matches_explicit_hat_matrix(xp, to_np, collinear):
    X, Y = _data(seed=1)
    if collinear:
        X[:, 2] = X[:, 0] + X[:, 1]
    alphas = [0.01, 0.1, 1.0, 10.0, 100.0] + ([] if collinear else [0.0])
    Z = _standardize_np(X)
    scores = to_np(kr.ridge_gcv(xp.asarray(Z), xp.asarray(Y - Y.mean(0)), alphas))
    ref = [_gcv_brute_force(Z, Y, a) for a in alphas]
    np.testing.assert_allclose(scores, ref, rtol=1e-8)


def _lasso_problem(seed: int = 2, n: int = 60, cells: int = 30):
    """Correlated standardized design; cells depend on a cell-varying subset of 4 predictors."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)) @ np.array([[1, 0.5, 0, 0], [0, 1, 0.3, 0], [0, 0, 1, 0.2], [0, 0, 0, 1.0]])
    beta = rng.standard_normal((4, cells)) * (rng.uniform(size=(4, cells)) < 0.5)
    Y = X @ beta + 0.5 * rng.standard_normal((n, cells))
    return _standardize_np(X), Y - Y.mean(0)


def test_lasso_kkt_conditions(xp, to_np):
    Z, Yc = _lasso_problem()
    alpha = 0.15
    fit = kr.lasso(xp.asarray(Z), xp.asarray(Yc), alpha, max_iter=5000, tol=1e-12)
    assert fit.converged
    beta = to_np(fit.beta)
    grad = Z.T @ (Yc - Z @ beta) / len(Z)
    zero = beta == 0
    assert 0 < zero.sum() < zero.size  # both cases are exercised
    assert np.all(np.abs(grad[zero]) <= alpha + 1e-9)
    np.testing.assert_allclose(grad[~zero], alpha * np.sign(beta[~zero]), atol=1e-9)


def test_lasso_orthogonal_design_is_soft_thresholding(xp, to_np):
    rng = np.random.default_rng(5)
    n, alpha = 50, 0.1
    raw = rng.standard_normal((n, 3))
    q, _ = np.linalg.qr(raw - raw.mean(0))
    Z = np.sqrt(n) * q  # Z^T Z / n = I
    Yc = rng.standard_normal((n, 20))
    Yc -= Yc.mean(0)
    c = Z.T @ Yc / n
    ref = np.sign(c) * np.maximum(np.abs(c) - alpha, 0.0)
    assert 0 < (ref == 0).sum() < ref.size
    fit = kr.lasso(xp.asarray(Z), xp.asarray(Yc), alpha, max_iter=100, tol=1e-14)
    np.testing.assert_allclose(to_np(fit.beta), ref, rtol=RTOL, atol=1e-13)
    assert fit.n_sweeps <= 3


def test_fold_bounds_are_contiguous_and_cover():
    bounds = kr.fold_bounds(23, 5)
    assert bounds[0][0] == 0 and bounds[-1][1] == 23
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert sorted(b - a for a, b in bounds) == [4, 4, 5, 5, 5]


def _cv_reference(Z, Yc, folds, ols: bool):
    """Out-of-fold squared error per sample, summed over cells: OLS or training mean."""
    sse = 0.0
    for a, b in kr.fold_bounds(len(Z), folds):
        train = np.r_[0:a, b : len(Z)]
        if ols:
            A = np.column_stack([np.ones(train.size), Z[train]])
            coef = np.linalg.lstsq(A, Yc[train], rcond=None)[0]
            pred = coef[0] + Z[a:b] @ coef[1:]
        else:
            pred = Yc[train].mean(0)
        sse += np.sum((Yc[a:b] - pred) ** 2)
    return sse / len(Z)


def test_lasso_cv_limits(xp, to_np):
    """alpha = 0 is OLS in every fold; an alpha above max|Z^T y|/n predicts the training mean."""
    Z, Yc = _lasso_problem(n=40, cells=12)
    big = 1e3
    scores = to_np(kr.lasso_cv(xp.asarray(Z), xp.asarray(Yc), [0.0, big], n_folds=4, max_iter=20000, tol=1e-13))
    assert scores[0] == pytest.approx(_cv_reference(Z, Yc, 4, ols=True), rel=1e-8)
    assert scores[1] == pytest.approx(_cv_reference(Z, Yc, 4, ols=False), rel=1e-10)
    assert scores[0] < scores[1]
