"""EOF kernels against a dense NumPy SVD, planted truth and closed forms.

References: ``numpy.linalg.svd`` of the same weighted anomaly matrix (EOFs,
PCs, eigenvalues, total variance; compared column by column after aligning
signs, tolerance 1e-10 in float64), the planted EOFs/PCs/variances of
``pipeline.synthetic.planted_modes``, ``np.corrcoef``/``np.cov`` for the
diagnostic maps, ``scipy.linalg.subspace_angles`` for the noisy case and the
North et al. closed form.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from pipeline.kernels import eof as ke
from pipeline.synthetic import planted_modes

try:  # tests/ as a package (tests/__init__.py) or conftest on sys.path (rootdir insertion)
    from tests.conftest import tolerance
except ImportError:
    from conftest import tolerance

METHODS = ("time", "space", "svd")


def _random_xw(n: int, p: int, seed: int = 3) -> np.ndarray:
    """Centred, weighted anomalies with a spread-out spectrum."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)) @ np.diag(np.linspace(3.0, 0.5, p))
    w = np.sqrt(np.cos(np.deg2rad(rng.uniform(-60, 60, p))))
    return (x - x.mean(axis=0)) * w


def _planted_xw(noise_std: float = 0.0, dtype: str = "float64", **kw):
    """Weighted anomaly matrix of the ocean cells of a planted field, and the truth."""
    ds = planted_modes(noise_std=noise_std, land_fraction=0.2, **kw)
    ocean = ~ds["land"].values.ravel()
    field = ds["field"].values.reshape(ds.sizes["time"], -1)[:, ocean]
    w = np.broadcast_to(np.sqrt(np.cos(np.deg2rad(ds["lat"].values)))[:, None], ds["land"].shape).ravel()[ocean]
    xw = (field - field.mean(axis=0)) * w
    truth = {
        "eof": ds["true_eof"].values.reshape(ds.sizes["mode"], -1)[:, ocean].T,
        "pc": ds["true_pc"].values,
        "variance": ds["true_variance"].values,
    }
    return xw.astype(dtype), truth


def _align(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``got`` with each column's sign matched to ``ref``."""
    return got * np.sign(np.sum(got * ref, axis=0))[None, :]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(24, 40), (40, 24)], ids=["n<p", "n>p"])
def test_methods_match_dense_numpy_svd(xp, to_np, method, shape):
    xw = _random_xw(*shape)
    k = 5
    u, s, vt = np.linalg.svd(xw, full_matrices=False)
    ref_eof, ref_pc, n = vt[:k].T, u[:, :k] * s[:k], shape[0]
    res = ke.eof_decomposition(xp.asarray(xw), k, method=method)
    eof, pc = to_np(res.eof), to_np(res.pc)
    assert eof.shape == (shape[1], k) and pc.shape == (n, k) and res.method == method
    np.testing.assert_allclose(_align(eof, ref_eof), ref_eof, rtol=0, atol=1e-10)
    np.testing.assert_allclose(_align(pc, ref_pc), ref_pc, rtol=0, atol=1e-10 * s[0])
    np.testing.assert_allclose(to_np(res.eigenvalue), s[:k] ** 2 / (n - 1), rtol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(eof, axis=0), 1.0, rtol=1e-12)
    assert res.total_variance == pytest.approx(np.sum(s**2) / (n - 1), rel=1e-10)
    assert res.rank == min(n - 1, shape[1])  # centring removes one dimension


@pytest.mark.parametrize("shape", [(24, 40), (40, 24)], ids=["n<p", "n>p"])
def test_methods_agree_without_sign_alignment(xp, to_np, shape):
    """The sign rule makes the three routes give the same numbers, not just the same subspaces."""
    xw = _random_xw(*shape, seed=5)
    results = [ke.eof_decomposition(xp.asarray(xw), 6, method=m) for m in METHODS]
    scale = np.abs(to_np(results[2].pc)).max()
    for res in results[:2]:
        np.testing.assert_allclose(to_np(res.eof), to_np(results[2].eof), rtol=0, atol=1e-10)
        np.testing.assert_allclose(to_np(res.pc), to_np(results[2].pc), rtol=0, atol=1e-10 * scale)
        np.testing.assert_allclose(to_np(res.eigenvalue), to_np(results[2].eigenvalue), rtol=1e-10)


