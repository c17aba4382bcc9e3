"""Goodness-of-fit kernels against scipy.stats and planted truth.

KS and AD statistics against ``scipy.stats.kstest``, ``scipy.stats.anderson``
and scipy's own log-CDF/log-SF form of A^2; parametric-bootstrap p-values
against their null law (uniform on {1, ..., n_boot+1}/(n_boot+1) for a
location-scale family, whose statistics are pivotal) and against clearly wrong
families; the LR test against ``scipy.stats.chi2``. A small local normal family
(closed-form fit honouring ``valid``) keeps the bootstrap tests fast; the same
checks run on ``FAMILIES_2P["gumbel_r"]`` and ``gev.GEV``.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from pipeline.kernels import gof, special

# ----------------------------------------------------------- a local family


def _normal_fit(x, *, max_iter=100, valid=None, loc=None):
    """Normal MLE (mean, sd with divisor n) over the ``valid`` rows of each column."""
    import array_api_compat

    xp = array_api_compat.array_namespace(x)
    if valid is None:
        valid = xp.ones(x.shape, dtype=xp.bool, device=array_api_compat.device(x))
    n = xp.sum(xp.astype(valid, x.dtype), axis=0)
    nsafe = xp.where(n > 0, n, 1.0)
    mean = xp.sum(xp.where(valid, x, 0.0), axis=0) / nsafe
    var = xp.sum(xp.where(valid, (x - mean) ** 2, 0.0), axis=0) / nsafe
    ok = (var > 0) & (n > 1)
    mean, sd = xp.where(ok, mean, xp.nan), xp.where(ok, xp.sqrt(xp.where(ok, var, 1.0)), xp.nan)
    loglik = -0.5 * n * (xp.log(2.0 * math.pi * sd * sd) + 1.0)
    return {
        "params": xp.stack([mean, sd, xp.full_like(mean, xp.nan)]),
        "loglik": loglik,
        "converged": ok,
        "n_iter": xp.zeros(mean.shape, dtype=xp.int64),
    }


NORMAL = SimpleNamespace(
    name="normal",
    n_params=2,
    fit=_normal_fit,
    cdf=lambda x, p: special.ndtr((x - p[0, ...]) / p[1, ...]),
    ppf=lambda u, p: p[0, ...] + p[1, ...] * special.ndtri(u),
)


def _kstest(cols: np.ndarray, cdf) -> np.ndarray:
    return np.array([stats.kstest(c[~np.isnan(c)], cdf).statistic for c in cols.T])


def _ad_scipy_form(col: np.ndarray, dist) -> float:
    """A^2 as scipy.stats.goodness_of_fit computes it: logcdf plus reversed logsf."""
    x = np.sort(col[~np.isnan(col)])
    n = x.size
    i = np.arange(1, n + 1)
    return -n - np.sum((2 * i - 1) / n * (dist.logcdf(x) + dist.logsf(x)[::-1]))


# ---------------------------------------------------------------- statistics


def test_ks_and_ad_match_scipy(xp, to_np):
    rng = np.random.default_rng(0)
    x = np.column_stack(
        [rng.standard_normal(60), rng.standard_normal(60) * 2 + 1, rng.standard_t(3, 60), rng.exponential(size=60)]
    )
    u = stats.norm.cdf(x)
    u_sorted = xp.sort(xp.asarray(u), axis=0)
    np.testing.assert_allclose(to_np(gof.ks_statistic(u_sorted)), _kstest(x, stats.norm.cdf), rtol=1e-12)
    ad_ref = [_ad_scipy_form(x[:, j], stats.norm) for j in range(x.shape[1])]
    np.testing.assert_allclose(to_np(gof.ad_statistic(u_sorted)), ad_ref, rtol=1e-10)


def test_ad_matches_scipy_anderson_with_its_fitted_normal(xp, to_np):
    """scipy.stats.anderson fits mean and sd (ddof=1) itself; the same u must give its statistic."""
    x = np.random.default_rng(1).gamma(4.0, size=(45, 6))
    mean, sd = x.mean(axis=0), x.std(axis=0, ddof=1)
    u = np.sort(stats.norm.cdf((x - mean) / sd), axis=0)
    got = to_np(gof.ad_statistic(xp.asarray(u)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scipy >= 1.17 asks for a p-value method; only the statistic is used
        ref = [stats.anderson(x[:, j], "norm").statistic for j in range(6)]
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_ragged_columns_use_their_leading_values(xp, to_np):
    rng = np.random.default_rng(2)
    x = rng.gumbel(size=(50, 5))
    sizes = [50, 31, 7, 1, 0]
    for j, m in enumerate(sizes):
        x[m:, j] = np.nan
    u = np.sort(stats.gumbel_r.cdf(x), axis=0)  # NaN last
    ks = to_np(gof.ks_statistic(xp.asarray(u)))
    ad = to_np(gof.ad_statistic(xp.asarray(u)))
    np.testing.assert_allclose(ks[:4], _kstest(x[:, :4], stats.gumbel_r.cdf), rtol=1e-12)
    np.testing.assert_allclose(ad[:4], [_ad_scipy_form(x[:, j], stats.gumbel_r) for j in range(4)], rtol=1e-10)
    assert np.isnan(ks[4]) and np.isnan(ad[4])
    # an explicit count ignores whatever the padding rows hold
    padded = np.where(np.isnan(u), 0.123, u)
    n = xp.asarray(np.array(sizes, dtype=np.int64))
    np.testing.assert_array_equal(to_np(gof.ks_statistic(xp.asarray(padded), n)), ks)
    np.testing.assert_array_equal(to_np(gof.ad_statistic(xp.asarray(padded), n)), ad)


def test_ad_is_finite_when_u_rounds_to_zero_or_one(xp, to_np):
    u = np.sort(np.array([[0.0, 1e-300, 0.3, 0.6, 1.0], [0.1, 0.2, 0.3, 0.4, 0.5]]).T, axis=0)
    ad = to_np(gof.ad_statistic(xp.asarray(u)))
    assert np.all(np.isfinite(ad)) and ad[0] > 30.0
    ks = to_np(gof.ks_statistic(xp.asarray(u)))
    np.testing.assert_allclose(ks, _kstest(u, stats.uniform.cdf), rtol=1e-12)


def test_statistics_float32(xp, to_np):
    x = np.random.default_rng(3).standard_normal((40, 4))
    u = np.sort(stats.norm.cdf(x), axis=0)
    ad = gof.ad_statistic(xp.asarray(u.astype(np.float32)))
    assert ad.dtype == xp.float32
    np.testing.assert_allclose(to_np(ad), gof.ad_statistic(u), rtol=1e-4)


# ----------------------------------------------------------------- bootstrap


def _uniformity_checks(p: np.ndarray, n_boot: int) -> None:
    """p-values of a true null: KS test against U(0, 1) and the share at or below 0.05 in a binomial band."""
    assert np.all((p >= 1.0 / (n_boot + 1) - 1e-12) & (p <= 1.0))
    # p sits on the grid k/(n_boot+1); spreading each value uniformly over the cell below it makes the
    # null law exactly U(0, 1), so the KS test of uniformity is not upset by the discreteness
    jitter = np.random.default_rng(0).uniform(0.0, 1.0 / (n_boot + 1), size=p.size)
    assert stats.kstest(p - jitter, "uniform").pvalue > 0.001
    level = math.floor(0.05 * (n_boot + 1)) / (n_boot + 1)  # P(p <= 0.05) exactly, p on a grid of 1/(n_boot+1)
    lo, hi = stats.binom.ppf(0.0005, p.size, level), stats.binom.isf(0.0005, p.size, level)
    assert lo <= np.sum(p <= 0.05) <= hi


def test_bootstrap_pvalues_uniform_under_null(xp, to_np):
    rng = np.random.default_rng(10)
    x = rng.normal(5.0, 2.0, size=(30, 400))
    xa = xp.asarray(x)
    out = gof.bootstrap_pvalues(NORMAL, xa, NORMAL.fit(xa), n_boot=99, seed=1)
    for key in ("ks_pvalue", "ad_pvalue"):
        _uniformity_checks(to_np(out[key]), 99)
    assert np.all(to_np(out["n_boot_ok"]) == 99)
    mean, sd = x.mean(axis=0), x.std(axis=0)
    np.testing.assert_allclose(to_np(out["ks"]), _kstest((x - mean) / sd, stats.norm.cdf), rtol=1e-10)


def test_bootstrap_rejects_wrong_family(xp, to_np):
    x = np.random.default_rng(11).exponential(size=(100, 40))
    xa = xp.asarray(x)
    out = gof.bootstrap_pvalues(NORMAL, xa, NORMAL.fit(xa), n_boot=99, seed=2)
    for key in ("ks_pvalue", "ad_pvalue"):
        assert np.mean(to_np(out[key]) <= 0.02) > 0.9


def test_bootstrap_reproducible_and_independent_of_chunking(xp, to_np):
    x = xp.asarray(np.random.default_rng(12).normal(size=(20, 70)))
    fit = NORMAL.fit(x)
    a = gof.bootstrap_pvalues(NORMAL, x, fit, n_boot=19, seed=3)
    b = gof.bootstrap_pvalues(NORMAL, x, fit, n_boot=19, seed=3, chunk_cells=1)
    c = gof.bootstrap_pvalues(NORMAL, x, fit, n_boot=19, seed=4)
    for key in ("ks_pvalue", "ad_pvalue"):
        np.testing.assert_array_equal(to_np(a[key]), to_np(b[key]))
        assert np.any(to_np(a[key]) != to_np(c[key]))


def test_bootstrap_ragged_columns_and_failed_cells(xp, to_np):
    rng = np.random.default_rng(13)
    n, cells = 40, 200
    x = rng.normal(size=(n, cells))
    sizes = rng.integers(12, n + 1, size=cells)
    sizes[0] = 1  # too few values: the fit fails
    valid = np.arange(n)[:, None] < sizes
    x_nan = np.where(valid, x, np.nan)
    x_junk = np.where(valid, x, 1e9)  # padding must not matter
    out = {}
    for name, data in (("nan", x_nan), ("junk", x_junk)):
        xa, va = xp.asarray(data), xp.asarray(valid)
        out[name] = gof.bootstrap_pvalues(NORMAL, xa, NORMAL.fit(xa, valid=va), n_boot=49, seed=5, valid=va)
    for key in ("ks", "ad", "ks_pvalue", "ad_pvalue"):
        np.testing.assert_array_equal(to_np(out["nan"][key]), to_np(out["junk"][key]))
    ks, p = to_np(out["nan"]["ks"]), to_np(out["nan"]["ks_pvalue"])
    assert np.isnan(ks[0]) and np.isnan(p[0]) and to_np(out["nan"]["n_boot_ok"])[0] == 0
    j = 7  # a ragged cell's statistic is that of its leading values against its fit
    col = x[: sizes[j], j]
    np.testing.assert_allclose(ks[j], stats.kstest(col, stats.norm(col.mean(), col.std()).cdf).statistic, rtol=1e-10)
    _uniformity_checks(p[1:], 49)


def test_bootstrap_validates_input(xp):
    x = xp.asarray(np.random.default_rng(0).normal(size=(10, 3)))
    fit = NORMAL.fit(x)
    with pytest.raises(ValueError, match="n_boot must be"):
        gof.bootstrap_pvalues(NORMAL, x, fit, n_boot=0, seed=1)
    with pytest.raises(ValueError, match="seed must be"):
        gof.bootstrap_pvalues(NORMAL, x, fit, n_boot=9, seed=-1)
    with pytest.raises(ValueError, match="fit must be"):
        gof.bootstrap_pvalues(NORMAL, x, {"params": fit["params"][:, :2]}, n_boot=9, seed=1)
    with pytest.raises(ValueError, match="valid must have"):
        gof.bootstrap_pvalues(NORMAL, x, fit, n_boot=9, seed=1, valid=xp.ones((10, 2), dtype=xp.bool))


# ------------------------------------------------------- the real families


def _families():
    from pipeline.kernels import families

    return families


def _gev():
    from pipeline.kernels import gev

    return gev


def test_bootstrap_gumbel_r_null_and_power(xp, to_np):
    gumbel = _families().FAMILIES_2P["gumbel_r"]
    rng = np.random.default_rng(20)
    null = stats.gumbel_r.rvs(loc=10.0, scale=3.0, size=(40, 200), random_state=rng)
    xa = xp.asarray(null)
    fit = gumbel.fit(xa)
    out = gof.bootstrap_pvalues(gumbel, xa, fit, n_boot=49, seed=6)
    for key in ("ks_pvalue", "ad_pvalue"):
        _uniformity_checks(to_np(out[key]), 49)
    loc, scale = to_np(fit["params"][0, :]), to_np(fit["params"][1, :])
    ref = [stats.kstest(null[:, j], stats.gumbel_r(loc[j], scale[j]).cdf).statistic for j in range(5)]
    np.testing.assert_allclose(to_np(out["ks"])[:5], ref, rtol=1e-8)
    # Gumbel (maxima) fitted to minima-type data (left-skewed) of 150 values is rejected
    wrong = xp.asarray(-stats.gumbel_r.rvs(size=(150, 30), random_state=rng))
    out = gof.bootstrap_pvalues(gumbel, wrong, gumbel.fit(wrong), n_boot=49, seed=7)
    for key in ("ks_pvalue", "ad_pvalue"):
        assert np.mean(to_np(out[key]) <= 0.04) > 0.8


def test_bootstrap_gev_null_and_gumbel_vs_gev_lr(xp, to_np):
    gev = _gev()
    gumbel = _families().FAMILIES_2P["gumbel_r"]
    rng = np.random.default_rng(21)
    xi = 0.3  # heavy tail; scipy's c = -xi
    x = stats.genextreme.rvs(-xi, loc=20.0, scale=4.0, size=(60, 24), random_state=rng)
    xa = xp.asarray(x)
    fit = gev.GEV.fit(xa)
    out = gof.bootstrap_pvalues(gev.GEV, xa, fit, n_boot=19, seed=8)
    p = to_np(out["ad_pvalue"])
    assert np.all(np.isfinite(p)) and np.mean(p <= 0.1) < 0.35  # not pivotal: only a loose null check
    assert np.all(to_np(out["n_boot_ok"]) >= 17)
    stat, pval = (to_np(a) for a in gof.lr_test(fit["loglik"], gumbel.fit(xa)["loglik"], df=1))
    assert np.median(stat) > 3.84 and np.mean(pval < 0.05) > 0.6  # the Gumbel restriction xi = 0 is wrong here


def test_bootstrap_gpd_on_ragged_declustered_peaks(xp, to_np):
    """Exceedance peaks from series.exceedances (ragged, NaN-padded), GPD with the threshold as known loc."""
    from pipeline.kernels import series

    gpd = _gev().GPD
    rng = np.random.default_rng(22)
    n, cells = 400, 24
    x = stats.genpareto.rvs(0.1, scale=2.0, size=(n, cells), random_state=rng)  # GPD above any threshold
    x[rng.random((n, cells)) < 0.2] = np.nan
    xa = xp.asarray(x)
    thr = series.quantile(xa, 0.8)
    peaks = series.exceedances(xa, thr, run=0)  # iid: every exceedance, a GPD(0.1) sample above thr
    values, valid = peaks["values"], peaks["valid"]
    fit = gpd.fit(values, loc=thr, valid=valid)
    out = gof.bootstrap_pvalues(gpd, values, fit, n_boot=19, seed=9, valid=valid, loc=thr)
    p = to_np(out["ad_pvalue"])
    assert np.all(np.isfinite(p)) and np.mean(p <= 0.1) < 0.35  # loose null check (xi makes it non-pivotal)
    j = 3  # the statistic of a ragged cell is that of its own peaks
    v = to_np(values)[: int(to_np(peaks["n_peaks"])[j]), j]
    loc_j, scale_j, xi_j = (float(a) for a in to_np(fit["params"])[:, j])
    ref = stats.kstest(v, stats.genpareto(xi_j, loc=loc_j, scale=scale_j).cdf).statistic
    np.testing.assert_allclose(to_np(out["ks"])[j], ref, rtol=1e-8)
    again = gof.bootstrap_pvalues(gpd, values, fit, n_boot=19, seed=9, valid=valid, loc=thr, chunk_cells=1)
    np.testing.assert_array_equal(to_np(again["ad_pvalue"]), p)


# --------------------------------------------------------- LR test, AIC, BIC


def test_lr_test_matches_chi2(xp, to_np):
    full = np.array([-10.0, -5.0, -7.3, np.nan, -4.0])
    nested = np.array([-12.0, -5.0, -7.3 + 1e-12, -3.0, -9.5])
    for df in (1, 2, 3):
        stat, p = (to_np(a) for a in gof.lr_test(xp.asarray(full), xp.asarray(nested), df=df))
        ref = np.maximum(2 * (full - nested), 0.0)
        np.testing.assert_allclose(stat, ref, rtol=1e-15)
        np.testing.assert_allclose(p, stats.chi2.sf(ref, df), rtol=1e-12)
        assert p[2] == 1.0 and np.isnan(p[3])
    with pytest.raises(ValueError, match="df must be"):
        gof.lr_test(xp.asarray(full), xp.asarray(nested), df=0)


def test_aic_bic_closed_forms(xp, to_np):
    ll = np.array([-100.0, -3.5])
    np.testing.assert_allclose(to_np(gof.aic(xp.asarray(ll), 3)), 6.0 - 2.0 * ll)
    np.testing.assert_allclose(to_np(gof.bic(xp.asarray(ll), 3, 50)), 3 * np.log(50) - 2.0 * ll)
    n = np.array([50, 20], dtype=np.int64)
    np.testing.assert_allclose(to_np(gof.bic(xp.asarray(ll), 2, xp.asarray(n))), 2 * np.log(n) - 2.0 * ll)
