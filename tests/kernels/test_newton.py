"""Batched damped-Newton engine and small-matrix algebra against numpy.linalg and closed forms.

Every test runs once per array namespace. References: ``numpy.linalg``
(Cholesky, inverse, solve) on the same random matrices; maxima known in closed
form (Rosenbrock's valley, ``log t - t``, a Gaussian log-likelihood).
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.kernels import newton


def _cells_last(a: np.ndarray) -> np.ndarray:
    """(cells, p, p) -> (p, p, cells)."""
    return np.moveaxis(a, 0, -1)


def _spd(rng: np.random.Generator, cells: int, p: int) -> np.ndarray:
    b = rng.standard_normal((cells, p, p))
    return b @ np.swapaxes(b, 1, 2) + 0.1 * np.eye(p)


@pytest.mark.parametrize("p", [1, 2, 3, 5])
def test_cholesky_inverse_and_solve_match_numpy(xp, to_np, p):
    rng = np.random.default_rng(p)
    a = _spd(rng, 40, p)
    b = rng.standard_normal((40, p))
    low, ok = newton.cholesky(xp.asarray(_cells_last(a)))
    assert to_np(ok).all()
    np.testing.assert_allclose(to_np(low), _cells_last(np.linalg.cholesky(a)), rtol=1e-10, atol=1e-12)
    inv = to_np(newton.spd_inverse(xp.asarray(_cells_last(a))))
    np.testing.assert_allclose(inv, _cells_last(np.linalg.inv(a)), rtol=1e-8, atol=1e-10)
    x = to_np(newton.spd_solve(xp.asarray(_cells_last(a)), xp.asarray(b.T)))
    np.testing.assert_allclose(x, np.linalg.solve(a, b[..., None])[..., 0].T, rtol=1e-8, atol=1e-10)
    g = rng.standard_normal((40, p, p))  # general (non-symmetric) matrices: partial pivoting
    np.testing.assert_allclose(
        to_np(newton.inverse(xp.asarray(_cells_last(g)))), _cells_last(np.linalg.inv(g)), rtol=1e-7, atol=1e-9
    )
    np.testing.assert_allclose(
        to_np(newton.solve(xp.asarray(_cells_last(g)), xp.asarray(b.T))),
        np.linalg.solve(g, b[..., None])[..., 0].T,
        rtol=1e-7,
        atol=1e-9,
    )


def test_not_positive_definite_and_singular_cells_give_nan(xp, to_np):
    a = np.stack([np.eye(3), np.diag([1.0, -1.0, 1.0]), np.ones((3, 3))])
    low, ok = newton.cholesky(xp.asarray(_cells_last(a)))
    np.testing.assert_array_equal(to_np(ok), [True, False, False])
    assert np.isnan(to_np(low)[..., 1:]).all()
    inv = to_np(newton.spd_inverse(xp.asarray(_cells_last(a))))
    np.testing.assert_allclose(inv[..., 0], np.eye(3))
    assert np.isnan(inv[..., 1:]).all()
    general = to_np(newton.inverse(xp.asarray(_cells_last(a))))
    np.testing.assert_allclose(general[..., 1], np.diag([1.0, -1.0, 1.0]))  # invertible, just indefinite
    assert np.isnan(general[..., 2]).all()  # singular


def test_sandwich_is_j_c_jt(xp, to_np):
    rng = np.random.default_rng(3)
    j, c = rng.standard_normal((7, 4, 3)), _spd(rng, 7, 3)
    got = to_np(newton.sandwich(xp.asarray(_cells_last(j)), xp.asarray(_cells_last(c))))
    np.testing.assert_allclose(got, _cells_last(j @ c @ np.swapaxes(j, 1, 2)), rtol=1e-12)


# ------------------------------------------------------------------ engine


def _rosenbrock(theta, scale):
    """``-(1 - x)^2 - s (y - x^2)^2`` per cell: maximum 0 at (1, 1), indefinite Hessian away from the valley."""
    x, y = theta[0, ...], theta[1, ...]
    r = y - x * x
    l = -((1.0 - x) ** 2) - scale * r * r
    gx = 2.0 * (1.0 - x) + 4.0 * scale * r * x
    gy = -2.0 * scale * r
    hxx = -2.0 - 4.0 * scale * (x * x - r) - 8.0 * scale * x * x + 4.0 * scale * x * x
    hxy = 4.0 * scale * x
    hyy = -2.0 * scale + 0.0 * x
    xp = theta.__array_namespace__()
    return l, xp.stack([gx, gy]), xp.stack([xp.stack([hxx, hxy]), xp.stack([hxy, hyy])])


def test_maximize_rosenbrock_from_scattered_starts(xp, to_np):
    rng = np.random.default_rng(1)
    theta0 = rng.uniform(-2.0, 2.0, size=(2, 200))
    scale = rng.uniform(1.0, 100.0, size=200)
    res = newton.maximize(_rosenbrock, xp.asarray(theta0), (xp.asarray(scale),), max_iter=400)
    assert to_np(res["converged"]).all()
    np.testing.assert_allclose(to_np(res["theta"]), 1.0, atol=1e-7)
    np.testing.assert_allclose(to_np(res["loglik"]), 0.0, atol=1e-14)
    n_iter = to_np(res["n_iter"])
    assert n_iter.dtype == np.int32 and n_iter.max() > n_iter.min()  # each cell stops on its own


def _log_minus(theta, b):
    """``l = log t - b t`` (maximum at ``1/b``), ``-inf`` for ``t <= 0`` without warnings; aux = ``1/t``."""
    xp = theta.__array_namespace__()
    t = theta[0, ...]
    inside = t > 0
    ts = xp.where(inside, t, 1.0)
    l = xp.where(inside, xp.log(ts) - b * ts, -xp.inf)
    return l, (1.0 / ts - b)[None, :], (-1.0 / (ts * ts))[None, None, :], 1.0 / ts


def test_maximize_halves_steps_that_leave_the_domain_and_returns_aux(xp, to_np):
    b = np.array([1.0, 0.2, 5.0, 1.0])
    t0 = np.array([[5.0, 0.01, 3.0, 1.0]])  # the full Newton step from 5 lands at -15: halved
    res = newton.maximize(_log_minus, xp.asarray(t0), (xp.asarray(b),))
    assert to_np(res["converged"]).all()
    np.testing.assert_allclose(to_np(res["theta"])[0], 1.0 / b, rtol=1e-9)  # quadratic convergence from g.d < 1e-10
    np.testing.assert_allclose(to_np(res["loglik"]), -np.log(b) - 1.0, rtol=1e-13)
    np.testing.assert_allclose(to_np(res["aux"]), b, rtol=1e-9)
    np.testing.assert_allclose(to_np(res["grad"]), 0.0, atol=1e-8)
    np.testing.assert_allclose(to_np(res["hess"])[0, 0], -(b**2), rtol=1e-8)


def test_maximize_honours_active_mask_and_bad_starts(xp, to_np):
    b = np.ones(5)
    t0 = np.array([[2.0, 3.0, -1.0, 0.5, 4.0]])  # the third start is outside the domain
    active = np.array([True, False, True, True, True])
    res = newton.maximize(_log_minus, xp.asarray(t0), (xp.asarray(b),), active=xp.asarray(active))
    conv = to_np(res["converged"])
    np.testing.assert_array_equal(conv, [True, False, False, True, True])
    theta = to_np(res["theta"])[0]
    np.testing.assert_allclose(theta[conv], 1.0, rtol=1e-9)
    assert theta[1] == 3.0 and theta[2] == -1.0  # untouched
    assert to_np(res["n_iter"])[1] == 0


def test_final_step_off_stops_one_evaluation_earlier(xp, to_np):
    b = np.linspace(0.5, 2.0, 9)
    t0 = np.full((1, 9), 1.3)
    full = newton.maximize(_log_minus, xp.asarray(t0), (xp.asarray(b),))
    short = newton.maximize(_log_minus, xp.asarray(t0), (xp.asarray(b),), final_step=False)
    assert to_np(short["converged"]).all()
    assert (to_np(short["n_iter"]) <= to_np(full["n_iter"]) - 1).all()
    l_max = -np.log(b) - 1.0
    assert np.all(l_max - to_np(short["loglik"]) <= 1e-9 * (1 + np.abs(l_max)))


def test_gaussian_mle_many_cells_with_compaction(xp, to_np):
    """(mu, log sd) of normal samples: closed-form maximum; 3000 cells exercise the working-set compaction."""
    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 2.0, size=(30, 3000)) * rng.uniform(0.1, 10.0, 3000)

    def objective(theta, data):
        mu, eta = theta[0, ...], theta[1, ...]
        xpp = theta.__array_namespace__()
        w = xpp.exp(-2.0 * eta)
        dev = data - mu
        s1, s2 = xpp.sum(dev, axis=0), xpp.sum(dev * dev, axis=0)
        n = data.shape[0]
        l = -n * eta - 0.5 * w * s2
        g = xpp.stack([w * s1, -n + w * s2])
        h = xpp.stack([xpp.stack([-n * w, -2.0 * w * s1]), xpp.stack([-2.0 * w * s1, -2.0 * w * s2])])
        return l, g, h

    theta0 = np.stack([np.median(x, axis=0) + 1.0, np.log(x.std(axis=0)) + 1.0])
    res = newton.maximize(objective, xp.asarray(theta0), (xp.asarray(x),), max_step=(5.0, 1.0))
    assert to_np(res["converged"]).all()
    theta = to_np(res["theta"])
    np.testing.assert_allclose(theta[0], x.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(np.exp(theta[1]), x.std(axis=0), rtol=1e-9)


def test_no_active_cells_returns_the_start(xp, to_np):
    t0 = np.array([[2.0, 3.0]])
    res = newton.maximize(_log_minus, xp.asarray(t0), (xp.asarray(np.ones(2)),), active=xp.asarray([False, False]))
    np.testing.assert_array_equal(to_np(res["theta"]), t0)
    assert not to_np(res["converged"]).any() and (to_np(res["n_iter"]) == 0).all()
