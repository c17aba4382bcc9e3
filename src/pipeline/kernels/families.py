"""Two-parameter distribution families: densities, quantiles and per-cell maximum likelihood.

Data are ``(n, cells)`` matrices, one column per grid cell; every column is
fitted at once (iterations loop, cells never do). Every family is a scipy-like
triple ``params = (loc, scale, shape)`` stacked as ``(3, cells)``; parameters a
family fixes or lacks are 0 or NaN and are not estimated:

=========  =========  =========  =====  ===========================================
family     loc        scale      shape  scipy.stats equivalent
=========  =========  =========  =====  ===========================================
normal     mean       sd         NaN    ``norm(loc, scale)``
lognormal  0 (fixed)  exp(mu)    sigma  ``lognorm(s=shape, scale=scale)``; log X ~ N(mu, sigma)
gamma      0 (fixed)  scale      a      ``gamma(a=shape, scale=scale)``
weibull    0 (fixed)  scale      c      ``weibull_min(c=shape, scale=scale)``
gumbel_r   loc        scale      NaN    ``gumbel_r(loc, scale)`` (maxima)
gumbel_l   loc        scale      NaN    ``gumbel_l(loc, scale)`` (minima)
=========  =========  =========  =====  ===========================================

Fits return the dict described on :class:`Family`. The covariance is the
inverse observed information (analytic second derivatives of the
log-likelihood at the MLE) of the estimated pair; the other rows and columns
are NaN. Each column is standardized (``(x - mean) / sd`` or ``log(x / mean)``)
before the iterations, so an offset of 5500 with a spread of 50 fits as
accurately as an anomaly. Columns that cannot be fitted (fewer than 3 valid
values, NaN or infinite values, a constant column, values <= 0 for the positive
families) give NaN parameters, log-likelihood and covariance and
``converged = False``; they never raise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import array_api_compat

from pipeline.kernels import special

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class Family:
    """A distribution family with vectorized density functions and a per-cell fit.

    Attributes
    ----------
    name : str
    n_params : int
        Number of estimated parameters (the k of AIC).
    fit : callable
        ``fit(x, *, max_iter=100, valid=None, loc=None) -> dict`` for ``x`` of
        shape (n, cells); ``valid`` an optional (n, cells) bool mask of usable
        values. Keys: ``params`` (3, cells); ``loglik`` (cells,); ``cov``
        (3, 3, cells); ``converged`` (cells,) bool; ``n_iter`` (cells,) int.
    logpdf, cdf, sf : callable
        ``f(x, params)`` elementwise, ``params`` (3, cells) broadcast against
        ``x`` (..., cells). Outside the support: logpdf -inf, cdf 0 or 1.
        ``sf = 1 - cdf`` is computed directly, so it is accurate in the upper tail.
    ppf : callable
        ``ppf(u, params)``, the quantile function (the support's ends at 0 and 1).
    """

    name: str
    n_params: int
    fit: Callable[..., dict[str, Any]]
    logpdf: Callable[[Any, Any], Any]
    cdf: Callable[[Any, Any], Any]
    sf: Callable[[Any, Any], Any]
    ppf: Callable[[Any, Any], Any]


# ------------------------------------------------------ densities and quantiles


def _log_max(dtype: Any, xp: Any) -> float:
    """A bit below the log of the largest float: exp of anything smaller cannot overflow."""
    return 0.99 * math.log(float(xp.finfo(dtype).max))


class _Laws(NamedTuple):
    """A family's formulas on the open support ``(lower, inf)``, as ``f(t, loc, scale, shape, xp)``.

    ``ppf`` takes ``0 < u < 1``; the wrappers of :func:`_vectorized` handle the
    support's edges, infinities and NaN, so the formulas need no guards.
    """

    lower: float
    logpdf: Callable[..., Any]
    cdf: Callable[..., Any]
    sf: Callable[..., Any]
    ppf: Callable[..., Any]


def _vectorized(laws: _Laws) -> tuple[Callable[[Any, Any], Any], ...]:
    """``logpdf, cdf, sf, ppf`` of ``(x, params)`` from a family's formulas."""

    def on_support(formula: Callable, below: float, above: float) -> Callable[[Any, Any], Any]:
        def f(x: Any, p: Any) -> Any:
            xp = array_api_compat.array_namespace(x, p)
            ok = (x > laws.lower) & (x < xp.inf)
            value = formula(xp.where(ok, x, 1.0), p[0, ...], p[1, ...], p[2, ...], xp)
            edge = xp.where(xp.isnan(x), x, xp.where(x <= laws.lower, below, xp.full_like(x, above)))
            return xp.where(ok, value, edge)

        return f

    def ppf(u: Any, p: Any) -> Any:
        xp = array_api_compat.array_namespace(u, p)
        ok = (u > 0) & (u < 1)
        value = laws.ppf(xp.where(ok, u, 0.5), p[0, ...], p[1, ...], p[2, ...], xp)
        edge = xp.where(u == 0, laws.lower, xp.where(u == 1, xp.inf, xp.full_like(u, xp.nan)))
        return xp.where(ok, value, edge)

    logpdf = on_support(laws.logpdf, -math.inf, -math.inf)
    return logpdf, on_support(laws.cdf, 0.0, 1.0), on_support(laws.sf, 1.0, 0.0), ppf


def _capped_exp(v: Any, xp: Any) -> Any:
    return xp.exp(xp.minimum(v, _log_max(v.dtype, xp)))


def _weibull_power(t: Any, scale: Any, c: Any, xp: Any) -> Any:
    """``(t / scale)^c``, its exponent capped below overflow."""
    return _capped_exp(c * xp.log(t / scale), xp)


def _gumbel_laws(sign: float) -> _Laws:
    """gumbel_r (sign +1) or gumbel_l (-1) in ``y = sign (x - loc) / scale``.

    Both have log-density ``-y - exp(-y) - log(scale)``; ``exp(-exp(-y))`` is the
    gumbel_r cdf and the gumbel_l sf, ``-expm1(-exp(-y))`` the other tail. ``y``
    is kept above ``-log(max float)`` so ``exp(-y)`` cannot overflow.
    """

    def y(t: Any, loc: Any, scale: Any, xp: Any) -> Any:
        return xp.maximum(sign * (t - loc) / scale, -_log_max(t.dtype, xp))

    def plain(t: Any, loc: Any, scale: Any, shape: Any, xp: Any) -> Any:
        return xp.exp(-xp.exp(-y(t, loc, scale, xp)))

    def complement(t: Any, loc: Any, scale: Any, shape: Any, xp: Any) -> Any:
        return -xp.expm1(-xp.exp(-y(t, loc, scale, xp)))

    def logpdf(t: Any, loc: Any, scale: Any, shape: Any, xp: Any) -> Any:
        v = y(t, loc, scale, xp)
        return -v - xp.exp(-v) - xp.log(scale)

    def ppf(u: Any, loc: Any, scale: Any, shape: Any, xp: Any) -> Any:
        return loc - scale * xp.log(-xp.log(u)) if sign > 0 else loc + scale * xp.log(-xp.log1p(-u))

    tails = (plain, complement) if sign > 0 else (complement, plain)
    return _Laws(-math.inf, logpdf, *tails, ppf)


_LAWS = {
    "normal": _Laws(
        -math.inf,
        lambda t, loc, scale, shape, xp: -0.5 * ((t - loc) / scale) ** 2 - xp.log(scale) - 0.5 * _LOG_2PI,
        lambda t, loc, scale, shape, xp: special.ndtr((t - loc) / scale),
        lambda t, loc, scale, shape, xp: special.ndtr((loc - t) / scale),
        lambda u, loc, scale, shape, xp: loc + scale * special.ndtri(u),
    ),
    "lognormal": _Laws(
        0.0,
        lambda t, loc, scale, s, xp: -0.5 * (xp.log(t / scale) / s) ** 2 - xp.log(s * t) - 0.5 * _LOG_2PI,
        lambda t, loc, scale, s, xp: special.ndtr(xp.log(t / scale) / s),
        lambda t, loc, scale, s, xp: special.ndtr(-xp.log(t / scale) / s),
        lambda u, loc, scale, s, xp: scale * _capped_exp(s * special.ndtri(u), xp),
    ),
    "gamma": _Laws(
        0.0,
        lambda t, loc, scale, a, xp: special.xlogy(a - 1.0, t / scale) - t / scale - special.gammaln(a) - xp.log(scale),
        lambda t, loc, scale, a, xp: special.gammainc(a, t / scale),
        lambda t, loc, scale, a, xp: special.gammaincc(a, t / scale),
        lambda u, loc, scale, a, xp: scale * special.gammaincinv(a, u),
    ),
    "weibull": _Laws(
        0.0,
        lambda t, loc, scale, c, xp: (
            xp.log(c / scale) + (c - 1.0) * xp.log(t / scale) - _weibull_power(t, scale, c, xp)
        ),
        lambda t, loc, scale, c, xp: -xp.expm1(-_weibull_power(t, scale, c, xp)),
        lambda t, loc, scale, c, xp: xp.exp(-_weibull_power(t, scale, c, xp)),
        lambda u, loc, scale, c, xp: scale * _capped_exp(xp.log(-xp.log1p(-u)) / c, xp),
    ),
    "gumbel_r": _gumbel_laws(1.0),
    "gumbel_l": _gumbel_laws(-1.0),
}
_FUNCTIONS = {name: _vectorized(laws) for name, laws in _LAWS.items()}  # logpdf, cdf, sf, ppf


# ------------------------------------------------------------- fit machinery


class _Data(NamedTuple):
    """A fit's input made safe: unusable columns replaced by a ramp, masked values by a valid one."""

    x: Any  # (n, cells)
    w: Any  # (n, cells) weights 1 (use) or 0 (masked), x's dtype
    n: Any  # (cells,) number of values used
    bad: Any  # (cells,) bool: column cannot be fitted
    xp: Any


def _prepare(x: Any, valid: Any, loc: Any, positive: bool, name: str) -> _Data:
    """Check the input and make every column finite, in the support and non-constant."""
    xp = array_api_compat.array_namespace(x)
    if x.ndim != 2 or not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"x must be a 2-D real floating (n, cells) array; got {x.ndim}-D {x.dtype}.")
    if x.shape[0] < 3:
        raise ValueError(f"x needs at least 3 rows for a two-parameter {name} fit; got {x.shape[0]}.")
    if loc is not None:
        raise ValueError(f"loc must be None for {name}: only gpd takes a fixed threshold.")
    if valid is None:
        use = xp.ones(x.shape, dtype=xp.bool, device=array_api_compat.device(x))
    elif valid.shape != x.shape or valid.dtype != xp.bool:
        raise ValueError(f"valid must be a bool mask of x's shape {x.shape}; got {valid.dtype} of shape {valid.shape}.")
    else:
        use = valid
    good = xp.isfinite(x) & (x > 0) if positive else xp.isfinite(x)
    high = xp.max(xp.where(use & good, x, -xp.inf), axis=0)
    low = xp.min(xp.where(use & good, x, xp.inf), axis=0)
    count = xp.sum(xp.astype(use, x.dtype), axis=0)
    # a spread of a few ulps cannot be fitted: treat it as constant
    spread = 16.0 * float(xp.finfo(x.dtype).eps) * xp.maximum(xp.abs(high), xp.abs(low))
    bad = xp.any(use & ~good, axis=0) | (count < 3) | ~(high - low > spread)
    ramp = xp.arange(1, x.shape[0] + 1, dtype=x.dtype, device=array_api_compat.device(x))[:, None]
    clean = xp.where(bad, ramp, xp.where(use, x, high))  # the fill is a valid value: min/max stay those of the data
    w = xp.where(bad, 1.0, xp.astype(use, x.dtype))
    return _Data(clean, w, xp.sum(w, axis=0), bad, xp)


