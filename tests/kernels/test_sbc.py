"""Simulation-based calibration kernels: the cases' laws against scipy, exact-posterior ranks, planted failures.

References: scipy.stats (invgamma, norm, beta, genextreme with ``c = -xi``) for
the priors and simulators; the closed-form conjugate posteriors
(:func:`pipeline.kernels.posterior.conjugate`, :func:`models.normal_posterior`)
drawn with NumPy's generator, whose ranks must be uniform: this checks the
prior, the simulator and the model's prior against one another without any
sampler. Then HMC and rejection pass SBC on 1000 cells, while a case with a
prior twice as wide, an unconverged HMC and a tempered target are rejected.
The statistical runs use NumPy; a short run compares array-api-strict with it.
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np
import pytest
from scipy import stats

from pipeline.kernels import calibration, models, posterior, rejection, sbc

N, K, ALPHA, A0, B0 = 30, 2, 1.0, 3.0, 2.0
L = 99


def _design(n: int = N, k: int = K, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, k)) @ np.array([[1.0, 0.5], [0.0, 1.0]])[:k, :k]
    z = x - x.mean(0)
    return z / z.std(0)


def _ks(sample, cdf) -> float:
    return stats.kstest(np.ravel(sample), cdf).pvalue


def _uniform(ranks: np.ndarray, n_ranks: int = L) -> list[float]:
    return [calibration.rank_uniformity(r, n_ranks + 1, 20)[2] for r in ranks]


# ------------------------------------------------------------- the laws of the cases


def test_prior_draws_follow_the_stated_laws(xp, to_np):
    like = xp.zeros(1, dtype=xp.float64)
    n = 20000
    th = to_np(sbc.regression_case(xp.asarray(_design()), alpha=2.0, a0=A0, b0=B0).prior_draw(n, 1, like))
    s2 = np.exp(th[K])
    assert th.shape == (K + 1, n) and th.dtype == np.float64
    assert _ks(s2, stats.invgamma(A0, scale=B0).cdf) > 1e-3
    assert _ks(th[:K] / np.sqrt(s2 / 2.0), stats.norm.cdf) > 1e-3
    th = to_np(sbc.normal_case(5, loc0=1.5, kappa0=0.5, a0=2.5, b0=1.0).prior_draw(n, 2, like))
    s2 = np.exp(2 * th[1])
    assert _ks(s2, stats.invgamma(2.5, scale=1.0).cdf) > 1e-3
    assert _ks((th[0] - 1.5) / np.sqrt(s2 / 0.5), stats.norm.cdf) > 1e-3
    gev = sbc.gev_case(10, prior_loc_sd=2.0, prior_log_scale_sd=0.3, shape_prior=(6.0, 9.0))
    th = to_np(gev.prior_draw(n, 3, like))
    assert _ks(th[0], stats.norm(0, 2.0).cdf) > 1e-3
    assert _ks(th[1], stats.norm(0, 0.3).cdf) > 1e-3
    assert _ks(0.5 - th[2], stats.beta(6.0, 9.0).cdf) > 1e-3
    # independent draws: the correlation of the components is nil
    assert max(abs(np.corrcoef(th)[0, 1]), abs(np.corrcoef(th)[0, 2]), abs(np.corrcoef(th)[1, 2])) < 4 / math.sqrt(n)


def _repeat(theta, cells):
    return np.repeat(np.asarray(theta, dtype=float)[:, None], cells, axis=1)


def test_simulate_follows_the_model_for_fixed_theta(xp, to_np):
    cells = 4000
    # regression: centred y_c ~ N(Z beta, s2 C); Q^T (y_c - Z beta) ~ N(0, s2 I_{n-1}) for an orthonormal basis Q
    # of the complement of the ones vector
    Z = _design()
    beta, s2 = np.array([0.7, -1.2]), 2.5
    y = to_np(sbc.regression_case(xp.asarray(Z)).simulate(xp.asarray(_repeat([*beta, np.log(s2)], cells)), 4))
    np.testing.assert_allclose(y.sum(0), 0.0, atol=1e-10)
    q = np.linalg.qr(np.eye(N) - 1.0 / N, mode="reduced")[0][:, : N - 1]
    assert _ks(q.T @ (y - (Z @ beta)[:, None]), stats.norm(0, np.sqrt(s2)).cdf) > 1e-3
    # normal and lognormal
    mu, log_sd = 0.8, np.log(1.7)
    x = to_np(sbc.normal_case(6).simulate(xp.asarray(_repeat([mu, log_sd], cells // 6)), 5))
    assert x.shape == (6, cells // 6) and _ks(x, stats.norm(mu, 1.7).cdf) > 1e-3
    x = to_np(sbc.normal_case(6, log=True).simulate(xp.asarray(_repeat([mu, log_sd], cells // 6)), 5))
    assert _ks(x, stats.lognorm(1.7, scale=np.exp(mu)).cdf) > 1e-3
    # GEV, scipy's genextreme(c = -xi), on both sides of xi = 0 and at it
    case = sbc.gev_case(10)
    for xi in (-0.3, 0.0, 0.25):
        theta = [0.4, np.log(0.8), xi]
        x = to_np(case.simulate(xp.asarray(_repeat(theta, cells // 10)), 6))
        assert _ks(x, stats.genextreme(-xi, loc=0.4, scale=0.8).cdf) > 1e-3


def _exact_regression_draws(case_data, Z, seed):
    """Exact posterior draws (p, L, cells) of the conjugate regression in (beta, log s2)."""
    rng = np.random.default_rng(seed)
    f = posterior.factor(Z, ALPHA)
    post = posterior.conjugate(f, case_data, A0, B0)
    cells = case_data.shape[1]
    s2 = post.b_n / rng.gamma(post.a_n, size=(L, cells))
    beta = post.mu[:, None, :] + np.sqrt(s2) * np.einsum("ij,jdc->idc", f.L, rng.standard_normal((K, L, cells)))
    return np.concatenate([beta, np.log(s2)[None]])


def _exact_normal_draws(data, prior, seed, log=False):
    rng = np.random.default_rng(seed)
    m, kappa, a, b = models.normal_posterior(np.log(data) if log else data, **prior)
    s2 = b / rng.gamma(a, size=(L, data.shape[1]))
    return np.stack([m + np.sqrt(s2 / kappa) * rng.standard_normal(s2.shape), 0.5 * np.log(s2)])


def _exact_ranks(name, wide, cells=2000, seed=0):
    """Ranks of exact posterior draws; ``wide``: the data come from a prior twice as wide as the model's."""
    Z = _design()
    like = np.zeros(1)
    if name == "regression":
        case, truth = sbc.regression_case(Z, alpha=ALPHA, a0=A0, b0=B0), sbc.regression_case(Z, alpha=ALPHA / 4)
    else:
        prior = dict(loc0=1.0, kappa0=2.0, a0=A0, b0=B0)
        case = sbc.normal_case(20, **prior, log=name == "lognormal")
        truth = sbc.normal_case(20, **(prior | {"kappa0": 0.5}), log=name == "lognormal")
    theta = (truth if wide else case).prior_draw(cells, seed, like)
    data = case.simulate(theta, seed + 1)
    if name == "regression":
        draws = _exact_regression_draws(data, Z, seed + 2)
    else:
        draws = _exact_normal_draws(data, prior, seed + 2, log=name == "lognormal")
    return np.stack([calibration.sbc_ranks(theta[j], draws[j]) for j in range(theta.shape[0])])


