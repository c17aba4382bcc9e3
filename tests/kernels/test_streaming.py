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
    # Mean/std up to 1e4: raw sums of x and x^2 would lose (mean/std)^2 ~ 1e8 to cancellation even in
    # float64 (1e-8 relative on M2); shifted sums lose only ((mean - x0)/std)^2, a few units here.
    x = _data(seed=1, nan=False, dtype=np.float32, offset=5000.0) * np.float32(1.0)
    state = None
    for block in np.split(x, [5, 21, 33], axis=0):
        part = ks.block_moments(xp.asarray(block), dtype=xp.float64)
        state = part if state is None else ks.merge_moments(state, part)
    _, std = ks.finish_moments(state)
    reference = np.std(x.astype(np.float64), axis=0, ddof=1)
    np.testing.assert_allclose(to_np(std), reference, rtol=1e-12)


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


def test_block_krylov_over_tiles_recovers_the_leading_singular_triplets(xp, to_np):
    # Planted spectrum plus noise; three blocks of width 6 over three tiles, Rayleigh-Ritz on B = Qᵀ X_w.
    rng = np.random.default_rng(4)
    n, p, k, width = 50, 300, 4, 6
    u, _ = np.linalg.qr(rng.standard_normal((n, k)))
    v, _ = np.linalg.qr(rng.standard_normal((p, k)))
    x = (u * np.array([50.0, 20.0, 10.0, 5.0])) @ v.T + 1e-3 * rng.standard_normal((n, p)) + 7.0
    mean, w = x.mean(axis=0), rng.uniform(0.5, 1.0, p)
    xw = (x - mean) * w
    tiles = np.split(np.arange(p), [70, 180])
    part = lambda cols: (xp.asarray(x[:, cols]), xp.asarray(mean[cols]), xp.asarray(w[cols]))  # noqa: E731
    basis = xp.asarray(np.full((n, 1), n**-0.5))
    q = ks.extend_basis(basis, xp.asarray(rng.standard_normal((n, width))))
    blocks = []
    for i in range(3):
        steps = [ks.implicit_krylov_step(*part(cols), q, image=i < 2) for cols in tiles]
        blocks.append(np.concatenate([to_np(z) for z, _ in steps]))
        basis = xp.concat([basis, q], axis=1)
        if i < 2:
            q = ks.extend_basis(basis, sum(image for _, image in steps))
    qk = to_np(basis)[:, 1:]
    np.testing.assert_allclose(qk.T @ qk, np.eye(3 * width), atol=1e-12)  # orthonormal, and orthogonal to 1
    np.testing.assert_allclose(qk.sum(axis=0), 0.0, atol=1e-12)
    bt = np.concatenate(blocks, axis=1)  # X_wᵀ Q
    np.testing.assert_allclose(bt, xw.T @ qk, atol=1e-10)
    ritz, vecs = np.linalg.eigh(bt.T @ bt)
    ritz, vecs = ritz[::-1][:k], vecs[:, ::-1][:, :k]
    _, exact_s, exact_vt = np.linalg.svd(xw, full_matrices=False)
    np.testing.assert_allclose(np.sqrt(ritz), exact_s[:k], rtol=1e-9)
    eofs = bt @ vecs / np.sqrt(ritz)
    np.testing.assert_allclose(np.abs(np.sum(eofs.T * exact_vt[:k], axis=1)), 1.0, atol=1e-9)


def test_extend_basis_stays_orthogonal_when_the_new_block_is_in_the_span(xp, to_np):
    rng = np.random.default_rng(8)
    basis, _ = np.linalg.qr(rng.standard_normal((30, 5)))
    y = np.concatenate([basis[:, :2] @ rng.standard_normal((2, 3)), rng.standard_normal((30, 1))], axis=1)
    new = to_np(ks.extend_basis(xp.asarray(basis), xp.asarray(y)))
    full = np.concatenate([basis, new], axis=1)
    np.testing.assert_allclose(full.T @ full, np.eye(9), atol=1e-12)


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
    q = np.linalg.qr(rng.standard_normal((20, 4)))[0]
    args = (xp.asarray(x), xp.asarray(mean), xp.asarray(w))
    np.testing.assert_allclose(to_np(ks.implicit_range(*args, xp.asarray(q))), xw.T @ q, rtol=1e-12, atol=1e-12)
    z, image = ks.implicit_krylov_step(*args, xp.asarray(q))
    np.testing.assert_allclose(to_np(z), xw.T @ q, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_np(image), xw @ (xw.T @ q), rtol=1e-12, atol=1e-11)
    assert ks.implicit_krylov_step(*args, xp.asarray(q), image=False)[1] is None


@pytest.mark.parametrize("n", [1, 2, 64, 200])
def test_complete_block_fast_path_equals_two_pass_statistics(xp, to_np, n):
    x = _data(seed=5, n=n, nan=False, offset=300.0)
    m = ks.block_moments(xp.asarray(x), dtype=xp.float64)
    np.testing.assert_array_equal(to_np(m.count), np.full(x.shape[1], n))
    np.testing.assert_allclose(to_np(m.mean), x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(to_np(m.m2), ((x - x.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("chunk_columns", [1, 7, 30])
def test_column_chunks_with_and_without_missing_values_equal_nanmean_nanvar(monkeypatch, chunk_columns):
    # NumPy works through chunks of columns; columns with missing values (here also a leading NaN,
    # which would poison a shift by the first value) are redone on their own.
    x = _data(seed=6, n=50, offset=300.0)
    x[0, 10] = np.nan
    x[:, 20:] = np.nan_to_num(x[:, 20:], nan=300.0)  # the last chunks complete
    monkeypatch.setattr(ks, "CHUNK_BYTES", chunk_columns * x.shape[0] * 8)
    m = ks.block_moments(x)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        mean, m2 = np.nanmean(x, axis=0), np.nanvar(x, axis=0) * np.sum(~np.isnan(x), axis=0)
    np.testing.assert_array_equal(m.count, np.sum(~np.isnan(x), axis=0))
    valid = m.count > 0
    np.testing.assert_allclose(m.mean[valid], mean[valid], rtol=1e-14)
    np.testing.assert_allclose(m.m2[valid], m2[valid], rtol=1e-11)
