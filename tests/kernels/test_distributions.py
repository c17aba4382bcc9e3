"""Distribution-fit kernels against scipy.special / scipy.stats and planted truth.

Every test runs once per array namespace (numpy, array-api-strict, cupy when
present). References: ``scipy.special.erf``/``erfc``/``ndtr``; the
maximum-likelihood fits, log-densities and KS statistics of ``scipy.stats``;
draws from ``pipeline.synthetic.planted_distribution`` with known parameters.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import special, stats

from pipeline.kernels import distributions as kd
from pipeline.synthetic import planted_distribution

SCIPY = {"normal": stats.norm, "gumbel_r": stats.gumbel_r, "gumbel_l": stats.gumbel_l}


def _sample(n: int = 200, m: int = 6, seed: int = 0, loc: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Columns drawn from different laws (normal, both Gumbels, skewed, heavy-tailed)."""
    rng = np.random.default_rng(seed)
    cols = [
        rng.standard_normal(n),
        rng.gumbel(size=n),
        -rng.gumbel(size=n),
        rng.exponential(size=n),
        rng.standard_t(3, size=n),
        rng.uniform(size=n),
    ]
    return loc + scale * np.stack(cols[:m], axis=1)


def _scipy_fit(dist, data: np.ndarray) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dist.fit(data)


# ----------------------------------------------------------------------- erf


def test_erf_matches_scipy_over_wide_range(xp, to_np):
    t = np.concatenate([np.linspace(-30.0, 30.0, 60001), [-1e300, -50.0, 0.0, 2.5, -2.5, 50.0, 1e300]])
    got = to_np(kd.erf(xp.asarray(t)))
    np.testing.assert_allclose(got, special.erf(t), rtol=0, atol=3e-15)
    got_c = to_np(kd.erfc(xp.asarray(t)))
    np.testing.assert_allclose(got_c, special.erfc(t), rtol=0, atol=3e-15)


def test_erfc_relative_accuracy_in_upper_tail(xp, to_np):
    t = np.linspace(0.01, 26.0, 20001)  # erfc(26) ~ 6e-296, still a normal float64
    got = to_np(kd.erfc(xp.asarray(t)))
    np.testing.assert_allclose(got, special.erfc(t), rtol=1e-11)


def test_normal_cdf_matches_ndtr_in_both_tails(xp, to_np):
    t = np.linspace(-37.0, 10.0, 9401)
    got = to_np(kd.normal_cdf(xp.asarray(t)))
    np.testing.assert_allclose(got, special.ndtr(t), rtol=1e-11, atol=1e-300)


def test_erf_float32(xp, to_np):
    t = np.linspace(-8.0, 8.0, 4001).astype(np.float32)
    got = kd.erf(xp.asarray(t))
    assert got.dtype == xp.float32
    np.testing.assert_allclose(to_np(got), special.erf(t.astype(np.float64)), rtol=0, atol=1e-6)


# --------------------------------------------------------------- single fits


@pytest.mark.parametrize("family", kd.FAMILIES)
def test_fit_matches_scipy_mle(xp, to_np, family):
    x = _sample()
    loc, scale = (to_np(a) for a in kd.fit(xp.asarray(x), family))
    dist = SCIPY[family]
    for j in range(x.shape[1]):
        ref_loc, ref_scale = _scipy_fit(dist, x[:, j])
        np.testing.assert_allclose([loc[j], scale[j]], [ref_loc, ref_scale], rtol=1e-6, atol=1e-8)
        # scipy's optimizer is itself approximate: ours must be at least as likely
        ours = dist.logpdf(x[:, j], loc[j], scale[j]).sum()
        theirs = dist.logpdf(x[:, j], ref_loc, ref_scale).sum()
        assert ours >= theirs - 1e-9 * abs(theirs)


def test_normal_fit_is_closed_form(xp, to_np):
    x = _sample(n=50)
    loc, scale = (to_np(a) for a in kd.fit(xp.asarray(x), "normal"))
    np.testing.assert_allclose(loc, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scale, x.std(axis=0, ddof=0), rtol=1e-12)