@pytest.mark.parametrize("name", ["regression", "normal", "lognormal"])
def test_exact_posterior_ranks_are_uniform_and_a_wider_prior_is_caught(name):
    assert min(_uniform(_exact_ranks(name, wide=False))) > 0.01
    # simulated from a prior with twice the sd of beta (or mu): caught above all on the variance, whose posterior
    # weighs alpha |beta|^2 (kappa0 (mu - loc0)^2) as evidence for sigma^2, less surely on beta (mu)
    assert min(_uniform(_exact_ranks(name, wide=True))) < 1e-3


# ------------------------------------------------------------- samplers


@pytest.fixture(scope="module")
def cases():
    return {"regression": sbc.regression_case(_design()), "normal": sbc.normal_case(20)}


@pytest.mark.parametrize("sampler", ["hmc", "rejection"])
@pytest.mark.parametrize("name", ["regression", "normal"])
def test_samplers_pass_sbc_on_1000_cells(cases, name, sampler):
    res = sbc.run(cases[name], sampler, cells=1000, seed=3, like=np.zeros(1))
    p = len(cases[name].param_names)
    assert res.ranks.shape == (p, 1000) and res.ranks.dtype == np.int64 and res.n_ranks == L
    assert res.ranks.min() >= 0 and res.ranks.max() <= L
    assert res.prior.shape == (p, 1000) and res.ess.shape == (p, 1000) and res.flagged.shape == (1000,)
    stat, pvals = sbc.uniformity(res)
    assert min(pvals) > 0.01, (stat, pvals)
    if sampler == "hmc":
        # the iterations thinned to the L kept draws hold at least L effective draws
        assert np.median(res.ess) >= L
    else:
        assert not res.flagged.any() and np.all(res.ess == L)


