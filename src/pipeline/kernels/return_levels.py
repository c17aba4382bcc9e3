"""Return levels, return periods and their confidence intervals, per grid cell.

Block series (one maximum a year): the ``T``-year return level is the
quantile ``z_T = F^-1(1 - 1/T)`` of the fitted law (``F^-1(1/T)`` for block
minima). Exceedance series (GPD above ``u``, ``rate`` cluster peaks a year):
``z_T = u + sigma ((T rate)^xi - 1)/xi``. Both GEV and GPD levels are
``loc + sigma q(xi, L)`` with ``q = expm1(xi L)/xi`` (``L`` at ``xi = 0``):
GEV ``L = -log(-log(1 - 1/T))``, GPD ``L = log(T rate)``.

Intervals:

* delta method: ``se^2 = grad(z_T)' C grad(z_T)`` with ``C`` the fitted
  covariance of ``(loc, scale, shape)``; the gradient is analytic for GEV, GPD
  and both Gumbels, central differences of ``family.ppf`` otherwise;
* profile likelihood (GEV, GPD; Coles 2001, 4.3.3): the likelihood is written
  in terms of ``z_T`` (GEV ``mu = z_T - sigma q(xi)``, GPD
  ``sigma = (z_T - u)/q(xi)``) and maximized over the other parameters for
  fixed ``z_T`` with the Newton engine of :mod:`pipeline.kernels.newton`. The
  bounds solve ``r(z) = c`` on either side of ``z_hat``, with
  ``r(z) = sqrt(2 (l_hat - l_p(z)))`` and ``c^2`` the ``chi2_1`` quantile at the
  level. ``r`` is nearly linear in ``z`` and its slope comes free at each
  profile maximum (``l_p'(z) = dl/dmu``, envelope theorem), so Newton steps on
  ``r`` from the delta-method bound converge in about five profile
  maximizations, all cells and both sides at once; a bracket falling back to
  bisection keeps them safe.

Profiles and fits run in float64 whatever the input dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any, NamedTuple

import array_api_compat

from pipeline.kernels import gev, newton
from pipeline.kernels.families import Family

_SERIES_CUT = 0.1  # |xi L| below which q', q'' are summed as series (14 terms: below eps)
_ANALYTIC = ("gev", "gumbel_r", "gumbel_l")
_FD_STEP = 6e-6  # relative central-difference step (~eps**(1/3))


def _periods(return_periods: Any, like: Any, xp: Any) -> Any:
    """Return periods as an (n_T, 1) column of ``like``'s dtype and device; all must exceed 1."""
    t = xp.asarray(return_periods, dtype=like.dtype, device=array_api_compat.device(like))
    t = xp.reshape(t, (-1, 1))
    if not bool(xp.all(t > 1.0)):
        raise ValueError("return_periods must all be greater than 1 (years).")
    return t


def _z_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1; got {level!r}.")
    return NormalDist().inv_cdf(0.5 + 0.5 * level)


def q_derivatives(xi: Any, big_l: Any) -> tuple[Any, Any, Any]:
    """``q = expm1(xi L)/xi`` and its first two derivatives in ``xi``, without cancellation near ``xi = 0``.

    Closed forms ``q' = (s e^s - expm1 s)/xi^2``, ``q'' = (s^2 e^s - 2 s e^s + 2 expm1 s)/xi^3``
    (``s = xi L``) lose ``eps/s^2`` and ``eps/s^3``; below ``|s| = 0.1`` the series
    ``q' = L^2 sum (k+1) s^k/(k+2)!``, ``q'' = L^3 sum (k+1)(k+2) s^k/(k+3)!`` are used.
    """
    xp = array_api_compat.array_namespace(xi, big_l)
    s = xi * big_l
    s = xp.minimum(s, 0.3 * gev.max_exp(s.dtype, xp))  # keeps s^2 e^s finite; such levels are absurd anyway
    small = xp.abs(s) < _SERIES_CUT
    ss = xp.where(small, s, 0.0)
    d1, d2 = xp.zeros_like(ss), xp.zeros_like(ss)
    for k in range(13, -1, -1):
        d1 = d1 * ss + (k + 1) / math.factorial(k + 2)
        d2 = d2 * ss + (k + 1) * (k + 2) / math.factorial(k + 3)
    xs = xp.where(small, 1.0, xi)
    es, em = xp.exp(s), xp.expm1(s)
    q1 = xp.where(small, big_l * big_l * d1, (s * es - em) / (xs * xs))
    q2 = xp.where(small, big_l**3 * d2, (s * s * es - 2.0 * s * es + 2.0 * em) / (xs * xs * xs))
    return gev.expm1_ratio(xi, big_l), q1, q2


