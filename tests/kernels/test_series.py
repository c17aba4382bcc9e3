"""Series kernels against independent references.

``quantile`` against ``numpy.quantile`` / ``numpy.nanquantile`` (method
"linear"); ``exceedances`` and ``runs_extremal_index`` against a plain-Python
loop over each cell that applies the runs-declustering rule step by step.
Every test runs once per array namespace (numpy, array-api-strict with boolean
indexing and data-dependent shapes off, cupy when present).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.kernels import series

# ------------------------------------------------------------------ quantile


def _ragged(n: int = 57, cells: int = 9, seed: int = 0) -> np.ndarray:
    """Gamma-ish columns with missing values in varied amounts (one column all missing, one with one value)."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 3.0, size=(n, cells))
    for j in range(cells):
        x[rng.random(n) < 0.08 * j, j] = np.nan
    x[:, 0] = np.nan
    x[1:, 1] = np.nan
    x[:, 2] = np.round(x[:, 2])  # ties
    return x


def test_quantile_matches_numpy_on_complete_columns(xp, to_np):
    x = np.random.default_rng(1).standard_normal((101, 7))
    q = [0.0, 0.05, 0.5, 0.9, 0.975, 1.0]
    got = to_np(series.quantile(xp.asarray(x), q))
    np.testing.assert_allclose(got, np.quantile(x, q, axis=0), rtol=1e-12, atol=1e-14)
    scalar = to_np(series.quantile(xp.asarray(x), 0.95))
    assert scalar.shape == (7,)
    np.testing.assert_allclose(scalar, np.quantile(x, 0.95, axis=0), rtol=1e-12)


def test_quantile_ignores_missing_values(xp, to_np):
    x = _ragged()
    q = [0.1, 0.5, 0.95]
    got = to_np(series.quantile(xp.asarray(x), q))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ref = np.nanquantile(x, q, axis=0)  # warns on the all-NaN column
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert np.all(np.isnan(got[:, 0])) and np.all(got[:, 1] == x[0, 1])


def test_quantile_valid_mask_equals_nan(xp, to_np):
    x = _ragged(seed=3)
    valid = ~np.isnan(x)
    filled = np.where(valid, x, 1e6)  # masked values are large finite numbers: they must not count
    a = to_np(series.quantile(xp.asarray(filled), [0.25, 0.9], valid=xp.asarray(valid)))
    b = to_np(series.quantile(xp.asarray(x), [0.25, 0.9]))
    np.testing.assert_array_equal(a, b)


