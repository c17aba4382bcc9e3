"""The six two-parameter families against scipy.stats on planted data.

Every test runs per array namespace (numpy, array-api-strict, cupy when
present). Data are drawn with ``scipy.stats`` from planted parameters spread
log-uniformly over awkward ranges (offsets of 1e6 with spreads of 1e-3, gamma
shapes from 0.05 to 1e4, Weibull shapes from 0.3 to 60). References, computed
once per family: ``scipy.stats.<dist>.fit`` per column (``floc=0`` for the
positive families) and its log-likelihood; the inverse of a central
finite-difference Hessian of the scipy log-likelihood sum; ``logpdf``, ``cdf``,
``sf`` and ``ppf`` of ``scipy.stats``.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from scipy import stats

from pipeline.kernels.families import FAMILIES_2P, Family

N = 60  # observations per column
LOC_SCALE = ("normal", "gumbel_r", "gumbel_l")  # (loc, scale) estimated, shape NaN
SCIPY = {
    "normal": stats.norm,
    "lognormal": stats.lognorm,
    "gamma": stats.gamma,
    "weibull": stats.weibull_min,
    "gumbel_r": stats.gumbel_r,
    "gumbel_l": stats.gumbel_l,
}


# scipy's precision where its fit solves the likelihood equations to round-off (its weibull_min
# root finder stops early; its norm.fit mean loses 1e-7 of a spread 1e9 times smaller than the offset)
PARAM_RTOL = {"normal": 1e-6, "lognormal": 1e-9, "gamma": 1e-8, "gumbel_r": 1e-8, "gumbel_l": 1e-8}


def _free(name: str) -> tuple[int, int]:
    """Indices of the estimated pair in (loc, scale, shape)."""
    return (0, 1) if name in LOC_SCALE else (1, 2)


def _scipy_args(name: str, params: np.ndarray) -> tuple:
    """(loc, scale, shape) -> the positional arguments of the scipy distribution."""
    loc, scale, shape = params
    return (loc, scale) if name in LOC_SCALE else (shape, loc, scale)


def _planted(name: str, m: int, rng: np.random.Generator) -> np.ndarray:
    """(3, m) planted (loc, scale, shape), log-uniform over awkward ranges."""

    def logu(lo: float, hi: float) -> np.ndarray:
        return np.exp(rng.uniform(np.log(lo), np.log(hi), m))

    zero, nan = np.zeros(m), np.full(m, np.nan)
    if name == "normal":
        return np.stack([rng.choice([0.0, 5500.0, -1e4, 1e6], m), logu(1e-3, 1e3), nan])
    if name in ("gumbel_r", "gumbel_l"):
        return np.stack([rng.choice([0.0, 5500.0, -300.0], m), logu(1e-2, 1e2), nan])
    ranges = {  # (scale range, shape range)
        "lognormal": ((1e-3, 1e4), (0.003, 3.0)),
        "gamma": ((1e-3, 1e3), (0.05, 1e4)),
        "weibull": ((1e-2, 6e3), (0.3, 60.0)),
    }
    (s_lo, s_hi), (k_lo, k_hi) = ranges[name]
    return np.stack([zero, logu(s_lo, s_hi), logu(k_lo, k_hi)])


@functools.cache
def _reference(name: str) -> dict[str, np.ndarray]:
    """Planted data and scipy's fits (cached: shared by all namespaces)."""
    m = 240  # scipy's weibull_min fit takes ~5 ms a column: the slowest reference
    rng = np.random.default_rng(sorted(SCIPY).index(name))
    truth = _planted(name, m, rng)
    dist = SCIPY[name]
    x = dist.rvs(*_scipy_args(name, truth), size=(N, m), random_state=rng)
    kw = {} if name in LOC_SCALE else {"floc": 0.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = np.array([dist.fit(x[:, j], **kw) for j in range(m)]).T
    params = np.stack([fitted[0], fitted[1], np.full(m, np.nan)]) if name in LOC_SCALE else fitted[[1, 2, 0]]
    return {"x": x, "truth": truth, "params": params, "loglik": _loglik(name, x, params)}


def _loglik(name: str, x: np.ndarray, params: np.ndarray) -> np.ndarray:
    return SCIPY[name].logpdf(x, *_scipy_args(name, params)).sum(axis=0)


def _coordinates(name: str, pair: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The free pair in the coordinates where the covariance is compared, and the Jacobian d coords / d pair.

    Gamma's scale and shape are almost collinear at large shape (correlation
    -1 + 1/(4a)), so inverting a finite-difference Hessian there would amplify
    its error 1e5-fold; its (log mean, log shape) = (log(scale a), log a) are
    orthogonal. The other families use the pair itself.
    """
    if name != "gamma":
        return pair, np.broadcast_to(np.eye(2)[..., None], (2, 2, pair.shape[1]))
    scale, a = pair
    jac = np.array([[1.0 / scale, 1.0 / a], [np.zeros_like(a), 1.0 / a]])
    return np.stack([np.log(scale * a), np.log(a)]), jac


def _from_coordinates(name: str, q: np.ndarray) -> np.ndarray:
    return q if name != "gamma" else np.stack([np.exp(q[0] - q[1]), np.exp(q[1])])


def _fd_information(name: str, x: np.ndarray, params: np.ndarray, se: np.ndarray) -> np.ndarray:
    """(2, 2, cells) minus the central finite-difference Hessian of the scipy log-likelihood.

    Taken in :func:`_coordinates`, with steps of 1e-2 standard errors (``se``
    (2, cells)), which balance truncation and the round-off of scipy's gamma
    log-density at shapes near 1e4; each step is the representable one, ``(q + h) - q``.
    """
    free = list(_free(name))
    q0, _ = _coordinates(name, params[free])
    h = (q0 + 1e-2 * se) - q0

    def f(di: int, dj: int) -> np.ndarray:
        p = params.copy()
        p[free] = _from_coordinates(name, q0 + np.array([[di], [dj]]) * h)
        return _loglik(name, x, p)

    f0 = f(0, 0)
    hii = (f(1, 0) - 2 * f0 + f(-1, 0)) / h[0] ** 2
    hjj = (f(0, 1) - 2 * f0 + f(0, -1)) / h[1] ** 2
    hij = (f(1, 1) - f(1, -1) - f(-1, 1) + f(-1, -1)) / (4 * h[0] * h[1])
    return -np.array([[hii, hij], [hij, hjj]])


def _inv(m: np.ndarray) -> np.ndarray:
    """Inverse of each (2, 2) slice of a (2, 2, cells) stack."""
    return np.moveaxis(np.linalg.inv(np.moveaxis(m, -1, 0)), 0, -1)


def _assert_close_scaled(actual: np.ndarray, desired: np.ndarray, atol: float) -> None:
    """``|actual - desired|_ij <= atol sqrt(desired_ii desired_jj)`` (a relative test blind to units)."""
    diag = np.diagonal(desired).T
    norm = np.sqrt(diag[:, None] * diag[None, :])
    np.testing.assert_allclose(actual / norm, desired / norm, rtol=0, atol=atol)


def _fit(xp, to_np, family: Family, x, **kw) -> dict[str, np.ndarray]:
    return {k: to_np(v) for k, v in family.fit(xp.asarray(x), **kw).items()}


# ------------------------------------------------------------------ the fits


@pytest.mark.parametrize("name", sorted(FAMILIES_2P))
def test_fit_is_at_least_as_good_as_scipy_and_agrees_with_it(xp, to_np, name):
    ref = _reference(name)
    out = _fit(xp, to_np, FAMILIES_2P[name], ref["x"])
    m = ref["x"].shape[1]
    assert out["params"].shape == (3, m) and out["cov"].shape == (3, 3, m)
    assert out["converged"].dtype == np.bool_ and out["converged"].all()
    assert np.issubdtype(out["n_iter"].dtype, np.integer)
    assert out["n_iter"].max() <= (0 if name in ("normal", "lognormal") else 12)
    loglik = out["loglik"]
    # the reported loglik is the log-likelihood of the reported parameters
    np.testing.assert_allclose(loglik, _loglik(name, ref["x"], out["params"]), rtol=1e-11, atol=1e-9)
    # never worse than scipy's optimum
    assert np.all(loglik >= ref["loglik"] - 1e-6 * np.abs(ref["loglik"]))
    # where scipy reached the same optimum (log-likelihood within 1e-8), the estimates agree to
    # within 1e-3 standard errors (a deficit d corresponds to about sqrt(2 d) standard errors) ...
    same = ref["loglik"] >= loglik - 1e-8 - 1e-13 * np.abs(loglik)
    assert same.mean() > 0.75
    i, j = _free(name)
    se = np.sqrt(np.stack([out["cov"][i, i], out["cov"][j, j]]))
    gap = np.abs(out["params"][[i, j]] - ref["params"][[i, j]])
    assert np.all(gap[:, same] < 1e-3 * se[:, same])
    # ... and to scipy's own precision where it solves the likelihood equations exactly
    if name in PARAM_RTOL:
        size = np.abs(ref["params"][[1, 1 if name in LOC_SCALE else 2]])  # a loc is measured against the scale
        assert np.all(gap <= PARAM_RTOL[name] * size)
    # fixed and absent parameters
    if name in LOC_SCALE:
        assert np.isnan(out["params"][2]).all()
    else:
        assert (out["params"][0] == 0.0).all()


@pytest.mark.parametrize("name", sorted(FAMILIES_2P))
def test_covariance_is_the_inverse_observed_information(xp, to_np, name):
    ref = _reference(name)
    out = _fit(xp, to_np, FAMILIES_2P[name], ref["x"])
    i, j = _free(name)
    other = ({0, 1, 2} - {i, j}).pop()
    assert np.isnan(out["cov"][other]).all() and np.isnan(out["cov"][:, other]).all()
    cov = out["cov"][[i, j]][:, [i, j]]
    np.testing.assert_array_equal(cov[0, 1], cov[1, 0])
    _, jac = _coordinates(name, out["params"][[i, j]])
    cov = np.einsum("ikc,klc,jlc->ijc", jac, cov, jac)  # J cov J^T: the covariance in the compared coordinates
    info_fd = _fd_information(name, ref["x"], out["params"], np.sqrt(np.stack([cov[0, 0], cov[1, 1]])))
    _assert_close_scaled(cov, _inv(info_fd), 1e-4)
    _assert_close_scaled(_inv(cov), info_fd, 1e-4)


@pytest.mark.parametrize("name", sorted(FAMILIES_2P))
def test_estimates_follow_offsets_and_units(xp, to_np, name):
    """Fitting 5500 + 50 x (positive families: 5500 x) maps every estimate exactly (standardized columns)."""
    truth = _reference(name)["truth"][:, :30].copy()
    if name in LOC_SCALE:
        truth[0], truth[1] = 0.0, 1.0
    x = SCIPY[name].rvs(*_scipy_args(name, truth), size=(N, 30), random_state=np.random.default_rng(5))
    shift, factor = (5500.0, 50.0) if name in LOC_SCALE else (0.0, 5500.0)
    base = _fit(xp, to_np, FAMILIES_2P[name], x)
    moved = _fit(xp, to_np, FAMILIES_2P[name], shift + factor * x)
    np.testing.assert_allclose(moved["params"][0], shift + factor * base["params"][0], rtol=0, atol=1e-10 * factor)
    np.testing.assert_allclose(moved["params"][1], factor * base["params"][1], rtol=1e-10)
    np.testing.assert_allclose(moved["params"][2], base["params"][2], rtol=1e-9)
    np.testing.assert_allclose(moved["loglik"], base["loglik"] - N * np.log(factor), rtol=1e-10)
    units = np.array([factor, factor, 1.0])  # loc and scale carry the units, the shape none
    np.testing.assert_allclose(moved["cov"], base["cov"] * np.multiply.outer(units, units)[..., None], rtol=1e-8)


@pytest.mark.parametrize("name", sorted(FAMILIES_2P))
def test_float32_fits_match_float64(xp, to_np, name):
    ref = _reference(name)
    # columns float32 can hold: spreads above 1e-4 of the offset, no draws below 1e-30 (gamma shape 0.05)
    keep = (ref["truth"][1] > 1e-4 * np.abs(ref["truth"][0])) & np.all(ref["x"] > 1e-30, axis=0)
    x = ref["x"][:, keep][:, :60]
    out32 = _fit(xp, to_np, FAMILIES_2P[name], x.astype(np.float32))
    out64 = _fit(xp, to_np, FAMILIES_2P[name], x.astype(np.float32).astype(np.float64))
    assert out32["params"].dtype == np.float32 and out32["cov"].dtype == np.float32
    assert out32["converged"].all()
    i, j = _free(name)
    se = np.sqrt(np.stack([out64["cov"][i, i], out64["cov"][j, j]]))
    # float32 round-off is far below the sampling error, up to the rounding of the result itself
    p64 = out64["params"][[i, j]]
    assert np.all(np.abs(out32["params"][[i, j]] - p64) <= 2e-2 * se + 4 * np.finfo(np.float32).eps * np.abs(p64))
    np.testing.assert_allclose(out32["loglik"], out64["loglik"], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", sorted(FAMILIES_2P))
def test_unfittable_cells_are_nan_and_not_converged(xp, to_np, name):
    good = _reference(name)["x"][:, :3]
    bad = {
        "constant": np.full(N, 7.5),
        "nan": np.where(np.arange(N) == 5, np.nan, good[:, 0]),
        "inf": np.where(np.arange(N) == 5, np.inf, good[:, 0]),
    }
    if name not in LOC_SCALE:
        bad["zero"] = np.where(np.arange(N) == 3, 0.0, good[:, 0])
        bad["negative"] = np.where(np.arange(N) == 3, -1.0, good[:, 0])
    x = np.column_stack([good, *bad.values()])
    out = _fit(xp, to_np, FAMILIES_2P[name], x)
    k = good.shape[1]
    assert np.isnan(out["params"][:, k:]).all() and np.isnan(out["loglik"][k:]).all()
    assert np.isnan(out["cov"][..., k:]).all()
    assert not out["converged"][k:].any() and (out["n_iter"][k:] == 0).all()
    # the good columns are unaffected by their neighbours
    alone = _fit(xp, to_np, FAMILIES_2P[name], good)
    np.testing.assert_array_equal(out["params"][:, :k], alone["params"])
    assert out["converged"][:k].all()


@pytest.mark.parametrize("name", sorted(FAMILIES_2P))
def test_valid_mask_fits_the_valid_values_only(xp, to_np, name):
    x = _reference(name)["x"][:, :8].copy()
    counts = np.array([N, 50, 31, 10, 3, 2, 0, N])
    valid = np.arange(N)[:, None] < counts[None, :]
    x[~valid] = np.nan  # masked values are never looked at
    x[:, -1] = 1.0  # constant: unfittable even though all valid
    out = _fit(xp, to_np, FAMILIES_2P[name], x, valid=xp.asarray(valid))
    for c in range(5):
        alone = _fit(xp, to_np, FAMILIES_2P[name], x[: counts[c], c : c + 1])
        np.testing.assert_allclose(out["params"][:, c], alone["params"][:, 0], rtol=1e-12)
        np.testing.assert_allclose(out["loglik"][c], alone["loglik"][0], rtol=1e-12)
        np.testing.assert_allclose(out["cov"][..., c], alone["cov"][..., 0], rtol=1e-10)
    assert out["converged"][:5].all()
    assert np.isnan(out["params"][:, 5:]).all() and not out["converged"][5:].any()


@pytest.mark.parametrize("name", ["gamma", "weibull", "gumbel_r", "gumbel_l"])
def test_iteration_cap_is_reported_as_not_converged(xp, to_np, name):
    x = _reference(name)["x"][:, :20]
    out = _fit(xp, to_np, FAMILIES_2P[name], x, max_iter=1)
    assert not out["converged"].any() and (out["n_iter"] == 1).all()
    assert np.isfinite(out["loglik"]).all()  # the numbers are there, flagged


def test_input_is_checked(xp):
    fam = FAMILIES_2P["gamma"]
    x = xp.ones((10, 3))
    with pytest.raises(TypeError, match="2-D real floating"):
        fam.fit(xp.ones(10))
    with pytest.raises(TypeError, match="2-D real floating"):
        fam.fit(xp.ones((10, 3), dtype=xp.int32))
    with pytest.raises(ValueError, match="at least 3 rows"):
        fam.fit(xp.ones((2, 3)))
    with pytest.raises(ValueError, match="only gpd"):
        fam.fit(x, loc=xp.zeros(3))
    with pytest.raises(ValueError, match="bool mask"):
        fam.fit(x, valid=xp.ones((10, 2), dtype=xp.bool))


# ------------------------------------------------- logpdf, cdf, sf and ppf


@pytest.mark.parametrize("name", sorted(FAMILIES_2P))
def test_distribution_functions_match_scipy(xp, to_np, name):
    params = _reference(name)["truth"][:, ::12]
    dist, args = SCIPY[name], _scipy_args(name, params)
    fam = FAMILIES_2P[name]
    p = xp.asarray(params)
    # points from far in the lower tail to far in the upper tail (isf keeps the upper ones distinct)
    q = np.geomspace(1e-12, 0.5, 25)[:, None]
    x = np.concatenate([dist.ppf(q, *args), dist.isf(q[::-1], *args)])
    x = np.where(x > 0, x, np.nextafter(0.0, 1.0)) if name not in LOC_SCALE else x
    xx = xp.asarray(x)
    np.testing.assert_allclose(to_np(fam.logpdf(xx, p)), dist.logpdf(x, *args), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(to_np(fam.cdf(xx, p)), dist.cdf(x, *args), rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(to_np(fam.sf(xx, p)), dist.sf(x, *args), rtol=1e-9, atol=1e-300)
    u = np.concatenate([q, 0.5 + np.linspace(0.0, 0.4, 5)[:, None], 1.0 - q[::-1]])
    np.testing.assert_allclose(to_np(fam.ppf(xp.asarray(u), p)), dist.ppf(u, *args), rtol=1e-9)
    # sf keeps its relative accuracy where 1 - cdf would be 0
    far = dist.isf(1e-30, *args)[None, :]
    np.testing.assert_allclose(to_np(fam.sf(xp.asarray(far), p)), 1e-30, rtol=1e-8)


@pytest.mark.parametrize("name", sorted(FAMILIES_2P))
def test_support_edges_and_nan(xp, to_np, name):
    fam = FAMILIES_2P[name]
    params = _reference(name)["truth"][:, :1]
    p = xp.asarray(params)
    x = xp.asarray([[-np.inf], [-1.0], [np.inf], [np.nan]])
    logpdf, cdf, sf = (to_np(f(x, p))[:, 0] for f in (fam.logpdf, fam.cdf, fam.sf))
    assert np.isnan(logpdf[3]) and np.isnan(cdf[3]) and np.isnan(sf[3])
    np.testing.assert_array_equal(logpdf[[0, 2]], -np.inf)
    np.testing.assert_array_equal(cdf[[0, 2]], [0.0, 1.0])
    np.testing.assert_array_equal(sf[[0, 2]], [1.0, 0.0])
    if name not in LOC_SCALE:  # -1 lies outside the positive support
        assert (logpdf[1], cdf[1], sf[1]) == (-np.inf, 0.0, 1.0)
    ppf = to_np(fam.ppf(xp.asarray([[0.0], [1.0], [-0.5], [1.5], [np.nan]]), p))[:, 0]
    low = -np.inf if name in LOC_SCALE else 0.0
    np.testing.assert_array_equal(ppf[:2], [low, np.inf])
    assert np.isnan(ppf[2:]).all()