def _gev_big_l(t: Any, xp: Any) -> Any:
    """``L`` with ``z_T = mu + sigma q(xi, L)`` at ``p = 1 - 1/T``."""
    return -xp.log(-xp.log1p(-1.0 / t))


def return_level(family: Family, params: Any, return_periods: Sequence[float] | Any, *, minima: bool = False) -> Any:
    """``family.ppf(1 - 1/T)`` (``ppf(1/T)`` for ``minima``) for every return period, shape (n_T, cells)."""
    xp = array_api_compat.array_namespace(params)
    t = _periods(return_periods, params, xp)
    return family.ppf(1.0 / t if minima else 1.0 - 1.0 / t, params)


def gpd_return_level(params: Any, rate: Any, return_periods: Sequence[float] | Any) -> Any:
    """``u + sigma ((T rate)^xi - 1)/xi`` of a GPD fit, (n_T, cells); NaN where ``T rate <= 1``.

    ``rate`` (cells,) is the number of exceedances (cluster peaks) a year.
    """
    xp = array_api_compat.array_namespace(params)
    t = _periods(return_periods, params, xp)
    big_l = xp.log(xp.maximum(t * rate, 1.0))
    z = params[0, ...] + params[1, ...] * gev.expm1_ratio(params[2, ...], big_l)
    return xp.where(t * rate > 1.0, z, xp.nan)


def _ppf_gradient(family: Family, params: Any, p: Any, xp: Any) -> list[Any]:
    """d ppf(p)/d(loc, scale, shape), analytic where known, else central differences."""
    loc, scale, shape = params[0, ...], params[1, ...], params[2, ...]
    if family.name in _ANALYTIC:
        if family.name == "gumbel_l":  # ppf = loc + scale log(-log1p(-p))
            k = xp.log(-xp.log1p(-p)) + xp.zeros_like(scale)
            return [xp.ones_like(k), k, xp.zeros_like(k)]
        big_l = -xp.log(-xp.log(p))
        xi = xp.zeros_like(scale) if family.name == "gumbel_r" else shape
        q, q1, _ = q_derivatives(xi, big_l)
        return [xp.ones_like(q), q, scale * q1]
    grads = []
    for j in range(3):
        h = _FD_STEP * (xp.abs(params[j, ...]) + scale)
        bump = xp.stack([h if i == j else xp.zeros_like(h) for i in range(3)])
        grads.append((family.ppf(p, params + bump) - family.ppf(p, params - bump)) / (2.0 * h))
    return grads


def delta_se(grad: Sequence[Any], cov: Any) -> Any:
    """``sqrt(g' C g)``; parameters with NaN variance (fixed or absent) are left out, NaN if all are."""
    xp = array_api_compat.array_namespace(cov)
    est = [xp.isfinite(cov[j, j, ...]) for j in range(len(grad))]
    var, any_est = 0.0, est[0]
    for j, gj in enumerate(grad):
        any_est = any_est | est[j]
        for k, gk in enumerate(grad):
            both = est[j] & est[k]
            var = var + xp.where(both, gj * gk * xp.where(both, cov[j, k, ...], 0.0), 0.0)
    return xp.where(any_est, xp.sqrt(xp.maximum(var, 0.0)), xp.nan)