def _mean(v: Any, d: _Data) -> Any:
    return d.xp.sum(d.w * v, axis=0) / d.n


def _center(v: Any, d: _Data) -> tuple[Any, Any]:
    """Weighted mean (with one correction pass, so large offsets cost no accuracy) and sd, divisor n.

    The deviations are divided by their largest magnitude before squaring, so
    neither overflow nor underflow can spoil the sd of very large or small data.
    """
    xp = d.xp
    m = _mean(v, d)
    m = m + _mean(v - m, d)
    dev = v - m
    r, _ = _positive_part(xp.max(d.w * xp.abs(dev), axis=0), xp)
    return m, r * xp.sqrt(_mean((dev / r) ** 2, d))


def _positive_part(v: Any, xp: Any) -> tuple[Any, Any]:
    """``v`` where positive (1 elsewhere) and the mask, so divisions and logs stay finite."""
    ok = v > 0
    return xp.where(ok, v, 1.0), ok


def _log_ratio(x: Any, m: Any, xp: Any) -> Any:
    """``log(x / m)`` for positive ``x``: ``log1p(x/m - 1)`` near ``m`` (exact for small spreads), else ``log(x/m)``."""
    dev = (x - m) / m
    return xp.where(xp.abs(dev) < 0.5, xp.log1p(xp.maximum(dev, -0.5)), xp.log(x / m))


