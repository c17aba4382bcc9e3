"""Calibration kernels against brute force, closed forms and planted (mis)calibration.

References: the O(m^2) energy form of the CRPS, the closed-form CRPS of a
normal forecast, scipy's chi-squared survival function, and SBC on the
conjugate normal mean, whose exact posterior is known: exact draws give
uniform ranks, draws from a posterior that is too narrow do not.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pipeline.kernels import calibration as kc


def test_crps_equals_the_energy_form_by_brute_force(xp, to_np):
    rng = np.random.default_rng(0)
    draws, y = rng.gamma(2.0, size=(40, 7)), rng.gamma(2.0, size=7)
    brute = np.mean(np.abs(draws - y), axis=0) - 0.5 * np.mean(np.abs(draws[:, None, :] - draws[None, :, :]),
                                                               axis=(0, 1))
    np.testing.assert_allclose(to_np(kc.crps(xp.asarray(draws), xp.asarray(y))), brute, rtol=1e-12)


def test_crps_of_a_large_normal_ensemble_is_the_closed_form(xp, to_np):
    rng = np.random.default_rng(1)
    mean, sd, y = np.array([0.0, 1.0, -2.0]), np.array([1.0, 0.5, 3.0]), np.array([0.3, 2.5, -2.0])
    draws = mean + sd * stats.norm.ppf((np.arange(20000)[:, None] + 0.5) / 20000)  # quasi-random, exact quantiles
    got = to_np(kc.crps(xp.asarray(draws), xp.asarray(y)))
    closed = to_np(kc.crps_normal(xp.asarray(mean), xp.asarray(sd), xp.asarray(y)))
    np.testing.assert_allclose(got, closed, rtol=1e-4)
    # Gneiting & Raftery (2007), eq. (5), from scipy
    z = (y - mean) / sd
    np.testing.assert_allclose(closed, sd * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi)),
                               rtol=1e-12)
    del rng


def test_pit_is_uniform_for_a_calibrated_ensemble_and_not_for_an_overconfident_one(xp, to_np):
    rng = np.random.default_rng(2)
    cells = 4000
    y = rng.standard_normal(cells)
    good = rng.standard_normal((30, cells))
    narrow = 0.5 * rng.standard_normal((30, cells))
    p_good = to_np(kc.pit(xp.asarray(good), xp.asarray(y), seed=3))
    p_narrow = to_np(kc.pit(xp.asarray(narrow), xp.asarray(y), seed=3))
    assert stats.kstest(p_good, "uniform").pvalue > 0.001
    assert stats.kstest(p_narrow, "uniform").pvalue < 1e-10  # U-shaped


def _sbc_normal_mean(post_sd_factor: float, n_cells: int, L: int, seed: int) -> np.ndarray:
    """SBC ranks for mu ~ N(0, 1), y_i ~ N(mu, 1), i = 1..n: the posterior is N(sum y/(n+1), 1/(n+1))."""
    rng = np.random.default_rng(seed)
    n = 10
    mu = rng.standard_normal(n_cells)
    y = mu + rng.standard_normal((n, n_cells))
    post_mean, post_sd = y.sum(axis=0) / (n + 1), np.sqrt(1.0 / (n + 1)) * post_sd_factor
    draws = post_mean + post_sd * rng.standard_normal((L, n_cells))
    return mu, draws


def test_sbc_ranks_are_uniform_for_exact_draws_and_flag_a_narrow_sampler(xp, to_np):
    L = 99
    mu, draws = _sbc_normal_mean(1.0, 2000, L, seed=4)
    ranks = kc.sbc_ranks(xp.asarray(mu), xp.asarray(draws))
    np.testing.assert_array_equal(to_np(ranks), np.sum(draws < mu, axis=0))
    counts, stat, p = kc.rank_uniformity(ranks, L + 1, n_bins=20)
    assert int(np.sum(to_np(counts))) == 2000
    assert p > 0.001
    np.testing.assert_allclose(p, stats.chi2.sf(stat, 19), rtol=1e-10)
    mu, draws = _sbc_normal_mean(0.8, 2000, L, seed=5)  # 20 % too narrow
    _, _, p_bad = kc.rank_uniformity(kc.sbc_ranks(xp.asarray(mu), xp.asarray(draws)), L + 1, n_bins=20)
    assert p_bad < 1e-6


def test_bad_shapes_and_bins(xp):
    with pytest.raises(ValueError, match="posterior_draws must have shape"):
        kc.sbc_ranks(xp.zeros((3,)), xp.zeros((10, 4)))
    with pytest.raises(ValueError, match="must divide"):
        kc.rank_uniformity(xp.zeros((5,), dtype=xp.int64), 100, n_bins=7)
