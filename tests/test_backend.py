"""The backend at the edge: CuPy without a GPU in one sentence, and a device out of memory retried once.

The out-of-memory error is faked (a class named like CuPy's), so these tests
run without CuPy; the ``gpu`` test checks that CuPy's real error is recognised.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from pipeline import backend, eof, io, moments
from pipeline.synthetic import planted_modes


def _oom_class(module: str = "cupy.cuda.memory", name: str = "OutOfMemoryError") -> type[Exception]:
    return type(name, (MemoryError,), {"__module__": module})


def _oom() -> Exception:
    return _oom_class()("Out of memory allocating 8,388,608 bytes (allocated so far: 0 bytes).")


# --- backend: cupy -------------------------------------------------------------------------------------------------


def test_cupy_problem_is_a_clause_or_none():
    problem = backend.cupy_problem()
    assert problem is None or (problem and "\n" not in problem)
    assert backend.cupy_available() is (problem is None)


def test_backend_cupy_without_a_gpu_is_one_sentence(monkeypatch):
    monkeypatch.setattr(backend, "cupy_problem", lambda: "CuPy sees no CUDA device")
    with pytest.raises(ValueError) as info:
        backend.resolve("cupy")
    assert str(info.value) == "backend: cupy was asked for but CuPy sees no CUDA device; use backend: auto or numpy."
    assert backend.resolve("auto").name == "numpy"


def test_cupy_missing_is_named_as_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    assert backend.cupy_problem() == "CuPy is not installed (pip install -e '.[gpu]')"


# --- recognising a device out of memory -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (_oom(), True),
        (type("PoolOutOfMemory", (_oom_class(),), {"__module__": "somewhere"})("sub"), True),  # a subclass
        (_oom_class("cupy_backends.cuda.api.runtime", "CUDARuntimeError")("cudaErrorMemoryAllocation: out of memory"),
         True),
        (_oom_class("cupy_backends.cuda.libs.cublas", "CUBLASError")("CUBLAS_STATUS_ALLOC_FAILED"), True),
        (_oom_class("cupy_backends.cuda.api.runtime", "CUDARuntimeError")("cudaErrorIllegalAddress"), False),
        (MemoryError("host memory"), False),
        (_oom_class("mylib")("Out of memory"), False),  # the name alone is not enough
        (ValueError("n_modes=8 exceeds the rank"), False),
    ],
    ids=["cupy", "subclass", "cuda-runtime", "cublas", "other-cuda-error", "host", "other-module", "value-error"],
)
def test_a_device_out_of_memory_is_recognised_without_cupy(err, expected):
    assert backend.is_out_of_memory(err) is expected


def test_an_out_of_memory_raised_from_is_recognised():
    try:
        try:
            raise _oom()
        except MemoryError as cause:
            raise RuntimeError("the prefetch thread failed") from cause
    except RuntimeError as err:
        assert backend.is_out_of_memory(err)


@pytest.mark.gpu
def test_cupys_own_out_of_memory_error_is_recognised():
    if not backend.cupy_available():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy

    pool = cupy.get_default_memory_pool()
    limit = pool.get_limit()
    pool.set_limit(size=1 << 20)
    try:
        with pytest.raises(Exception) as info:
            cupy.empty(1 << 24, dtype=cupy.uint8)
        assert backend.is_out_of_memory(info.value)
    finally:
        pool.set_limit(size=limit)


# --- moments.run and eof.run: retry once with half the budget, or one sentence ------------------------------------


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A small planted field and its moments store."""
    root = tmp_path_factory.mktemp("oom")
    fields = planted_modes(n_time=12, n_lat=4, n_lon=6, noise_std=0.05, seed=3)
    fields.attrs["field_name"] = "x"
    field = io.write_store(fields, root / "fields" / "x.zarr", stage="ingest")
    mom = root / "moments" / "x.zarr"
    moments.run(field, mom, params={"memory_budget_mb": 64}, backend="numpy")
    return field, mom


def _flaky(module, failures: int):
    """``module.compute`` that raises a device out of memory on its first ``failures`` calls; the budgets seen."""
    real, budgets = module.compute, []

    def compute(*args, params, **kwargs):
        budgets.append(params.get("memory_budget_mb", 1024))  # 1024: the default
        if len(budgets) <= failures:
            raise _oom()
        return real(*args, params=params, **kwargs)

    return compute, budgets


