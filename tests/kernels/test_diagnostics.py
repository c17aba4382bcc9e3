"""MCMC diagnostics against ArviZ on the same draws.

Rank-normalized and classic split R-hat, bulk / tail / mean ESS and ``mcse_mean``
against ``arviz.rhat``, ``arviz.ess`` and ``arviz.mcse`` (ArviZ 0.23, which loops over
cells in Python), k-hat against ``arviz.psislw``, and the normal scores against
``scipy.stats.rankdata`` and ``scipy.special.ndtri``. The draws mix iid normals,
AR(1) chains with rho 0.9, chains with shifted means (large R-hat), t(2) draws, rounded
and small-integer draws (ties), and degenerate cells (constant, constant chains,
symmetric +-1). Every test runs once per array namespace (numpy, array-api-strict with
boolean indexing and data-dependent shapes off, cupy when present).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.special
import scipy.stats

from pipeline.kernels import diagnostics

az = pytest.importorskip("arviz")

RTOL = 1e-6


def _draws(chains: int, draws: int, reps: int, seed: int) -> np.ndarray:
    """(chains, draws, 7 * reps + 4) draws: seven kinds of chains, then four degenerate cells."""
    rng = np.random.default_rng(seed)
    shape = (chains, draws, reps)
    ar = rng.standard_normal(shape)
    for t in range(1, draws):
        ar[:, t] = 0.9 * ar[:, t - 1] + np.sqrt(1 - 0.81) * ar[:, t]
    shift = rng.uniform(0.0, 2.0, size=(chains, 1, reps))
    kinds = [
        rng.standard_normal(shape),  # iid
        ar,  # AR(1), rho 0.9
        rng.standard_normal(shape) + shift,  # shifted chain means: large R-hat
        0.5 * ar + shift,  # both
        rng.standard_t(2, size=shape),  # heavy tails
        np.round(2 * rng.standard_normal(shape)) / 2,  # ties
        rng.poisson(1.0, size=shape).astype(float),  # discrete, many ties
    ]
    degenerate = np.empty((chains, draws, 4))
    degenerate[..., 0] = 3.0  # constant: ESS = S, R-hat NaN
    degenerate[..., 1] = np.arange(chains)[:, None]  # constant chains: R-hat inf
    degenerate[..., 2] = rng.choice([-1.0, 1.0], size=(chains, draws))  # folded draws constant
    degenerate[..., 3] = rng.integers(0, 2, size=(chains, draws))
    return np.concatenate([*kinds, degenerate], axis=-1)


def _arviz(x: np.ndarray) -> dict[str, np.ndarray]:
    """ArviZ's diagnostics of x (chains, draws, *batch) as arrays of shape batch."""
    ds = az.convert_to_dataset({"x": x})
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if x.shape[0] > 1:
            out["rhat_rank"] = az.rhat(ds, method="rank")["x"].values
            out["rhat_split"] = az.rhat(ds, method="split")["x"].values
        out["ess_bulk"] = az.ess(ds, method="bulk")["x"].values
        out["ess_tail"] = az.ess(ds, method="tail")["x"].values
        out["ess_mean"] = az.ess(ds, method="mean")["x"].values
        out["mcse_mean"] = az.mcse(ds, method="mean")["x"].values
    return out


def _ours(x, multichain: bool) -> dict:
    out = {}
    if multichain:
        out["rhat_rank"] = diagnostics.rhat(x)
        out["rhat_split"] = diagnostics.rhat(x, method="split")
    out["ess_bulk"] = diagnostics.ess(x)
    out["ess_tail"] = diagnostics.ess(x, method="tail")
    out["ess_mean"] = diagnostics.ess(x, method="mean")
    out["mcse_mean"] = diagnostics.mcse_mean(x)
    return out


# Many cells of 4 chains x 400 draws; odd draws (middle one dropped) with a 2-D batch;
# short chains (Geyer's sequence cut by the chain length); one chain (ESS only).
_CASES = {
    "long": lambda: _draws(4, 400, 40, seed=0),
    "odd_2d_batch": lambda: _draws(2, 101, 8, seed=1).reshape(2, 101, 4, 15),
    "short": lambda: _draws(3, 9, 20, seed=2),
    "one_chain": lambda: _draws(1, 250, 10, seed=3),
}


@pytest.fixture(scope="module", params=list(_CASES))
def case(request):
    x = _CASES[request.param]()
    return x, _arviz(x)


def test_diagnostics_match_arviz(case, xp, to_np):
    x, ref = case
    got = _ours(xp.asarray(x), multichain=x.shape[0] > 1)
    assert set(got) == set(ref)
    for name, value in got.items():
        value, want = to_np(value).reshape(-1), ref[name].reshape(-1)
        assert to_np(got[name]).shape == x.shape[2:], name
        if name.startswith("rhat"):
            # Constant chains: W = 0 exactly here (inf); ArviZ's W is 0 or a rounding residue (inf or ~1e16).
            assert value[-3] == np.inf and want[-3] > 1e10, name
            value, want = value[:-3], want[:-3]
        np.testing.assert_allclose(value, want, rtol=RTOL, atol=0, equal_nan=True, err_msg=name)