def _solve_increasing(fun: Callable, start: Any, lo: Any, hi: Any, max_iter: int) -> tuple[Any, Any, Any]:
    """Root of an increasing ``g`` per cell by bracketed Newton, all cells at once.

    ``fun(t) -> (g, g')`` with ``g' > 0``; the root lies in ``(lo, hi)`` (``hi``
    may be inf). The bracket shrinks with the sign of ``g``; a Newton step that
    leaves it is replaced by bisection (doubling while ``hi`` is inf). A cell
    stops once its relative step is below ``eps**0.75``: with quadratic
    convergence the next step would be round-off.

    Returns
    -------
    t, converged, n_iter : arrays of shape (cells,)
    """
    xp = array_api_compat.array_namespace(start)
    tol = float(xp.finfo(start.dtype).eps) ** 0.75
    t = start
    active = xp.ones(t.shape, dtype=xp.bool, device=array_api_compat.device(t))
    converged = ~active
    n_iter = xp.zeros(t.shape, dtype=xp.int32, device=array_api_compat.device(t))
    for _ in range(max_iter):
        g, dg = fun(t)
        lo = xp.where(g < 0, t, lo)
        hi = xp.where(g > 0, t, hi)
        newton = t - g / dg
        small = xp.abs(newton - t) <= tol * xp.abs(t)
        fallback = xp.where(hi < xp.inf, 0.5 * (lo + hi), 2.0 * t)
        step = xp.where(small | ((newton > lo) & (newton < hi)), newton, fallback)
        n_iter = n_iter + xp.astype(active, xp.int32)
        converged = converged | (active & small)
        t = xp.where(active, step, t)
        active = active & ~small
        if not bool(xp.any(active)):
            break
    return t, converged, n_iter


