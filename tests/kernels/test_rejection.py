"""Laplace approximation and rejection sampling against the exact conjugate regression posterior.

The reference is :mod:`pipeline.kernels.posterior` (closed form), written out in
``(beta, log sigma^2)``: ``beta | s2 ~ N(mu_n, s2 Lambda_n^{-1})``,
``s2 ~ InvGamma(a_n, b_n)``. Draws are iid, so a mean has Monte Carlo standard
error ``sd / sqrt(n)`` and a standard deviation ``sd sqrt((kurtosis - 1) / (4 n))``
with the exact kurtosis (Student-t for ``beta``, log-inverse-gamma for
``log s2``); each is required within 4 standard errors on >= 99 % of cells.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import special as sc
from scipy import stats

from pipeline.kernels import models, posterior, rejection

N, K, ALPHA, A0, B0 = 40, 3, 1.5, 2.0, 1.0


def _problem(cells: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, K)) @ np.array([[1.0, 0.4, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    Z = (X - X.mean(0)) / X.std(0)
    Y = Z @ rng.standard_normal((K, cells)) + rng.uniform(0.3, 2.0, cells) * rng.standard_normal((N, cells))
    return Z, Y - Y.mean(0)


def _exact(Z, Yc):
    f = posterior.factor(Z, ALPHA)
    return posterior.conjugate(f, Yc, A0, B0), posterior.lambda_inverse(f)


def _exact_logpdf(theta, post, lam_inv):
    """Normalized log density in (beta, l = log s2): normal x inverse gamma x Jacobian s2. theta (p, cells)."""
    beta, l = theta[:K], theta[K]
    s2 = np.exp(l)
    d = beta - post.mu
    quad = np.einsum("ic,ij,jc->c", d, np.linalg.inv(lam_inv), d)
    log_normal = -0.5 * (K * np.log(2 * np.pi * s2) + np.linalg.slogdet(lam_inv)[1] + quad / s2)
    return log_normal + stats.invgamma.logpdf(s2, post.a_n, scale=post.b_n) + l


def _model(xp, Z, Yc):
    return models.bayes_regression(xp.asarray(Z), xp.asarray(Yc), alpha=ALPHA, a0=A0, b0=B0)


def _start(Z, Yc):
    """A rough start away from the mode: least squares and the residual variance, perturbed."""
    beta = np.linalg.lstsq(Z, Yc, rcond=None)[0]
    s2 = np.mean((Yc - Z @ beta) ** 2, axis=0)
    return np.concatenate([0.8 * beta + 0.1, np.log(s2)[None] + 0.5])


def test_laplace_matches_closed_form(xp, to_np):
    """Mode (mu_n, log(b_n / c)) and covariance blockdiag(s2 Lambda^-1, 1/c), c = a_n + k/2.

    Starts farther off in every third cell, so cells converge at different
    iterations and the Newton engine works on subsets of cells.
    """
    Z, Yc = _problem(cells=100)
    post, lam_inv = _exact(Z, Yc)
    start = _start(Z, Yc)
    start[:, ::3] += 1.0
    lap = rejection.laplace(_model(xp, Z, Yc), xp.asarray(start), max_iter=100)
    c = post.a_n + 0.5 * K
    s2 = post.b_n / c
    mode = np.concatenate([post.mu, np.log(s2)[None]])
    cov = np.zeros((K + 1, K + 1, Yc.shape[1]))
    cov[:K, :K] = lam_inv[:, :, None] * s2
    cov[K, K] = 1.0 / c
    assert to_np(lap.converged).all()
    np.testing.assert_allclose(to_np(lap.mode), mode, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(to_np(lap.cov), cov, rtol=1e-6, atol=1e-9 * np.abs(cov).max())


@pytest.fixture(scope="module")
def run():
    """One sampling run on 300 cells, 1000 draws each (numpy), with its exact posterior."""
    import array_api_compat.numpy as xp

    Z, Yc = _problem(cells=300)
    model = _model(xp, Z, Yc)
    t0 = time.perf_counter()
    lap = rejection.laplace(model, xp.asarray(_start(Z, Yc)))
    t1 = time.perf_counter()
    res = rejection.rejection_sample(model, lap.mode, lap.cov, n_draws=1000, seed=11)
    t2 = time.perf_counter()
    print(f"laplace {t1 - t0:.2f} s, rejection {t2 - t1:.2f} s, acceptance {np.median(res.acceptance):.3f}")
    return Z, Yc, model, lap, res


def test_all_cells_finish_with_a_good_envelope(run):
    res = run[-1]
    assert res.draws.shape == (K + 1, 1000, 300)
    assert not res.unfinished.any()
    assert res.failed.mean() <= 0.01
    good = ~res.failed
    assert np.isfinite(res.draws[:, :, good]).all()
    assert np.isnan(res.draws[:, :, ~good]).all()
    assert (res.n_accepted[good] >= 1000).all()


def test_moments_within_monte_carlo_error(run):
    Z, Yc, _, _, res = run
    post, lam_inv = _exact(Z, Yc)
    good = ~res.failed
    n = res.draws.shape[1]
    a, b = post.a_n, post.b_n
    nu = 2 * a
    mean = np.concatenate([post.mu, (np.log(b) - sc.digamma(a))[None]])
    var = np.concatenate([np.diag(lam_inv)[:, None] * b / (a - 1), np.full((1, b.size), sc.polygamma(1, a))])
    kurt_log_s2 = 3 + sc.polygamma(3, a) / sc.polygamma(1, a) ** 2
    kurt = np.concatenate([np.full((K, b.size), 3 + 6 / (nu - 4)), np.full((1, b.size), kurt_log_s2)])
    sd = np.sqrt(var)
    d = res.draws[:, :, good]
    z_mean = (d.mean(1) - mean[:, good]) / (sd[:, good] / np.sqrt(n))
    z_sd = (d.std(1, ddof=1) - sd[:, good]) / (sd[:, good] * np.sqrt((kurt[:, good] - 1) / (4 * n)))
    for z in (z_mean, z_sd):
        assert (np.abs(z) <= 4).mean(axis=1).min() >= 0.99
        assert abs(z.mean()) < 4 / np.sqrt(z.size)  # no systematic shift across cells


def test_sigma2_marginal_ks(run):
    Z, Yc, _, _, res = run
    post, _ = _exact(Z, Yc)
    good = np.flatnonzero(~res.failed)
    s2 = np.exp(res.draws[K])
    pvals = np.array([stats.kstest(s2[:, j], stats.invgamma(post.a_n, scale=post.b_n[j]).cdf).pvalue for j in good])
    assert (pvals < 0.01).mean() <= 0.03
    assert stats.kstest(pvals, "uniform").pvalue > 1e-3


def test_acceptance_rate_is_z_over_m(run):
    """Reported rate = accepted / proposed, and within 4 binomial SE of Z_p / M (q is normalized)."""
    Z, Yc, model, lap, res = run
    post, lam_inv = _exact(Z, Yc)
    np.testing.assert_allclose(res.acceptance, res.n_accepted / res.n_proposed, rtol=1e-15)
    # log Z_p: the model's unnormalized log density minus the normalized one (a constant per cell)
    theta = np.stack([lap.mode, lap.mode + 0.1])
    log_z = [model.logp_grad(t[:, None, :])[0][0] - _exact_logpdf(t, post, lam_inv) for t in theta]
    np.testing.assert_allclose(log_z[0], log_z[1], rtol=1e-10, atol=1e-9)
    expected = np.exp(log_z[0] - res.log_bound)
    se = np.sqrt(expected * (1 - expected) / res.n_proposed)
    good = ~res.failed
    assert (np.abs(res.acceptance - expected)[good] <= 4 * se[good]).mean() >= 0.99
    assert 0.2 < np.median(res.acceptance) < 0.9


def test_too_narrow_envelope_is_flagged(xp, to_np):
    """A Gaussian-like envelope at 0.3 of the posterior's scale does not cover it: the bound is exceeded."""
    Z, Yc = _problem(cells=40, seed=3)
    model = _model(xp, Z, Yc)
    lap = rejection.laplace(model, xp.asarray(_start(Z, Yc)))
    res = rejection.rejection_sample(
        model, lap.mode, lap.cov, n_draws=200, seed=5, df=math.inf, scale=0.3, n_pilot=200, max_rounds=2
    )
    failed = to_np(res.failed)
    assert failed.mean() >= 0.9 and to_np(res.needs_mcmc).all()
    assert np.isnan(to_np(res.draws)[:, :, failed]).all()
    assert to_np(res.needs_mcmc)[failed].all()