def test_unconverged_hmc_from_prior_draws_is_caught(cases):
    """Chains started at other prior draws, 5 warm-up iterations of 2 leapfrog steps: the chains have not left
    their starts, so a cell's draws sit on one side of its truth (U-shaped ranks of mu) and log sigma keeps the
    prior's upward skew (tilted ranks). With 10 iterations of 8 steps HMC has already converged here."""
    res = sbc.run(cases["normal"], "hmc", cells=1000, seed=4, like=np.zeros(1), n_ranks=19, warmup=5, thin=1,
                  init="prior", n_leapfrog=2)
    assert min(_uniform(res.ranks, 19)) < 1e-3
    assert np.mean(res.flagged) > 0.9  # and R-hat sees it


def _tempered(model: models.Model, power: float) -> models.Model:
    def logp_grad(theta):
        lp, g = model.logp_grad(theta)
        return power * lp, power * g

    return models.Model(model.name, model.param_names, logp_grad, model.constrain, model.init)


def test_tempered_target_is_caught(cases):
    """HMC on ``0.7 log p``: a posterior too wide by ``1/sqrt(0.7)``."""
    case = cases["normal"]._replace(posterior=lambda data: _tempered(cases["normal"].posterior(data), 0.7))
    res = sbc.run(case, "hmc", cells=1000, seed=5, like=np.zeros(1))
    assert min(sbc.uniformity(res)[1]) < 1e-3


def test_rejection_hands_failed_cells_to_hmc(xp, to_np, monkeypatch):
    """Cells whose envelope fails are re-sampled by HMC (finite draws, MCMC ESS) and flagged; the others keep
    their exact draws."""
    real = rejection.rejection_sample

    def failing(*args, **kwargs):
        out = real(*args, **kwargs)
        ns = array_api_compat.array_namespace(out.draws)
        failed = out.failed | (ns.arange(out.failed.shape[0]) % 7 == 0)
        return out._replace(failed=failed, draws=ns.where(failed, ns.nan, out.draws))

    case, like = sbc.normal_case(20), xp.zeros(1, dtype=xp.float64)
    monkeypatch.setattr(rejection, "rejection_sample", failing)
    res = sbc.run(case, "rejection", cells=70, seed=6, like=like, n_ranks=19, warmup=40, thin=2)
    monkeypatch.setattr(rejection, "rejection_sample", real)
    again = sbc.run(case, "rejection", cells=70, seed=6, like=like, n_ranks=19, warmup=40, thin=2)
    bad = np.arange(70) % 7 == 0
    flagged, ess, ranks = to_np(res.flagged), to_np(res.ess), to_np(res.ranks)
    np.testing.assert_array_equal(flagged, bad)
    assert np.all(ess[:, ~bad] == 19) and np.all(ess[:, bad] != 19) and np.all(ess[:, bad] > 0)
    assert ranks.min() >= 0 and ranks.max() <= 19
    np.testing.assert_array_equal(ranks[:, ~bad], to_np(again.ranks)[:, ~bad])