def _inverse_2x2(a: Any, b: Any, c: Any, xp: Any) -> tuple[Any, Any, Any]:
    """Inverse of the information ``[[a, b], [b, c]]``; NaN where it is not positive definite."""
    det = a * c - b * b
    safe, ok = _positive_part(det, xp)
    ok = ok & (a > 0)
    return tuple(xp.where(ok, v / safe, xp.nan) for v in (c, -b, a))


def _cov3(i: int, j: int, vii: Any, vij: Any, vjj: Any, xp: Any) -> Any:
    """(3, 3, cells) covariance with the (i, j) block filled, NaN elsewhere."""
    nan = xp.full_like(vii, xp.nan)
    rows = [[nan] * 3 for _ in range(3)]
    rows[i][i], rows[i][j], rows[j][i], rows[j][j] = vii, vij, vij, vjj
    return xp.stack([xp.stack(row) for row in rows])


def _finish(d: _Data, name: str, params: list, cov: Any, converged: Any, n_iter: Any, bad: Any) -> dict[str, Any]:
    """Assemble the fit dict; NaN / not converged for the columns that could not be fitted."""
    xp = d.xp
    logpdf = _FUNCTIONS[name][0]
    params = xp.stack([xp.astype(p, d.x.dtype) for p in params])
    # summed in float64: with a large shape the terms of a log-density cancel to a few float32 digits
    wide = [xp.astype(v, xp.float64) for v in (d.x, params, d.w)]
    loglik = xp.astype(xp.sum(wide[2] * logpdf(wide[0], wide[1]), axis=0), d.x.dtype)
    bad = d.bad | bad | ~xp.isfinite(loglik)
    return {
        "params": xp.where(bad, xp.nan, params),
        "loglik": xp.where(bad, xp.nan, loglik),
        "cov": xp.where(bad, xp.nan, xp.astype(cov, d.x.dtype)),
        "converged": converged & ~bad,
        "n_iter": xp.where(bad, 0, n_iter),
    }


