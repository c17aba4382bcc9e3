"""Generalized extreme value (GEV) and generalized Pareto (GPD) laws fitted per grid cell.

Parameterisation (shape ``xi > 0``: heavy upper tail; ``xi < 0``: bounded above):

* GEV ``(loc mu, scale sigma, shape xi)``, ``F(x) = exp(-t^(-1/xi))`` with
  ``t = 1 + xi (x - mu)/sigma > 0``; scipy's ``genextreme(c=-xi, loc, scale)``;
  ``xi = 0`` is the Gumbel law.
* GPD ``(threshold u, scale sigma, shape xi)`` of the values above ``u``,
  ``F(x) = 1 - t^(-1/xi)`` with ``t = 1 + xi (x - u)/sigma``; scipy's
  ``genpareto(c=xi, loc=u, scale)``. The threshold is given, not estimated.

Maximum likelihood runs on all cells at once with :func:`pipeline.kernels.newton.maximize`:
each column is standardized (GEV: ``z = (x - mean)/sd``; GPD: excesses over
``u`` divided by their mean), the parameters are ``(mu, eta = log sigma, xi)``
and the start comes from probability-weighted moments (Hosking, Wallis & Wood
1985; Hosking & Wallis 1987), moved inside the support. The gradient and
Hessian are analytic. With ``y = (x - mu)/sigma``, ``w = xi y``, ``t = 1 + w``,
``u = log1p(w)``, ``A = u/xi``, ``a = exp(-A)``, one GEV observation adds
``l = -eta - u - A - a`` and

* ``l_y = (a - 1 - xi)/t``, ``l_xi = -y/t - B (1 - a)``, ``B = dA/dxi = y^2 g(w)``,
  ``g(w) = (w/t - u)/w^2``;
* ``l_yy = (1 + xi)(xi - a)/t^2``, ``l_yxi = -(a B + 1)/t - y l_y/t``,
  ``l_xixi = y^2/t^2 - B_xi (1 - a) - a B^2``, ``B_xi = y^3 g'(w)``;

``log1p(w)/w``, ``g`` and ``g'`` lose all precision as ``w -> 0`` and are
summed as power series there (the Gumbel limit ``xi = 0`` included). The chain
rule to ``(mu, eta)`` is ``d/dmu = -(1/sigma) d/dy`` and ``d/deta = -1 - y d/dy``.
Likelihoods are ``-inf`` outside the support and for ``xi <= -1``, where the GEV
likelihood is unbounded (Smith 1985).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import array_api_compat

from pipeline.kernels import newton, special
from pipeline.kernels.families import Family

MIN_OBS = 5  # fewer valid values than this: no fit
_MAX_A = 200.0  # exp(-A) is capped at exp(200) in the objectives: l ~ -1e87 already rejects the point,
# while products of a with y^2 and 1/t^2 stay finite (the fits run in float64)
_BOX = (1e4, 20.0, -1.0, 5.0)  # standardized domain: |mu|, |eta|, xi_min (open), xi_max
_STEP = (1.0, 1.0, 0.25)  # largest Newton step of (mu, eta, xi) in standardized units
_XI_EDGE = -0.999  # a "maximum" at xi = -1 is the edge of the domain, not a maximum: not converged
# power-series coefficients in w = xi y of log1p(w)/w, g(w) and g'(w) (see the module docstring)
_H = tuple((-1.0) ** j / (j + 1) for j in range(8))
_G = tuple((-1.0) ** (j + 1) * (j + 1) / (j + 2) for j in range(8))
_GP = tuple((-1.0) ** j * (j + 1) * (j + 2) / (j + 3) for j in range(8))


def _series_cut(dtype: Any, xp: Any) -> tuple[float, int]:
    """|w| below which the series replace the closed forms, and their number of terms.

    The truncation ``|w|^terms`` stays below the unit round-off, and the closed
    forms lose ``eps/|w|`` (``B``) and ``eps/w^2`` (``B_xi``) relative accuracy
    above the cut: ~1e-13 and ~1e-10 in float64, ~1e-6 and ~1e-5 in float32.
    """
    return (1e-3, 6) if dtype == xp.float64 else (0.1, 8)


def max_exp(dtype: Any, xp: Any) -> float:
    """Largest argument of ``exp`` that does not overflow in ``dtype`` (with 1 % to spare)."""
    return 0.99 * math.log(float(xp.finfo(dtype).max))


def _poly(w: Any, coef: tuple[float, ...], terms: int) -> Any:
    """Horner's rule, accumulated in place in one fresh array (not one new array per operation)."""
    out = w * coef[terms - 1]
    out += coef[terms - 2]
    for c in coef[terms - 3 :: -1]:
        out *= w
        out += c
    return out


