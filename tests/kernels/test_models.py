"""Log posterior densities of kernels.models against exact densities, scipy and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as st

from pipeline.backend import to_numpy
from pipeline.kernels import models, posterior


def _regression_data(n=50, k=3, cells=7, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k))
    Z = (X - X.mean(0)) / X.std(0)
    beta = rng.normal(size=(k, cells))
    Y = Z @ beta + rng.normal(scale=rng.uniform(0.5, 2.0, cells), size=(n, cells))
    return Z, Y - Y.mean(0)


def _fd_check(model, theta, h=1e-6, rtol=1e-6, xp=np):
    """Central finite differences of logp against the analytic gradient."""
    def logp_grad(t):
        return tuple(to_numpy(v) for v in model.logp_grad(xp.asarray(t)))

    theta = np.asarray(theta)
    grad = logp_grad(theta)[1]
    for i in range(theta.shape[0]):
        step = np.zeros_like(theta)
        step[i] = h
        fd = (logp_grad(theta + step)[0] - logp_grad(theta - step)[0]) / (2 * h)
        np.testing.assert_allclose(grad[i], fd, rtol=rtol, atol=rtol * (1 + np.abs(fd).max()))


@pytest.mark.parametrize("alpha", [0.0, 2.5])
def test_regression_logp_is_exact_posterior(xp, to_np, alpha):
    Z, Yc = _regression_data()
    k, cells = Z.shape[1], Yc.shape[1]
    a0, b0 = 2.0, 1.5
    model = models.bayes_regression(xp.asarray(Z), xp.asarray(Yc), alpha=alpha, a0=a0, b0=b0)
    assert model.dim == k + 1 and model.param_names[-1] == "log_sigma2"
    f = posterior.factor(Z, alpha)
    post = posterior.conjugate(f, Yc, a0, b0)
    lam_inv = posterior.lambda_inverse(f)
    rng = np.random.default_rng(1)
    theta = np.concatenate([post.mu[:, None, :] + 0.3 * rng.normal(size=(k, 4, cells)),
                            np.log(post.b_n / post.a_n) + 0.3 * rng.normal(size=(1, 4, cells))])
    logp = to_np(model.logp_grad(xp.asarray(theta))[0])
    exact = np.empty((4, cells))
    for c in range(4):
        for j in range(cells):
            s2 = np.exp(theta[k, c, j])
            exact[c, j] = (st.invgamma.logpdf(s2, post.a_n, scale=post.b_n[j])
                           + st.multivariate_normal.logpdf(theta[:k, c, j], post.mu[:, j], s2 * lam_inv)
                           + theta[k, c, j])
    # equal up to one constant per cell
    np.testing.assert_allclose(logp - logp[0], exact - exact[0], rtol=1e-9, atol=1e-8)
    constrained = model.constrain(xp.asarray(theta))
    np.testing.assert_allclose(to_np(constrained["sigma2"]), np.exp(theta[k]), rtol=1e-12)


def test_regression_gradient_matches_finite_differences():
    Z, Yc = _regression_data(k=2)
    model = models.bayes_regression(Z, Yc, alpha=1.0, a0=1.0, b0=1.0)
    theta = np.random.default_rng(2).normal(size=(3, 3, Yc.shape[1]))
    _fd_check(model, theta)


def test_regression_rejects_bad_input():
    Z, Yc = _regression_data()
    with pytest.raises(ValueError, match="share n"):
        models.bayes_regression(Z, Yc[:-1], alpha=1.0, a0=1.0, b0=1.0)
    with pytest.raises(ValueError, match="b0"):
        models.bayes_regression(Z, Yc, alpha=1.0, a0=1.0, b0=0.0)


def _normal_exact_logp(x, theta, loc0, kappa0, a0, b0):
    """Log posterior in (mu, log sigma) from scipy densities: likelihood + NIG prior + log-Jacobian."""
    mu, l = theta
    s2 = np.exp(2 * l)
    loglik = st.norm.logpdf(x[:, None, :], mu, np.sqrt(s2)).sum(0)
    prior = st.norm.logpdf(mu, loc0, np.sqrt(s2 / kappa0)) + st.invgamma.logpdf(s2, a0, scale=b0)
    return loglik + prior + np.log(2 * s2)


@pytest.mark.parametrize("lognormal", [False, True])
def test_normal_unknown_logp_and_posterior(xp, to_np, lognormal):
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 1.5, size=(30, 6))
    data = np.exp(x) if lognormal else x
    fn = models.lognormal_unknown if lognormal else models.normal_unknown
    model = fn(xp.asarray(data), loc0=0.5, kappa0=0.3, a0=2.0, b0=1.2)
    theta = np.stack([rng.normal(2.0, 0.3, size=(3, 6)), rng.normal(0.4, 0.2, size=(3, 6))])
    logp = to_np(model.logp_grad(xp.asarray(theta))[0])
    exact = _normal_exact_logp(x, theta, 0.5, 0.3, 2.0, 1.2)
    np.testing.assert_allclose(logp - logp[0], exact - exact[0], rtol=1e-9, atol=1e-8)
    # the conjugate update: N-IG posterior density equals the normalized product above, up to a constant
    post = models.normal_posterior(xp.asarray(x), loc0=0.5, kappa0=0.3, a0=2.0, b0=1.2)
    m, k, a, b = (to_np(v) for v in post)
    s2 = np.exp(2 * theta[1])
    dens = st.norm.logpdf(theta[0], m, np.sqrt(s2 / k)) + st.invgamma.logpdf(s2, a, scale=b) + np.log(2 * s2)
    np.testing.assert_allclose(dens - exact, np.broadcast_to((dens - exact)[0], dens.shape), rtol=1e-9, atol=1e-8)
    if not lognormal:
        _fd_check(model, theta, xp=xp)


def test_normal_defaults_and_checks():
    x = np.random.default_rng(4).normal(100.0, 5.0, size=(20, 5))
    post = models.normal_posterior(x)
    np.testing.assert_allclose(post.loc, x.mean(0), rtol=1e-12)  # prior centred on the data
    theta0 = models.normal_unknown(x).init(4, 0)
    assert theta0.shape == (2, 4, 5) and np.all(np.isfinite(theta0))
    with pytest.raises(ValueError, match="finite"):
        models.normal_unknown(np.where(x > 105, np.nan, x))
    with pytest.raises(ValueError, match="positive"):
        models.lognormal_unknown(x - 100.0)


# ------------------------------------------------------------- GEV


def _gev_exact(x, theta, sd_mu, sd_eta, pq):
    """Posterior in standardized (mu, eta, xi) from scipy: genextreme, normal priors, M&S beta on 1/2 - xi."""
    m, s = np.nanmean(x, 0), np.nanstd(x, 0)
    loc, scale, xi = m + s * theta[0], s * np.exp(theta[1]), theta[2]
    loglik = np.nansum(st.genextreme.logpdf(x[:, None, :], -xi, loc, scale), 0)
    prior = (st.norm.logpdf(loc, m, sd_mu * s) + st.norm.logpdf(np.log(scale), np.log(s), sd_eta)
             + st.beta.logpdf(0.5 - xi, *pq))
    return loglik + prior


def test_gev_logp_against_scipy(xp, to_np):
    rng = np.random.default_rng(5)
    x = st.genextreme.rvs(-0.1, loc=30.0, scale=6.0, size=(40, 5), random_state=rng)
    x[[3, 17, 30], 4] = np.nan  # missing values are left out
    model = models.bayes_gev(xp.asarray(x), prior_loc_sd=3.0, prior_log_scale_sd=1.5)
    theta = np.asarray(to_np(model.init(4, 1)))
    theta[2, 0] = 1e-9  # the Gumbel limit
    logp = to_np(model.logp_grad(xp.asarray(theta))[0])
    exact = _gev_exact(x, theta, 3.0, 1.5, (6, 9))
    assert np.all(np.isfinite(logp))
    np.testing.assert_allclose(logp - logp[0], exact - exact[0], rtol=1e-9, atol=1e-7)
    # outside the prior's support (-1/2, 1/2), or outside the data's support: -inf
    bad = theta.copy()
    bad[2, 0] = 0.55
    bad[2, 1] = -0.5
    bad[0, 2] = 50.0  # location far above all data with xi > 0: data below the lower end
    bad[2, 2] = 0.3
    out = to_np(model.logp_grad(xp.asarray(bad))[0])
    assert np.isneginf(out[0, 0]) and np.isneginf(out[1, 0]) and np.isneginf(out[2, 0])


def test_gev_gradient_and_constrain():
    rng = np.random.default_rng(6)
    x = st.genextreme.rvs(-0.2, loc=5.0, scale=2.0, size=(50, 4), random_state=rng)
    model = models.bayes_gev(x)
    theta = model.init(3, 2)
    _fd_check(model, theta, h=1e-6, rtol=1e-5)
    par = model.constrain(theta)
    np.testing.assert_allclose(par["scale"], x.std(0) * np.exp(theta[1]), rtol=1e-12)
    levels = models.gev_return_levels(par, [10, 100])
    ref = st.genextreme.ppf([[0.9], [0.99]], -par["shape"].ravel(), par["loc"].ravel(), par["scale"].ravel())
    np.testing.assert_allclose(levels.reshape(2, -1), ref, rtol=1e-10)
    assert levels.shape == (2, 3, 4)
    with pytest.raises(ValueError, match="periods"):
        models.gev_return_levels(par, [1.0])


def test_gev_reference_fixes_the_prior_scale(xp, to_np):
    """With ``reference=(center, scale)`` the prior is fixed in those units, whatever the data: the log density
    equals scipy's with ``m, s`` replaced by the reference."""
    rng = np.random.default_rng(7)
    x = st.genextreme.rvs(0.1, loc=2.0, scale=1.5, size=(30, 4), random_state=rng)
    x[[2, 9], 1] = np.nan
    center, scale = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 2.0, 0.5, 1.0])
    model = models.bayes_gev(xp.asarray(x), prior_loc_sd=1.0, prior_log_scale_sd=0.5,
                             reference=(xp.asarray(center), xp.asarray(scale)))
    theta = np.asarray(to_np(model.init(3, 4)))
    logp = to_np(model.logp_grad(xp.asarray(theta))[0])
    loc, sc, xi = center + scale * theta[0], scale * np.exp(theta[1]), theta[2]
    exact = (np.nansum(st.genextreme.logpdf(x[:, None, :], -xi, loc, sc), 0) + st.norm.logpdf(theta[0], 0, 1.0)
             + st.norm.logpdf(theta[1], 0, 0.5) + st.beta.logpdf(0.5 - xi, 6, 9))
    np.testing.assert_allclose(logp - logp[0], exact - exact[0], rtol=1e-9, atol=1e-7)
    par = model.constrain(xp.asarray(theta))
    np.testing.assert_allclose(to_np(par["scale"]), sc, rtol=1e-12)
    with pytest.raises(ValueError, match="reference"):
        models.bayes_gev(xp.asarray(x), reference=(0.0, -1.0))
