"""Choose the array backend once, at the edge, and move data across it.

The numerical kernels never import NumPy or CuPy for their math: they take the
namespace of their input. This module is the one place that decides which
namespace the labelled layer hands them (``backend: auto | numpy | cupy`` in the
config), moves a stage's input to the device in one transfer, and brings results
back to the host in one transfer. It also recognises the device running out of
memory (:func:`is_out_of_memory`) and retries a stage once with half its memory
budget (:func:`halve_budget_on_oom`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

log = logging.getLogger(__name__)

BACKENDS = ("auto", "numpy", "cupy")


@dataclass(frozen=True)
class Backend:
    """A resolved array backend.

    Attributes
    ----------
    name : str
        ``"numpy"`` or ``"cupy"``.
    xp : module
        The array-API-compatible namespace (``array_api_compat.numpy`` or
        ``array_api_compat.cupy``).
    """

    name: str
    xp: ModuleType

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """Copy a host array to this backend (one transfer)."""
        return self.xp.asarray(np.asarray(x), dtype=dtype)

    def default_rng(self, seed: int | None) -> Any:
        """A random generator living on this backend, seeded explicitly."""
        if self.name == "cupy":
            import cupy

            return cupy.random.default_rng(seed)
        return np.random.default_rng(seed)


def cupy_problem() -> str | None:
    """Why CuPy cannot run here (a clause for a sentence), or ``None`` when it imports and sees a CUDA device."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install -e '.[gpu]')"
    except Exception as err:  # noqa: BLE001 -- a broken install fails in many ways
        return f"CuPy fails to import ({type(err).__name__}: {_first_line(err)})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # noqa: BLE001 -- any CUDA failure means "no usable device"
        return f"CUDA finds no usable device ({_first_line(err)})"
    return None if count > 0 else "CuPy sees no CUDA device"


def cupy_available() -> bool:
    """Whether CuPy imports and sees a CUDA device."""
    return cupy_problem() is None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def resolve(name: str = "auto") -> Backend:
    """Resolve a backend name from the config to a :class:`Backend`.

    Parameters
    ----------
    name : {"auto", "numpy", "cupy"}
        ``auto`` picks CuPy when it imports and a CUDA device is present,
        otherwise NumPy.

    Raises
    ------
    ValueError
        If ``name`` is not one of the known backends, or ``cupy`` is asked for
        and no usable CuPy/CUDA device exists.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}.")
    problem = cupy_problem() if name in ("auto", "cupy") else None
    if name == "auto":
        name = "numpy" if problem else "cupy"
    elif name == "cupy" and problem:
        raise ValueError(f"backend: cupy was asked for but {problem}; use backend: auto or numpy.")
    if name == "cupy":
        import array_api_compat.cupy as xp
    else:
        import array_api_compat.numpy as xp
    log.info("array backend: %s", name)
    return Backend(name=name, xp=xp)


def as_backend(backend: Backend | str) -> Backend:
    """A :class:`Backend` from either a resolved backend or its config name."""
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, str):
        return resolve(backend)
    raise TypeError(f"backend must be a Backend or one of auto, numpy, cupy; got {type(backend).__name__}.")


def to_numpy(x: Any) -> np.ndarray:
    """Bring any supported array (NumPy, CuPy, array-api-strict) to host NumPy."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        return x.get()
    try:
        return np.from_dlpack(x)
    except (TypeError, RuntimeError, BufferError, AttributeError):
        return np.asarray(x)


def standard_normal(rng: Any, xp: ModuleType, shape: tuple[int, ...], dtype: Any = None) -> Any:
    """Standard normal draws from ``rng`` as an array of namespace ``xp``.

    ``rng`` is a NumPy or CuPy ``Generator`` (see :meth:`Backend.default_rng`);
    when its module differs from ``xp`` (e.g. array-api-strict in tests) the draws
    are made on the host and converted once.
    """
    draws = rng.standard_normal(shape)
    return _as_namespace(draws, xp, dtype)


def standard_gamma(rng: Any, xp: ModuleType, shape_param: float, size: tuple[int, ...], dtype: Any = None) -> Any:
    """Gamma(shape_param, scale=1) draws from ``rng`` as an array of namespace ``xp``."""
    draws = rng.standard_gamma(shape_param, size=size)
    return _as_namespace(draws, xp, dtype)


def _as_namespace(draws: Any, xp: ModuleType, dtype: Any) -> Any:
    if isinstance(draws, np.ndarray) and "numpy" not in xp.__name__:
        if "cupy" in xp.__name__:
            return xp.asarray(draws, dtype=dtype)
        return xp.asarray(draws, dtype=dtype if dtype is not None else xp.float64)
    return draws if dtype is None else xp.asarray(draws, dtype=dtype)