def test_reproducible_and_backend_independent(xp, to_np):
    """Same seed, same draws (array-api-strict gives NumPy's draws); another seed, other draws."""
    import array_api_compat.numpy as xnp

    Z, Yc = _problem(cells=12, seed=4)
    out = []
    for ns, seed in ((xp, 7), (xp, 7), (xp, 8), (xnp, 7)):
        model = _model(ns, Z, Yc)
        lap = rejection.laplace(model, ns.asarray(_start(Z, Yc)))
        res = rejection.rejection_sample(model, lap.mode, lap.cov, n_draws=100, seed=seed, n_pilot=200)
        out.append(to_np(res.draws))
    assert np.isfinite(out[0]).all()
    np.testing.assert_array_equal(out[0], out[1])
    assert not np.allclose(out[0], out[2])
    np.testing.assert_allclose(out[0], out[3], rtol=1e-12, atol=1e-12)


def test_bad_covariance_and_unfinished_cells(monkeypatch):
    import array_api_compat.numpy as xp

    Z, Yc = _problem(cells=10, seed=5)
    model = _model(xp, Z, Yc)
    lap = rejection.laplace(model, xp.asarray(_start(Z, Yc)))
    cov = lap.cov.copy()
    cov[:, :, 2] = np.nan
    cov[0, 0, 5] = -1.0
    res = rejection.rejection_sample(model, lap.mode, cov, n_draws=50, seed=1, n_pilot=100)
    assert res.failed[[2, 5]].all() and not res.failed[[0, 1, 3, 4]].any()
    assert np.isnan(res.acceptance[[2, 5]]).all() and np.isnan(res.draws[:, :, [2, 5]]).all()
    # one round of 64 proposals cannot give 500 draws: unfinished, with the draws it got
    monkeypatch.setattr(rejection, "_MAX_FLOATS", 64 * (K + 4) * Yc.shape[1])
    res = rejection.rejection_sample(model, lap.mode, lap.cov, n_draws=500, seed=1, n_pilot=100, max_rounds=2)
    assert res.unfinished.all() and not res.failed.any() and res.needs_mcmc.all()
    assert (res.n_proposed == 128).all()
    np.testing.assert_array_equal(np.isfinite(res.draws[0]).sum(0), res.n_accepted)