@pytest.mark.parametrize("method", ["time", "space"])
def test_precomputed_covariance_is_used(xp, to_np, method):
    xw = _random_xw(20, 30)
    n = xw.shape[0]
    cov = xw @ xw.T / (n - 1) if method == "time" else xw.T @ xw / (n - 1)
    with_cov = ke.eof_decomposition(xp.asarray(xw), 4, method=method, covariance=xp.asarray(cov))
    plain = ke.eof_decomposition(xp.asarray(xw), 4, method=method)
    np.testing.assert_allclose(to_np(with_cov.eof), to_np(plain.eof), rtol=0, atol=1e-10)
    # a deliberately different covariance changes the answer: the argument is not ignored
    scaled = ke.eof_decomposition(xp.asarray(xw), 4, method=method, covariance=xp.asarray(4.0 * cov))
    np.testing.assert_allclose(to_np(scaled.eigenvalue), 4.0 * to_np(plain.eigenvalue), rtol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_sign_rule_holds_and_pc_flips_with_eof(xp, to_np, method):
    xw = _random_xw(30, 18, seed=11)
    res = ke.eof_decomposition(xp.asarray(xw), 5, method=method)
    eof, pc = to_np(res.eof), to_np(res.pc)
    peak = eof[np.argmax(np.abs(eof), axis=0), np.arange(eof.shape[1])]
    assert (peak > 0).all()
    np.testing.assert_allclose(pc, xw @ eof, rtol=0, atol=1e-10 * np.abs(pc).max())


def test_apply_sign_rule_flips_negative_peaks(xp, to_np):
    eof = np.array([[0.1, -0.9], [-0.8, 0.2], [0.3, 0.3]])
    pc = np.array([[1.0, 2.0], [-1.0, -2.0]])
    e, p = ke.apply_sign_rule(xp.asarray(eof), xp.asarray(pc))
    np.testing.assert_array_equal(to_np(e), eof * [-1.0, -1.0])
    np.testing.assert_array_equal(to_np(p), pc * [-1.0, -1.0])


@pytest.mark.parametrize("method", METHODS)
def test_planted_modes_recovered_exactly(xp, to_np, method):
    xw, truth = _planted_xw()
    k = truth["variance"].size
    res = ke.eof_decomposition(xp.asarray(xw), k, method=method)
    eof, pc = to_np(res.eof), to_np(res.pc)
    np.testing.assert_allclose(_align(eof, truth["eof"]), truth["eof"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(_align(pc, truth["pc"]), truth["pc"], rtol=0, atol=1e-10 * np.abs(truth["pc"]).max())
    np.testing.assert_allclose(to_np(res.eigenvalue), truth["variance"], rtol=1e-10)
    assert res.rank == k
    assert float(np.sum(to_np(res.eigenvalue))) / res.total_variance == pytest.approx(1.0, abs=1e-12)


def test_planted_modes_with_noise_span_the_true_subspace(xp, to_np):
    noise_std = 0.01
    xw, truth = _planted_xw(noise_std=noise_std, seed=4)
    n, p = xw.shape
    res = ke.eof_decomposition(xp.asarray(xw), 3, method="svd")
    angles = subspace_angles(to_np(res.eof), truth["eof"])
    # first-order perturbation: sin(angle) ~ |noise projected on a PC| / s_min
    # = noise_std * w * sqrt(p) / sqrt(lambda_min (n - 1)), w <= 1
    expected = noise_std * np.sqrt(p) / np.sqrt(truth["variance"].min() * (n - 1))
    assert 0.0 < np.max(angles) < 2.0 * expected
    np.testing.assert_allclose(to_np(res.eigenvalue), truth["variance"], rtol=0.05)


@pytest.mark.parametrize("method", METHODS)
def test_float32_stays_float32(xp, to_np, method):
    xw, truth = _planted_xw(dtype="float32")
    res = ke.eof_decomposition(xp.asarray(xw), 3, method=method)
    assert res.eof.dtype == xp.float32 and res.pc.dtype == xp.float32 and res.eigenvalue.dtype == xp.float32
    tol = tolerance("float32")
    np.testing.assert_allclose(_align(to_np(res.eof), truth["eof"]), truth["eof"], rtol=0, atol=tol)
    np.testing.assert_allclose(to_np(res.eigenvalue), truth["variance"], rtol=tol * 10)
    corr = ke.eof_correlation(xp.asarray(xw), res.pc)
    assert corr.dtype == xp.float32


def test_n_modes_above_rank_is_refused(xp):
    xw, _ = _planted_xw()
    with pytest.raises(ValueError, match=r"^n_modes=7 exceeds the rank \(3\) of the sst anomalies; ask for at most 3 modes\.$"):
        ke.eof_decomposition(xp.asarray(xw), 7, method="time", label="sst")


def test_bad_arguments_are_refused(xp):
    xw = xp.asarray(_random_xw(10, 6))
    with pytest.raises(ValueError, match="n_modes must be an integer of at least 1"):
        ke.eof_decomposition(xw, 0)
    with pytest.raises(ValueError, match="method must be one of time, space, svd"):
        ke.eof_decomposition(xw, 2, method="eig")
    with pytest.raises(ValueError, match=r"needs \(6, 6\)"):
        ke.eof_decomposition(xw, 2, method="space", covariance=xp.asarray(np.eye(10)))


def test_north_error_closed_form(xp, to_np):
    got = ke.north_error(xp.asarray(np.array([9.0, 4.0, 1.0])), 50)
    np.testing.assert_allclose(to_np(got), [1.8, 0.8, 0.2], rtol=1e-14)  # sqrt(2/50) = 0.2
    with pytest.raises(ValueError, match="n_samples"):
        ke.north_error(xp.asarray(np.array([1.0])), 0)


def test_correlation_and_covariance_maps_match_numpy(xp, to_np):
    rng = np.random.default_rng(7)
    n, p, k = 30, 9, 3
    anomaly = rng.standard_normal((n, p))
    anomaly -= anomaly.mean(axis=0)
    anomaly[:, 4] = 0.0  # a constant cell: no correlation defined
    pc = anomaly[:, :k] @ rng.standard_normal((k, k)) + 0.3 * rng.standard_normal((n, k))
    corr = to_np(ke.eof_correlation(xp.asarray(anomaly), xp.asarray(pc)))
    cov = to_np(ke.eof_covariance(xp.asarray(anomaly), xp.asarray(pc)))
    assert corr.shape == (p, k) and cov.shape == (p, k)
    unit = pc / pc.std(axis=0, ddof=1)
    for j in range(p):
        for m in range(k):
            if j != 4:
                assert corr[j, m] == pytest.approx(np.corrcoef(anomaly[:, j], pc[:, m])[0, 1], abs=1e-12)
            assert cov[j, m] == pytest.approx(np.cov(anomaly[:, j], unit[:, m])[0, 1], abs=1e-12)
    assert np.isnan(corr[4]).all() and np.all(cov[4] == 0.0)


def test_correlation_rejects_mismatched_samples(xp):
    with pytest.raises(ValueError, match="same number of samples"):
        ke.eof_correlation(xp.asarray(np.ones((5, 3))), xp.asarray(np.ones((4, 2))))