@pytest.mark.parametrize("family", kd.FAMILIES)
def test_log_likelihood_and_ks_match_scipy(xp, to_np, family):
    x = _sample(n=120, seed=3)
    loc = np.linspace(-0.5, 0.5, x.shape[1])
    scale = np.linspace(0.7, 1.6, x.shape[1])
    args = (xp.asarray(x), family, xp.asarray(loc), xp.asarray(scale))
    ll = to_np(kd.log_likelihood(*args))
    ks = to_np(kd.ks_statistic(*args))
    dist = SCIPY[family]
    for j in range(x.shape[1]):
        np.testing.assert_allclose(ll[j], dist.logpdf(x[:, j], loc[j], scale[j]).sum(), rtol=1e-12)
        ref = stats.kstest(x[:, j], dist.cdf, args=(loc[j], scale[j])).statistic
        np.testing.assert_allclose(ks[j], ref, rtol=0, atol=1e-12)


# ------------------------------------------------------------- all families


def test_fit_families_against_scipy(xp, to_np):
    x = _sample(n=150, seed=7)
    out = kd.fit_families(xp.asarray(x), list(kd.FAMILIES))
    res = {k: to_np(out[k]) for k in ("loc", "scale", "loglik", "aic", "ks", "best")}
    for f, family in enumerate(kd.FAMILIES):
        dist = SCIPY[family]
        for j in range(x.shape[1]):
            loc, scale = res["loc"][f, j], res["scale"][f, j]
            np.testing.assert_allclose([loc, scale], _scipy_fit(dist, x[:, j]), rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(res["loglik"][f, j], dist.logpdf(x[:, j], loc, scale).sum(), rtol=1e-10)
            ref_ks = stats.kstest(x[:, j], dist.cdf, args=(loc, scale)).statistic
            np.testing.assert_allclose(res["ks"][f, j], ref_ks, rtol=0, atol=1e-10)
    np.testing.assert_allclose(res["aic"], 2 * 2 - 2 * res["loglik"], rtol=1e-14)
    np.testing.assert_array_equal(res["best"], np.argmin(res["aic"], axis=0))
    assert 0 < out["n_iter"] < 30


def test_family_order_and_subset(xp, to_np):
    x = _sample(n=80, seed=2)
    full = kd.fit_families(xp.asarray(x), list(kd.FAMILIES))
    sub = kd.fit_families(xp.asarray(x), ["gumbel_l", "normal"])
    np.testing.assert_allclose(to_np(sub["loc"]), to_np(full["loc"])[[2, 0]], rtol=1e-12)
    aic = to_np(full["aic"])[[2, 0]]
    np.testing.assert_array_equal(to_np(sub["best"]), np.argmin(aic, axis=0))


def test_large_offset_is_accurate(xp, to_np):
    """Geopotential-like data (~5000 m, spread ~50 m) fit as accurately as anomalies."""
    anomaly = _sample(n=300, seed=11, scale=50.0)
    far = kd.fit_families(xp.asarray(5000.0 + anomaly), list(kd.FAMILIES))
    near = kd.fit_families(xp.asarray(anomaly), list(kd.FAMILIES))
    np.testing.assert_allclose(to_np(far["loc"]) - 5000.0, to_np(near["loc"]), rtol=0, atol=1e-9)
    np.testing.assert_allclose(to_np(far["scale"]), to_np(near["scale"]), rtol=1e-10)
    np.testing.assert_allclose(to_np(far["ks"]), to_np(near["ks"]), rtol=0, atol=1e-10)
    x = 5000.0 + anomaly
    loc, scale = to_np(far["loc"])[1], to_np(far["scale"])[1]
    for j in range(x.shape[1]):
        np.testing.assert_allclose([loc[j], scale[j]], _scipy_fit(stats.gumbel_r, x[:, j]), rtol=1e-6)


def test_float32_input(xp, to_np):
    x64 = 5000.0 + _sample(n=400, seed=5, scale=50.0)
    ref = kd.fit_families(xp.asarray(x64), list(kd.FAMILIES))
    got = kd.fit_families(xp.asarray(x64.astype(np.float32)), list(kd.FAMILIES))
    for key in ("loc", "scale", "loglik", "aic"):
        assert got[key].dtype == xp.float32
        np.testing.assert_allclose(to_np(got[key]), to_np(ref[key]), rtol=1e-4)
    np.testing.assert_allclose(to_np(got["ks"]), to_np(ref["ks"]), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(to_np(got["best"]), to_np(ref["best"]))


def test_constant_column_is_nan_and_leaves_others_alone(xp, to_np):
    x = _sample(n=60, m=4, seed=9)
    with_const = np.concatenate([x[:, :2], np.full((60, 1), 0.1), x[:, 2:]], axis=1)
    out = kd.fit_families(xp.asarray(with_const), list(kd.FAMILIES))
    ref = kd.fit_families(xp.asarray(x), list(kd.FAMILIES))
    for key in ("loc", "scale", "loglik", "aic", "ks"):
        got = to_np(out[key])
        assert np.all(np.isnan(got[:, 2]))
        np.testing.assert_allclose(np.delete(got, 2, axis=1), to_np(ref[key]), rtol=1e-12)
    best = to_np(out["best"])
    assert best[2] == -1
    np.testing.assert_array_equal(np.delete(best, 2), to_np(ref["best"]))
    loc, scale = kd.fit(xp.asarray(with_const), "gumbel_r")
    assert np.isnan(to_np(loc)[2]) and np.isnan(to_np(scale)[2])


# ------------------------------------------------------------ planted truth

# Asymptotic standard errors of the MLE, per unit scale, times sqrt(n):
# normal: loc 1, scale 1/sqrt(2); Gumbel: loc sqrt(1 + 6(1 - gamma)^2/pi^2) ~ 1.0529,
# scale sqrt(6)/pi ~ 0.7797.
_SE = {"normal": (1.0, 0.5**0.5), "gumbel_r": (1.0529, 0.7797), "gumbel_l": (1.0529, 0.7797)}


@pytest.mark.parametrize("family", kd.FAMILIES)
def test_planted_parameters_and_family_recovered(xp, to_np, family):
    n = 500
    rng = np.random.default_rng(42)
    true_loc = rng.uniform(-20.0, 20.0, (6, 8))
    true_scale = rng.uniform(0.5, 5.0, (6, 8))
    ds = planted_distribution(family, loc=true_loc, scale=true_scale, n_time=n, n_lat=6, n_lon=8, seed=4)
    x = ds["field"].values.reshape(n, -1)
    out = kd.fit_families(xp.asarray(x), list(kd.FAMILIES))
    f = kd.FAMILIES.index(family)
    se_loc, se_scale = (c * true_scale.ravel() / np.sqrt(n) for c in _SE[family])
    z_loc = (to_np(out["loc"])[f] - true_loc.ravel()) / se_loc
    z_scale = (to_np(out["scale"])[f] - true_scale.ravel()) / se_scale
    assert np.max(np.abs(z_loc)) < 4.5 and np.max(np.abs(z_scale)) < 4.5
    assert abs(np.mean(z_loc)) < 4 / np.sqrt(z_loc.size)  # no systematic bias
    assert abs(np.mean(z_scale)) < 4 / np.sqrt(z_scale.size)
    assert np.mean(to_np(out["best"]) == f) >= 0.9


# --------------------------------------------------------------- validation


def test_bad_input_raises(xp):
    x = xp.asarray(_sample(n=10))
    with pytest.raises(ValueError, match="family must be one of normal, gumbel_r, gumbel_l; got 'weibull'"):
        kd.fit(x, "weibull")
    with pytest.raises(ValueError, match="families must name at least one"):
        kd.fit_families(x, [])
    with pytest.raises(ValueError, match="family must be one of"):
        kd.fit_families(x, ["normal", "gamma"])
    with pytest.raises(ValueError, match="at least 3 samples"):
        kd.fit(xp.asarray(_sample(n=2)), "normal")
    with pytest.raises(TypeError, match="2-D real floating"):
        kd.fit(xp.asarray(np.arange(10.0)), "normal")
    with pytest.raises(TypeError, match="2-D real floating"):
        kd.fit(xp.asarray(np.ones((5, 2), dtype=np.int64)), "normal")
