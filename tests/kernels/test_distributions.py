"""The family registry: every family against scipy.stats on one synthetic field, ranking, return levels.

Each test runs once per array namespace (numpy, array-api-strict, cupy when
present). The field has planted parameters per family, including heavy-tailed
(ξ = 0.3) and bounded (ξ = -0.3) GEV cells. The references are ``scipy.stats``
maximum-likelihood fits on the same cells, closed-form AIC/BIC and quantiles,
and scipy's chi-squared survival function.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from pipeline.kernels import distributions as kd

N, M = 50, 120  # values a cell, cells a family (scipy's loop over them is the slow part)

#: family -> (scipy distribution, planted draw, scipy fit keyword arguments, params (loc, scale, shape) from scipy's)
CASES = {
    "normal": (stats.norm, lambda r, m: 30 + 4 * r.standard_normal((N, m)), {}, lambda p: (p[0], p[1], np.nan)),
    "lognormal": (stats.lognorm, lambda r, m: np.exp(1.0 + 0.6 * r.standard_normal((N, m))), {"floc": 0},
                  lambda p: (0.0, p[2], p[0])),
    "gamma": (stats.gamma, lambda r, m: r.gamma(np.linspace(0.5, 6, m), 3.0, (N, m)), {"floc": 0},
              lambda p: (0.0, p[2], p[0])),
    "weibull": (stats.weibull_min, lambda r, m: 5.0 * r.weibull(np.linspace(0.8, 4, m), (N, m)), {"floc": 0},
                lambda p: (0.0, p[2], p[0])),
    "gumbel_r": (stats.gumbel_r, lambda r, m: 100 + 7 * r.gumbel(size=(N, m)), {}, lambda p: (p[0], p[1], np.nan)),
    "gumbel_l": (stats.gumbel_l, lambda r, m: -(100 + 7 * r.gumbel(size=(N, m))), {},
                 lambda p: (p[0], p[1], np.nan)),
    "gev": (stats.genextreme,
            lambda r, m: stats.genextreme.rvs(-np.repeat([-0.3, 0.0, 0.3], m // 3), loc=20, scale=3, size=(N, m),
                                              random_state=r), {}, lambda p: (p[1], p[2], -p[0])),
}


def _scipy(family: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dist, _, kwargs, to_triple = CASES[family]
    params, ll = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(x.shape[1]):
            p = dist.fit(x[:, j], **kwargs)
            params.append(to_triple(p))
            ll.append(np.sum(dist.logpdf(x[:, j], *p)))
    return np.array(params).T, np.array(ll)


@pytest.fixture(scope="module")
def planted() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261203)
    return {family: CASES[family][1](rng, M) for family in CASES}


@pytest.fixture(scope="module")
def scipy_fits(planted) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {family: _scipy(family, planted[family]) for family in CASES}


@pytest.mark.parametrize("family", list(CASES))
def test_loglik_at_least_scipys_on_every_cell(xp, to_np, planted, scipy_fits, family):
    x = planted[family]
    fits = kd.fit_all(xp.asarray(x), (family,))
    ll = to_np(fits["loglik"])[0]
    _, ll_scipy = scipy_fits[family]
    assert np.all(np.isfinite(ll))
    assert np.mean(ll >= ll_scipy - 1e-6 * np.abs(ll_scipy)) >= 0.999
    # and the log-likelihood is that of the returned parameters under scipy's density
    dist, _, _, _ = CASES[family]
    p = to_np(fits["params"])[0]
    args = {"normal": lambda: (p[0], p[1]), "lognormal": lambda: (p[2], 0, p[1]), "gamma": lambda: (p[2], 0, p[1]),
            "weibull": lambda: (p[2], 0, p[1]), "gumbel_r": lambda: (p[0], p[1]), "gumbel_l": lambda: (p[0], p[1]),
            "gev": lambda: (-p[2], p[0], p[1])}[family]()
    np.testing.assert_allclose(ll, np.sum(dist.logpdf(x, *args), axis=0), rtol=1e-9)


def test_ranking_information_criteria_and_likelihood_ratio(xp, to_np, planted):
    x = planted["gev"]
    names = ("normal", "gumbel_r", "gev")
    fits = kd.fit_all(xp.asarray(x), names)
    ll, aic, bic = (to_np(fits[k]) for k in ("loglik", "aic", "bic"))
    k = np.array([2, 2, 3])[:, None]
    np.testing.assert_allclose(aic, 2 * k - 2 * ll, rtol=1e-12)
    np.testing.assert_allclose(bic, k * np.log(N) - 2 * ll, rtol=1e-12)
    np.testing.assert_array_equal(to_np(fits["best"]), np.argmin(aic, axis=0))
    stat, p = (to_np(v) for v in kd.likelihood_ratio(fits, names, "gev", "gumbel_r"))
    np.testing.assert_allclose(stat, np.maximum(2 * (ll[2] - ll[1]), 0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p, stats.chi2.sf(stat, 1), rtol=1e-8, atol=1e-14)
    # heavy-tailed and bounded thirds reject xi = 0 far more often than the Gumbel third
    third = M // 3
    assert np.mean(p[:third] < 0.05) > np.mean(p[third:2 * third] < 0.05)
    assert np.mean(p[2 * third:] < 0.05) > np.mean(p[third:2 * third] < 0.05)
    assert kd.likelihood_ratio(fits, names, "gev", "gumbel_l") is None


def test_return_levels_are_the_fitted_quantiles(xp, to_np, planted):
    x = planted["gev"]
    names = ("gumbel_r", "gev")
    fits = kd.fit_all(xp.asarray(x), names)
    periods = np.array([10.0, 100.0])
    out = {k: to_np(v) for k, v in kd.return_levels(names, fits, xp.asarray(periods), level=0.95,
                                                    x=xp.asarray(x)).items()}
    p = to_np(fits["params"])
    for i, T in enumerate(periods):
        np.testing.assert_allclose(out["return_level"][0, i], stats.gumbel_r.ppf(1 - 1 / T, p[0, 0], p[0, 1]),
                                   rtol=1e-10)
        np.testing.assert_allclose(out["return_level"][1, i],
                                   stats.genextreme.ppf(1 - 1 / T, -p[1, 2], p[1, 0], p[1, 1]), rtol=1e-9)
    assert np.all(out["lower"] < out["return_level"]) and np.all(out["return_level"] < out["upper"])
    gev_lo, gev_hi = out["profile_lower"][1], out["profile_upper"][1]
    ok = np.isfinite(gev_lo) & np.isfinite(gev_hi)
    assert ok.mean() > 0.95
    assert np.all((gev_lo[ok] < out["return_level"][1][ok]) & (out["return_level"][1][ok] < gev_hi[ok]))
    assert np.all(np.isnan(out["profile_lower"][0]))  # no profile intervals for the Gumbel
    rp = to_np(kd.return_periods_of(names, fits, xp.asarray(out["return_level"][1, 1, :1])))
    np.testing.assert_allclose(rp[1, 0, 0], 100.0, rtol=1e-8)  # the 100-year level of cell 0 has period 100


def test_unfittable_cells_are_not_ranked(xp, to_np):
    rng = np.random.default_rng(3)
    x = np.abs(rng.standard_normal((40, 4))) + 1.0
    x[:, 1] = 2.0  # constant
    x[5, 2] = -1.0  # not positive: no gamma, but normal is fine
    fits = kd.fit_all(xp.asarray(x), ("gamma", "normal"))
    ll = to_np(fits["loglik"])
    assert np.isnan(ll[:, 1]).all() and np.isnan(ll[0, 2]) and np.isfinite(ll[1, 2])
    best = to_np(fits["best"])
    assert best[1] == -1 and best[2] == 1
    assert not to_np(fits["converged"])[:, 1].any()


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="family must be one of"):
        kd.family("frechet")