def _run(stage: str, field, mom, out, params: dict) -> None:
    if stage == "moments":
        moments.run(field, out, params=params, backend="numpy")
    else:
        eof.run(field, mom, out, params=params, backend="numpy")


@pytest.mark.parametrize("stage", ["moments", "eof"])
def test_an_out_of_memory_retries_once_with_half_the_budget(stage, stores, tmp_path, monkeypatch, caplog):
    module = {"moments": moments, "eof": eof}[stage]
    compute, budgets = _flaky(module, failures=1)
    monkeypatch.setattr(module, "compute", compute)
    params = {"memory_budget_mb": 64} if stage == "moments" else {"n_modes": 2, "memory_budget_mb": 64}
    with caplog.at_level(logging.WARNING, logger="pipeline.backend"):
        _run(stage, *stores, tmp_path / "out.zarr", params)
    assert budgets == [64, 32]
    assert io.open_store(tmp_path / "out.zarr").sizes["lat"] == 4  # written by the retry
    assert f"ran out of device memory with {stage}.memory_budget_mb=64 (OutOfMemoryError); retrying once with 32" \
        in caplog.text


@pytest.mark.parametrize("stage", ["moments", "eof"])
def test_an_out_of_memory_twice_stops_with_a_sentence_naming_the_budget(stage, stores, tmp_path, monkeypatch):
    module = {"moments": moments, "eof": eof}[stage]
    compute, budgets = _flaky(module, failures=2)
    monkeypatch.setattr(module, "compute", compute)
    with pytest.raises(MemoryError) as info:
        _run(stage, *stores, tmp_path / "out.zarr", {"memory_budget_mb": 1024} if stage == "moments" else {})
    assert budgets == [1024, 512]
    what = "The moments of" if stage == "moments" else "The EOFs of"
    assert str(info.value) == (
        f"{what} {stores[0]} ran out of device memory with {stage}.memory_budget_mb=1024 and again with 512; "
        f"set {stage}.memory_budget_mb: 256 or lower, or backend: numpy."
    )
    assert backend.is_out_of_memory(info.value.__cause__)
    assert not (tmp_path / "out.zarr").exists()


def test_another_error_is_not_retried(stores, tmp_path, monkeypatch):
    calls = []

    def compute(*args, params, **kwargs):
        calls.append(params)
        raise ValueError("The x field has 2 time steps, fewer than moments.min_time_steps=3.")

    monkeypatch.setattr(moments, "compute", compute)
    with pytest.raises(ValueError, match="fewer than moments.min_time_steps"):
        moments.run(stores[0], tmp_path / "out.zarr", params={}, backend="numpy")
    assert len(calls) == 1


def test_the_budget_in_the_sentence_keeps_fractions():
    def always(params):
        raise _oom()

    with pytest.raises(MemoryError, match=r"memory_budget_mb=0\.5 and again with 0\.25; set eof\.memory_budget_mb: "
                                          r"0\.125 or lower"):
        backend.halve_budget_on_oom(always, {"memory_budget_mb": 0.5}, section="eof", default_mb=1024,
                                    what="the EOFs of x")


_FAULTS = """
import resource, sys
import numpy as np
from pipeline.backend import keep_freed_heap
kept = keep_freed_heap() if sys.argv[1] == "1" else False
from pipeline.kernels import models
rng = np.random.default_rng(1)
m = models.bayes_gev(30.0 + 5.0 * rng.gumbel(size=(50, 200)))
theta = m.init(4, 0)
for _ in range(3):
    m.logp_grad(theta)
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    m.logp_grad(theta)
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 50)
"""


def test_keeping_freed_heap_stops_the_page_faults_of_an_iterated_kernel():
    """The Bayesian GEV gradient of 200 cells x 4 chains faults its temporaries in on every call unless freed heap
    is kept (glibc only; elsewhere keep_freed_heap says it did nothing)."""
    import subprocess

    runs = [subprocess.run([sys.executable, "-c", _FAULTS, flag], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}).stdout.split()
            for flag in ("0", "1")]
    if runs[1][0] != "True":
        pytest.skip("not glibc: the allocator cannot be tuned here")
    before, after = float(runs[0][1]), float(runs[1][1])
    assert before > 100 and after < 0.05 * before
    with pytest.raises(ValueError, match="top_pad_mb"):
        backend.keep_freed_heap(-1)
