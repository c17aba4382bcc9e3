"""GEV and GPD kernels against scipy.stats and planted truth.

References: ``scipy.stats.genextreme`` (``c = -xi``) and ``genpareto``
(``c = xi``) densities, distribution and quantile functions; their ``fit``
loops (the maximum likelihood the kernels must match or beat); central
differences of the log-likelihood for gradients, Hessians and covariances;
fields drawn with planted parameters.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from pipeline.kernels import gev

XIS = (-0.3, -0.1, 0.0, 0.1, 0.3)


def planted_gev(n: int, cells: int, seed: int, xis=XIS) -> tuple[np.ndarray, np.ndarray]:
    """(n, cells) GEV draws and their planted (loc, scale, shape) (3, cells)."""
    rng = np.random.default_rng(seed)
    xi = np.asarray(xis)[np.arange(cells) % len(xis)]
    loc, scale = rng.uniform(-5.0, 5.0, cells), rng.uniform(0.5, 3.0, cells)
    return stats.genextreme.rvs(-xi, loc=loc, scale=scale, size=(n, cells), random_state=rng), np.stack(
        [loc, scale, xi]
    )


def planted_gpd(n: int, cells: int, seed: int, xis=XIS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NaN-padded exceedances (n, cells) of ragged length (15..n), their mask and planted (u, scale, shape)."""
    rng = np.random.default_rng(seed)
    xi = np.asarray(xis)[np.arange(cells) % len(xis)]
    u, scale = rng.uniform(-5.0, 5.0, cells), rng.uniform(0.5, 3.0, cells)
    x = u + stats.genpareto.rvs(xi, scale=scale, size=(n, cells), random_state=rng)
    valid = np.arange(n)[:, None] < rng.integers(n // 2, n + 1, cells)
    return np.where(valid, x, np.nan), valid, np.stack([u, scale, xi])


def _quiet(fun, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fun(*args, **kwargs)


def _gev_loglik(x, p):
    return np.nansum(stats.genextreme.logpdf(x, -p[2], loc=p[0], scale=p[1]), axis=0)


def _gpd_loglik(x, valid, p):
    return np.sum(np.where(valid, stats.genpareto.logpdf(np.where(valid, x, p[0]), p[2], loc=p[0], scale=p[1]), 0), 0)


@pytest.fixture(scope="module")
def gev_reference():
    x, truth = planted_gev(50, 250, seed=1)
    fits = np.array([_quiet(stats.genextreme.fit, x[:, j]) for j in range(x.shape[1])]).T
    return x, truth, np.stack([fits[1], fits[2], -fits[0]])


@pytest.fixture(scope="module")
def gpd_reference():
    x, valid, truth = planted_gpd(60, 200, seed=2)
    fits = np.array([_quiet(stats.genpareto.fit, x[valid[:, j], j], floc=truth[0, j]) for j in range(x.shape[1])]).T
    return x, valid, truth, np.stack([fits[1], fits[2], fits[0]])


# ------------------------------------------------------------- densities


@pytest.mark.parametrize("xi", [-0.3, -1e-8, 0.0, 1e-8, 0.3])
def test_gev_and_gpd_functions_match_scipy(xp, to_np, xi):
    params = np.array([[1.5], [2.0], [xi]])
    x = np.linspace(-12.0, 30.0, 841)[:, None]
    p = np.concatenate([[0.0, 1e-300, 1e-12], np.linspace(0.001, 0.999, 37), [1 - 1e-12, 1.0]])[:, None]
    ref = stats.genextreme(-xi, loc=1.5, scale=2.0)
    X, P, par = xp.asarray(x), xp.asarray(p), xp.asarray(params)
    np.testing.assert_allclose(to_np(gev.gev_logpdf(X, par)), ref.logpdf(x), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(to_np(gev.gev_cdf(X, par)), ref.cdf(x), rtol=1e-11, atol=1e-300)
    np.testing.assert_allclose(to_np(gev.gev_sf(X, par)), ref.sf(x), rtol=1e-11, atol=1e-300)
    np.testing.assert_allclose(to_np(gev.gev_ppf(P, par)), ref.ppf(p), rtol=1e-11)
    gpd = stats.genpareto(xi, loc=1.5, scale=2.0)
    np.testing.assert_allclose(to_np(gev.gpd_logpdf(X, par)), gpd.logpdf(x), rtol=1e-12)
    np.testing.assert_allclose(to_np(gev.gpd_cdf(X, par)), gpd.cdf(x), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(to_np(gev.gpd_sf(X, par)), gpd.sf(x), rtol=1e-11, atol=1e-300)
    np.testing.assert_allclose(to_np(gev.gpd_ppf(P, par)), gpd.ppf(p), rtol=1e-11)


def test_family_objects_carry_the_contract(xp):
    assert (gev.GEV.name, gev.GEV.n_params, gev.GPD.name, gev.GPD.n_params) == ("gev", 3, "gpd", 2)
    assert gev.GEV.ppf is gev.gev_ppf and gev.GPD.sf is gev.gpd_sf


# ------------------------------------------------- likelihood derivatives


def _finite_differences(objective, theta, data, h=1e-5):
    p = theta.shape[0]
    grad = np.zeros_like(theta)
    hess = np.zeros((p, p, theta.shape[1]))
    for i in range(p):
        e = np.zeros_like(theta)
        e[i] = h
        lp, gp, _ = objective(theta + e, *data)
        lm, gm, _ = objective(theta - e, *data)
        grad[i] = (lp - lm) / (2 * h)
        hess[:, i] = (gp - gm) / (2 * h)
    return grad, hess


@pytest.mark.parametrize("law", ["gev", "gpd"])
def test_loglik_matches_scipy_and_derivatives_match_finite_differences(xp, to_np, law):
    rng = np.random.default_rng(3)
    xis = np.array([0.0, 1e-8, -1e-8, 3e-5, 0.3, -0.3, 0.05, -0.6, 1.5])
    cells = xis.size
    if law == "gev":
        data = rng.gumbel(size=(40, cells)) * 0.4
        theta = np.stack([np.full(cells, 0.1), np.full(cells, np.log(2.0)), xis])
        ref = stats.genextreme.logpdf(data, -xis, loc=0.1, scale=2.0).sum(0)
        objective = gev.gev_objective
    else:
        data = rng.exponential(size=(40, cells)) * 0.5
        theta = np.stack([np.full(cells, 0.8), xis])
        ref = stats.genpareto.logpdf(data, xis, scale=np.exp(0.8)).sum(0)
        objective = gev.gpd_objective
    l, g, h = (to_np(v) for v in objective(xp.asarray(theta), xp.asarray(data)))
    np.testing.assert_allclose(l, ref, rtol=1e-12)
    inside = np.isfinite(ref)
    assert inside.all()

    def numpy_objective(t, d):
        import array_api_compat.numpy as npx

        return tuple(np.asarray(v) for v in objective(npx.asarray(t), npx.asarray(d)))

    fd_g, fd_h = _finite_differences(numpy_objective, theta[:, inside], (data[:, inside],))
    np.testing.assert_allclose(g[:, inside], fd_g, rtol=2e-7, atol=1e-6)
    np.testing.assert_allclose(h[:, :, inside], fd_h, rtol=2e-6, atol=1e-5)
    np.testing.assert_allclose(h, np.swapaxes(h, 0, 1))


def test_outside_support_is_minus_inf_without_warnings(xp, to_np):
    z = np.array([[-3.0, 0.0], [0.0, 5.0]])
    theta = np.array([[0.0, 0.0], [0.0, 0.0], [0.5, -0.5]])  # support ends at -2 (xi > 0) and 2 (xi < 0)
    l, g, h = gev.gev_objective(xp.asarray(theta), xp.asarray(z))
    assert np.all(to_np(l) == -np.inf) and np.isfinite(to_np(g)).all() and np.isfinite(to_np(h)).all()
    theta[2] = -1.0  # the GEV likelihood is unbounded beyond xi = -1: outside the domain
    assert np.all(to_np(gev.gev_objective(xp.asarray(theta), xp.asarray(z * 0.1))[0]) == -np.inf)


def test_gradient_only_path_equals_the_full_objective(xp, to_np):
    """``hessian=False`` (what the samplers call) gives the full path's loglik and gradient, bit for bit,
    over the series cut (|xi y| ~ 1e-3), the Gumbel limit, outside the support and with a mask."""
    rng = np.random.default_rng(4)
    cells = 60
    z = rng.gumbel(size=(30, cells)) * 0.6
    xis = np.concatenate([[0.0, 1e-9, -1e-9, 4e-4, -4e-4, 3e-3, 0.6, -0.6, 1.2], rng.uniform(-0.5, 0.5, cells - 9)])
    theta = np.stack([rng.normal(0.0, 0.3, cells), rng.normal(0.0, 0.3, cells), xis])
    weight = (rng.uniform(size=z.shape) > 0.1).astype(float)
    for w in (None, xp.asarray(weight)):
        full = gev.gev_objective(xp.asarray(theta), xp.asarray(z), w)
        l, g, h = gev.gev_objective(xp.asarray(theta), xp.asarray(z), w, hessian=False)
        assert h is None
        np.testing.assert_array_equal(to_np(l), to_np(full[0]))
        np.testing.assert_array_equal(to_np(g), to_np(full[1]))
    assert np.isinf(to_np(full[0])).any() and np.isfinite(to_np(full[0])).sum() > cells // 2


def test_left_out_entries_outside_the_support_do_not_count(xp, to_np):
    """A zero-weight entry beyond the support end changes nothing: same loglik and derivatives as without it."""
    z = np.array([[-1.0, 0.5], [0.3, 1.0], [-4.0, -2.5]])  # the last row lies below the end -1/xi = -2 for xi = 0.5
    theta = np.array([[0.0, 0.0], [0.0, 0.0], [0.5, 0.5]])
    weight = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masked = [to_np(v) for v in gev.gev_objective(xp.asarray(theta), xp.asarray(z), xp.asarray(weight))]
    kept = [to_np(v) for v in gev.gev_objective(xp.asarray(theta), xp.asarray(z[:2]))]
    for a, b in zip(masked, kept):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(masked[0], stats.genextreme.logpdf(z[:2], -0.5).sum(0), rtol=1e-12)


# ----------------------------------------------------------------- fits


def test_gev_fit_matches_or_beats_scipy(xp, to_np, gev_reference):
    x, truth, ref = gev_reference
    fit = gev.gev_fit(xp.asarray(x))
    params, loglik = to_np(fit["params"]), to_np(fit["loglik"])
    assert to_np(fit["converged"]).all()
    np.testing.assert_allclose(loglik, _gev_loglik(x, params), rtol=1e-11)
    l_ref = _gev_loglik(x, ref)
    regular = ref[2] > -1.0  # beyond xi = -1 the likelihood is unbounded: no maximum to compare with
    assert regular.mean() > 0.99
    assert np.mean(loglik[regular] >= l_ref[regular] - 1e-6 * np.abs(l_ref[regular])) >= 0.999
    for xi in XIS:  # close to the planted truth on average (50 values a cell)
        sel = truth[2] == xi
        assert abs(np.mean(params[2, sel] - xi)) < 0.06
        assert np.median(np.abs(params[1, sel] / truth[1, sel] - 1.0)) < 0.15


def test_gev_covariance_is_inverse_observed_information(xp, to_np, gev_reference):
    x = gev_reference[0][:, :6]
    fit = gev.gev_fit(xp.asarray(x))
    params, cov = to_np(fit["params"]), to_np(fit["cov"])
    for j in range(x.shape[1]):
        f = lambda t: stats.genextreme.logpdf(x[:, j], -t[2], loc=t[0], scale=t[1]).sum()  # noqa: E731
        h = np.zeros((3, 3))
        step = 1e-4 * np.array([params[1, j], params[1, j], 1.0])
        for a in range(3):
            for b in range(3):
                ea, eb = np.eye(3)[a] * step[a], np.eye(3)[b] * step[b]
                t = params[:, j]
                h[a, b] = (f(t + ea + eb) - f(t + ea - eb) - f(t - ea + eb) + f(t - ea - eb)) / (4 * step[a] * step[b])
        np.testing.assert_allclose(cov[:, :, j], np.linalg.inv(-h), rtol=2e-4, atol=1e-8)


def test_gev_fit_is_equivariant_and_honours_masks(xp, to_np, gev_reference):
    x = gev_reference[0][:, :20]
    base = to_np(gev.gev_fit(xp.asarray(x))["params"])
    big = to_np(gev.gev_fit(xp.asarray(5000.0 + 40.0 * x))["params"])  # geopotential-like offset and units
    np.testing.assert_allclose(big[0], 5000.0 + 40.0 * base[0], rtol=1e-9)
    np.testing.assert_allclose(big[1:], base[1:] * np.array([[40.0], [1.0]]), rtol=1e-7, atol=1e-9)
    padded = np.concatenate([x, np.full((7, 20), np.nan)])  # NaN-padded rows are left out
    np.testing.assert_allclose(to_np(gev.gev_fit(xp.asarray(padded))["params"]), base, rtol=1e-9, atol=1e-12)
    valid = np.ones_like(padded, dtype=bool)
    valid[-7:] = False
    got = gev.gev_fit(xp.asarray(np.nan_to_num(padded)), valid=xp.asarray(valid))
    np.testing.assert_allclose(to_np(got["params"]), base, rtol=1e-9, atol=1e-12)


def test_unusable_columns_are_nan_and_not_converged(xp, to_np):
    x = np.random.default_rng(4).gumbel(size=(30, 4))
    x[:, 1] = 2.0  # constant
    x[4:, 2] = np.nan  # four values only
    fit = gev.gev_fit(xp.asarray(x))
    conv = to_np(fit["converged"])
    np.testing.assert_array_equal(conv, [True, False, False, True])
    assert np.isnan(to_np(fit["params"])[:, 1:3]).all() and np.isnan(to_np(fit["loglik"])[1:3]).all()
    assert np.isnan(to_np(fit["cov"])[..., 1:3]).all()
    with pytest.raises(TypeError, match="2-D"):
        gev.gev_fit(xp.asarray(x[:, 0]))


def test_gpd_fit_matches_or_beats_scipy(xp, to_np, gpd_reference):
    x, valid, truth, ref = gpd_reference
    fit = gev.gpd_fit(xp.asarray(x), loc=xp.asarray(truth[0]), valid=xp.asarray(valid))
    params, loglik, conv = to_np(fit["params"]), to_np(fit["loglik"]), to_np(fit["converged"])
    np.testing.assert_array_equal(params[0], truth[0])
    cov = to_np(fit["cov"])
    assert np.isnan(cov[0]).all() and np.isnan(cov[:, 0]).all() and np.isfinite(cov[1:, 1:, conv]).all()
    np.testing.assert_allclose(loglik, _gpd_loglik(x, valid, params), rtol=1e-11)
    l_ref = _gpd_loglik(x, valid, ref)
    regular = ref[2] > -1.0  # scipy wanders past xi = -1, where the likelihood is unbounded
    assert regular.mean() > 0.95
    assert np.mean(loglik[regular] >= l_ref[regular] - 1e-6 * np.abs(l_ref[regular])) >= 0.999
    assert conv[regular].mean() >= 0.99 and not conv[~regular].any()  # edge cells are flagged
    for xi in XIS:  # 30-60 excesses: the MLE of xi is biased low by ~0.08 here, as scipy's is
        sel = (truth[2] == xi) & conv
        assert abs(np.mean(params[2, sel] - xi)) < 0.12
        assert abs(np.mean(params[2, sel] - ref[2, sel])) < 0.01


def test_gpd_needs_a_threshold(xp):
    with pytest.raises(ValueError, match="threshold"):
        gev.gpd_fit(xp.asarray(np.ones((10, 2))), loc=None)


# ------------------------------------------------------- non-stationary


def test_nonstationary_fit_recovers_a_planted_trend(xp, to_np):
    rng = np.random.default_rng(5)
    n, cells = 60, 300
    years = np.arange(1960.0, 1960.0 + n)
    truth = np.stack(
        [
            rng.uniform(-5, 5, cells),
            rng.uniform(-0.05, 0.05, cells),
            rng.uniform(0.5, 2.0, cells),
            np.array([-0.2, 0.0, 0.2])[np.arange(cells) % 3],
        ]
    )
    mu = truth[0] + truth[1] * (years[:, None] - 1990.0)
    x = stats.genextreme.rvs(-truth[3], loc=mu, scale=truth[2], size=(n, cells), random_state=rng)
    fit = gev.fit_nonstationary(xp.asarray(x), xp.asarray(years - 1990.0))
    params, cov, loglik = to_np(fit["params"]), to_np(fit["cov"]), to_np(fit["loglik"])
    assert to_np(fit["converged"]).all() and params.shape == (4, cells) and cov.shape == (4, 4, cells)
    ref = stats.genextreme.logpdf(x, -params[3], loc=params[0] + params[1] * (years[:, None] - 1990.0), scale=params[2])
    np.testing.assert_allclose(loglik, ref.sum(0), rtol=1e-11)
    z = (params[1] - truth[1]) / np.sqrt(cov[1, 1])
    assert abs(np.mean(z)) < 0.2 and 0.85 < np.std(z) < 1.25  # unbiased, Wald se about right
    stationary = to_np(gev.gev_fit(xp.asarray(x))["loglik"])
    assert np.all(loglik >= stationary - 1e-9 * np.abs(stationary))
    padded = np.concatenate([x[:, :20], np.full((5, 20), np.nan)])  # NaN rows are left out
    years_padded = np.concatenate([years, np.zeros(5)]) - 1990.0
    got = to_np(gev.fit_nonstationary(xp.asarray(padded), xp.asarray(years_padded))["params"])
    np.testing.assert_allclose(got, params[:, :20], rtol=1e-8, atol=1e-10)
    both = gev.fit_nonstationary(xp.asarray(x), xp.asarray(years), scale_trend=True)
    p5 = to_np(both["params"])
    sigma = p5[2] * np.exp(p5[3] * years[:, None])
    ref5 = stats.genextreme.logpdf(x, -p5[4], loc=p5[0] + p5[1] * years[:, None], scale=sigma).sum(0)
    np.testing.assert_allclose(to_np(both["loglik"]), ref5, rtol=1e-10)
    assert np.all(to_np(both["loglik"]) >= loglik - 1e-9 * np.abs(loglik))


def test_nonstationary_covariance_matches_finite_differences(xp, to_np):
    rng = np.random.default_rng(6)
    n, years = 50, np.arange(50.0)
    x = stats.genextreme.rvs(-0.1, loc=2.0 + 0.03 * years[:, None], scale=1.0, size=(n, 3), random_state=rng)
    fit = gev.fit_nonstationary(xp.asarray(x), xp.asarray(years), scale_trend=True)
    params, cov = to_np(fit["params"]), to_np(fit["cov"])
    for j in range(3):

        def f(t):
            return stats.genextreme.logpdf(
                x[:, j], -t[4], loc=t[0] + t[1] * years, scale=t[2] * np.exp(t[3] * years)
            ).sum()

        t0 = params[:, j]
        step = 1e-4 * np.maximum(np.abs(t0), 0.01)
        h = np.zeros((5, 5))
        for a in range(5):
            for b in range(5):
                ea, eb = np.eye(5)[a] * step[a], np.eye(5)[b] * step[b]
                h[a, b] = (f(t0 + ea + eb) - f(t0 + ea - eb) - f(t0 - ea + eb) + f(t0 - ea - eb)) / (
                    4 * step[a] * step[b]
                )
        np.testing.assert_allclose(cov[:, :, j], np.linalg.inv(-h), rtol=1e-3, atol=1e-9)


def test_nonstationary_rejects_a_misshapen_covariate(xp):
    with pytest.raises(ValueError, match="covariate"):
        gev.fit_nonstationary(xp.asarray(np.ones((10, 3))), xp.asarray(np.arange(9.0)))