def delta_interval(
    family: Family,
    params: Any,
    cov: Any,
    return_periods: Sequence[float] | Any,
    *,
    level: float = 0.95,
    minima: bool = False,
) -> tuple[Any, Any]:
    """Delta-method interval ``z_T -/+ z_(1+level)/2 se`` of block-series return levels, each (n_T, cells)."""
    xp = array_api_compat.array_namespace(params, cov)
    c = _z_level(level)
    t = _periods(return_periods, params, xp)
    p = 1.0 / t if minima else 1.0 - 1.0 / t
    z = family.ppf(p, params)
    se = delta_se(_ppf_gradient(family, params, p, xp), cov)
    return z - c * se, z + c * se


def gpd_delta_interval(
    params: Any, cov: Any, rate: Any, return_periods: Sequence[float] | Any, *, level: float = 0.95
) -> tuple[Any, Any]:
    """Delta-method interval of :func:`gpd_return_level` (threshold and rate taken as known)."""
    xp = array_api_compat.array_namespace(params, cov)
    c = _z_level(level)
    t = _periods(return_periods, params, xp)
    big_l = xp.log(xp.maximum(t * rate, 1.0))
    q, q1, _ = q_derivatives(params[2, ...], big_l)
    z = gpd_return_level(params, rate, return_periods)
    se = delta_se([xp.zeros_like(q), q, params[1, ...] * q1], cov)
    return z - c * se, z + c * se


def return_period(family: Family, params: Any, values: Any, *, minima: bool = False) -> Any:
    """Return period ``1/sf(v)`` (``1/cdf(v)`` for minima) of each value, (n_values, cells); inf if never reached."""
    xp = array_api_compat.array_namespace(params)
    v = xp.asarray(values, dtype=params.dtype, device=array_api_compat.device(params))
    v = xp.reshape(v, (-1, 1)) if v.ndim <= 1 else v
    prob = family.cdf(v, params) if minima else family.sf(v, params)
    return xp.where(prob > 0.0, 1.0 / xp.where(prob > 0.0, prob, 1.0), xp.inf)


def gpd_return_period(params: Any, rate: Any, values: Any) -> Any:
    """``1/(rate sf(v))`` years for values at or above the threshold, NaN below it, (n_values, cells)."""
    xp = array_api_compat.array_namespace(params)
    v = xp.asarray(values, dtype=params.dtype, device=array_api_compat.device(params))
    v = xp.reshape(v, (-1, 1)) if v.ndim <= 1 else v
    prob = rate * gev.gpd_sf(v, params)
    period = xp.where(prob > 0.0, 1.0 / xp.where(prob > 0.0, prob, 1.0), xp.inf)
    return xp.where(v >= params[0, ...], period, xp.nan)


# ------------------------------------------------------------- profiles


def _gev_mu(theta: Any, zt: Any, big_l: Any, xp: Any) -> tuple[Any, ...]:
    """``mu = z_T - sigma q`` with ``sigma q``, ``sigma q'``, ``sigma q''``; ``ok`` False where they are absurd."""
    eta, xi = theta[0, ...], theta[1, ...]
    q, q1, q2 = q_derivatives(xi, big_l)
    sig = xp.exp(xp.clip(eta, -20.0, 20.0))
    # mu beyond the standardized box is -inf anyway; this keeps the chain rule finite
    ok = (xp.abs(eta) <= 20.0) & (sig * xp.abs(q) < 1e6) & (sig * xp.abs(q1) < 1e8) & (sig * xp.abs(q2) < 1e10)
    sq, sq1, sq2 = (xp.where(ok, sig * v, 0.0) for v in (q, q1, q2))
    return ok, xp.stack([zt - sq, xp.where(ok, eta, 0.0), xi]), sq, sq1, sq2