def _log_terms(y: Any, xi: Any, off: Any, xp: Any, order: int) -> tuple[Any, ...]:
    """Shared pieces of both laws: ``inside, u, A``; ``order >= 1`` adds ``r = 1/t, B``, ``order 2`` also ``B_xi``.

    Entries where ``off`` (left out by a zero weight) count as inside; they and
    the points outside the support are evaluated at ``w = 0``. With ``g`` at
    hand, ``log1p(w)/w = r - w g`` needs no series of its own. The in-place
    updates touch only arrays created here (samplers call this at every step).
    """
    w = xi * y
    keep = w > -1.0
    inside = keep if off is None else keep | off
    w = xp.where(keep, w, 0.0)
    u = xp.log1p(w)
    cut, terms = _series_cut(w.dtype, xp)
    small = xp.abs(w) < cut
    ws = xp.where(small, w, 0.0)
    wb = xp.where(small, 1.0, w)
    if order == 0:
        return inside, u, y * xp.where(small, _poly(ws, _H, terms), u / wb)
    r = 1.0 / (1.0 + w)
    g = w * r
    g -= u
    g /= wb * wb
    g = xp.where(small, _poly(ws, _G, terms), g)
    big_a = xp.where(small, r - w * g, u / wb)
    big_a *= y
    y2 = y * y
    if order == 1:
        return inside, u, big_a, r, y2 * g
    gp = xp.where(small, _poly(ws, _GP, terms), -(r * r + 2.0 * g) / wb)
    return inside, u, big_a, r, y2 * g, y2 * y * gp


def _box(theta: Any, xp: Any) -> tuple[Any, list[Any]]:
    """Whether each cell's standardized (mu, eta, xi) lies in the domain, and the rows moved inside."""
    mu_max, eta_max, xi_min, xi_max = _BOX
    p = theta.shape[0]
    mu, eta, xi = theta[0, ...], theta[p - 2, ...], theta[p - 1, ...]
    ok = (xp.abs(mu) <= mu_max) & (xp.abs(eta) <= eta_max) & (xi > xi_min) & (xi <= xi_max)
    return ok, [xp.where(ok, theta[i, ...], 0.0) for i in range(p)]


def _sum(a: Any, weight: Any, xp: Any) -> Any:
    return xp.sum(a if weight is None else a * weight, axis=0)


def gev_objective(theta: Any, z: Any, weight: Any = None, hessian: bool = True) -> tuple[Any, Any, Any]:
    """GEV log-likelihood, gradient and Hessian in ``(mu, eta, xi)`` for columns ``z`` (n, k).

    ``weight`` (n, k) of 0/1 selects observations (None: all). Returns ``-inf``
    (with finite derivatives) outside the support or the domain. With
    ``hessian=False`` the second derivatives are skipped and ``None`` is
    returned in their place (samplers need only the gradient). The in-place
    updates below only touch arrays created here.
    """
    xp = array_api_compat.array_namespace(theta, z)
    ok, (mu, eta, xi) = _box(theta, xp)
    inv_s = xp.exp(-eta)
    y = z - mu
    y *= inv_s
    off = None if weight is None else weight == 0.0
    inside, u, big_a, r, b, *bx = _log_terms(y, xi, off, xp, 2 if hessian else 1)
    a = xp.exp(xp.minimum(-big_a, _MAX_A))
    om = 1.0 - a
    yr = y * r
    ly = a - (1.0 + xi)
    ly *= r
    ly_y = ly * y
    n = float(z.shape[0]) if weight is None else xp.sum(weight, axis=0)
    s_ly, s_ly_y = _sum(ly, weight, xp), _sum(ly_y, weight, xp)
    terms = u + big_a
    terms += a
    loglik = -_sum(terms, weight, xp) - n * eta
    loglik = xp.where(ok & xp.all(inside, axis=0), loglik, xp.full_like(loglik, -xp.inf))
    terms = b * om
    terms += yr
    grad = xp.stack([-s_ly * inv_s, -n - s_ly_y, -_sum(terms, weight, xp)])
    if not hessian:
        return loglik, grad, None
    lyy = (1.0 + xi) * (xi - a) * r * r
    lyy_y = lyy * y
    lyx = -r * (a * b + 1.0 + ly_y)
    h_mm = _sum(lyy, weight, xp) * inv_s * inv_s
    h_me = (_sum(lyy_y, weight, xp) + s_ly) * inv_s
    h_ee = _sum(lyy_y * y, weight, xp) + s_ly_y
    h_mx = -_sum(lyx, weight, xp) * inv_s
    h_ex = -_sum(lyx * y, weight, xp)
    h_xx = _sum(yr * yr - bx[0] * om - a * b * b, weight, xp)
    hess = xp.stack([xp.stack([h_mm, h_me, h_mx]), xp.stack([h_me, h_ee, h_ex]), xp.stack([h_mx, h_ex, h_xx])])
    return loglik, grad, hess