def _closed_form(d: _Data) -> tuple[Any, Any]:
    """``converged`` (all True) and ``n_iter`` (all 0) of a closed-form fit."""
    xp, device = d.xp, array_api_compat.device(d.n)
    return xp.ones(d.n.shape, dtype=xp.bool, device=device), xp.zeros(d.n.shape, dtype=xp.int32, device=device)


# --------------------------------------------------------------------- fits


def _fit_normal(x: Any, *, max_iter: int = 100, valid: Any = None, loc: Any = None) -> dict[str, Any]:
    """Closed form: mean and sd (divisor n); cov = diag(sd^2 / n, sd^2 / (2n))."""
    d = _prepare(x, valid, loc, False, "normal")
    xp = d.xp
    m, s = _center(d.x, d)
    cov = _cov3(0, 1, s * s / d.n, xp.zeros_like(s), s * s / (2.0 * d.n), xp)
    return _finish(d, "normal", [m, s, xp.full_like(s, xp.nan)], cov, *_closed_form(d), ~(s > 0))


def _fit_lognormal(x: Any, *, max_iter: int = 100, valid: Any = None, loc: Any = None) -> dict[str, Any]:
    """Closed form on ``y = log(x / m)`` (see :func:`_log_ratio`; ``m`` the mean of x).

    scale = m exp(mean y), shape = sd(y); cov(scale, shape) = diag(scale^2 s^2 / n, s^2 / (2n)).
    """
    d = _prepare(x, valid, loc, True, "lognormal")
    xp = d.xp
    m, _ = _center(d.x, d)
    mu, s = _center(_log_ratio(d.x, m, xp), d)
    scale = m * xp.exp(mu)
    cov = _cov3(1, 2, (scale * s) ** 2 / d.n, xp.zeros_like(s), s * s / (2.0 * d.n), xp)
    return _finish(d, "lognormal", [xp.zeros_like(m), scale, s], cov, *_closed_form(d), ~(s > 0))


def _gamma_equation(a: Any) -> tuple[Any, Any]:
    """``h(a) = digamma(a) - log a`` and ``h'(a) = trigamma(a) - 1/a``, asymptotic series for a >= 100.

    The series avoid the cancellation of ``digamma(a) - log(a) ~ -1/(2a)`` at
    large shape (nearly constant data).
    """
    xp = array_api_compat.array_namespace(a)
    r = 1.0 / xp.maximum(a, 100.0)
    r2 = r * r
    h_big = -r / 2.0 - r2 * (1.0 / 12.0 - r2 * (1.0 / 120.0 - r2 * (1.0 / 252.0 - r2 / 240.0)))
    dh_big = r2 * (0.5 + r * (1.0 / 6.0 - r2 * (1.0 / 30.0 - r2 * (1.0 / 42.0 - r2 / 30.0))))
    big = a >= 100.0
    h = xp.where(big, h_big, special.digamma(a) - xp.log(a))
    dh = xp.where(big, dh_big, special.polygamma(1, a) - 1.0 / a)
    return h, dh