def _gev_profile(
    theta: Any, z: Any, zt: Any, big_l: Any, zmin: Any, zmax: Any, weight: Any = None
) -> tuple[Any, Any, Any]:
    """GEV log-likelihood in ``(eta, xi)`` with ``mu = z_T - sigma q(xi, L)`` (standardized units).

    The fourth output ``dl/dmu`` is, at the profile maximum, the slope ``dl_p/dz_T``
    (envelope theorem).
    """
    xp = array_api_compat.array_namespace(theta, z)
    ok, full, sq, sq1, sq2 = _gev_mu(theta, zt, big_l, xp)
    l, g, h = gev.gev_objective(full, z, weight)
    me, mx, mxx = -sq, -sq1, -sq2  # d mu/d eta = d2 mu/d eta2 = me; d2 mu/(d eta d xi) = mx
    grad = xp.stack([g[0, ...] * me + g[1, ...], g[0, ...] * mx + g[2, ...]])
    h_ee = h[0, 0, ...] * me * me + 2.0 * h[0, 1, ...] * me + h[1, 1, ...] + g[0, ...] * me
    h_ex = h[0, 0, ...] * me * mx + h[0, 1, ...] * mx + h[0, 2, ...] * me + h[1, 2, ...] + g[0, ...] * mx
    h_xx = h[0, 0, ...] * mx * mx + 2.0 * h[0, 2, ...] * mx + h[2, 2, ...] + g[0, ...] * mxx
    hess = xp.stack([xp.stack([h_ee, h_ex]), xp.stack([h_ex, h_xx])])
    return xp.where(ok, l, -xp.inf), grad, hess, g[0, ...]  # dl/dmu = dl_p/dz_T at the maximum


def _gev_repair(theta: Any, zt: Any, big_l: Any, zmin: Any, zmax: Any, weight: Any = None) -> Any:
    """Warm start ``(eta, xi)`` moved inside the support at ``z_T`` by raising the scale if needed.

    With ``mu = z_T - sigma q`` the support end is ``z_T - sigma e^(xi L)/xi``; it
    clears the data (by a third of its distance) once ``sigma`` exceeds
    ``(z_T - min z) xi e^(-xi L)`` for ``xi > 0`` or ``(max z - z_T) |xi| e^(-xi L)`` for ``xi < 0``.
    """
    xp = array_api_compat.array_namespace(theta)
    eta, xi = theta[0, ...], theta[1, ...]
    need = xp.where(xi > 0, zt - zmin, zmax - zt) * xp.abs(xi) * xp.exp(xp.clip(-xi * big_l, -300.0, 300.0))
    eta = xp.where(need > 0, xp.maximum(eta, xp.log(xp.where(need > 0, 1.1 * need, 1.0))), eta)
    return xp.stack([eta, xi])


def _gpd_eta(theta: Any, zt: Any, big_l: Any, xp: Any) -> tuple[Any, ...]:
    """``eta = log(z_T/q(xi))`` with ``d eta/d xi`` and ``d2 eta/d xi2``; ``ok`` False where undefined."""
    xi = theta[0, ...]
    q, q1, q2 = q_derivatives(xi, big_l)
    ok = xp.isfinite(q) & (q > 0.0) & (zt > 0.0)
    q = xp.where(ok, q, 1.0)
    ex = -xp.where(ok, q1, 0.0) / q
    exx = ex * ex - xp.where(ok, q2, 0.0) / q
    eta = xp.log(xp.where(ok, zt, 1.0)) - xp.log(q)
    return ok, xp.stack([eta, xi]), ex, exx


def _gpd_profile(theta: Any, e: Any, zt: Any, big_l: Any, emax: Any, weight: Any) -> tuple[Any, Any, Any]:
    """GPD log-likelihood in ``xi`` with ``sigma = (z_T - u)/q(xi, L)`` (standardized units)."""
    xp = array_api_compat.array_namespace(theta, e)
    ok, full, ex, exx = _gpd_eta(theta, zt, big_l, xp)
    l, g, h = gev.gpd_objective(full, e, weight)
    grad = g[0:1, ...] * ex + g[1:2, ...]
    h_xx = h[0, 0, ...] * ex * ex + 2.0 * h[0, 1, ...] * ex + h[1, 1, ...] + g[0, ...] * exx
    slope = g[0, ...] / xp.where(zt > 0.0, zt, 1.0)  # dl_p/dz_T = (dl/deta) d eta/d z_T at the maximum
    return xp.where(ok, l, -xp.inf), grad, h_xx[None, None, ...], slope