def gpd_objective(theta: Any, e: Any, weight: Any = None) -> tuple[Any, Any, Any]:
    """GPD log-likelihood, gradient and Hessian in ``(eta, xi)`` for excesses ``e`` (n, k) >= 0."""
    xp = array_api_compat.array_namespace(theta, e)
    ok, (eta, xi) = _box(theta, xp)
    y = e * xp.exp(-eta)
    off = None if weight is None else weight == 0.0
    inside, u, big_a, r, b, bx = _log_terms(y, xi, off, xp, 2)
    ly = -(1.0 + xi) * r
    n = float(e.shape[0]) if weight is None else xp.sum(weight, axis=0)
    s_ly_y = _sum(ly * y, weight, xp)
    loglik = _sum(-u - big_a, weight, xp) - n * eta
    grad = xp.stack([-n - s_ly_y, _sum(-y * r - b, weight, xp)])
    h_ee = _sum((1.0 + xi) * xi * (y * r) ** 2, weight, xp) + s_ly_y
    h_ex = -_sum((-r + (1.0 + xi) * y * r * r) * y, weight, xp)
    h_xx = _sum((y * r) ** 2 - bx, weight, xp)
    hess = xp.stack([xp.stack([h_ee, h_ex]), xp.stack([h_ex, h_xx])])
    good = ok & xp.all(inside, axis=0)
    return xp.where(good, loglik, xp.full_like(loglik, -xp.inf)), grad, hess


# ------------------------------------------------------------- densities


def _unpack(params: Any) -> tuple[Any, Any, Any]:
    return params[0, ...], params[1, ...], params[2, ...]


def _std_terms(x: Any, params: Any) -> tuple[Any, ...]:
    """``xp, y, xi, outside, A`` for the densities (NaN ``x`` stays NaN, never 'outside')."""
    xp = array_api_compat.array_namespace(x, params)
    loc, scale, xi = _unpack(params)
    y = (x - loc) / scale
    xi = xp.broadcast_arrays(xi, y)[0]
    inside, u, big_a = _log_terms(y, xi, None, xp, 0)
    return xp, y, xi, ~inside & ~xp.isnan(y), u, big_a


def gev_logpdf(x: Any, params: Any) -> Any:
    """GEV log-density at ``x`` (any shape broadcasting against ``params`` rows (cells,))."""
    xp, _, _, out, u, big_a = _std_terms(x, params)
    cap = max_exp(big_a.dtype, xp)
    huge = -big_a > cap
    val = -xp.log(params[1, ...]) - u - big_a - xp.exp(xp.minimum(-big_a, cap))
    return xp.where(out | huge, xp.full_like(val, -xp.inf), val)


def _gev_a(x: Any, params: Any) -> tuple[Any, ...]:
    xp, _, xi, out, _, big_a = _std_terms(x, params)
    cap = max_exp(big_a.dtype, xp)
    a = xp.exp(xp.minimum(-big_a, cap))
    return xp, xi, out, xp.where(-big_a > cap, xp.inf, a)


def gev_cdf(x: Any, params: Any) -> Any:
    """GEV distribution function ``exp(-t^(-1/xi))``; 0 below / 1 above the support."""
    xp, xi, out, a = _gev_a(x, params)
    return xp.where(out, xp.astype(xi <= 0, a.dtype), xp.exp(-a))  # below a lower / above an upper end


def gev_sf(x: Any, params: Any) -> Any:
    """GEV survival function ``-expm1(-t^(-1/xi))``, accurate far in the upper tail."""
    xp, xi, out, a = _gev_a(x, params)
    return xp.where(out, xp.astype(xi > 0, a.dtype), -xp.expm1(-a))


def expm1_ratio(xi: Any, big_l: Any) -> Any:
    """``q = expm1(xi L)/xi`` (``L`` at ``xi = 0``); ``+inf`` where ``xi L`` would overflow."""
    xp = array_api_compat.array_namespace(xi, big_l)
    s = xi * big_l
    over = s > max_exp(s.dtype, xp)
    s = xp.where(over, 0.0, s)
    zero = s == 0.0
    ratio = xp.where(zero, 1.0, xp.expm1(s) / xp.where(zero, 1.0, s))
    return xp.where(over, xp.full_like(s, xp.inf), big_l * ratio)


