"""Streaming kernels: block-by-block results equal the in-memory computation."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.kernels import streaming as ks


def _data(seed=0, n=40, p=30, nan=True, dtype=np.float64, offset=0.0):
    rng = np.random.default_rng(seed)
    x = (offset + rng.standard_normal((n, p)) * rng.uniform(0.5, 3.0, p)).astype(dtype)
    if nan:
        x[rng.random((n, p)) < 0.05] = np.nan
        x[:, 3] = np.nan  # an all-missing column
    return x


@pytest.mark.parametrize("splits", [[40], [10, 30], [1, 7, 13, 19]])
def test_chan_merge_over_time_blocks_equals_nanmean_nanstd(xp, to_np, splits):
    x = _data()
    state = None
    for block in np.split(x, np.cumsum(splits)[:-1], axis=0):
        part = ks.block_moments(xp.asarray(block))
        state = part if state is None else ks.merge_moments(state, part)
    mean, std = (to_np(a) for a in ks.finish_moments(state))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        np.testing.assert_allclose(mean, np.nanmean(x, axis=0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(std, np.nanstd(x, axis=0, ddof=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(to_np(state.count), np.sum(~np.isnan(x), axis=0))


def test_float32_blocks_with_a_large_offset_stay_accurate_in_float64_accumulation(xp, to_np):
    # Geopotential-like values: 5000 m +- 50 m; naive sum-of-squares in float32 would lose it all.
    x = _data(seed=1, nan=False, dtype=np.float32, offset=5000.0) * np.float32(1.0)
    state = None
    for block in np.split(x, [5, 21, 33], axis=0):
        part = ks.block_moments(xp.asarray(block), dtype=xp.float64)
        state = part if state is None else ks.merge_moments(state, part)
    _, std = ks.finish_moments(state)
    reference = np.std(x.astype(np.float64), axis=0, ddof=1)
    np.testing.assert_allclose(to_np(std), reference, rtol=1e-10)


def test_comoment_merge_equals_the_dense_covariance_on_complete_columns(xp, to_np):
    x = _data(seed=2)
    state = None
    for block in np.split(x, [9, 25], axis=0):
        part = ks.block_comoment(xp.asarray(block))
        state = part if state is None else ks.merge_comoment(state, part)
    complete = ~np.isnan(x).any(axis=0)
    got = to_np(state.comoment)[np.ix_(complete, complete)] / (x.shape[0] - 1)
    np.testing.assert_allclose(got, np.cov(x[:, complete], rowvar=False), rtol=1e-11, atol=1e-12)


def test_gram_over_tiles_equals_the_dense_gram(xp, to_np):
    x = _data(seed=3, nan=False)
    gram = xp.zeros((x.shape[0], x.shape[0]), dtype=xp.float64)
    for tile in np.split(x, [4, 17, 29], axis=1):
        gram = ks.gram_update(gram, xp.asarray(tile.astype(np.float32)))
    x32 = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(to_np(gram), x32 @ x32.T, rtol=1e-12)


def test_randomized_range_finder_recovers_a_low_rank_spectrum(xp, to_np):
    rng = np.random.default_rng(4)
    n, p, k = 50, 300, 4
    u, _ = np.linalg.qr(rng.standard_normal((n, k)))
    v, _ = np.linalg.qr(rng.standard_normal((p, k)))
    s = np.array([50.0, 20.0, 10.0, 5.0])
    x = (u * s) @ v.T + 1e-3 * rng.standard_normal((n, p))
    mean, w = np.zeros(p), np.ones(p)
    tiles = np.split(np.arange(p), [70, 180])
    l = k + 6
    part = lambda cols: (xp.asarray(x[:, cols]), xp.asarray(mean[cols]), xp.asarray(w[cols]))  # noqa: E731
    y = xp.zeros((n, l), dtype=xp.float64)
    for cols in tiles:
        y = ks.implicit_sketch_update(y, *part(cols), xp.asarray(rng.standard_normal((cols.size, l))))
    for _ in range(2):
        q = ks.orthonormalize(y)
        y = xp.zeros((n, l), dtype=xp.float64)
        for cols in tiles:
            y = ks.implicit_power_update(y, *part(cols), q)
    q = ks.orthonormalize(y)
    z = np.concatenate([to_np(ks.implicit_range(*part(cols), q)) for cols in tiles])  # X_wᵀ Q
    _, sing, vt_small = np.linalg.svd(z.T, full_matrices=False)
    exact_u, exact_s, exact_vt = np.linalg.svd(x, full_matrices=False)
    np.testing.assert_allclose(sing[:k], exact_s[:k], rtol=1e-8)
    np.testing.assert_allclose(np.abs(np.sum(vt_small[:k] * exact_vt[:k], axis=1)), 1.0, atol=1e-8)


def test_pc_moments_summed_over_time_blocks_equal_the_whole_record(xp, to_np):
    rng = np.random.default_rng(5)
    a, pc = rng.standard_normal((30, 12)), rng.standard_normal((30, 3))
    total = sum(to_np(ks.pc_moments(xp.asarray(a[s]), xp.asarray(pc[s]))) for s in (slice(0, 11), slice(11, 30)))
    np.testing.assert_allclose(total, a.T @ pc, rtol=1e-12)


def test_implicit_centring_equals_the_explicit_weighted_anomaly(xp, to_np):
    rng = np.random.default_rng(6)
    x = (5.0 + rng.standard_normal((20, 15))).astype(np.float32)
    mean, w = x.astype(np.float64).mean(axis=0) + 0.1, rng.uniform(0.2, 1.0, 15)
    xw = (x.astype(np.float64) - mean) * w
    omega, q = rng.standard_normal((15, 4)), np.linalg.qr(rng.standard_normal((20, 4)))[0]
    y0 = rng.standard_normal((20, 4))
    args = (xp.asarray(x), xp.asarray(mean), xp.asarray(w))
    np.testing.assert_allclose(to_np(ks.implicit_sketch_update(xp.asarray(y0), *args, xp.asarray(omega))),
                               y0 + xw @ omega, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_np(ks.implicit_range(*args, xp.asarray(q))), xw.T @ q, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_np(ks.implicit_power_update(xp.asarray(y0), *args, xp.asarray(q))),
                               y0 + xw @ (xw.T @ q), rtol=1e-12, atol=1e-11)
