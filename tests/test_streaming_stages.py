"""Streaming moments and EOFs on stores: equal to in-memory results, bounded memory, tiled = single job."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from pipeline import eof, io, moments, stream
from pipeline.backend import Backend, resolve
from pipeline.synthetic import planted_modes, write_planted_modes_store
from conftest import _cupy_ready

BACKEND = resolve("numpy")
GRID = {"n_time": 48, "n_lat": 24, "n_lon": 40, "variances": (9.0, 4.0, 1.0, 0.5), "land_fraction": 0.2, "seed": 3}


@pytest.fixture(scope="module")
def chunked_store(tmp_path_factory):
    """A float64 planted-mode store chunked in 6 latitude bands x 2 longitude halves."""
    path = tmp_path_factory.mktemp("stores") / "big.zarr"
    write_planted_modes_store(path, noise_std=0.1, dtype="float64", chunks=(48, 4, 20), **GRID)
    return path


def test_streamed_moments_and_eofs_equal_the_in_memory_result_to_1e10(chunked_store):
    field = io.open_store(chunked_store)
    small_budget = {"memory_budget_mb": 0.2, "store_anomaly_mb": 0}  # forces many tiles
    whole = moments.compute(field, params={"store_anomaly_mb": 0}, backend=BACKEND)
    streamed = moments.compute(chunked_store, params=small_budget, backend=BACKEND)
    assert len(stream.plan_tiles(stream.open_source(chunked_store), moments.tile_budget(0.2, 8, 8))) > 1
    for name in ("mean", "std", "count", "valid", "covariance"):
        np.testing.assert_allclose(streamed[name].values, whole[name].values, rtol=1e-10, atol=1e-10, equal_nan=True)
    reference = eof.compute(field, whole, params={"n_modes": 4, "method": "exact"}, backend=BACKEND)
    for method in ("gram", "randomized"):
        got = eof.compute(chunked_store, streamed, params={"n_modes": 4, "method": method, "memory_budget_mb": 0.2},
                          backend=BACKEND)
        tol = 1e-10 if method == "gram" else 1e-5  # randomized: approximate, 5 Krylov blocks of 8 (defaults)
        for name in ("eof", "eof_correlation", "eof_covariance", "pc"):
            scale = np.nanmax(np.abs(reference[name].values))
            np.testing.assert_allclose(got[name].values, reference[name].values, rtol=0, atol=tol * scale, equal_nan=True)
        np.testing.assert_allclose(got["eigenvalue"].values, reference["eigenvalue"].values, rtol=tol)


def test_randomized_finishes_with_or_without_the_kept_krylov_blocks_agree(chunked_store, caplog):
    # A budget too small for Z (cells x 40 x 8 bytes) takes the projection pass; the numbers are the same.
    mom = moments.compute(chunked_store, params={"store_anomaly_mb": 0}, backend=BACKEND)
    params = {"n_modes": 4, "method": "randomized"}
    kept = eof.compute(chunked_store, mom, params={**params, "memory_budget_mb": 64}, backend=BACKEND)
    with caplog.at_level("INFO", logger="pipeline.eof"):
        projected = eof.compute(chunked_store, mom, params={**params, "memory_budget_mb": 0.2}, backend=BACKEND)
    assert "one projection pass instead" in caplog.text
    for name in ("eof", "eof_correlation", "eof_covariance", "pc", "eigenvalue"):
        scale = np.nanmax(np.abs(kept[name].values))
        np.testing.assert_allclose(projected[name].values, kept[name].values, rtol=0, atol=1e-10 * scale, equal_nan=True)


def test_in_memory_randomized_on_raw_values_with_a_large_mean_matches_the_exact_svd(monkeypatch):
    # float32 data 280 K +- a few K with land: in-memory views and threads over tiles; with float32 products the
    # tiles are centred first (|mean|/std > eof.CENTRE_ABOVE), without which cancellation costs ~1e-2 degrees.
    ds = planted_modes(n_time=150, n_lat=30, n_lon=64, variances=(9.0, 4.0, 2.0, 1.0), noise_std=0.1, mean=280.0,
                       land_fraction=0.2, seed=7)
    field = ds["field"].astype("float32")
    exact = eof.decompose(field, n_modes=4, method="exact")
    valid = ~np.isnan(exact["eof"].values[0])

    def errors(precision):
        got = eof.decompose(field, n_modes=4, method="randomized", precision=precision)
        np.testing.assert_array_equal(np.isnan(got["eof"].values), np.isnan(exact["eof"].values))
        angle = np.rad2deg(subspace_angles(got["eof"].values[:, valid].T, exact["eof"].values[:, valid].T).max())
        return angle, np.max(np.abs(got["eigenvalue"].values / exact["eigenvalue"].values - 1))

    angle64, eig64 = errors("float64")
    angle32, eig32 = errors("float32")
    assert angle64 < 1e-4 and eig64 < 1e-10, (angle64, eig64)  # the Krylov approximation alone
    assert angle32 < 1e-4 and eig32 < 1e-6, (angle32, eig32)
    monkeypatch.setattr(eof, "CENTRE_ABOVE", np.inf)
    assert errors("float32")[0] > 10 * angle32


def test_space_method_streams_over_time_blocks(tmp_path):
    path = tmp_path / "long.zarr"
    write_planted_modes_store(path, n_time=120, n_lat=4, n_lon=6, noise_std=0.2, dtype="float64",
                              chunks=(20, 4, 6), seed=4)
    field = io.open_store(path)
    whole = moments.compute(field, params={}, backend=BACKEND)
    streamed = moments.compute(path, params={"memory_budget_mb": 0.05}, backend=BACKEND)
    assert streamed["covariance"].attrs["kind"] == "space"
    np.testing.assert_allclose(streamed["covariance"].values, whole["covariance"].values, rtol=1e-10)
    exact = eof.compute(field, whole, params={"n_modes": 3, "method": "exact"}, backend=BACKEND)
    space = eof.compute(path, streamed, params={"n_modes": 3, "method": "space", "memory_budget_mb": 0.05},
                        backend=BACKEND)
    for name in ("eof", "pc", "eigenvalue", "eof_correlation", "eof_covariance"):
        np.testing.assert_allclose(space[name].values, exact[name].values, rtol=1e-9, atol=1e-10, equal_nan=True)


def test_tiled_parts_reduce_to_the_single_job_result(chunked_store):
    params = {"memory_budget_mb": 0.2, "store_anomaly_mb": 0}
    single = moments.compute(chunked_store, params=params, backend=BACKEND)
    parts = [moments.compute(chunked_store, params=params, backend=BACKEND, part=(i, 3)) for i in range(3)]
    merged = moments.reduce(parts, params=params)
    for name in ("mean", "std", "count", "valid", "covariance"):
        np.testing.assert_allclose(merged[name].values, single[name].values, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_float32_accumulation_error_is_small_and_measured(chunked_store):
    ref = eof.decompose(chunked_store, n_modes=4, method="gram", backend="numpy")
    f32 = eof.decompose(chunked_store, n_modes=4, method="gram", backend="numpy", precision="float32")
    rel = np.max(np.abs(f32["eigenvalue"].values / ref["eigenvalue"].values - 1))
    assert rel < 1e-4
    valid = ~np.isnan(ref["eof"].values[0])
    angle = np.rad2deg(np.max(subspace_angles(ref["eof"].values[:, valid].T, f32["eof"].values[:, valid].T)))
    assert angle < 0.05


def test_memory_stays_bounded_on_a_store_larger_than_the_cap(tmp_path):
    path = tmp_path / "large.zarr"
    write_planted_modes_store(path, n_time=400, n_lat=100, n_lon=250, variances=(9.0, 4.0, 1.0), noise_std=0.05,
                              dtype="float32", chunks=(400, 1, 125), seed=5)
    size_mb = 400 * 100 * 250 * 4 / 2**20  # 38 MB of float32
    cap_mb = 8
    tracemalloc.start()
    try:
        out = eof.decompose(path, n_modes=3, method="gram", backend="numpy", memory_budget_mb=cap_mb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size_mb > 4 * cap_mb
    assert peak / 2**20 < 2 * cap_mb, f"peak {peak / 2**20:.1f} MB for a {cap_mb} MB budget"
    truth = io.open_store(path)["true_eof"].values.reshape(3, -1)
    got = out["eof"].values.reshape(3, -1)
    valid = ~np.isnan(truth[0])
    # p/n = 50: sampling noise limits recovery of the weakest mode, not the method
    assert np.all(np.abs(np.sum(truth[:, valid] * got[:, valid], axis=1)) > 0.9)


def test_the_in_memory_planted_field_and_the_streamed_store_give_the_same_eofs(tmp_path):
    path = tmp_path / "same.zarr"
    write_planted_modes_store(path, dtype="float64", chunks=(48, 6, 40), **GRID)
    a = eof.decompose(path, n_modes=4, method="gram", backend="numpy", memory_budget_mb=1)
    b = eof.decompose(planted_modes(**GRID), n_modes=4, method="exact", backend="numpy")
    np.testing.assert_allclose(a["eof"].values, b["eof"].values, atol=1e-9, equal_nan=True)


def _backend(name):
    if name == "cupy":
        return resolve("cupy")
    return Backend("array_api_strict", pytest.importorskip("array_api_strict"))


@pytest.mark.parametrize("backend", ["array_api_strict", pytest.param("cupy", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not _cupy_ready(), reason="CuPy with a CUDA device is not available")])])
@pytest.mark.parametrize("method", ["gram", "randomized"])
@pytest.mark.parametrize("budget_mb", [64, 0.2])
def test_a_non_numpy_backend_streams_to_the_numpy_result(chunked_store, backend, method, budget_mb):
    # Tiles are transferred one by one (array-api-strict stands in for CuPy off the GPU): no in-memory views or
    # worker threads, every product on the backend; with a small budget randomized takes its projection finish.
    strict = _backend(backend)
    params = {"memory_budget_mb": budget_mb, "store_anomaly_mb": 0}
    mom = moments.compute(chunked_store, params=params, backend=strict)
    mom_np = moments.compute(chunked_store, params=params, backend=BACKEND)
    for name in ("mean", "std", "count", "covariance"):
        np.testing.assert_allclose(mom[name].values, mom_np[name].values, rtol=1e-12, atol=1e-12, equal_nan=True)
    eof_params = {"n_modes": 4, "method": method, "memory_budget_mb": budget_mb}
    got = eof.compute(chunked_store, mom, params=eof_params, backend=strict)
    want = eof.compute(chunked_store, mom_np, params=eof_params, backend=BACKEND)
    for name in ("eof", "eof_correlation", "eof_covariance", "pc", "eigenvalue"):
        scale = np.nanmax(np.abs(want[name].values))
        np.testing.assert_allclose(got[name].values, want[name].values, rtol=0, atol=1e-10 * scale, equal_nan=True)