# ---------------------------------------------------------------- device memory

_OOM_TEXT = ("cudaErrorMemoryAllocation", "CUDA_ERROR_OUT_OF_MEMORY", "ALLOC_FAILED")

T = TypeVar("T")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) is the device running out of memory.

    CuPy's ``cupy.cuda.memory.OutOfMemoryError``, and CUDA, cuBLAS or cuSOLVER
    allocation failures, recognised by class name and module so that CuPy need
    not be importable.
    """
    seen: BaseException | None = err
    while seen is not None:
        kinds = type(seen).__mro__
        if any(k.__name__ == "OutOfMemoryError" and k.__module__.startswith("cupy") for k in kinds):
            return True
        if type(seen).__module__.startswith("cupy") and any(text in str(seen) for text in _OOM_TEXT):
            return True
        seen = seen.__cause__
    return False


def free_device_memory() -> None:
    """Return CuPy's cached device blocks to the driver (nothing to do when CuPy was never imported)."""
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()


def halve_budget_on_oom(compute: Callable[[dict[str, Any]], T], params: dict[str, Any], *, section: str,
                        default_mb: float, what: str) -> T:
    """``compute(params)``; if the device runs out of memory, once more with ``memory_budget_mb`` halved.

    Parameters
    ----------
    compute : callable
        The stage's computation, given its config section.
    params : dict
        The config section (``moments`` or ``eof``).
    section : str
        Its name, for the messages (``moments.memory_budget_mb``).
    default_mb : float
        The budget when ``params`` gives none.
    what : str
        What is computed, for the messages (``the moments of results/x/fields/sst.zarr``).

    Raises
    ------
    MemoryError
        The retry ran out of device memory too; the sentence names
        ``{section}.memory_budget_mb`` and a value to try.
    """
    budget = params.get("memory_budget_mb", default_mb)
    half = budget / 2
    try:
        return compute(params)
    except Exception as err:  # the traceback (and the device arrays it holds) is dropped before the retry
        if not is_out_of_memory(err):
            raise
        log.warning("%s ran out of device memory with %s.memory_budget_mb=%s (%s); retrying once with %s",
                    what, section, _mb(budget), type(err).__name__, _mb(half))
    free_device_memory()
    try:
        return compute({**params, "memory_budget_mb": half})
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        raise MemoryError(
            f"{what[0].upper()}{what[1:]} ran out of device memory with {section}.memory_budget_mb={_mb(budget)} "
            f"and again with {_mb(half)}; set {section}.memory_budget_mb: {_mb(half / 2)} or lower, or backend: numpy."
        ) from err


def _mb(value: float) -> str:
    return f"{value:.6g}" if abs(value) < 1e6 else str(int(value))


HOST_TOP_PAD_MB = 256
"""MiB of freed heap a job process keeps mapped (:func:`keep_freed_heap`)."""


def keep_freed_heap(top_pad_mb: int = HOST_TOP_PAD_MB) -> bool:
    """Ask glibc's allocator to keep ``top_pad_mb`` MiB of freed heap mapped instead of returning it at each free.

    Iterative kernels (an HMC leapfrog step, a Newton iteration) allocate and free
    the same temporaries of a few hundred kB to a few MB on every call. By
    default glibc hands that memory back to the system after each call and the
    next call faults it in again: on the Bayesian GEV of 200 cells that was 915
    minor page faults per gradient evaluation, and the sampler ran 3x slower than
    with the memory kept (``bench/results/README.md``, Bayesian GEV). This is
    ``mallopt(M_TOP_PAD, ...)``, the same as ``MALLOC_TOP_PAD_`` in the
    environment; the cost is up to ``top_pad_mb`` of freed memory kept per
    process. The rule scripts call it once per job; library users may call it
    themselves. Returns whether it was set (False where the C library is not
    glibc, e.g. macOS; nothing changes there).
    """
    if isinstance(top_pad_mb, bool) or not isinstance(top_pad_mb, int) or not 0 <= top_pad_mb < 1 << 20:
        raise ValueError(f"top_pad_mb must be a whole number of MiB between 0 and 2**20; got {top_pad_mb!r}.")
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-2, top_pad_mb << 20))  # M_TOP_PAD is -2 in glibc's malloc.h
    except (OSError, AttributeError):  # not glibc (musl has no mallopt symbol of that meaning)
        return False
