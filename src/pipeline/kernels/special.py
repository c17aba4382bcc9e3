"""Special functions and seeded uniforms for any array namespace.

The Python array API has no special functions, so kernels take them from here.
Each function has the semantics of its namespace in ``scipy.special`` and
dispatches on the namespace of its array arguments:

* NumPy arrays  -> ``scipy.special``;
* CuPy arrays   -> ``cupyx.scipy.special`` (data stay on the GPU);
* anything else (array-api-strict in the tests) -> a round trip through NumPy:
  ``np.from_dlpack``, ``scipy.special``, then ``xp.asarray`` back onto the
  input's device.

Results have the floating dtype of the array arguments (``scipy.special`` may
compute in double; the result is cast back). Python numbers are passed as they
are, so ``polygamma(1, a)`` works with an int ``n``.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import numpy as np
import scipy.special

__all__ = [
    "digamma",
    "erf",
    "erfc",
    "gamma",
    "gammainc",
    "gammaincc",
    "gammaincinv",
    "gammaln",
    "log_ndtr",
    "ndtr",
    "ndtri",
    "polygamma",
    "uniform",
    "xlog1py",
    "xlogy",
]


def _to_host(a: Any) -> Any:
    if not array_api_compat.is_array_api_obj(a):
        return a
    try:
        return np.from_dlpack(a)
    except (TypeError, RuntimeError, BufferError, AttributeError):
        return np.asarray(a)


def _apply(name: str, *args: Any) -> Any:
    """``name`` from the special-function library that matches the arrays among ``args``."""
    arrays = [a for a in args if array_api_compat.is_array_api_obj(a)]
    if not arrays:
        raise TypeError(f"{name} needs at least one array argument; got only Python numbers.")
    xp = array_api_compat.array_namespace(*arrays)
    dtype = xp.result_type(*arrays)
    if not xp.isdtype(dtype, "real floating"):
        dtype = None  # integer input: keep the library's floating result
    if array_api_compat.is_numpy_namespace(xp):
        out = getattr(scipy.special, name)(*args)
    elif array_api_compat.is_cupy_namespace(xp):
        import cupy
        import cupyx.scipy.special

        # Python numbers as 0-d arrays: cupyx's polygamma broadcasts its arguments as arrays
        on_device = (a if array_api_compat.is_array_api_obj(a) else cupy.asarray(a) for a in args)
        out = getattr(cupyx.scipy.special, name)(*on_device)
    else:
        out = getattr(scipy.special, name)(*(_to_host(a) for a in args))
    return xp.asarray(out, dtype=dtype, device=array_api_compat.device(arrays[0]))


def gammaln(x: Any) -> Any:
    """``log |Gamma(x)|``."""
    return _apply("gammaln", x)


def digamma(x: Any) -> Any:
    """``psi(x) = d log Gamma(x) / dx``."""
    return _apply("digamma", x)


def polygamma(n: int, x: Any) -> Any:
    """``psi^(n)(x)``, the n-th derivative of digamma (``n = 1``: trigamma)."""
    return _apply("polygamma", n, x)


def gamma(x: Any) -> Any:
    """``Gamma(x)``."""
    return _apply("gamma", x)


def gammainc(a: Any, x: Any) -> Any:
    """Regularized lower incomplete gamma ``P(a, x)``."""
    return _apply("gammainc", a, x)


def gammaincc(a: Any, x: Any) -> Any:
    """Regularized upper incomplete gamma ``Q(a, x) = 1 - P(a, x)``, accurate where it is small."""
    return _apply("gammaincc", a, x)


def gammaincinv(a: Any, y: Any) -> Any:
    """``x`` with ``P(a, x) = y``."""
    return _apply("gammaincinv", a, y)


def erf(x: Any) -> Any:
    """Error function."""
    return _apply("erf", x)


def erfc(x: Any) -> Any:
    """``1 - erf(x)``, accurate for large ``x``."""
    return _apply("erfc", x)


def ndtr(x: Any) -> Any:
    """Standard normal CDF ``Phi(x)``."""
    return _apply("ndtr", x)


def ndtri(p: Any) -> Any:
    """Standard normal quantile ``Phi^-1(p)``."""
    return _apply("ndtri", p)


def log_ndtr(x: Any) -> Any:
    """``log Phi(x)``, accurate far in the lower tail."""
    return _apply("log_ndtr", x)


def xlogy(x: Any, y: Any) -> Any:
    """``x log(y)``, 0 where ``x == 0``."""
    return _apply("xlogy", x, y)


def xlog1py(x: Any, y: Any) -> Any:
    """``x log1p(y)``, 0 where ``x == 0``."""
    return _apply("xlog1py", x, y)


def uniform(shape: int | tuple[int, ...], *, seed: int, like: Any) -> Any:
    """Uniform draws strictly inside (0, 1), of the dtype and on the device of ``like``.

    NumPy and other host namespaces draw from ``numpy.random.Generator(PCG64(seed))``,
    CuPy from ``cupy.random.default_rng(seed)``; the same seed gives the same
    draws. A float64 draw ``r`` in [0, 1) is moved to the midpoint of its cell
    of width ``2^-m`` (``m`` mantissa bits of the dtype: 52 or 23),
    ``u = (floor(r 2^m) + 1/2) 2^-m``, which the dtype represents exactly, so
    neither 0 nor 1 can occur after rounding.

    Parameters
    ----------
    shape : int or tuple of int
    seed : int
        Seed of the generator.
    like : array
        Real floating array whose namespace, dtype and device the draws take.
    """
    xp = array_api_compat.array_namespace(like)
    if not xp.isdtype(like.dtype, "real floating"):
        raise TypeError(f"like must be a real floating array; got dtype {like.dtype}.")
    if array_api_compat.is_cupy_namespace(xp):
        import cupy

        lib, raw = cupy, cupy.random.default_rng(seed).random(shape)
    else:
        lib, raw = np, np.random.Generator(np.random.PCG64(seed)).random(shape)
    cells = 2.0 ** round(-math.log2(float(xp.finfo(like.dtype).eps)))
    u = (lib.floor(raw * cells) + 0.5) / cells
    return xp.asarray(u, dtype=like.dtype, device=array_api_compat.device(like))