def _quantile(xi: Any, big_l_of: Any, p: Any, lower_end: Any, upper_end: Any) -> Any:
    """``expm1(xi L(p))/xi`` for ``0 < p < 1`` with the support ends at p = 0 and 1."""
    xp = array_api_compat.array_namespace(p)
    inner = (p > 0.0) & (p < 1.0)
    q = expm1_ratio(xi, big_l_of(xp.where(inner, p, 0.5)))
    q = xp.where(p == 0.0, lower_end, xp.where(p == 1.0, upper_end, q))
    return xp.where(inner | (p == 0.0) | (p == 1.0), q, xp.full_like(q, xp.nan))


def _ends(xi: Any, xp: Any) -> tuple[Any, Any]:
    """Standardized support ends ``(-1/xi or -inf, -1/xi or +inf)`` of both laws."""
    inv = -1.0 / xp.where(xi == 0.0, 1.0, xi)
    inf = xp.full_like(inv, xp.inf)
    return xp.where(xi > 0, inv, -inf), xp.where(xi < 0, inv, inf)


def gev_ppf(p: Any, params: Any) -> Any:
    """GEV quantile ``mu + sigma ((-log p)^(-xi) - 1)/xi`` (expm1 form: no cancellation near xi = 0)."""
    xp = array_api_compat.array_namespace(p, params)
    loc, scale, xi = _unpack(params)
    xi = xp.broadcast_arrays(xi, p)[0]
    lo, hi = _ends(xi, xp)
    return loc + scale * _quantile(xi, lambda q: -xp.log(-xp.log(q)), p, lo, hi)


def gpd_logpdf(x: Any, params: Any) -> Any:
    """GPD log-density ``-log sigma - (1 + 1/xi) log1p(xi y)`` for ``y = (x - u)/sigma >= 0``."""
    xp, y, _, out, u, big_a = _std_terms(x, params)
    val = -xp.log(params[1, ...]) - u - big_a
    return xp.where(out | (y < 0), xp.full_like(val, -xp.inf), val)


def gpd_sf(x: Any, params: Any) -> Any:
    """GPD survival function ``t^(-1/xi) = exp(-A)``: 1 below the threshold, 0 beyond a bounded tail."""
    xp, y, _, out, _, big_a = _std_terms(x, params)
    sf = xp.exp(-xp.maximum(big_a, 0.0))
    return xp.where(y < 0, 1.0, xp.where(out, 0.0, sf))


def gpd_cdf(x: Any, params: Any) -> Any:
    """GPD distribution function ``-expm1(-A)``: 0 below the threshold, 1 beyond a bounded tail."""
    xp, y, _, out, _, big_a = _std_terms(x, params)
    cdf = -xp.expm1(-xp.maximum(big_a, 0.0))
    return xp.where(y < 0, 0.0, xp.where(out, 1.0, cdf))


def gpd_ppf(p: Any, params: Any) -> Any:
    """GPD quantile ``u + sigma ((1 - p)^(-xi) - 1)/xi``."""
    xp = array_api_compat.array_namespace(p, params)
    loc, scale, xi = _unpack(params)
    xi = xp.broadcast_arrays(xi, p)[0]
    _, hi = _ends(xi, xp)
    return loc + scale * _quantile(xi, lambda q: -xp.log1p(-q), p, xp.zeros_like(xi), hi)


# --------------------------------------------------------------- fitting


def _mask(x: Any, valid: Any | None, xp: Any) -> Any:
    if valid is None:
        return xp.isfinite(x)
    if tuple(valid.shape) != tuple(x.shape):
        raise ValueError(f"valid must have the shape of x {tuple(x.shape)}; got {tuple(valid.shape)}.")
    return valid & xp.isfinite(x)


def _check(x: Any) -> Any:
    xp = array_api_compat.array_namespace(x)
    if x.ndim != 2 or not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"x must be a 2-D real floating (sample, cell) array; got {x.ndim}-D {x.dtype}.")
    return xp


def as_float64(a: Any, xp: Any) -> Any:
    """``a`` in float64: likelihood sums need it (a float32 sum of 50 terms is off by ~1e-6 relative)."""
    return a if a is None or a.dtype == xp.float64 else xp.astype(a, xp.float64)