def _gpd_repair(theta: Any, zt: Any, big_l: Any, emax: Any, weight: Any) -> Any:
    """Warm start ``xi`` raised toward 0 until ``sigma = z_T/q(xi)`` puts the end ``sigma/|xi|`` beyond the data."""
    xp = array_api_compat.array_namespace(theta)
    frac = xp.clip(zt / emax, 0.0, 1.0)
    xi_min = xp.log1p(-xp.where(frac < 1.0, frac, 0.0)) / big_l  # end beyond max e for any xi > xi_min
    return xp.where((frac < 1.0) & (theta < 0.9 * xi_min), 0.9 * xi_min, theta)


class _Profile(NamedTuple):
    """One law's profile: objective in the free parameters (with ``dl_p/dz_T``), warm-start repair, step caps."""

    objective: Any
    repair: Any
    max_step: tuple[float, ...]


_GEV_PROFILE = _Profile(_gev_profile, _gev_repair, (1.0, 0.25))
_GPD_PROFILE = _Profile(_gpd_profile, _gpd_repair, (0.25,))


def _profile_roots(
    prof: _Profile, free: Any, cov: Any, lhat: Any, zhat: Any, grad: list[Any], data: tuple[Any, ...], far: Any,
    c: float, max_iter: int, xp: Any,
) -> tuple[Any, Any, Any]:  # fmt: skip
    """Distances below and above ``z_hat`` of the bounds of one return period, and whether both were found.

    Both sides of every cell run as one batch of lanes (upper first); a lane
    seeks ``d >= 0`` with ``r(z_hat + side d) = c``, ``r = sqrt(2 (l_hat - l_p))``.
    ``free`` are the profiled parameters at the maximum, ``grad`` is
    ``d z_T/d theta`` (delta-method start and path tangent), ``data`` the
    objective's per-cell arrays except ``z_T`` (which goes second), ``far`` (2
    cells,) the farthest ``d`` searched. Each step maximizes the profile at
    ``z_T``, warm-started by extrapolating the path of solutions (at ``z_hat``
    its slope is ``C g/(g' C g)``), then takes a Newton step on ``r`` with
    ``dr/dd = -side l_p'(z_T)/r`` (the envelope theorem gives ``l_p'`` as the
    partial derivative at the profile maximum), kept inside the bracket of the
    steps so far (bisection otherwise; fourfold growth while unbracketed).
    ``d`` is +inf where ``r`` stays below ``c`` up to ``far``, NaN if not found.
    """
    se = delta_se(grad, cov)
    n = zhat.shape[0]
    side = xp.concat([xp.ones_like(zhat), -xp.ones_like(zhat)])
    theta, tangent = _lanes(free, xp), _lanes(_tangent(grad, cov, se, xp)[1:, ...], xp) * side
    data = tuple(_lanes(a, xp) for a in data)
    zhat, se, lhat, d_max = _lanes(zhat, xp), _lanes(se, xp), _lanes(lhat, xp), far
    n_lanes = zhat.shape[0]
    active = xp.isfinite(zhat) & xp.isfinite(lhat) & xp.all(xp.isfinite(theta), axis=0)
    d = xp.where(xp.isfinite(se) & (se > 0.0), c * se, 0.1)
    st = {
        "theta": theta,
        "tangent": tangent,
        "d_old": xp.zeros_like(zhat),
        "zhat": zhat,
        "lhat": lhat,
        "side": side,
        "d_max": d_max,
        "active": active,
        "d": xp.where(active, xp.minimum(d, 0.5 * d_max), 1.0),
        "lo": xp.zeros_like(d),
        "hi": xp.full_like(d, xp.inf),
        "root": xp.full_like(d, xp.nan),
        "found": xp.zeros_like(active),
    }
    idx = xp.arange(n_lanes, device=array_api_compat.device(zhat))
    out = {"root": st["root"], "found": st["found"]}
    for _ in range(max_iter):
        n_act = int(xp.sum(xp.astype(st["active"], xp.int32)))
        if n_act == 0:
            break
        k = idx.shape[0]
        if 2 * n_act <= k:  # drop finished lanes, as the Newton engine does with cells
            out = {key: newton.scatter_cells(out[key], idx, st[key], xp) for key in out}
            pos = xp.argsort(xp.astype(~st["active"], xp.int8), stable=True)[:n_act]
            idx = xp.take(idx, pos)
            st = {key: newton.take_cells(v, pos, k, xp) for key, v in st.items()}
            data = tuple(newton.take_cells(a, pos, k, xp) for a in data)
        active, d, lo, hi, lhat = st["active"], st["d"], st["lo"], st["hi"], st["lhat"]
        args = (data[0], st["zhat"] + st["side"] * d) + data[1:]
        start = prof.repair(st["theta"] + (d - st["d_old"]) * st["tangent"], *args[1:])
        res = newton.maximize(  # l_p to ~1e-8: r to ~1e-8, below the root tolerance
            prof.objective,
            start,
            args,
            active=active,
            max_iter=40,
            max_step=prof.max_step,
            tol=1e-9,
            final_step=False,
        )
        # a profile maximization that did not converge says nothing about r: step back toward lo; one
        # that ran into xi = -1 has its supremum there (the limit of the constrained maximum): keep it
        edge = (res["theta"][-1, ...] < -0.999) & xp.isfinite(res["loglik"])
        good = active & (res["converged"] | edge)
        moved = d - st["d_old"]
        path = (res["theta"] - st["theta"]) / xp.where(moved != 0.0, moved, 1.0)
        st["tangent"] = xp.where(good & (moved != 0.0), path, st["tangent"])
        st["theta"] = xp.where(good, res["theta"], st["theta"])
        st["d_old"] = xp.where(good, d, st["d_old"])
        r = xp.sqrt(2.0 * xp.maximum(lhat - xp.where(good, res["loglik"], lhat), 0.0))
        slope = -st["side"] * res["aux"]
        below = r < c
        lo = xp.where(good & below, xp.maximum(lo, d), lo)
        hi = xp.where(good & ~below, xp.minimum(hi, d), hi)
        usable = (slope > 0.0) & (r > 0.0)
        step = d + (c - r) * r / xp.where(usable, slope, 1.0)
        bracketed = xp.isfinite(hi)
        mid = 0.5 * (lo + xp.where(bracketed, hi, lo))
        grow = xp.minimum(4.0 * xp.maximum(d, lo), st["d_max"])
        d_new = xp.where(usable, step, xp.where(bracketed, mid, grow))
        d_new = xp.where(bracketed & ((d_new <= lo) | (d_new >= hi)), mid, d_new)
        d_new = xp.where(~bracketed & ((d_new <= lo) | (d_new > grow)), grow, d_new)
        d_new = xp.where(good, d_new, 0.5 * (lo + d))
        close = good & (xp.abs(r - c) <= 1e-7)
        tight = active & bracketed & (hi - lo <= 1e-10 * (1.0 + xp.abs(st["zhat"]) + hi))
        st["root"] = xp.where(close, d, xp.where(tight, 0.5 * (lo + hi), st["root"]))
        st["found"] = st["found"] | close | tight
        none = active & ~bracketed & (lo >= st["d_max"])  # r < c all the way out: no bound in range
        st["root"] = xp.where(none, xp.inf, st["root"])
        st["active"] = active & ~close & ~tight & ~none
        st["d"], st["lo"], st["hi"] = xp.where(st["active"], d_new, d), lo, hi
    root, found = (newton.scatter_cells(out[key], idx, st[key], xp) for key in ("root", "found"))
    return root[n:], root[:n], found[:n] & found[n:]