def test_planted_behaviour():
    rng = np.random.default_rng(8)
    iid = rng.standard_normal((4, 400, 20))
    ar = iid.copy()
    for t in range(1, 400):
        ar[:, t] = 0.9 * ar[:, t - 1] + np.sqrt(1 - 0.81) * iid[:, t]
    shifted = rng.standard_normal((4, 400, 20)) + np.array([0.0, 0.0, 0.0, 2.0])[:, None, None]
    x = np.concatenate([iid, ar, shifted, _draws(4, 400, 1, seed=9)[..., -4:]], axis=-1)
    r, ess = np.asarray(diagnostics.rhat(x)), np.asarray(diagnostics.ess(x))
    assert np.all(r[:20] < 1.02) and np.all(r[40:60] > 1.2)
    assert np.median(ess[:20]) > 1000 and np.median(ess[20:40]) < 200  # AR(1), rho 0.9: tau = 19
    assert np.isnan(r[-4]) and np.isinf(r[-3]) and np.isfinite(r[-2])  # constant; constant chains
    assert ess[-4] == 4 * 400
    assert np.all(ess <= 1600 * np.log10(1600) * (1 + 1e-12))


def test_nan_cells_give_nan(xp, to_np):
    x = np.random.default_rng(4).standard_normal((2, 20, 3))
    x[1, 5, 1] = np.nan
    for f in (diagnostics.rhat, diagnostics.ess, diagnostics.mcse_mean):
        got = to_np(f(xp.asarray(x)))
        assert np.isnan(got[1]) and np.all(np.isfinite(got[[0, 2]]))


def test_rank_normalize_matches_scipy(xp, to_np):
    x = np.round(np.random.default_rng(5).standard_normal((3, 40, 6)), 1)
    got = to_np(diagnostics.rank_normalize(xp.asarray(x)))
    flat = x.reshape(120, 6)
    ranks = scipy.stats.rankdata(flat, method="average", axis=0)
    want = scipy.special.ndtri((ranks - 0.375) / (120 + 0.25)).reshape(x.shape)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------ k-hat


def _log_ratios(draws: int, seed: int) -> np.ndarray:
    """(draws, 60) log ratios from light to very heavy tails, with ties and -inf."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.01, 4.0, 20)
    normal = rng.standard_normal((draws, 20)) * scale
    cauchy = rng.standard_t(1.5, size=(draws, 15))
    ties = np.round(rng.standard_normal((draws, 15)) * 2) / 2
    gamma = np.log(rng.gamma(rng.uniform(0.2, 3.0, size=10), size=(draws, 10)))
    lr = np.concatenate([normal, cauchy, ties, gamma], axis=1)
    lr[: draws // 3, 0] = -np.inf
    return lr


@pytest.mark.parametrize(("draws", "reff"), [(1000, 1.0), (400, 0.4), (30, 1.0), (20, 1.0)])
def test_psis_khat_matches_arviz(draws, reff, xp, to_np):
    lr = _log_ratios(draws, seed=draws)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, want = az.psislw(np.ascontiguousarray(lr.T), reff=reff)
    got = to_np(diagnostics.psis_khat(xp.asarray(lr), reff=reff))
    assert got.shape == (60,)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-12)
    if draws == 20:  # M = 4 ratios: too few to fit
        assert np.all(np.isinf(got))


def test_psis_khat_batch_shape_and_planted_tails(xp, to_np):
    """Pareto(k) weights w = U^-k: k-hat estimates k (sd ~ (1 + k) / sqrt(M), M = 190 here)."""
    k = np.array([0.1, 0.4, 0.7, 1.0])
    lr = k[:, None, None] * -np.log(np.random.default_rng(7).random((4, 40, 4000)))
    got = to_np(diagnostics.psis_khat(xp.asarray(np.moveaxis(lr, -1, 0))))
    assert got.shape == (4, 40)
    np.testing.assert_allclose(got.mean(axis=1), k, atol=0.05)


# ----------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    ("call", "shape", "error", "match"),
    [
        (diagnostics.rhat, (4, 3, 2), ValueError, "at least 4 draws"),
        (diagnostics.ess, (4, 3), ValueError, "at least 4 draws"),
        (diagnostics.mcse_mean, (10,), ValueError, "1-D"),
        (diagnostics.rank_normalize, (), ValueError, "0-D"),
        (diagnostics.rhat, (1, 50, 2), ValueError, "at least 2 chains"),
        (diagnostics.psis_khat, (1, 3), ValueError, "at least 2 draws"),
        (diagnostics.psis_khat, (), ValueError, "0-D"),
    ],
)
def test_input_checks(call, shape, error, match, xp):
    with pytest.raises(error, match=match):
        call(xp.zeros(shape, dtype=xp.float64))


def test_bad_options_and_dtypes(xp):
    x = xp.zeros((2, 10), dtype=xp.float64)
    with pytest.raises(ValueError, match="method"):
        diagnostics.rhat(x, method="bulk")
    with pytest.raises(ValueError, match="method"):
        diagnostics.ess(x, method="quantile")
    with pytest.raises(ValueError, match="prob"):
        diagnostics.ess(x, method="tail", prob=0.7)
    with pytest.raises(ValueError, match="reff"):
        diagnostics.psis_khat(xp.zeros((50,), dtype=xp.float64), reff=0.0)
    with pytest.raises(TypeError, match="dtype"):
        diagnostics.ess(xp.zeros((2, 10), dtype=xp.bool))
    with pytest.raises(TypeError, match="dtype"):
        diagnostics.psis_khat(xp.zeros((50,), dtype=xp.int64))
    with pytest.raises(TypeError, match="array"):
        diagnostics.ess([[1.0] * 10] * 2)