def _cast_result(out: dict[str, Any], dtype: Any, xp: Any) -> dict[str, Any]:
    """Floating results back to the input's dtype."""
    return {k: xp.astype(v, dtype) if xp.isdtype(v.dtype, "real floating") else v for k, v in out.items()}


def _column_stats(v: Any, mask: Any, xp: Any) -> tuple[Any, Any, Any, Any]:
    """Weights (0/1), count, mean, and whether each column has enough distinct valid values."""
    weight = xp.astype(mask, v.dtype)
    count = xp.sum(weight, axis=0)
    safe = xp.maximum(count, 1.0)
    mean = xp.sum(xp.where(mask, v, 0.0), axis=0) / safe
    mean = mean + xp.sum(xp.where(mask, v - mean, 0.0), axis=0) / safe  # one correction pass
    vmax = xp.max(xp.where(mask, v, -xp.inf), axis=0)
    vmin = xp.min(xp.where(mask, v, xp.inf), axis=0)
    usable = (count >= MIN_OBS) & (vmax > vmin)
    return weight, count, mean, usable


def _l_moments(v: Any, mask: Any, count: Any, xp: Any) -> tuple[Any, Any, Any]:
    """Sample L-moments ``l1, l2, l3`` of the valid values of each column (unbiased PWMs b0, b1, b2)."""
    n = v.shape[0]
    s = xp.sort(xp.where(mask, v, xp.inf), axis=0)
    i = xp.arange(n, dtype=v.dtype, device=array_api_compat.device(v))[:, None]
    s = xp.where(i < count, s, 0.0)
    c = xp.maximum(count, 3.0)
    b0 = xp.sum(s, axis=0) / c
    b1 = xp.sum(i * s, axis=0) / (c * (c - 1.0))
    b2 = xp.sum(i * (i - 1.0) * s, axis=0) / (c * (c - 1.0) * (c - 2.0))
    return b0, 2.0 * b1 - b0, 6.0 * b2 - 6.0 * b1 + b0


def _xi_inside(xi: Any, ymin: Any, ymax: Any, xp: Any) -> Any:
    """Shrink ``xi`` toward 0 until ``1 + xi y >= 0.2`` for all standardized values in [ymin, ymax]."""
    tiny = 1e-12
    cap_hi = 0.8 / xp.maximum(-ymin, tiny)
    cap_lo = -0.8 / xp.maximum(ymax, tiny)
    return xp.where(xi > 0, xp.minimum(xi, cap_hi), xp.maximum(xi, cap_lo))


def gev_start(z: Any, mask: Any, count: Any, xp: Any) -> Any:
    """PWM/L-moment start ``(mu, eta, xi)`` (Hosking, Wallis & Wood 1985), inside the support."""
    l1, l2, l3 = _l_moments(z, mask, count, xp)
    l2 = xp.maximum(l2, 1e-6)
    c = 2.0 / (3.0 + l3 / l2) - math.log(2.0) / math.log(3.0)
    k = xp.clip(7.8590 * c + 2.9554 * c * c, -0.5, 0.5)  # Hosking's k = -xi
    k = xp.where(xp.abs(k) < 1e-6, 1e-6, k)
    g1 = special.gamma(1.0 + k)
    sigma = l2 * k / (-xp.expm1(-k * math.log(2.0)) * g1)
    mu = l1 - sigma * (1.0 - g1) / k
    ymin = (xp.min(xp.where(mask, z, xp.inf), axis=0) - mu) / sigma
    ymax = (xp.max(xp.where(mask, z, -xp.inf), axis=0) - mu) / sigma
    return xp.stack([mu, xp.log(sigma), _xi_inside(-k, ymin, ymax, xp)])


def _finish(res: dict[str, Any], usable: Any, params: list[Any], jac: list[Any], shift: Any, xp: Any) -> dict[str, Any]:
    """Map a standardized Newton result to the Fit dict: NaN where unusable, cov through diag(jac)."""
    p = len(params)
    cov_s = newton.spd_inverse(-res["hess"])
    nan = xp.full_like(params[0], xp.nan)
    good = usable & xp.isfinite(res["loglik"])
    cov = [[xp.where(good, cov_s[i, j, ...] * jac[i] * jac[j], nan) for j in range(p)] for i in range(p)]
    return {
        "params": xp.stack([xp.where(good, v, nan) for v in params]),
        "loglik": xp.where(good, res["loglik"] - shift, nan),
        "cov": xp.stack([xp.stack(row) for row in cov]),
        "converged": res["converged"] & good & (params[-1] > _XI_EDGE),
        "n_iter": res["n_iter"],
    }