def _tangent(grad: list[Any], cov: Any, se: Any, xp: Any) -> Any:
    """``d theta/d z_T`` along the profile at the maximum, ``C g / (g' C g)`` (quadratic approximation)."""
    p = len(grad)
    cg = [sum(cov[i, j, ...] * grad[j] for j in range(p)) for i in range(p)]
    ok = xp.isfinite(se) & (se > 0.0)
    return xp.stack([xp.where(ok, v / xp.where(ok, se * se, 1.0), 0.0) for v in cg])


def _lanes(a: Any, xp: Any) -> Any:
    """Both sides of every cell side by side along the last axis (upper first)."""
    return xp.concat([a, a], axis=a.ndim - 1)


def _polish(objective: Any, theta: Any, data: tuple[Any, ...], loglik: Any, xp: Any) -> tuple[Any, Any, Any]:
    """The fit's standardized maximum re-polished: ``theta``, ``l_hat`` (NaN for failed fits), covariance.

    Re-polishing keeps the cut-off exact whatever the precision of the given
    parameters and log-likelihood (float32 ones would misplace it).
    """
    ok = xp.all(xp.isfinite(theta), axis=0) & ~xp.isnan(loglik)
    fit = newton.maximize(objective, xp.where(ok, theta, 0.0), data, active=ok, max_iter=20)
    lhat = xp.where(ok & xp.isfinite(fit["loglik"]), fit["loglik"], xp.nan)
    return fit["theta"], lhat, newton.spd_inverse(-fit["hess"])


