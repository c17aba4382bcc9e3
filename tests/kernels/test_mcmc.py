"""Samplers of kernels.mcmc against exact posteriors (conjugate regression, normal-inverse-gamma) and planted GEV.

The long statistical runs use NumPy only (array-api-strict round-trips every
special function through NumPy and is several times slower); a short strict run
checks that the samplers are namespace-clean and give NumPy's draws.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
import scipy.special as sc
import scipy.stats as st

from pipeline.kernels import diagnostics, mcmc, models, posterior

CHAINS = 4


def _regression_inputs(cells, n, k, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k))
    Z = (X - X.mean(0)) / X.std(0)
    Y = Z @ rng.normal(size=(k, cells)) + rng.normal(size=(n, cells)) * rng.uniform(0.5, 2.0, cells)
    return Z, Y - Y.mean(0)


def _regression(cells=200, n=50, k=3, alpha=1.0, a0=2.0, b0=1.0, seed=0):
    """A conjugate regression problem and its exact marginal means and sds in (beta, log s2)."""
    Z, Yc = _regression_inputs(cells, n, k, seed)
    f = posterior.factor(Z, alpha)
    post = posterior.conjugate(f, Yc, a0, b0)
    nu = 2 * post.a_n
    scale = np.sqrt(np.diag(posterior.lambda_inverse(f))[:, None] * post.b_n / post.a_n)
    mean = np.concatenate([post.mu, (np.log(post.b_n) - sc.digamma(post.a_n))[None]])
    sd = np.concatenate([scale * np.sqrt(nu / (nu - 2)), np.full((1, cells), np.sqrt(sc.polygamma(1, post.a_n)))])
    return models.bayes_regression(Z, Yc, alpha=alpha, a0=a0, b0=b0), mean, sd


def _normal(cells=200, n=40, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(rng.normal(0, 5, cells), rng.uniform(0.5, 3, cells), size=(n, cells))
    prior = dict(loc0=1.0, kappa0=0.5, a0=2.0, b0=3.0)
    m, k, a, b = models.normal_posterior(x, **prior)
    nu = 2 * a
    mean = np.stack([m, 0.5 * (np.log(b) - sc.digamma(a))])
    sd = np.stack([np.sqrt(b / (a * k)) * np.sqrt(nu / (nu - 2)), 0.5 * np.sqrt(sc.polygamma(1, a))])
    return models.normal_unknown(x, **prior), mean, sd


def _z_scores(draws, mean, sd):
    """(estimate - exact)/MCSE of the posterior mean and sd of every parameter and cell (MCSE from the ESS)."""
    x = np.moveaxis(draws, 0, 2)  # (chains, draws, p, cells)
    est_mean, est_sd = x.mean((0, 1)), x.std((0, 1), ddof=1)
    se_mean = np.asarray(diagnostics.mcse_mean(x))
    se_var = np.asarray(diagnostics.mcse_mean((x - est_mean) ** 2))
    return (est_mean - mean) / se_mean, (est_sd - sd) / (se_var / (2 * est_sd))


def _passes(draws, mean, sd, limit=4.0):
    """Fraction of (parameter, cell) pairs whose mean and sd are within ``limit`` MCSE of the exact values."""
    z_mean, z_sd = _z_scores(draws, mean, sd)
    return float(np.mean((np.abs(z_mean) < limit) & (np.abs(z_sd) < limit)))


@pytest.mark.parametrize(
    "sampler, kwargs",
    [
        ("hmc", dict(n_warmup=400, n_draws=600, n_leapfrog=8)),
        ("hmc", dict(n_warmup=400, n_draws=600, n_leapfrog=8, mass="dense")),
        ("hmc", dict(n_warmup=400, n_draws=1000, n_leapfrog=1, jitter=False, target_accept=0.6)),  # MALA
        ("rwm", dict(n_warmup=800, n_draws=2500)),
    ],
    ids=["hmc-diag", "hmc-dense", "mala", "rwm"],
)
def test_regression_draws_match_exact_posterior(sampler, kwargs):
    model, mean, sd = _regression()
    out = getattr(mcmc, sampler)(model, model.init(CHAINS, 7), seed=11, **kwargs)
    assert out["draws"].shape == (4, CHAINS, kwargs["n_draws"], 200)
    assert _passes(out["draws"], mean, sd) >= 0.99
    assert out["accept"].shape == (CHAINS, 200)
    if sampler == "hmc":
        assert out["divergent"].shape == (CHAINS, kwargs["n_draws"], 200) and out["divergent"].sum() == 0
        target = kwargs.get("target_accept", 0.8)
        assert target - 0.1 < out["accept"].mean() < 1.0
    else:
        assert 0.15 < out["accept"].mean() < 0.45


@pytest.mark.parametrize("sampler", ["hmc", "rwm"])
def test_normal_unknown_draws_match_exact_posterior(sampler):
    model, mean, sd = _normal()
    n_draws = 600 if sampler == "hmc" else 3000
    out = getattr(mcmc, sampler)(model, model.init(CHAINS, 3), n_warmup=600, n_draws=n_draws, seed=5)
    assert _passes(out["draws"], mean, sd) >= 0.99


def test_broken_settings_are_detected():
    """No warm-up from far off with a tiny random-walk step: the check must fail by a wide margin."""
    model, mean, sd = _regression(cells=100)
    far = np.asarray(model.init(CHAINS, 7)) + 30.0 * sd[:, None, :]
    out = mcmc.rwm(model, far, n_warmup=0, n_draws=400, seed=1, init_scale=1e-3)
    assert _passes(out["draws"], mean, sd) < 0.1
    z_mean, _ = _z_scores(out["draws"], mean, sd)
    assert np.median(np.abs(z_mean)) > 20


def test_reproducible_and_namespace_clean(xp, to_np):
    model_np, _, _ = _regression(cells=6, n=40, k=2)
    theta0 = np.asarray(model_np.init(2, 0))
    runs = {}
    for name, kw in (("hmc", {}), ("hmc", {"mass": "dense"}), ("rwm", {})):
        a = getattr(mcmc, name)(model_np, theta0, n_warmup=30, n_draws=10, seed=4, **kw)
        b = getattr(mcmc, name)(model_np, theta0, n_warmup=30, n_draws=10, seed=4, **kw)
        c = getattr(mcmc, name)(model_np, theta0, n_warmup=30, n_draws=10, seed=5, **kw)
        np.testing.assert_array_equal(a["draws"], b["draws"])
        assert not np.array_equal(a["draws"], c["draws"])
        runs[(name, tuple(kw.items()))] = a
    # the same run in the fixture's namespace: host namespaces share NumPy's generator, so the draws agree;
    # CuPy has its own generator, so there a seed reproduces CuPy's draws
    Z, Yc = _regression_inputs(cells=6, n=40, k=2)
    model = models.bayes_regression(xp.asarray(Z), xp.asarray(Yc), alpha=1.0, a0=2.0, b0=1.0)
    for (name, kw), ref in runs.items():
        out = getattr(mcmc, name)(model, xp.asarray(theta0), n_warmup=30, n_draws=10, seed=4, **dict(kw))
        if array_api_compat.is_cupy_namespace(xp):
            ref = getattr(mcmc, name)(model, xp.asarray(theta0), n_warmup=30, n_draws=10, seed=4, **dict(kw))
            ref = {"draws": to_np(ref["draws"])}
        np.testing.assert_allclose(to_np(out["draws"]), ref["draws"], rtol=1e-9, atol=1e-12)
        assert out["draws"].shape == (3, 2, 10, 6)


def test_divergence_is_flagged_and_rejected():
    model, _, _ = _regression(cells=5)
    theta = np.asarray(model.init(2, 0))
    logp, grad = model.logp_grad(theta)
    r = np.ones_like(theta)
    factor = np.ones_like(theta)
    t = mcmc._leapfrog(model, factor, np.full(logp.shape, 50.0), 3, theta, logp, grad, r)
    assert t.divergent.all() and np.all(t.accept == 0.0)
    t = mcmc._leapfrog(model, factor, np.full(logp.shape, 1e-4), 3, theta, logp, grad, r)
    assert not t.divergent.any() and np.all(t.accept > 0.99)


def test_windows_and_checks():
    assert mcmc.windows(10) == []
    spans = mcmc.windows(1000)
    assert spans[0] == (150, 175) and spans[-1][1] == 900
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    model, _, _ = _regression(cells=3)
    theta0 = np.asarray(model.init(2, 0))
    with pytest.raises(ValueError, match="shape"):
        mcmc.hmc(model, theta0[:2], n_warmup=10, n_draws=10, seed=0)
    with pytest.raises(ValueError, match="mass"):
        mcmc.hmc(model, theta0, n_warmup=10, n_draws=10, seed=0, mass="full")
    bad = theta0.copy()
    bad[-1, 0, 0] = 1e6
    with pytest.raises(ValueError, match="not finite"):
        mcmc.rwm(model, bad, n_warmup=10, n_draws=10, seed=0)


def test_gev_hmc_recovers_planted_parameters():
    rng = np.random.default_rng(8)
    cells, n = 60, 60
    loc, scale, xi = rng.uniform(10, 20, cells), rng.uniform(2, 5, cells), rng.uniform(-0.1, 0.25, cells)
    x = st.genextreme.rvs(-xi, loc=loc, scale=scale, size=(n, cells), random_state=rng)
    model = models.bayes_gev(x)
    out = mcmc.hmc(model, model.init(CHAINS, 1), n_warmup=300, n_draws=300, seed=2, n_leapfrog=8)
    par = model.constrain(out["draws"])
    assert out["divergent"].mean() < 0.01
    rhat = np.asarray(diagnostics.rhat(np.moveaxis(out["draws"], 0, 2)))
    assert np.mean(rhat < 1.05) > 0.95
    for name, truth in (("loc", loc), ("scale", scale), ("shape", xi)):
        draws = par[name].reshape(-1, cells)
        lo, hi = np.quantile(draws, [0.005, 0.995], axis=0)
        assert np.mean((lo < truth) & (truth < hi)) >= 0.9, name
    np.testing.assert_allclose(np.median(par["loc"].reshape(-1, cells), axis=0), loc, rtol=0.15)
    # return levels from the draws: 100-block levels are finite and above the 10-block ones
    levels = models.gev_return_levels(par, [10, 100])
    assert np.all(np.isfinite(levels)) and np.all(levels[1] > levels[0])