def test_quantile_float32(xp, to_np):
    x = np.random.default_rng(4).standard_normal((64, 5)).astype(np.float32)
    got = series.quantile(xp.asarray(x), 0.9)
    assert got.dtype == xp.float32
    np.testing.assert_allclose(to_np(got), np.quantile(x.astype(np.float64), 0.9, axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [1.5, -0.1, [], [0.5, 2.0]])
def test_quantile_rejects_bad_q(xp, bad):
    with pytest.raises(ValueError, match="q must be"):
        series.quantile(xp.zeros((4, 2)), bad)


# --------------------------------------------------------------- exceedances


def _reference(col: np.ndarray, u: float, run: int) -> tuple[list[float], list[int], int]:
    """Peaks, their time rows and the exceedance count of one series, step by step."""
    peaks: list[float] = []
    times: list[int] = []
    n_exc = 0
    gap = math.inf  # non-exceedances since the last exceedance
    for t, v in enumerate(col):
        if not (v > u):  # NaN: missing, a non-exceedance
            gap += 1
            continue
        n_exc += 1
        if run == 0 or gap >= run or not peaks:
            peaks.append(v)
            times.append(t)
        elif v > peaks[-1]:  # same cluster, a new maximum (ties keep the first)
            peaks[-1] = v
            times[-1] = t
        gap = 0
    return peaks, times, n_exc


def _series(n: int = 300, cells: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """AR(1) series (clustered extremes) with missing runs, ties and special columns; thresholds per cell."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n, cells))
    x = np.empty_like(e)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = 0.7 * x[t - 1] + e[t]
    x[rng.random((n, cells)) < 0.1] = np.nan
    x[100:110, 3] = np.nan
    x[:, 4] = np.round(x[:, 4])  # ties inside clusters
    x[:, 5] = np.nan  # nothing usable
    u = np.nanquantile(np.where(np.isnan(x[:, 6:]), 0.0, x[:, 6:]), 0.9, axis=0)
    thr = np.concatenate([[0.5, 1.0, 1.5, 1.2, 1.0, 0.0], u])
    thr[7] = np.nan  # a NaN threshold: no exceedances
    thr[8] = 100.0  # never exceeded
    x[:, 9] = 5.0  # always exceeded: one cluster of n values
    return x, thr


@pytest.mark.parametrize("run", [0, 1, 3])
def test_exceedances_match_python_loop(xp, to_np, run):
    x, thr = _series()
    out = series.exceedances(xp.asarray(x), xp.asarray(thr), run=run)
    values, valid, index = (to_np(out[k]) for k in ("values", "valid", "index"))
    n_peaks, n_exc, theta = (to_np(out[k]) for k in ("n_peaks", "n_exceed", "extremal_index"))
    refs = [_reference(x[:, j], thr[j], run) for j in range(x.shape[1])]
    m = max(len(r[0]) for r in refs)
    assert values.shape == valid.shape == index.shape == (m, x.shape[1])
    for j, (peaks, times, count) in enumerate(refs):
        k = len(peaks)
        assert n_peaks[j] == k and n_exc[j] == count
        np.testing.assert_array_equal(values[:k, j], peaks)
        np.testing.assert_array_equal(index[:k, j], times)
        assert valid[:k, j].all() and not valid[k:, j].any()
        assert np.isnan(values[k:, j]).all() and (index[k:, j] == -1).all()
        if count:
            assert theta[j] == pytest.approx(k / count, rel=1e-15)
        else:
            assert np.isnan(theta[j])
    assert n_peaks[9] == (1 if run else x.shape[0]) and values[0, 9] == 5.0 and index[0, 9] == 0
    standalone = to_np(series.runs_extremal_index(xp.asarray(x), xp.asarray(thr), run=run))
    np.testing.assert_array_equal(standalone, theta)


def test_exceedances_run_zero_keeps_every_exceedance(xp, to_np):
    x, thr = _series(seed=5)
    out = series.exceedances(xp.asarray(x), xp.asarray(thr), run=0)
    values, n_peaks = to_np(out["values"]), to_np(out["n_peaks"])
    for j in range(x.shape[1]):
        col = x[:, j]
        np.testing.assert_array_equal(values[: n_peaks[j], j], col[col > thr[j]])
    theta = to_np(out["extremal_index"])
    assert np.all((theta == 1.0) | np.isnan(theta))


def test_declustering_reduces_extremal_index_for_clustered_series(xp, to_np):
    """AR(1) with phi = 0.9 has clustered extremes: theta well below 1; iid noise: theta near 1 - exceedance rate."""
    rng = np.random.default_rng(8)
    n, cells = 4000, 6
    e = rng.standard_normal((n, cells))
    ar = np.empty_like(e)
    ar[0] = e[0]
    for t in range(1, n):
        ar[t] = 0.9 * ar[t - 1] + e[t]
    x = np.concatenate([ar, e], axis=1)
    thr = np.quantile(x, 0.95, axis=0)
    theta = to_np(series.runs_extremal_index(xp.asarray(x), xp.asarray(thr), run=1))
    assert np.all(theta[:cells] < 0.6)
    # iid: a run of exceedances continues with probability 0.05, so theta ~ 0.95
    np.testing.assert_allclose(theta[cells:], 0.95, atol=0.03)


def test_exceedances_scalar_threshold_and_float32(xp, to_np):
    x, _ = _series(n=120, cells=12, seed=2)
    x32 = x.astype(np.float32)
    out = series.exceedances(xp.asarray(x32), 1.0, run=2)
    assert out["values"].dtype == xp.float32
    for j in range(x.shape[1]):
        peaks, times, _ = _reference(x32[:, j], np.float32(1.0), 2)
        np.testing.assert_array_equal(to_np(out["values"])[: len(peaks), j], np.asarray(peaks, dtype=np.float32))
        np.testing.assert_array_equal(to_np(out["index"])[: len(times), j], times)


def test_exceedances_validate_input(xp):
    x = xp.zeros((10, 3))
    with pytest.raises(ValueError, match="run must be"):
        series.exceedances(x, 0.0, run=-1)
    with pytest.raises(ValueError, match="threshold must be"):
        series.exceedances(x, xp.zeros((4,)), run=1)
    with pytest.raises(TypeError, match="x must be"):
        series.exceedances(xp.zeros((10,)), 0.0)