def profile_interval_gev(
    x: Any,
    params: Any,
    loglik: Any,
    return_periods: Sequence[float] | Any,
    *,
    level: float = 0.95,
    valid: Any | None = None,
    max_iter: int = 40,
    d_max: float = 1e3,
) -> tuple[Any, Any, Any]:
    """Profile-likelihood interval of GEV return levels of block maxima ``x`` (sample, cell).

    Parameters
    ----------
    x, valid : the fitted series and its optional mask (as for ``GEV.fit``).
    params, loglik : the GEV fit, (3, cells) and (cells,); NaN marks a failed fit.
    return_periods : (n_T,) years.
    level : float
        Confidence level: the bounds solve ``2 (l_hat - l_p(z)) = chi2_1(level)``.
    max_iter : int
        Root-finding steps (each a warm-started Newton profile maximization).
    d_max : float
        Farthest distance from ``z_hat`` searched, in standard deviations of the series.

    Returns
    -------
    lower, upper : (n_T, cells)
        Bounds; ``-inf``/``+inf`` where the profile stays above the cut-off
        within ``d_max`` (heavy tails), NaN where the fit is missing or the
        search failed.
    ok : (n_T, cells) bool
        Both bounds found.
    """
    xp = array_api_compat.array_namespace(x, params)
    c, dtype = _z_level(level), params.dtype
    x, params, loglik = (gev.as_float64(v, xp) for v in (x, params, loglik))
    t = _periods(return_periods, params, xp)
    st = gev.standardize_gev(x, valid)
    theta = xp.stack([(params[0, ...] - st.center) / st.scale, xp.log(params[1, ...] / st.scale), params[2, ...]])
    data = (st.z,) if st.weight is None else (st.z, st.weight)
    theta, lhat, cov = _polish(gev.gev_objective, theta, data, loglik, xp)
    sig = xp.exp(theta[1, ...])
    zmin = xp.min(xp.where(st.mask, st.z, xp.inf), axis=0)
    zmax = xp.max(xp.where(st.mask, st.z, -xp.inf), axis=0)
    far = xp.full((2 * sig.shape[0],), d_max, dtype=sig.dtype, device=array_api_compat.device(sig))
    out: tuple[list, list, list] = ([], [], [])
    for i in range(t.shape[0]):
        big_l = _gev_big_l(t[i, ...], xp) + xp.zeros_like(sig)
        q, q1, _ = q_derivatives(theta[2, ...], big_l)
        zhat = theta[0, ...] + sig * q
        grad = [xp.ones_like(q), sig * q, sig * q1]
        lanes = (st.z, big_l, zmin, zmax) + data[1:]
        below, above, both = _profile_roots(
            _GEV_PROFILE, theta[1:, ...], cov, lhat, zhat, grad, lanes, far, c, max_iter, xp
        )
        for acc, v in zip(out, (zhat - below, zhat + above, both), strict=True):
            acc.append(v)
    lower, upper = (xp.astype(st.center + st.scale * xp.stack(v), dtype) for v in out[:2])
    return lower, upper, xp.stack(out[2])