class Standardized(NamedTuple):
    """Columns on a standard scale: ``z = (x - center)/scale`` (0 where not valid)."""

    z: Any
    weight: Any  # (n, cells) 0/1 of the valid entries, None when all are
    mask: Any
    count: Any
    center: Any
    scale: Any
    usable: Any


def standardize_gev(x: Any, valid: Any | None = None) -> Standardized:
    """``z = (x - mean)/sd`` of the valid entries of each column; unusable columns get a harmless ramp."""
    xp = _check(x)
    mask = _mask(x, valid, xp)
    weight, count, mean, usable = _column_stats(x, mask, xp)
    dev = xp.where(mask, x - mean, 0.0)
    sd = xp.where(usable, xp.sqrt(xp.sum(dev * dev, axis=0) / xp.maximum(count, 1.0)), 1.0)
    ramp = xp.linspace(-1.0, 1.0, x.shape[0], dtype=x.dtype, device=array_api_compat.device(x))[:, None]
    z = xp.where(usable, dev / sd, ramp)
    full = bool(xp.all(mask))
    mask = xp.where(usable, mask, ramp == ramp)
    weight = None if full else xp.astype(mask, x.dtype)
    return Standardized(z, weight, mask, xp.where(usable, count, float(x.shape[0])), mean, sd, usable)


def standardize_gpd(x: Any, threshold: Any, valid: Any | None = None) -> Standardized:
    """Excesses over ``threshold`` (cells,) divided by their mean; entries below it are not valid."""
    xp = _check(x)
    u = xp.broadcast_to(xp.asarray(threshold, dtype=x.dtype, device=array_api_compat.device(x)), (x.shape[1],))
    mask = _mask(x, valid, xp)
    mask = mask & (xp.where(mask, x - u, 0.0) >= 0.0)
    excess = xp.where(mask, x - u, 0.0)
    weight, count, mean, usable = _column_stats(excess, mask, xp)
    usable = usable & (mean > 0)
    mean = xp.where(usable, mean, 1.0)
    ramp = xp.linspace(0.5, 1.5, x.shape[0], dtype=x.dtype, device=array_api_compat.device(x))[:, None]
    e = xp.where(usable, excess / mean, ramp)
    mask = xp.where(usable, mask, ramp == ramp)
    count = xp.where(usable, count, float(x.shape[0]))
    return Standardized(e, xp.astype(mask, x.dtype), mask, count, u, mean, usable)


def gev_fit(x: Any, *, max_iter: int = 100, valid: Any | None = None, loc: Any | None = None) -> dict[str, Any]:
    """Maximum-likelihood GEV ``(loc, scale, shape)`` of every column of ``x`` (sample, cell).

    NaN entries, and those where ``valid`` is False, are left out. ``loc`` is not
    used (the GEV location is estimated). Returns the Fit dict of
    :class:`~pipeline.kernels.families.Family`; ``cov`` is the inverse observed
    information in ``(loc, scale, shape)`` units. Cells whose likelihood rises
    toward ``xi = -1`` (no regular maximum) are flagged not converged.
    """
    xp = _check(x)
    st = standardize_gev(as_float64(x, xp), valid)
    theta0 = gev_start(st.z, st.mask, st.count, xp)
    data = (st.z,) if st.weight is None else (st.z, st.weight)
    res = newton.maximize(gev_objective, theta0, data, max_iter=max_iter, max_step=_STEP)
    mu, eta, xi = res["theta"][0, ...], res["theta"][1, ...], res["theta"][2, ...]
    sd = st.scale
    scale = sd * xp.exp(eta)
    jac = [sd, scale, xp.ones_like(sd)]
    out = _finish(res, st.usable, [st.center + sd * mu, scale, xi], jac, st.count * xp.log(sd), xp)
    return _cast_result(out, x.dtype, xp)


def gpd_start(e: Any, mask: Any, count: Any, xp: Any) -> Any:
    """PWM start ``(eta, xi)`` of the GPD with known threshold (Hosking & Wallis 1987), inside the support."""
    l1, l2, _ = _l_moments(e, mask, count, xp)
    l2 = xp.maximum(l2, 1e-6 * l1)
    xi = xp.clip(2.0 - l1 / l2, -0.5, 0.5)
    sigma = l1 * (1.0 - xi)
    ymax = xp.max(xp.where(mask, e, 0.0), axis=0) / sigma
    return xp.stack([xp.log(sigma), _xi_inside(xi, xp.zeros_like(ymax), ymax, xp)])