def _small_case(sampler, ns):
    return sbc.gev_case(12) if sampler == "rwm" else sbc.regression_case(ns.asarray(_design()))


@pytest.mark.parametrize("sampler", sbc.SAMPLERS)
def test_namespaces_agree_and_seeds_reproduce(xp, to_np, sampler):
    """A small run of each sampler (on the regression or the GEV case) gives the ranks of the same run on NumPy
    (same host draws), and another seed other ranks."""
    kw = dict(cells=6, n_ranks=19, warmup=30, thin=2)
    res = sbc.run(_small_case(sampler, xp), sampler, seed=7, like=xp.zeros(1, dtype=xp.float64), **kw)
    ref = sbc.run(_small_case(sampler, np), sampler, seed=7, like=np.zeros(1), **kw)
    np.testing.assert_array_equal(to_np(res.ranks), ref.ranks)
    np.testing.assert_allclose(to_np(res.prior), ref.prior, rtol=1e-12)
    np.testing.assert_array_equal(to_np(res.flagged), ref.flagged)
    np.testing.assert_allclose(to_np(res.ess), ref.ess, rtol=1e-9)
    other = sbc.run(_small_case(sampler, np), sampler, seed=8, like=np.zeros(1), **kw)
    assert not np.array_equal(other.prior, ref.prior)


# ------------------------------------------------------------- bad input


def test_bad_input_raises_one_clear_error(cases):
    like = np.zeros(1)
    with pytest.raises(ValueError, match="sampler must be one of"):
        sbc.run(cases["normal"], "nuts", cells=10, seed=0, like=like)
    with pytest.raises(ValueError, match="alpha"):
        sbc.regression_case(_design(), alpha=0.0)
    with pytest.raises(ValueError, match="column-centred"):
        sbc.regression_case(_design() + 1.0)
    with pytest.raises(ValueError, match="n > k"):
        sbc.regression_case(_design()[:3])
    with pytest.raises(ValueError, match="n_obs"):
        sbc.gev_case(3)
    with pytest.raises(ValueError, match="kappa0"):
        sbc.normal_case(10, kappa0=None)
    with pytest.raises(ValueError, match="init must be"):
        sbc.run(cases["normal"], "hmc", cells=10, seed=0, like=like, init="map")
    with pytest.raises(ValueError, match="chains"):
        sbc.run(cases["normal"], "hmc", cells=10, seed=0, like=like, chains=0)
    with pytest.raises(ValueError, match="at least 4 iterations"):
        sbc.run(cases["normal"], "hmc", cells=10, seed=0, like=like, n_ranks=7, thin=1)
    with pytest.raises(ValueError, match="n_obs_check"):
        sbc.run(cases["normal"], "rejection", cells=10, seed=0, like=like, n_obs_check=30)
    one = sbc.run(cases["normal"], "hmc", cells=10, seed=0, like=like, chains=1, n_ranks=19, warmup=30)
    assert one.ranks.shape == (2, 10) and one.ess.shape == (2, 10)  # one chain: no R-hat, divergences only
    res = sbc.run(cases["normal"], "rejection", cells=10, seed=0, like=like, n_ranks=50)
    with pytest.raises(ValueError, match="must divide n_ranks"):
        sbc.uniformity(res)