def _fit_gamma(x: Any, *, max_iter: int = 100, valid: Any = None, loc: Any = None) -> dict[str, Any]:
    """Gamma (loc 0) MLE: shape ``a`` solves ``log a - digamma(a) = s``, scale = mean / a.

    ``s = log(mean x) - mean(log x) = mean(d - log(1 + d))`` with ``d = x/mean - 1``
    (every term >= 0, no cancellation between two large logs). Newton from
    Minka's approximation ``a0 = (3 - s + sqrt((s-3)^2 + 24 s)) / (12 s)``,
    safeguarded by :func:`_solve_increasing`, in float64 (it costs one value
    per cell). cov(scale, a) = [[scale^2 psi'(a), -scale], [-scale, a]] / (n (a psi'(a) - 1)).
    """
    d = _prepare(x, valid, loc, True, "gamma")
    xp = d.xp
    m, _ = _center(d.x, d)
    s, ok = _positive_part(_mean((d.x - m) / m - _log_ratio(d.x, m, xp), d), xp)
    s = xp.astype(s, xp.float64)
    a0 = (3.0 - s + xp.sqrt((s - 3.0) ** 2 + 24.0 * s)) / (12.0 * s)

    def equation(a: Any) -> tuple[Any, Any]:
        h, dh = _gamma_equation(a)
        return h + s, dh

    a, converged, n_iter = _solve_increasing(equation, a0, xp.zeros_like(a0), xp.full_like(a0, xp.inf), max_iter)
    _, dh = _gamma_equation(a)
    scale = xp.astype(m, xp.float64) / a
    denom = xp.astype(d.n, xp.float64) * a * dh  # n (a trigamma(a) - 1) > 0
    cov = _cov3(1, 2, scale * scale * (dh + 1.0 / a) / denom, -scale / denom, a / denom, xp)
    return _finish(d, "gamma", [xp.zeros_like(m), scale, a], cov, converged, n_iter, ~ok)


def _fit_weibull(x: Any, *, max_iter: int = 100, valid: Any = None, loc: Any = None) -> dict[str, Any]:
    """Weibull (loc 0) MLE by Newton on the profile equation of the shape ``c``.

    With ``t = log(x / mean)`` standardized as ``z = (t - max t) / sd(t)`` (so
    ``z <= 0`` and ``exp(k z) <= 1`` never overflows) and ``k = c sd(t)``, the
    equation ``sum x^c log x / sum x^c - 1/c - mean(log x) = 0`` becomes
    ``g(k) = mean_k(z) - mean(z) - 1/k = 0`` with ``mean_k`` the mean weighted by
    ``exp(k z)``; ``g' = var_k(z) + 1/k^2 > 0``, the root exceeds
    ``-1/mean(z)``, and Newton starts from ``k = pi/sqrt(6)`` (moments of log x).
    Then ``scale^c = mean(x^c)``. The covariance inverts the observed information
    of (scale, c): ``[[c ((c+1) S0 - n) / scale^2, (n - S0 - c S1) / scale],
    [., n / c^2 + S2]]`` with ``S_j = sum (x/scale)^c log(x/scale)^j``.
    """
    d = _prepare(x, valid, loc, True, "weibull")
    xp = d.xp
    m, _ = _center(d.x, d)
    t = _log_ratio(d.x, m, xp)
    t_max = xp.max(t, axis=0)
    _, sd = _center(t, d)
    sd, ok = _positive_part(sd, xp)
    z = (t - t_max) / sd
    z_bar = _mean(z, d)
    z_bar = xp.where(z_bar < 0, z_bar, -1.0)  # < 0 whenever sd(t) > 0; the guard keeps -1/z_bar finite

    def equation(k: Any) -> tuple[Any, Any]:
        e = d.w * xp.exp(k * z)
        s0 = xp.sum(e, axis=0)
        zk = xp.sum(e * z, axis=0) / s0
        return zk - z_bar - 1.0 / k, xp.sum(e * (z - zk) ** 2, axis=0) / s0 + 1.0 / (k * k)

    low = -1.0 / z_bar
    start = xp.maximum(low, math.pi / math.sqrt(6.0))
    k, converged, n_iter = _solve_increasing(equation, start, low, xp.full_like(low, xp.inf), max_iter)
    c = k / sd
    scale = m * xp.exp(t_max + xp.log(_mean(xp.exp(k * z), d)) / c)
    log_y = xp.log(d.x / scale)
    power = d.w * xp.exp(xp.minimum(c * log_y, _log_max(d.x.dtype, xp)))
    s0, s1, s2 = (xp.sum(power * log_y**j, axis=0) for j in range(3))
    info = (c * ((c + 1.0) * s0 - d.n) / scale**2, (d.n - s0 - c * s1) / scale, d.n / c**2 + s2)
    cov = _cov3(1, 2, *_inverse_2x2(*info, xp), xp)
    return _finish(d, "weibull", [xp.zeros_like(m), scale, c], cov, converged, n_iter, ~ok)