def gpd_fit(x: Any, *, loc: Any, valid: Any | None = None, max_iter: int = 100) -> dict[str, Any]:
    """Maximum-likelihood GPD ``(u, scale, shape)`` above the threshold ``loc = u`` (cells,).

    ``x`` (sample, cell) holds the values (not the excesses); the ones where
    ``valid`` is False, NaN or below ``u`` are left out, so ragged exceedance
    series come as NaN-padded columns. ``cov`` has NaN in the threshold row and
    column (it is fixed).
    """
    xp = _check(x)
    if loc is None:
        raise ValueError("gpd fits need the threshold of each cell as loc=(cells,) array.")
    st = standardize_gpd(as_float64(x, xp), loc, valid)
    theta0 = gpd_start(st.z, st.mask, st.count, xp)
    res = newton.maximize(gpd_objective, theta0, (st.z, st.weight), max_iter=max_iter, max_step=_STEP[1:])
    scale = st.scale * xp.exp(res["theta"][0, ...])
    jac = [scale, xp.ones_like(scale)]
    out = _finish(res, st.usable, [scale, res["theta"][1, ...]], jac, st.count * xp.log(st.scale), xp)
    nan = xp.full_like(scale, xp.nan)
    out["params"] = xp.concat([xp.where(st.usable, st.center, nan)[None, :], out["params"]])
    cov = out["cov"]
    rows = [[nan, nan, nan]] + [[nan, cov[i, 0, ...], cov[i, 1, ...]] for i in range(2)]
    out["cov"] = xp.stack([xp.stack(row) for row in rows])
    return _cast_result(out, x.dtype, xp)


# --------------------------------------------------------- non-stationary


def _ns_objective(theta: Any, z: Any, c: Any, weight: Any) -> tuple[Any, Any, Any]:
    """GEV with ``mu_i = a0 + a1 c_i`` and ``eta_i = e0 (+ e1 c_i)``; theta (4 or 5, k)."""
    xp = array_api_compat.array_namespace(theta, z)
    p = theta.shape[0]
    trend = p == 5
    mu = theta[0, ...] + theta[1, ...] * c
    eta = theta[2, ...] + (theta[3, ...] * c if trend else xp.zeros_like(c))
    xi = theta[p - 1, ...]
    mu_max, eta_max, xi_min, xi_max = _BOX
    ok = xp.all((xp.abs(mu) <= mu_max) & (xp.abs(eta) <= eta_max), axis=0) & (xi > xi_min) & (xi <= xi_max)
    mu, eta, xi = xp.where(ok, mu, 0.0), xp.where(ok, eta, 0.0), xp.where(ok, xi, 0.0)
    inv_s = xp.exp(-eta)
    y = (z - mu) * inv_s
    inside, u, big_a, r, b, bx = _log_terms(y, xi, weight == 0.0, xp, 2)
    a = xp.exp(xp.minimum(-big_a, _MAX_A))
    om = 1.0 - a
    ly = (a - 1.0 - xi) * r
    lyy = (1.0 + xi) * (xi - a) * r * r
    lyx = -r * (a * b + 1.0 + ly * y)
    # per-observation derivatives in the natural parameters (mu_i, eta_i, xi), weighted
    grad_n = [-ly * inv_s * weight, (-1.0 - ly * y) * weight, (-y * r - b * om) * weight]
    hess_n = {
        (0, 0): lyy * inv_s * inv_s,
        (0, 1): (lyy * y + ly) * inv_s,
        (1, 1): (lyy * y + ly) * y,
        (0, 2): -lyx * inv_s,
        (1, 2): -lyx * y,
        (2, 2): (y * r) ** 2 - bx * om - a * b * b,
    }
    design = [(0, None), (0, c), (1, None)] + ([(1, c)] if trend else []) + [(2, None)]
    grad = xp.stack([xp.sum(grad_n[k] if v is None else grad_n[k] * v, axis=0) for k, v in design])
    rows = [[None] * p for _ in range(p)]
    for i, (ki, vi) in enumerate(design):
        for j in range(i, p):
            kj, vj = design[j]
            term = hess_n[(min(ki, kj), max(ki, kj))] * weight
            term = term if vi is None else term * vi
            rows[i][j] = rows[j][i] = xp.sum(term if vj is None else term * vj, axis=0)
    loglik = xp.sum((-u - big_a - a - eta) * weight, axis=0)
    good = ok & xp.all(inside, axis=0)
    return xp.where(good, loglik, -xp.inf), grad, xp.stack([xp.stack(row) for row in rows])