def profile_interval_gpd(
    x: Any,
    params: Any,
    loglik: Any,
    rate: Any,
    return_periods: Sequence[float] | Any,
    *,
    level: float = 0.95,
    valid: Any | None = None,
    max_iter: int = 40,
    d_max: float = 1e3,
) -> tuple[Any, Any, Any]:
    """Profile-likelihood interval of GPD return levels (:func:`gpd_return_level`), (n_T, cells) each.

    ``x``/``valid`` are the exceedance values as given to ``GPD.fit``, ``params``
    and ``loglik`` its result, ``rate`` the exceedances a year. For fixed
    ``z_T`` the scale is ``(z_T - u)/q(xi)`` and only ``xi`` is maximized over.
    ``d_max`` is in units of the mean excess. Returns ``lower``, ``upper`` and
    ``ok`` as :func:`profile_interval_gev`; NaN where ``T rate <= 1``.
    """
    xp = array_api_compat.array_namespace(x, params)
    c, dtype = _z_level(level), params.dtype
    x, params, loglik = (gev.as_float64(v, xp) for v in (x, params, loglik))
    rate = xp.asarray(rate, dtype=xp.float64, device=array_api_compat.device(x))
    t = _periods(return_periods, params, xp)
    st = gev.standardize_gpd(x, params[0, ...], valid)
    theta = xp.stack([xp.log(params[1, ...] / st.scale), params[2, ...]])
    theta, lhat, cov = _polish(gev.gpd_objective, theta, (st.z, st.weight), loglik, xp)
    sig = xp.exp(theta[0, ...])
    emax = xp.max(st.z * st.weight, axis=0)
    out: tuple[list, list, list] = ([], [], [])
    for i in range(t.shape[0]):
        tr = t[i, ...] * rate + xp.zeros_like(sig)
        big_l = xp.log(xp.maximum(tr, 1.0))
        q, q1, _ = q_derivatives(theta[1, ...], big_l)
        zhat = xp.where(tr > 1.0, sig * q, xp.nan)
        far = xp.concat([xp.full_like(sig, d_max), (1.0 - 1e-9) * zhat])  # z_T stays above the threshold
        grad, lanes = [sig * q, sig * q1], (st.z, big_l, emax, st.weight)
        below, above, both = _profile_roots(
            _GPD_PROFILE, theta[1:, ...], cov, lhat, zhat, grad, lanes, far, c, max_iter, xp
        )
        for acc, v in zip(out, (zhat - below, zhat + above, both), strict=True):
            acc.append(v)
    lower, upper = (xp.astype(params[0, ...] + st.scale * xp.stack(v), dtype) for v in out[:2])
    return lower, upper, xp.stack(out[2])


def nonstationary_return_level(
    params: Any, cov: Any, covariate: Any, return_periods: Sequence[float] | Any, *, level: float = 0.95,
    scale_trend: bool = False,
) -> tuple[Any, Any, Any]:
    """Return levels of a non-stationary GEV at given covariate values, with delta-method bounds.

    With ``params`` ``(mu0, mu1, sigma0, [eta1], xi)`` from
    :func:`pipeline.kernels.gev.fit_nonstationary`, the law at covariate ``c``
    is GEV(``mu0 + mu1 c``, ``sigma0 exp(eta1 c)``, ``xi``) and its ``T``-year
    level ``z = mu(c) + sigma(c) q(xi)``. The gradient of ``z`` in the
    parameters is ``(1, c, sigma/sigma0 q, [c sigma q], sigma q')``.

    Returns
    -------
    level, lower, upper : arrays of shape (n_c, n_T, cells)
    """
    xp = array_api_compat.array_namespace(params)
    t = _periods(return_periods, params, xp)
    big_l = _gev_big_l(t, xp)
    z = _z_level(level)
    mu0, mu1, sigma0, xi = params[0, ...], params[1, ...], params[2, ...], params[-1, ...]
    eta1 = params[3, ...] if scale_trend else xp.zeros_like(mu0)
    q, q1, _ = q_derivatives(xi, big_l)
    rows = ([], [], [])
    for c in [float(v) for v in covariate]:
        sigma = sigma0 * xp.exp(eta1 * c)
        value = mu0 + mu1 * c + sigma * q
        ones = xp.ones_like(value)
        grad = [ones, c * ones, (sigma / sigma0) * q] + ([c * sigma * q] if scale_trend else []) + [sigma * q1]
        se = delta_se(grad, cov)
        for out, v in zip(rows, (value, value - z * se, value + z * se)):
            out.append(v)
    return tuple(xp.stack(r) for r in rows)