def test_an_envelope_too_wide_to_pay_is_given_up_for_mcmc():
    """An envelope 30 times too wide in each of the K + 1 directions accepts about one proposal in 30**(K+1): those
    cells are returned unfinished after the pilot (no proposal rounds), the others are sampled as before."""
    import array_api_compat.numpy as xp

    Z, Yc = _problem(cells=6, seed=7)
    model = _model(xp, Z, Yc)
    lap = rejection.laplace(model, xp.asarray(_start(Z, Yc)))
    cov = lap.cov.copy()
    cov[:, :, :3] *= 900.0  # sd x 30 in the first three cells
    res = rejection.rejection_sample(model, lap.mode, cov, n_draws=200, seed=2, df=math.inf, n_pilot=500)
    assert res.unfinished[:3].all() and not res.failed[:3].any() and res.needs_mcmc[:3].all()
    assert not res.needs_mcmc[3:].any() and np.isfinite(res.draws[:, :, 3:]).all()
    assert (res.n_proposed[:3] == res.n_proposed[3:].max()).all()  # they proposed along, no more
    assert float(np.nanmax(res.acceptance[:3])) < 0.01
    full = rejection.rejection_sample(model, lap.mode, cov, n_draws=200, seed=2, df=math.inf, n_pilot=500,
                                      min_acceptance=0.0, max_rounds=3)
    assert full.n_proposed[:3].min() > 10 * res.n_proposed[:3].max()  # without the floor they drive every round
    with pytest.raises(ValueError, match="min_acceptance"):
        rejection.rejection_sample(model, lap.mode, lap.cov, n_draws=10, seed=1, min_acceptance=1.0)


def test_input_checks():
    import array_api_compat.numpy as xp

    Z, Yc = _problem(cells=3)
    model = _model(xp, Z, Yc)
    mode, cov = np.zeros((K + 1, 3)), np.broadcast_to(np.eye(K + 1)[:, :, None], (K + 1, K + 1, 3)).copy()
    with pytest.raises(ValueError, match="mode must be"):
        rejection.rejection_sample(model, mode, cov[:, :, :2], n_draws=10, seed=0)
    with pytest.raises(ValueError, match="seed"):
        rejection.rejection_sample(model, mode, cov, n_draws=10, seed=-1)
    with pytest.raises(ValueError, match="n_draws"):
        rejection.rejection_sample(model, mode, cov, n_draws=0, seed=0)
    with pytest.raises(ValueError, match="df and scale"):
        rejection.rejection_sample(model, mode, cov, n_draws=10, seed=0, scale=0.0)
    with pytest.raises(ValueError, match="parameter axis"):
        rejection.laplace(model, xp.zeros((K, 3)))
