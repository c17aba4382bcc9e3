"""Shared fixtures: the ``xp`` namespace fixture and dtype-aware tolerances.

Kernel tests take ``xp`` and run once per namespace: NumPy, array-api-strict
(which rejects any hidden NumPy-only call, so passing it means CuPy will work)
and CuPy when a CUDA device is present (marked ``gpu``, skipped otherwise).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.backend import to_numpy


def _cupy_ready() -> bool:
    try:
        cupy = importlib.import_module("cupy")
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001
        return False


_PARAMS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("array_api_strict", id="strict"),
    pytest.param(
        "cupy",
        id="cupy",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not _cupy_ready(), reason="CuPy with a CUDA device is not available")],
    ),
]


@pytest.fixture(params=_PARAMS)
def xp(request):
    """An array namespace: array_api_compat.numpy, array_api_strict, or array_api_compat.cupy.

    array-api-strict runs with boolean indexing and data-dependent output
    shapes switched off: kernels must not rely on them (they would force a
    device synchronization on CuPy).
    """
    name = request.param
    if name == "numpy":
        import array_api_compat.numpy as ns
    elif name == "cupy":
        import array_api_compat.cupy as ns
    else:
        ns = pytest.importorskip("array_api_strict")
        with ns.ArrayAPIStrictFlags(boolean_indexing=False, data_dependent_shapes=False):
            yield ns
        return
    yield ns


@pytest.fixture
def to_np():
    """Bring a result of any namespace back to host NumPy."""
    return to_numpy


def tolerance(dtype) -> float:
    """Relative tolerance for comparing a kernel result with a float64 reference."""
    return 1e-10 if np.dtype(str(dtype).split(".")[-1]) == np.float64 else 1e-4


def files_without_history(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, ``zarr.json`` read as JSON without the ``history`` attribute.

    The one timestamp the stores carry is left out, so two runs of one config
    compare byte for byte; folders named in ``skip`` (e.g. ``logs``) are left out.
    """
    out = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not set(skip) & set(p.relative_to(root).parts)):
        data = f.read_bytes()
        if f.name == "zarr.json":
            meta = json.loads(data)
            meta.get("attributes", {}).pop("history", None)
            data = json.dumps(meta, sort_keys=True).encode()
        out[f.relative_to(root).as_posix()] = data
    return out
