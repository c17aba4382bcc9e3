"""The special-function adapter against scipy.special, and its seeded uniforms.

Every test runs per array namespace (numpy, array-api-strict, cupy when
present); the reference is ``scipy.special`` on host NumPy arrays.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest
from scipy import special as sc
from scipy import stats

from pipeline.kernels import special

X = np.concatenate([np.geomspace(1e-8, 1e3, 60), np.linspace(-30.0, -0.01, 40), np.linspace(0.01, 30.0, 40)])
POSITIVE = np.geomspace(1e-6, 1e5, 80)
PROB = np.concatenate([np.geomspace(1e-300, 1e-2, 40), np.linspace(0.01, 0.99, 40), 1 - np.geomspace(1e-2, 1e-16, 40)])

ONE_ARG = {
    "gammaln": X,
    "digamma": X,
    "gamma": np.concatenate([np.linspace(-5.5, 170.0, 200), [0.5, 1.0, 2.0]]),
    "erf": X,
    "erfc": X,
    "ndtr": X,
    "ndtri": PROB,
    "log_ndtr": np.concatenate([X, [-40.0, -1e3]]),
}


@pytest.mark.parametrize("name", sorted(ONE_ARG))
def test_one_argument_functions_match_scipy(xp, to_np, name):
    t = ONE_ARG[name]
    got = getattr(special, name)(xp.asarray(t))
    assert got.dtype == xp.float64
    np.testing.assert_allclose(to_np(got), getattr(sc, name)(t), rtol=1e-14, atol=0)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_polygamma_matches_scipy(xp, to_np, n):
    got = special.polygamma(n, xp.asarray(POSITIVE))
    np.testing.assert_allclose(to_np(got), sc.polygamma(n, POSITIVE), rtol=1e-14)


def test_two_argument_functions_broadcast_and_match_scipy(xp, to_np):
    a = np.geomspace(0.05, 1e4, 7)[:, None]
    x = np.geomspace(1e-3, 2e4, 50)[None, :]
    xa, xx = xp.asarray(a), xp.asarray(x)
    for name, args, host in [
        ("gammainc", (xa, xx), (a, x)),
        ("gammaincc", (xa, xx), (a, x)),
        ("gammaincinv", (xa, xp.asarray(PROB[None, :])), (a, PROB[None, :])),
        ("xlogy", (xa - 1.0, xx), (a - 1.0, x)),
        ("xlog1py", (xa, xx - 1e-3), (a, x - 1e-3)),
    ]:
        got = getattr(special, name)(*args)
        assert got.shape == (7, x.shape[1] if name != "gammaincinv" else PROB.size), name
        np.testing.assert_allclose(to_np(got), getattr(sc, name)(*host), rtol=1e-13, err_msg=name)


def test_xlogy_is_zero_where_x_is_zero(xp, to_np):
    got = to_np(special.xlogy(xp.asarray([0.0, 0.0, 2.0]), xp.asarray([0.0, 3.0, 0.5])))
    np.testing.assert_array_equal(got, [0.0, 0.0, 2.0 * np.log(0.5)])


def test_float32_in_float32_out(xp, to_np):
    t = np.linspace(0.1, 10.0, 50, dtype=np.float32)
    for fn, ref in [(special.gammaln, sc.gammaln), (lambda v: special.polygamma(1, v), lambda v: sc.polygamma(1, v))]:
        got = fn(xp.asarray(t))
        assert got.dtype == xp.float32
        np.testing.assert_allclose(to_np(got), ref(t.astype(np.float64)), rtol=2e-6)


def test_result_stays_on_the_input_device(xp):
    if not array_api_compat.is_array_api_strict_namespace(xp):
        pytest.skip("only array-api-strict has a second (fake) device")
    device = xp.Device("device1")
    got = special.gammainc(xp.asarray([1.0, 2.0], device=device), xp.asarray([0.5, 3.0], device=device))
    assert got.device == device


def test_needs_an_array_argument():
    with pytest.raises(TypeError, match="array argument"):
        special.gammaln(1.5)


# ------------------------------------------------------------------ uniform


def test_uniform_strictly_inside_and_on_a_midpoint_grid(xp, to_np):
    for dtype, bits in [(xp.float64, 52), (xp.float32, 23)]:
        u = special.uniform((20000,), seed=3, like=xp.zeros(1, dtype=dtype))
        assert u.dtype == dtype and u.shape == (20000,)
        host = to_np(u).astype(np.float64)
        assert host.min() > 0.0 and host.max() < 1.0
        # u = (k + 1/2) 2^-bits: never 0 or 1 after rounding to the dtype
        k = host * 2.0**bits - 0.5
        np.testing.assert_array_equal(k, np.round(k))


def test_uniform_is_reproducible_and_uniform(xp, to_np):
    like = xp.zeros((2, 2))
    a = to_np(special.uniform((50, 400), seed=11, like=like))
    np.testing.assert_array_equal(a, to_np(special.uniform((50, 400), seed=11, like=like)))
    assert not np.array_equal(a, to_np(special.uniform((50, 400), seed=12, like=like)))
    assert stats.kstest(a.ravel(), "uniform").pvalue > 1e-3
    if not array_api_compat.is_cupy_namespace(xp):  # host namespaces draw from numpy's PCG64 stream
        raw = np.random.Generator(np.random.PCG64(11)).random((50, 400))
        np.testing.assert_allclose(a, raw, atol=2.0**-52)


def test_uniform_needs_a_floating_like(xp):
    with pytest.raises(TypeError, match="real floating"):
        special.uniform(3, seed=0, like=xp.zeros(2, dtype=xp.int32))
