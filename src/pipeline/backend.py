"""Choose the array backend once, at the edge, and move data across it.

The numerical kernels never import NumPy or CuPy for their math: they take the
namespace of their input. This module is the one place that decides which
namespace the labelled layer hands them (``backend: auto | numpy | cupy`` in the
config), moves a stage's input to the device in one transfer, and brings results
back to the host in one transfer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

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


def cupy_available() -> bool:
    try:
        import cupy
    except ImportError:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 -- any CUDA failure means "no usable device"
        return False


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
    if name == "auto":
        name = "cupy" if cupy_available() else "numpy"
    elif name == "cupy" and not cupy_available():
        raise ValueError(
            "backend 'cupy' was requested but CuPy is not installed or no CUDA device "
            "is visible; install the 'gpu' extra or set backend: numpy."
        )
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
