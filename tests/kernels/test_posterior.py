"""Posterior kernels against the conjugate formulas and scipy.stats.

Deterministic pieces (``mu_n``, ``b_n``, ``Lambda_n^{-1}``) are compared with a
dense NumPy computation to rtol 1e-10. Draw-based quantities are compared with
the exact posterior within stated Monte-Carlo error: ``k`` standard errors of
the estimator, with ``k`` = 5 (so a correct sampler fails with negligible
probability, and the seeds are fixed anyway).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from pipeline.kernels import posterior as kp
from pipeline.kernels import regression as kr

RTOL = 1e-10


def _problem(seed: int = 0, n: int = 30, k: int = 3, cells: int = 4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, k)) @ np.array([[1.0, 0.4, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])[:k, :k]
    Z = (X - X.mean(0)) / X.std(0)
    Y = 1.0 + Z @ rng.standard_normal((k, cells)) + 0.7 * rng.standard_normal((n, cells))
    return Z, Y - Y.mean(0)


def _dense(Z, Yc, alpha, a0, b0):
    """The conjugate update written out with dense linear algebra."""
    Lam = Z.T @ Z + alpha * np.eye(Z.shape[1])
    mu = np.linalg.solve(Lam, Z.T @ Yc)
    b_n = b0 + 0.5 * (np.sum(Yc**2, 0) - np.einsum("kc,kl,lc->c", mu, Lam, mu))
    return mu, a0 + 0.5 * (len(Z) - 1), b_n, np.linalg.inv(Lam)


def _rngs(seed: int):
    return np.random.default_rng(seed), np.random.default_rng(seed + 1000)


def test_conjugate_update_matches_dense_formulas(xp, to_np):
    Z, Yc = _problem()
    alpha, a0, b0 = 3.0, 0.5, 0.2
    f = kp.factor(xp.asarray(Z), alpha)
    post = kp.conjugate(f, xp.asarray(Yc), a0, b0)
    mu, a_n, b_n, lam_inv = _dense(Z, Yc, alpha, a0, b0)
    np.testing.assert_allclose(to_np(post.mu), mu, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(to_np(post.b_n), b_n, rtol=RTOL)
    assert post.a_n == a_n
    np.testing.assert_allclose(to_np(kp.lambda_inverse(f)), lam_inv, rtol=RTOL, atol=1e-13)
    # the posterior mean is the ridge solution for the same alpha
    np.testing.assert_allclose(to_np(post.mu), to_np(kr.ridge(xp.asarray(Z), xp.asarray(Yc), alpha)), rtol=RTOL)


def test_factor_rejects_singular_precision(xp):
    Z, _ = _problem()
    Z[:, 2] = (Z[:, 0] + Z[:, 1]) / np.sqrt(2.0)
    with pytest.raises(ValueError, match="singular"):
        kp.factor(xp.asarray(Z), 0.0)
    kp.factor(xp.asarray(Z), 0.1)  # a penalty makes it proper


def test_draw_mean_and_covariance(xp, to_np):
    """Draw means vs mu_n and draw covariance vs b_n/(a_n-1) Lambda_n^{-1}."""
    Z, Yc = _problem(cells=3)
    alpha, a0, b0, D = 1.0, 2.0, 1.0, 40_000
    mu, a_n, b_n, lam_inv = _dense(Z, Yc, alpha, a0, b0)
    f = kp.factor(xp.asarray(Z), alpha)
    sigma2, beta = kp.draw(kp.conjugate(f, xp.asarray(Yc), a0, b0), f.L, D, *_rngs(1))
    beta, sigma2 = to_np(beta), to_np(sigma2)
    for c in range(3):
        cov = b_n[c] / (a_n - 1) * lam_inv
        se_mean = np.sqrt(np.diag(cov) / D)
        np.testing.assert_array_less(np.abs(beta[c].mean(0) - mu[:, c]), 5 * se_mean)
        emp = np.cov(beta[c], rowvar=False)
        # sd of a sample covariance ~ sqrt((C_ii C_jj + C_ij^2)/D), inflated 1.5x for the t tails
        se_cov = 1.5 * np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / D)
        np.testing.assert_array_less(np.abs(emp - cov), 5 * se_cov)
        mean_s2, var_s2 = b_n[c] / (a_n - 1), b_n[c] ** 2 / ((a_n - 1) ** 2 * (a_n - 2))
        assert abs(sigma2[c].mean() - mean_s2) < 5 * np.sqrt(var_s2 / D)


def test_sorted_quantile_matches_numpy(xp, to_np):
    draws = np.random.default_rng(2).standard_normal((5, 101, 3))
    s = xp.sort(xp.asarray(draws), axis=1)
    for q in (0.0, 0.05, 0.5, 0.937, 1.0):
        np.testing.assert_allclose(to_np(kp.sorted_quantile(s, q, axis=1)), np.quantile(draws, q, axis=1), rtol=1e-12)


def test_marginals_are_student_t(xp, to_np):
    """Interval ends, p_positive and E[sigma] vs the exact marginal posteriors."""
    Z, Yc = _problem(seed=3, n=12, cells=2)  # few samples: heavy t tails
    Yc[:, 1] *= 0.05  # second cell: coefficients near zero, so p_positive is not 0 or 1
    alpha, a0, b0, D, level = 0.5, 0.01, 0.01, 50_000, 0.9
    mu, a_n, b_n, lam_inv = _dense(Z, Yc, alpha, a0, b0)
    std = np.array([2.0, 0.5, 1.0])  # report in "original" units beta / std
    out = kp.sample_summaries(
        xp.asarray(Z), xp.asarray(Yc), xp.asarray(std), alpha, a0=a0, b0=b0, n_draws=D, level=level,
        chunk_cells=1, rng_gamma=np.random.default_rng(4), rng_normal=np.random.default_rng(5),
    )
    scale = np.sqrt(b_n[None, :] / a_n * np.diag(lam_inv)[:, None]) / std[:, None]
    t = stats.t(df=2 * a_n, loc=mu / std[:, None], scale=scale)
    for q, got in ((0.05, out.ci_lower), (0.95, out.ci_upper)):
        se = np.sqrt(q * (1 - q) / D) / t.pdf(t.ppf(q))
        np.testing.assert_array_less(np.abs(to_np(got) - t.ppf(q)), 5 * se)
    p = t.sf(0.0)
    assert np.any((p > 0.05) & (p < 0.95))
    np.testing.assert_array_less(np.abs(to_np(out.p_positive) - p), 5 * np.sqrt(p * (1 - p) / D) + 1e-12)
    np.testing.assert_array_less(np.abs(to_np(out.sd) - t.std()), 0.05 * t.std())
    # E[sigma] for sigma^2 ~ InvGamma(a_n, b_n) is sqrt(b_n) Gamma(a_n - 1/2) / Gamma(a_n)
    e_sigma = np.sqrt(b_n) * np.exp(special.gammaln(a_n - 0.5) - special.gammaln(a_n))
    sd_sigma = np.sqrt(b_n / (a_n - 1) - e_sigma**2)
    np.testing.assert_array_less(np.abs(to_np(out.sigma) - e_sigma), 5 * sd_sigma / np.sqrt(D))


def test_credible_interval_coverage_under_the_prior(xp, to_np):
    """Truth drawn from the prior: the 90% intervals cover it 90% of the time.

    2000 cells x 3 coefficients; the binomial sd is taken from the 2000 cells
    alone (coefficients of one cell share sigma), giving a 4-sd band of 0.027.
    """
    rng = np.random.default_rng(7)
    n, k, cells, alpha, a0, b0 = 25, 3, 2000, 2.0, 3.0, 2.0
    Z, _ = _problem(seed=8, n=n)
    sigma2 = b0 / rng.standard_gamma(a0, size=cells)
    beta = rng.standard_normal((k, cells)) * np.sqrt(sigma2 / alpha)
    Y = 4.0 + Z @ beta + np.sqrt(sigma2) * rng.standard_normal((n, cells))  # intercept: flat prior
    out = kp.sample_summaries(
        xp.asarray(Z), xp.asarray(Y - Y.mean(0)), xp.ones(k, dtype=xp.float64), alpha, a0=a0, b0=b0,
        n_draws=1000, level=0.9, chunk_cells=500, rng_gamma=np.random.default_rng(9),
        rng_normal=np.random.default_rng(10),
    )
    covered = (to_np(out.ci_lower) <= beta) & (beta <= to_np(out.ci_upper))
    band = 4 * np.sqrt(0.9 * 0.1 / cells)
    assert abs(covered.mean() - 0.9) < band
    assert np.all(np.abs(covered.mean(axis=1) - 0.9) < band * np.sqrt(k))


def _summaries(xp, chunk: int, seed: int = 11):
    Z, Yc = _problem(cells=23)
    return kp.sample_summaries(
        xp.asarray(Z), xp.asarray(Yc), xp.ones(3, dtype=xp.float64), 1.0, a0=0.01, b0=0.01, n_draws=200,
        level=0.9, chunk_cells=chunk, rng_gamma=np.random.default_rng(seed), rng_normal=np.random.default_rng(seed + 1),
    )


def test_same_seed_same_draws_and_chunking_invariance(xp, to_np):
    """Identical seeds reproduce the summaries; with NumPy generators so does any chunk size."""
    whole, again, chunked, other = _summaries(xp, 100), _summaries(xp, 100), _summaries(xp, 5), _summaries(xp, 100, seed=12)
    for name in kp.Summary._fields:
        np.testing.assert_array_equal(to_np(getattr(whole, name)), to_np(getattr(again, name)))
        np.testing.assert_allclose(to_np(getattr(chunked, name)), to_np(getattr(whole, name)), rtol=1e-12, atol=1e-15)
    assert not np.allclose(to_np(other.mean), to_np(whole.mean))


def test_flat_prior_gives_the_classical_ols_intervals(xp, to_np):
    """alpha = 0 is p(beta) ∝ 1: with a0, b0 -> 0 each coefficient is Student-t with n - 1 - k degrees of freedom
    about the OLS fit, with the textbook standard error s sqrt((Z'Z)^-1_jj), s^2 = RSS / (n - 1 - k)."""
    rng = np.random.default_rng(12)
    n, k, cells = 30, 3, 5
    Z = rng.standard_normal((n, k))
    Z -= Z.mean(axis=0)
    Y = Z @ rng.standard_normal((k, cells)) + 0.7 * rng.standard_normal((n, cells))
    Yc = Y - Y.mean(axis=0)
    post = kp.conjugate(kp.factor(xp.asarray(Z), 0.0), xp.asarray(Yc), 1e-12, 1e-12)
    a_n, b_n = float(post.a_n), to_np(post.b_n)
    assert 2 * a_n == pytest.approx(n - 1 - k, abs=1e-9)
    beta, *_ = np.linalg.lstsq(Z, Yc, rcond=None)
    np.testing.assert_allclose(to_np(post.mu), beta, rtol=1e-10)
    rss = np.sum((Yc - Z @ beta) ** 2, axis=0)
    se = np.sqrt(rss / (n - 1 - k))[None, :] * np.sqrt(np.diag(np.linalg.inv(Z.T @ Z)))[:, None]
    scale = np.sqrt(b_n / a_n)[None, :] * np.sqrt(np.diag(np.linalg.inv(Z.T @ Z)))[:, None]
    np.testing.assert_allclose(scale, se, rtol=1e-9)
    # the 90 % interval is the textbook t interval
    half = stats.t.ppf(0.95, n - 1 - k) * se
    np.testing.assert_allclose(stats.t.ppf(0.95, 2 * a_n) * scale, half, rtol=1e-8)