def fit_nonstationary(
    x: Any, covariate: Any, *, scale_trend: bool = False, valid: Any | None = None, max_iter: int = 100
) -> dict[str, Any]:
    """GEV with a linear trend in the location (and optionally the log-scale) along ``covariate``.

    ``mu_i = mu0 + mu1 c_i`` and ``sigma_i = sigma0 exp(eta1 c_i)`` (``eta1 = 0``
    unless ``scale_trend``), ``xi`` constant. The covariate (time in years, an
    index) is standardized per cell for the fit; the start is the stationary
    fit with zero trends.

    Parameters
    ----------
    x : array (sample, cell)
    covariate : array (sample,) or (sample, cell)

    Returns
    -------
    dict
        ``params`` (p, cell) as ``(mu0, mu1, sigma0, [eta1], xi)``, ``loglik``,
        ``cov`` (p, p, cell), ``converged``, ``n_iter`` (stationary plus trend
        iterations).
    """
    xp = _check(x)
    c = xp.asarray(covariate, dtype=xp.float64, device=array_api_compat.device(x))
    shape = tuple(c.shape)
    c = c[:, None] if c.ndim == 1 else c
    if c.ndim != 2 or c.shape[0] != x.shape[0] or c.shape[1] not in (1, x.shape[1]):
        raise ValueError(f"covariate must have shape ({x.shape[0]},) or {tuple(x.shape)}; got {shape}.")
    st = standardize_gev(as_float64(x, xp), valid)
    weight = xp.astype(st.mask, xp.float64)
    cbar = xp.sum(c * weight, axis=0) / st.count
    csd = xp.sqrt(xp.sum((c - cbar) ** 2 * weight, axis=0) / st.count)
    usable = st.usable & (csd > 0)
    csd = xp.where(usable, csd, 1.0)
    cc = xp.where(st.mask, (c - cbar) / csd, 0.0)
    theta0 = gev_start(st.z, st.mask, st.count, xp)
    data = (st.z,) if st.weight is None else (st.z, st.weight)
    stat = newton.maximize(gev_objective, theta0, data, max_iter=max_iter, max_step=_STEP)
    zero = xp.zeros_like(cbar)
    th = stat["theta"]
    rows = [th[0, ...], zero, th[1, ...]] + ([zero] if scale_trend else []) + [th[2, ...]]
    step = (1.0, 1.0, 1.0) + ((1.0,) if scale_trend else ()) + (_STEP[2],)
    res = newton.maximize(_ns_objective, xp.stack(rows), (st.z, cc, weight), max_iter=max_iter, max_step=step)
    res["n_iter"] = res["n_iter"] + stat["n_iter"]
    t = res["theta"]
    s, m, ratio = st.scale, st.center, cbar / csd
    e1 = t[3, ...] if scale_trend else zero
    sigma0 = s * xp.exp(t[2, ...] - e1 * ratio)
    params = [m + s * t[0, ...] - s * t[1, ...] * ratio, s * t[1, ...] / csd, sigma0]
    jac = [[s, -s * ratio, zero], [zero, s / csd, zero], [zero, zero, sigma0]]
    if scale_trend:
        params.append(e1 / csd)
        jac = [row + [zero] for row in jac]
        jac[2][3] = -sigma0 * ratio
        jac.append([zero, zero, zero, 1.0 / csd])
    params.append(t[-1, ...])
    jac = [row + [zero] for row in jac] + [[zero] * len(params)]
    jac[-1][-1] = xp.ones_like(zero)
    p = len(params)
    cov = newton.sandwich(xp.stack([xp.stack(row) for row in jac]), newton.spd_inverse(-res["hess"]))
    good = usable & xp.isfinite(res["loglik"])
    nan = xp.full_like(zero, xp.nan)
    out = {
        "params": xp.stack([xp.where(good, v, nan) for v in params]),
        "loglik": xp.where(good, res["loglik"] - st.count * xp.log(s), nan),
        "cov": xp.stack([xp.stack([xp.where(good, cov[i, j, ...], nan) for j in range(p)]) for i in range(p)]),
        "converged": res["converged"] & good & (t[-1, ...] > _XI_EDGE),
        "n_iter": res["n_iter"],
    }
    return _cast_result(out, x.dtype, xp)


GEV = Family(name="gev", n_params=3, fit=gev_fit, logpdf=gev_logpdf, cdf=gev_cdf, sf=gev_sf, ppf=gev_ppf)
GPD = Family(name="gpd", n_params=2, fit=gpd_fit, logpdf=gpd_logpdf, cdf=gpd_cdf, sf=gpd_sf, ppf=gpd_ppf)