def _fit_gumbel(sign: float) -> Callable[..., dict[str, Any]]:
    """Gumbel MLE (sign +1: gumbel_r, maxima; -1: gumbel_l, minima, fitted as gumbel_r of -x)."""
    name = "gumbel_r" if sign > 0 else "gumbel_l"

    def fit(x: Any, *, max_iter: int = 100, valid: Any = None, loc: Any = None) -> dict[str, Any]:
        """Bracketed Newton on the scale of standardized columns ``z = sign (x - mean) / sd``.

        The scale ``b`` solves ``g(b) = b - mean(z) + sum z w / sum w = 0`` with
        ``w = exp(-(z - min z) / b)`` (the shift keeps ``0 < w <= 1``); ``g`` is
        increasing, ``g'(b) = 1 + var_w(z) / b^2``, its root lies in
        ``(0, mean(z) - min z]``; Newton starts from the moment scale
        ``sqrt(6)/pi``. Then ``loc = min z - b log(mean(w))``. With ``y = (z - loc)/b``
        the observed information of (loc, scale) in z units is
        ``[[A, B], [B, C]] / b^2``, ``A = sum e^-y``, ``B = sum (1 - e^-y + y e^-y)``,
        ``C = sum (2 y (1 - e^-y) + y^2 e^-y) - n``.
        """
        d = _prepare(x, valid, loc, False, name)
        xp = d.xp
        m, s = _center(d.x, d)
        s, ok = _positive_part(s, xp)
        z = sign * (d.x - m) / s
        z_min = xp.min(z, axis=0)
        z_bar = _mean(z, d)
        shifted = z - z_min

        def equation(b: Any) -> tuple[Any, Any]:
            e = d.w * xp.exp(-shifted / b)
            s0 = xp.sum(e, axis=0)
            zw = xp.sum(e * z, axis=0) / s0
            return b - z_bar + zw, 1.0 + xp.sum(e * (z - zw) ** 2, axis=0) / (s0 * b * b)

        high = z_bar - z_min
        start = xp.minimum(xp.full_like(high, math.sqrt(6.0) / math.pi), 0.5 * high)
        b, converged, n_iter = _solve_increasing(equation, start, xp.zeros_like(high), high, max_iter)
        loc_z = z_min - b * xp.log(_mean(xp.exp(-shifted / b), d))
        y = xp.maximum((z - loc_z) / b, -_log_max(z.dtype, xp))
        e = xp.exp(-y)
        info = [xp.sum(d.w * v, axis=0) for v in (e, 1.0 - e + y * e, 2.0 * y * (1.0 - e) + y * y * e)]
        v_loc, v_cross, v_scale = _inverse_2x2(info[0], info[1], info[2] - d.n, xp)
        factor = (s * b) ** 2  # b^2 from the information, s^2 from z to x units
        cov = _cov3(0, 1, factor * v_loc, sign * factor * v_cross, factor * v_scale, xp)
        return _finish(d, name, [m + sign * s * loc_z, s * b, xp.full_like(b, xp.nan)], cov, converged, n_iter, ~ok)

    return fit


_FITS = {
    "normal": _fit_normal,
    "lognormal": _fit_lognormal,
    "gamma": _fit_gamma,
    "weibull": _fit_weibull,
    "gumbel_r": _fit_gumbel(1.0),
    "gumbel_l": _fit_gumbel(-1.0),
}

FAMILIES_2P: dict[str, Family] = {name: Family(name, 2, fit, *_FUNCTIONS[name]) for name, fit in _FITS.items()}
"""The six two-parameter families by name."""
