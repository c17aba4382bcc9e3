"""Joint, marginal and conditional kernels against closed forms, scipy and planted truth.

Every test runs once per array namespace (numpy, array-api-strict, cupy when
present). References: the bivariate normal conditional law from covariance
algebra and from numerical integration of ``scipy.stats.multivariate_normal``;
orthant probabilities from Owen's T (``scipy.special.owens_t``), the
``a = b = 0`` closed form, ``scipy.stats.multivariate_normal.cdf`` and adaptive
quadrature; margins recovered by integrating joint densities over ``x``; copula
MLE from ``scipy.optimize``; exceedance probabilities from Monte Carlo samples.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from pipeline.kernels import joint as kj

RHOS = np.array([-0.8, -0.3, 0.0, 0.45, 0.9])


def _planted(n: int, rhos: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standard bivariate normal scores ``(n, cells)`` with correlation ``rhos[j]`` in column j."""
    rng = np.random.default_rng(seed)
    z1 = rng.standard_normal((n, rhos.size))
    z2 = rhos * z1 + np.sqrt(1.0 - rhos**2) * rng.standard_normal((n, rhos.size))
    return z1, z2


def _owen_cdf(h: np.ndarray, k: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``Phi2(h, k; r)`` by Owen (1956): 2 Phi2 = Phi(h) + Phi(k) - 2T(h, .) - 2T(k, .) - [hk < 0]; h, k != 0."""
    s = np.sqrt((1.0 - r) * (1.0 + r))
    beta = np.where(h * k > 0, 0.0, 0.5)
    t = special.owens_t(h, (k - r * h) / (h * s)) + special.owens_t(k, (h - r * k) / (k * s))
    return 0.5 * special.ndtr(h) + 0.5 * special.ndtr(k) - t - beta


def _scipy_bvn_cdf(a: float, b: float, r: float) -> float:
    cov = [[1.0, r], [r, 1.0]]
    return stats.multivariate_normal.cdf([a, b], cov=cov, abseps=1e-13, releps=0.0, maxpts=10**7, rng=np.random.default_rng(0))


def _quad(f, lo: float, hi: float) -> float:
    return integrate.quad(f, lo, hi, epsabs=0.0, epsrel=1e-13, limit=400)[0]


# ------------------------------------------------------- bivariate normal


def test_bivariate_normal_matches_numpy_moments(xp, to_np):
    z1, z2 = _planted(300, RHOS, seed=1)
    x, y = 3.0 + 2.0 * z1, -1.0 + 0.5 * z2
    y[:, 2] = 7.0  # a constant column has no correlation
    fit = kj.bivariate_normal(xp.asarray(x), xp.asarray(y))
    np.testing.assert_allclose(to_np(fit.mean_x), x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(to_np(fit.sd_x), x.std(axis=0), rtol=1e-13)
    np.testing.assert_allclose(to_np(fit.mean_y), y.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(to_np(fit.sd_y), y.std(axis=0), rtol=1e-13, atol=1e-14)
    rho = to_np(fit.rho)
    ref = [np.corrcoef(x[:, j], y[:, j])[0, 1] for j in (0, 1, 3, 4)]
    np.testing.assert_allclose(rho[[0, 1, 3, 4]], ref, rtol=1e-12)
    assert np.isnan(rho[2])

    shared = kj.bivariate_normal(xp.asarray(x[:, 0]), xp.asarray(y))  # one index for all cells
    np.testing.assert_allclose(to_np(shared.mean_x), np.full(5, x[:, 0].mean()), rtol=1e-13)
    np.testing.assert_allclose(to_np(shared.rho)[[0, 1]], [np.corrcoef(x[:, 0], y[:, j])[0, 1] for j in (0, 1)], rtol=1e-12)


def test_bivariate_normal_recovers_planted_correlation(xp, to_np):
    n = 20000
    z1, z2 = _planted(n, RHOS, seed=2)
    fit = kj.bivariate_normal(xp.asarray(10.0 + 3.0 * z1), xp.asarray(-4.0 + 0.2 * z2))
    se = (1.0 - RHOS**2) / math.sqrt(n)
    assert np.all(np.abs(to_np(fit.rho) - RHOS) < 4.0 * se + 1e-12)
    np.testing.assert_allclose(to_np(fit.sd_y), 0.2, rtol=0.03)


def test_conditional_normal_equals_closed_form_and_integral(xp, to_np):
    mx, sx = np.array([1.0, -2.0, 0.5]), np.array([2.0, 0.5, 1.0])
    my, sy = np.array([-3.0, 4.0, 0.0]), np.array([0.7, 3.0, 1.5])
    rho = np.array([0.6, -0.85, 0.0])
    xv = np.array([-1.5, 0.0, 2.5])
    got = kj.conditional_normal(*(xp.asarray(a) for a in (mx, sx, my, sy, rho, xv)))
    mean, sd = to_np(got.mean), to_np(got.sd)
    assert mean.shape == sd.shape == (3, 3)
    for j in range(3):  # Y | X = x ~ N(my + Syx/Sxx (x - mx), Syy - Syx^2/Sxx)
        cov = np.array([[sx[j] ** 2, rho[j] * sx[j] * sy[j]], [rho[j] * sx[j] * sy[j], sy[j] ** 2]])
        np.testing.assert_allclose(mean[:, j], my[j] + cov[1, 0] / cov[0, 0] * (xv - mx[j]), rtol=1e-13)
        np.testing.assert_allclose(sd[:, j], math.sqrt(cov[1, 1] - cov[1, 0] ** 2 / cov[0, 0]), rtol=1e-13)
        dist = stats.multivariate_normal([mx[j], my[j]], cov)
        t = np.linspace(my[j] - 14 * sy[j], my[j] + 14 * sy[j], 8001)
        for i, x0 in enumerate(xv):  # moments of f(x0, y) / int f(x0, y) dy
            dens = dist.pdf(np.stack([np.full_like(t, x0), t], axis=-1))
            m0 = np.trapezoid(dens, t)
            m1 = np.trapezoid(t * dens, t) / m0
            v = np.trapezoid((t - m1) ** 2 * dens, t) / m0
            assert abs(mean[i, j] - m1) < 1e-8 and abs(sd[i, j] - math.sqrt(v)) < 1e-8


def test_bvn_logpdf_matches_scipy_and_integrates_to_the_margin(xp, to_np):
    means, sds, rho = (1.0, -0.5), (2.0, 0.8), 0.7
    dist = stats.multivariate_normal(means, [[4.0, rho * 1.6], [rho * 1.6, 0.64]])
    pts = np.random.default_rng(3).normal(size=(50, 2)) * 2
    got = kj.bvn_logpdf(xp.asarray(pts[:, 0]), xp.asarray(pts[:, 1]), means, sds, xp.asarray(rho))
    np.testing.assert_allclose(to_np(got), dist.logpdf(pts), rtol=1e-13)
    x = np.linspace(means[0] - 20.0, means[0] + 20.0, 4001)[:, None]
    y = np.array([-3.0, -1.0, -0.5, 0.4, 1.8])
    joint = to_np(xp.exp(kj.bvn_logpdf(xp.asarray(x), xp.asarray(y), means, sds, xp.asarray(rho))))
    np.testing.assert_allclose(np.trapezoid(joint, x[:, 0], axis=0), stats.norm(means[1], sds[1]).pdf(y), rtol=0, atol=1e-10)


# ------------------------------------------------- orthant probabilities


def test_bvn_cdf_matches_owens_t_closed_form(xp, to_np):
    hs = np.array([-6.0, -3.3, -1.7, -0.4, 0.3, 0.9, 1.5, 2.7, 5.1])
    rs = np.array([-0.9999, -0.99, -0.95, -0.926, -0.924, -0.8, -0.5, -0.1, 0.05, 0.3, 0.6, 0.9, 0.924, 0.926, 0.97, 0.999])
    rs = np.append(rs, 0.9999)  # both sides of the switch at |rho| = 0.925
    h, k, r = np.meshgrid(hs, hs, rs, indexing="ij")
    got = to_np(kj.bvn_cdf(xp.asarray(h), xp.asarray(k), xp.asarray(r)))
    np.testing.assert_allclose(got, _owen_cdf(h, k, r), rtol=0, atol=2e-14)


def test_bvn_cdf_near_unit_correlation_matches_quadrature(xp, to_np):
    # Phi2(a, b; r) = Phi(min(a, b)) - (1/2pi) int_0^sqrt(1-r^2) exp(-(a-b)^2/(2x^2) - ab/(1+sqrt(1-x^2))) / sqrt(1-x^2) dx
    cases = [(0.9, 0.9, 0.9999999), (1.0, 1.001, 0.99999), (-1.7, -1.7, 0.999999), (0.4, -0.2, 0.9999), (2.5, 1.0, 0.96)]
    a, b, r = (np.array(c) for c in zip(*cases, strict=True))
    got = to_np(kj.bvn_cdf(xp.asarray(a), xp.asarray(b), xp.asarray(r)))
    for i, (ai, bi, ri) in enumerate(cases):
        def f(t, ai=ai, bi=bi):
            return math.exp(-((ai - bi) ** 2) / (2 * t * t) - ai * bi / (1 + math.sqrt(1 - t * t))) / math.sqrt(1 - t * t)
        ref = special.ndtr(min(ai, bi)) - _quad(f, 0.0, math.sqrt((1 - ri) * (1 + ri))) / (2 * math.pi)
        assert abs(got[i] - ref) < 5e-15, (cases[i], got[i], ref)
    # negative correlation through Phi2(a, b; -r) = Phi(a) - Phi2(a, -b; r)
    neg = to_np(kj.bvn_cdf(xp.asarray(a), xp.asarray(-b), xp.asarray(-r)))
    np.testing.assert_allclose(neg, special.ndtr(a) - got, rtol=0, atol=5e-15)


def test_bvn_cdf_zero_orthant_closed_form(xp, to_np):
    r = np.concatenate([np.linspace(-1.0, 1.0, 201), [-0.9999999, 0.9999999, -0.925, 0.925]])
    zero = np.zeros_like(r)
    got = to_np(kj.bvn_cdf(xp.asarray(zero), xp.asarray(zero), xp.asarray(r)))
    np.testing.assert_allclose(got, 0.25 + np.arcsin(r) / (2 * np.pi), rtol=0, atol=1e-15)
    np.testing.assert_allclose(to_np(kj.bvn_sf(xp.asarray(zero), xp.asarray(zero), xp.asarray(r))), got, rtol=0, atol=1e-15)


def test_bvn_cdf_matches_scipy_multivariate_normal(xp, to_np):
    cases = [(0.3, -1.2, 0.6), (1.5, 2.0, -0.95), (-0.7, 0.4, 0.99), (2.0, 2.0, 0.3), (-2.2, 0.1, -0.4)]
    a, b, r = (np.array(c) for c in zip(*cases, strict=True))
    got = to_np(kj.bvn_cdf(xp.asarray(a), xp.asarray(b), xp.asarray(r)))
    for i, (ai, bi, ri) in enumerate(cases):
        assert abs(got[i] - _scipy_bvn_cdf(ai, bi, ri)) < 1e-12


def test_bvn_limits_infinities_and_invalid(xp, to_np):
    inf, phi = math.inf, special.ndtr
    a = np.array([inf, -inf, 0.5, 0.5, inf, -inf, 1.0, 1.0, 0.2, 0.2, 0.7, np.nan, 0.0])
    b = np.array([0.5, 0.5, inf, -inf, inf, -inf, 2.0, 2.0, -0.3, -0.3, -1.1, 0.0, 0.0])
    r = np.array([0.5, 0.5, -0.99, 0.97, 0.1, 0.1, 1.0, -1.0, 1.0, -1.0, 0.0, 0.2, 1.5])
    cdf_ref = [phi(0.5), 0.0, phi(0.5), 0.0, 1.0, 0.0, phi(1.0), phi(1.0) + phi(2.0) - 1.0, phi(-0.3), 0.0, phi(0.7) * phi(-1.1)]
    sf_ref = [0.0, phi(-0.5), 0.0, phi(-0.5), 0.0, 1.0, phi(-2.0), 0.0, phi(-0.2), phi(0.3) - phi(0.2), phi(-0.7) * phi(1.1)]
    cdf = to_np(kj.bvn_cdf(xp.asarray(a), xp.asarray(b), xp.asarray(r)))
    sf = to_np(kj.bvn_sf(xp.asarray(a), xp.asarray(b), xp.asarray(r)))
    np.testing.assert_allclose(cdf[:11], cdf_ref, rtol=0, atol=1e-16)
    np.testing.assert_allclose(sf[:11], sf_ref, rtol=0, atol=1e-16)
    assert np.all(np.isnan(cdf[11:])) and np.all(np.isnan(sf[11:]))  # NaN input; |rho| > 1


def test_bvn_sf_inclusion_exclusion_and_upper_tail(xp, to_np):
    rng = np.random.default_rng(4)
    a, b, r = rng.normal(size=200) * 2, rng.normal(size=200) * 2, rng.uniform(-1, 1, size=200)
    sf = to_np(kj.bvn_sf(xp.asarray(a), xp.asarray(b), xp.asarray(r)))
    cdf = to_np(kj.bvn_cdf(xp.asarray(a), xp.asarray(b), xp.asarray(r)))
    np.testing.assert_allclose(sf, 1.0 - special.ndtr(a) - special.ndtr(b) + cdf, rtol=0, atol=1e-14)
    # deep tail, relative accuracy: P(X > a, Y > b) = int_a^inf phi(x) Phi((r x - b) / sqrt(1 - r^2)) dx
    # (negative rho in the deep tail cancels Phi(-a) Phi(-b) against the integral: absolute accuracy only)
    tail = [(8.0, 8.0, 0.5), (6.0, 9.0, 0.9), (10.0, 9.0, 0.99), (5.0, 5.0, 0.0), (7.0, 7.0, 0.95), (6.5, 6.0, 0.3)]
    ta, tb, tr = (np.array(c) for c in zip(*tail, strict=True))
    got = to_np(kj.bvn_sf(xp.asarray(ta), xp.asarray(tb), xp.asarray(tr)))
    for i, (ai, bi, ri) in enumerate(tail):
        s = math.sqrt(1 - ri * ri)

        def f(t, bi=bi, ri=ri, s=s):
            return math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi) * special.ndtr((ri * t - bi) / s)

        ref = _quad(f, ai, ai + 12.0)
        assert abs(got[i] / ref - 1.0) < 1e-10, (tail[i], got[i], ref)


# ---------------------------------------------------- exceedance probabilities


def test_conditional_exceedance_closed_form_and_limits(xp, to_np):
    q_x, q_y = 0.9, 0.8
    rho = np.array([-0.7, 0.0, 0.3, 0.85, 1.0])
    got = kj.conditional_exceedance(xp.asarray(rho), q_x, q_y)
    zx, zy = special.ndtri(q_x), special.ndtri(q_y)
    ref = [(1 - q_x - q_y + _scipy_bvn_cdf(zx, zy, r)) / (1 - q_x) for r in rho[:4]]
    cond = to_np(got.conditional)
    np.testing.assert_allclose(cond[:4], ref, rtol=0, atol=1e-11)
    np.testing.assert_allclose(cond[1], 1 - q_y, atol=1e-14)  # independence
    np.testing.assert_allclose(cond[4], 1.0, atol=1e-14)  # comonotone: X > x_q implies Y > y_q when q_y <= q_x
    np.testing.assert_allclose(to_np(got.marginal), np.full(5, 1 - q_y), rtol=1e-15)


def test_conditional_exceedance_matches_monte_carlo(xp, to_np):
    n, q_x, q_y = 400_000, 0.9, 0.75
    rhos = np.array([-0.5, 0.0, 0.5, 0.9])
    z1, z2 = _planted(n, rhos, seed=5)
    # non-normal margins: the copula answer depends on the quantile levels only
    x, y = stats.gumbel_r(1.0, 2.0).ppf(special.ndtr(z1)), stats.gamma(3.0).ppf(special.ndtr(z2))
    above_x = x > stats.gumbel_r(1.0, 2.0).ppf(q_x)
    both = above_x & (y > stats.gamma(3.0).ppf(q_y))
    p_mc = both.sum(axis=0) / above_x.sum(axis=0)
    se = np.sqrt(p_mc * (1 - p_mc) / above_x.sum(axis=0))
    got = to_np(kj.conditional_exceedance(xp.asarray(rhos), q_x, q_y).conditional)
    assert np.all(np.abs(got - p_mc) < 5 * se), (got, p_mc, se)
    emp = kj.empirical_conditional_exceedance(xp.asarray(x), xp.asarray(y), q_x, q_y)
    assert np.all(np.abs(to_np(emp.conditional) - got) < 5 * se)
    np.testing.assert_allclose(to_np(emp.marginal), 1 - q_y, atol=1e-5)


def test_empirical_conditional_exceedance_matches_numpy(xp, to_np):
    z1, z2 = _planted(157, RHOS, seed=6)
    y = z2.copy()
    y[10, 4] = np.nan
    q_x, q_y = 0.83, 0.6
    got = kj.empirical_conditional_exceedance(xp.asarray(z1), xp.asarray(y), q_x, q_y)
    x_q, y_q = np.quantile(z1, q_x, axis=0), np.quantile(y[:, :4], q_y, axis=0)
    ax = z1[:, :4] > x_q[:4]
    ref = (ax & (y[:, :4] > y_q)).sum(axis=0) / ax.sum(axis=0)
    cond, marg = to_np(got.conditional), to_np(got.marginal)
    np.testing.assert_allclose(to_np(got.x_q)[:4], x_q[:4], rtol=1e-14)
    np.testing.assert_allclose(to_np(got.y_q)[:4], y_q, rtol=1e-14)
    np.testing.assert_allclose(cond[:4], ref, rtol=1e-14)
    np.testing.assert_allclose(marg[:4], (y[:, :4] > y_q).mean(axis=0), rtol=1e-14)
    assert np.isnan(cond[4]) and np.isnan(marg[4])
    shared = kj.empirical_conditional_exceedance(xp.asarray(z1[:, 0]), xp.asarray(z2), q_x, q_y)
    ax0 = z1[:, 0] > x_q[0]
    ref0 = (ax0[:, None] & (z2 > np.quantile(z2, q_y, axis=0))).sum(axis=0) / ax0.sum()
    np.testing.assert_allclose(to_np(shared.conditional), ref0, rtol=1e-14)


# ---------------------------------------------------------- Gaussian copula


def _copula_nll(r: float, zx: np.ndarray, zy: np.ndarray) -> float:
    """Negative copula log-likelihood from scipy densities: bivariate normal minus its two margins."""
    pts = np.stack([zx, zy], axis=-1)
    ll = stats.multivariate_normal([0.0, 0.0], [[1.0, r], [r, 1.0]]).logpdf(pts) - stats.norm.logpdf(zx) - stats.norm.logpdf(zy)
    return -float(np.sum(ll))


def test_copula_logpdf_matches_scipy(xp, to_np):
    rng = np.random.default_rng(7)
    u, v = rng.uniform(size=100), rng.uniform(size=100)
    rho = np.linspace(-0.95, 0.95, 100)
    zx, zy = special.ndtri(u), special.ndtri(v)
    ref = [stats.multivariate_normal(cov=[[1, r], [r, 1]]).logpdf([a, b]) for a, b, r in zip(zx, zy, rho, strict=True)]
    ref = np.array(ref) - stats.norm.logpdf(zx) - stats.norm.logpdf(zy)
    got = to_np(kj.copula_logpdf(xp.asarray(u), xp.asarray(v), xp.asarray(rho)))
    np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-12)
    outside = to_np(kj.copula_logpdf(xp.asarray([-0.1, 0.5]), xp.asarray([0.5, 1.2]), xp.asarray(0.3)))
    assert np.all(outside == -np.inf)


def test_copula_joint_with_gumbel_margins_integrates_to_the_margins(xp, to_np):
    fx, gy, rho = stats.gumbel_r(1.0, 2.0), stats.gamma(3.0, scale=1.5), 0.7
    x = np.linspace(-12.0, 90.0, 20001)[:, None]
    y = np.array([0.5, 2.0, 4.5, 9.0, 15.0])
    log_c = kj.copula_logpdf(xp.asarray(fx.cdf(x)), xp.asarray(gy.cdf(y)), xp.asarray(rho))
    joint = np.exp(to_np(log_c) + fx.logpdf(x) + gy.logpdf(y))
    np.testing.assert_allclose(np.trapezoid(joint, x[:, 0], axis=0), gy.pdf(y), rtol=1e-8)
    # the conditional CDF (h-function) is the joint integrated over y up to y0, over the margin of x
    x0 = np.array([-1.0, 1.0, 4.0, 10.0])
    for y0 in (2.0, 6.0):
        t = np.linspace(0.0, y0, 4001)[:, None]
        dens = np.exp(to_np(kj.copula_logpdf(xp.asarray(fx.cdf(x0)), xp.asarray(gy.cdf(t)), xp.asarray(rho))) + gy.logpdf(t))
        ref = integrate.simpson(dens, x=t[:, 0], axis=0)
        got = to_np(kj.copula_conditional_cdf(xp.asarray(fx.cdf(x0)), xp.asarray(np.full(4, gy.cdf(y0))), xp.asarray(rho)))
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-8)


def test_gaussian_copula_recovers_planted_correlation(xp, to_np):
    n = 20000
    z1, z2 = _planted(n, RHOS, seed=8)
    x, y = stats.gumbel_r(1.0, 2.0).ppf(special.ndtr(z1)), stats.gumbel_l(-3.0, 0.5).ppf(special.ndtr(z2))
    u_x, u_y = stats.gumbel_r(1.0, 2.0).cdf(x), stats.gumbel_l(-3.0, 0.5).cdf(y)
    fit = kj.gaussian_copula(xp.asarray(u_x), xp.asarray(u_y))
    se = (1.0 - RHOS**2) / math.sqrt(n)
    assert np.all(np.abs(to_np(fit.rho) - RHOS) < 4.0 * se + 1e-12)
    assert np.all(np.abs(to_np(fit.rho_scores) - RHOS) < 4.0 * se + 1e-12)
    np.testing.assert_allclose(to_np(fit.z_x), special.ndtri(u_x), rtol=1e-12, atol=1e-12)


def _mle_by_scipy(zx: np.ndarray, zy: np.ndarray) -> float:
    """Global grid search of the unit-margin bivariate normal likelihood, refined by scipy on the scipy densities."""
    n, sxx, syy, sxy = zx.size, np.sum(zx**2), np.sum(zy**2), np.sum(zx * zy)
    grid = np.linspace(-0.999, 0.999, 1999)
    start = grid[np.argmax(-0.5 * n * np.log1p(-(grid**2)) - (sxx - 2 * grid * sxy + syy) / (2 * (1 - grid**2)))]
    bounds = (start - 2e-3, start + 2e-3)
    return optimize.minimize_scalar(_copula_nll, bounds=bounds, args=(zx, zy), method="bounded", options={"xatol": 1e-12}).x


def test_gaussian_copula_rho_is_the_exact_mle(xp, to_np):
    z1, z2 = _planted(60, np.array([-0.6, 0.2, 0.8]), seed=9)
    got = to_np(kj.gaussian_copula(xp.asarray(special.ndtr(z1)), xp.asarray(special.ndtr(z2))).rho)
    for j in range(3):
        assert abs(got[j] - _mle_by_scipy(z1[:, j], z2[:, j])) < 1e-8, j
    # low-variance scores (mean squares 0.04, 0.001; mean product 0.0063): the score equation has three
    # roots in (-1, 1), and the bracketed Newton iteration alone ends on the lower local maximum (-0.973)
    sq = np.array([1.0, 1.0, 1.0, 1.0])
    alt = np.array([1.0, -1.0, 1.0, -1.0])
    r = 0.0063 / math.sqrt(0.04 * 0.001)
    zx, zy = math.sqrt(0.04) * sq, math.sqrt(0.001) * (r * sq + math.sqrt(1 - r * r) * alt)
    s, q = np.mean(zx * zy), np.mean(zx**2 + zy**2)
    assert np.sum(np.isreal(roots := np.roots([1.0, -s, q - 1.0, -s])) & (np.abs(roots.real) < 1)) == 3
    hard = to_np(kj.gaussian_copula(xp.asarray(special.ndtr(zx)), xp.asarray(special.ndtr(zy[:, None]))).rho)
    assert abs(hard[0] - _mle_by_scipy(zx, zy)) < 1e-8, hard


def test_input_validation(xp):
    y = xp.asarray(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="x must have shape"):
        kj.bivariate_normal(xp.asarray(np.zeros(9)), y)
    with pytest.raises(TypeError, match="y must be a 2-D"):
        kj.bivariate_normal(xp.asarray(np.zeros(10)), xp.asarray(np.zeros(10)))
    with pytest.raises(ValueError, match="q_x must lie"):
        kj.conditional_exceedance(xp.asarray([0.5]), 1.0, 0.5)
    with pytest.raises(ValueError, match="q_y must lie"):
        kj.empirical_conditional_exceedance(xp.asarray(np.zeros(10)), y, 0.5, 0.0)
    with pytest.raises(ValueError, match="probabilities in"):
        kj.gaussian_copula(xp.asarray(np.full(10, 1.5)), xp.asarray(np.full((10, 3), 0.5)))
