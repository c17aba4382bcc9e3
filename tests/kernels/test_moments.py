"""Moments kernels against NumPy's nan-functions and dense covariances.

Every kernel runs over the ``xp`` fixture (NumPy, array-api-strict restricted
to the 2023.12 standard without data-dependent shapes, CuPy when present).
References are NumPy computations on the same data: ``np.nanmean``,
``np.nanstd(ddof=1)``, ``np.cov`` and an explicit Gram product. Tolerances are
``tolerance(dtype)`` relative to the reference's scale.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pipeline.kernels import moments as km

try:  # tests/ as a package (tests/__init__.py) or conftest on sys.path (rootdir insertion)
    from tests.conftest import tolerance
except ImportError:
    from conftest import tolerance


def _with_nans(n: int = 25, p: int = 14, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 3.0 + 2.0 * rng.standard_normal((n, p))
    x[rng.random((n, p)) < 0.15] = np.nan
    x[:, 0] = np.nan  # a cell never observed
    x[1:, 1] = np.nan  # a cell observed once
    x[:, 2] = 5.0  # a constant cell
    return x


def _nan_reference(x: np.ndarray) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=0)
        return {"mean": mean, "std": np.nanstd(x, axis=0, ddof=1), "count": np.sum(~np.isnan(x), axis=0), "anomaly": x - mean}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_time_moments_match_numpy_nan_functions(xp, to_np, dtype):
    x = _with_nans().astype(dtype)
    ref = _nan_reference(x.astype(np.float64))
    got = km.time_moments(xp.asarray(x))
    assert got.mean.dtype == getattr(xp, dtype) and got.anomaly.dtype == getattr(xp, dtype)
    assert got.count.dtype == xp.int64
    tol = tolerance(dtype)
    np.testing.assert_array_equal(to_np(got.count), ref["count"])
    for key in ("mean", "std", "anomaly"):
        np.testing.assert_allclose(to_np(getattr(got, key)), ref[key], rtol=tol, atol=tol * 5.0)
    # NaN placement: no mean without data, no std from fewer than 2 values
    assert np.isnan(to_np(got.mean)[0]) and np.isfinite(to_np(got.mean)[1])
    assert np.isnan(to_np(got.std)[:2]).all() and to_np(got.std)[2] == 0.0


def test_time_moments_rejects_bad_input(xp):
    with pytest.raises(ValueError, match="2-D"):
        km.time_moments(xp.asarray(np.ones(5)))
    with pytest.raises(TypeError, match="floating"):
        km.time_moments(xp.asarray(np.ones((3, 2), dtype=np.int64)))


def _complete_anomaly(n: int, p: int, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)) * rng.uniform(0.5, 3.0, p)
    return x - x.mean(axis=0), rng.uniform(0.2, 1.0, p)


@pytest.mark.parametrize("n, p, expected", [(12, 30, "time"), (30, 12, "space"), (15, 15, "time")])
def test_auto_kind_is_the_smaller_dimension(xp, to_np, n, p, expected):
    a, w = _complete_anomaly(n, p)
    cov, kind = km.weighted_covariance(xp.asarray(a), xp.asarray(w))
    assert kind == expected
    size = n if expected == "time" else p
    assert tuple(cov.shape) == (size, size)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_covariances_match_numpy(xp, to_np, dtype):
    a, w = _complete_anomaly(12, 30)
    xw = a * w
    a_in = xp.asarray(a.astype(dtype))
    gram, kind_t = km.weighted_covariance(a_in, xp.asarray(w), kind="time")
    space, kind_s = km.weighted_covariance(a_in, xp.asarray(w), kind="space")
    assert (kind_t, kind_s) == ("time", "space")
    assert gram.dtype == getattr(xp, dtype) and space.dtype == getattr(xp, dtype)
    tol = tolerance(dtype)
    ref_space = np.cov(xw, rowvar=False)  # centres the already-centred columns again
    ref_gram = np.einsum("tj,sj->ts", xw, xw) / (xw.shape[0] - 1)
    scale = np.abs(ref_space).max()
    np.testing.assert_allclose(to_np(space), ref_space, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(to_np(gram), ref_gram, rtol=tol, atol=tol * scale)
    # both kinds carry the same variance: equal traces and equal leading eigenvalues
    ev_gram = np.linalg.eigvalsh(to_np(gram).astype(np.float64))[::-1]
    ev_space = np.linalg.eigvalsh(ref_space)[::-1][: ev_gram.size]
    np.testing.assert_allclose(ev_gram[:5], ev_space[:5], rtol=10 * tol)


def test_weight_columns_scales_each_column(xp, to_np):
    a, w = _complete_anomaly(6, 4)
    got = to_np(km.weight_columns(xp.asarray(a), xp.asarray(w)))
    np.testing.assert_allclose(got, a * w[None, :], rtol=1e-15)


def test_covariance_rejects_nan_bad_weight_and_kind(xp):
    a, w = _complete_anomaly(6, 4)
    bad = a.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        km.weighted_covariance(xp.asarray(bad), xp.asarray(w))
    with pytest.raises(ValueError, match="weight must have shape"):
        km.weighted_covariance(xp.asarray(a), xp.asarray(w[:3]))
    with pytest.raises(ValueError, match="kind must be one of"):
        km.weighted_covariance(xp.asarray(a), xp.asarray(w), kind="cells")
    with pytest.raises(ValueError, match="at least 2 samples"):
        km.weighted_covariance(xp.asarray(a[:1]), xp.asarray(w))


def test_kernels_stay_on_the_input_device(xp):
    """array-api-strict's second device: any allocation on the default device would raise."""
    if "strict" not in xp.__name__:
        pytest.skip("device mixing is checked with array-api-strict's fake device")
    dev = xp.Device("device1")
    x = xp.asarray(_with_nans(), device=dev)
    got = km.time_moments(x)
    assert got.mean.device == dev and got.count.device == dev
    a, w = _complete_anomaly(8, 5)
    cov, _ = km.weighted_covariance(xp.asarray(a, device=dev), xp.asarray(w, device=dev))
    assert cov.device == dev
