"""Joint, marginal and conditional distributions of a field against an index, per grid cell.

Raw arrays in, raw arrays out, written against the Python array API. The field
``y`` is ``(n, cells)``; the index ``x`` is either ``(n,)`` (one series shared
by every cell, e.g. a climate index) or ``(n, cells)`` (a second field on the
same grid). Per-cell results are ``(cells,)``; nothing loops over cells.

Two joint models are offered:

* the bivariate normal ``(X, Y) ~ N2((mu_x, mu_y), (s_x, s_y), rho)`` fitted by
  maximum likelihood (:func:`bivariate_normal`), with its conditional law
  ``Y | X = x`` (:func:`conditional_normal`) and log-density
  (:func:`bvn_logpdf`);
* the Gaussian copula over fitted margins: ``u = F(x)``, ``v = G(y)`` are the
  margins' probability integral transforms and the normal scores
  ``(ndtri(u), ndtri(v))`` are standard bivariate normal with correlation
  ``rho`` (:func:`gaussian_copula`, :func:`copula_logpdf`,
  :func:`copula_conditional_cdf`). The joint density is
  ``c(F(x), G(y); rho) f(x) g(y)``.

Both models give the same tail dependence in quantile terms:
``P(Y > y_q | X > x_q) = Phi2_upper(ndtri(q_x), ndtri(q_y); rho) / (1 - q_x)``
(:func:`conditional_exceedance`), with the bivariate normal orthant probability
of :func:`bvn_cdf` / :func:`bvn_sf`. :func:`empirical_conditional_exceedance`
counts the same quantity in the data.

Special functions come from :mod:`pipeline.kernels.special`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import array_api_compat

from pipeline.kernels import special

Array = Any

_TWO_PI = 2.0 * math.pi
_LOG_2PI = math.log(_TWO_PI)
_GL_POINTS = 20  # Gauss-Legendre nodes of both quadratures in bvn (Genz 2004 uses 20 for |rho| >= 0.75)
_RHO_SWITCH = 0.925  # |rho| above: the expansion about |rho| = 1 (Genz 2004)
_Z_CLIP = 40.0  # Phi(-40) underflows to 0 in float64: limits beyond change nothing, and infinities become finite
_EXP_FLOOR = -100.0  # terms exp(t) with t below are dropped (< 4e-44), as in Genz's BVNU
_NEWTON_MAX_ITER = 100


class BivariateNormal(NamedTuple):
    """Maximum-likelihood bivariate normal per cell; every field ``(cells,)``, sds of divisor n."""

    mean_x: Array
    sd_x: Array
    mean_y: Array
    sd_y: Array
    rho: Array


class Conditional(NamedTuple):
    """Mean and standard deviation of ``Y | X = x``, each ``(n_x, cells)``."""

    mean: Array
    sd: Array


class Exceedance(NamedTuple):
    """``conditional = P(Y > y_q | X > x_q)`` and ``marginal = P(Y > y_q)``, each ``(cells,)``."""

    conditional: Array
    marginal: Array


class EmpiricalExceedance(NamedTuple):
    """Counted exceedance frequencies and the type-7 sample quantiles ``x_q``, ``y_q`` used, each ``(cells,)``."""

    conditional: Array
    marginal: Array
    x_q: Array
    y_q: Array


class GaussianCopula(NamedTuple):
    """Normal scores (shapes of ``u_x``, ``u_y``) and two copula correlations ``(cells,)``.

    ``rho`` is the exact maximum-likelihood estimate given the margins;
    ``rho_scores`` the Pearson correlation of the scores (divisor n).
    """

    z_x: Array
    z_y: Array
    rho: Array
    rho_scores: Array


# ----------------------------------------------------------------- checks


def _namespace(*arrays: Any) -> Any:
    arrs = [a for a in arrays if hasattr(a, "shape")]
    if not arrs:
        raise TypeError("at least one argument must be an array; got only Python scalars.")
    return array_api_compat.array_namespace(*arrs)


def _as_float(values: tuple[Any, ...], xp: Any) -> list[Array]:
    """The arguments as arrays of one real floating dtype and device (Python scalars converted)."""
    arrs = [v for v in values if hasattr(v, "shape")]
    dtype = xp.result_type(*[a.dtype for a in arrs])
    if not xp.isdtype(dtype, "real floating"):
        raise TypeError(f"arrays must be real floating; got {dtype}.")
    dev = array_api_compat.device(arrs[0])
    return [xp.asarray(v, dtype=dtype, device=dev) for v in values]


def _check_pair(x: Array, y: Array) -> Any:
    """Namespace of a field ``y`` (n, cells) and an index ``x`` (n,) or (n, cells)."""
    xp = array_api_compat.array_namespace(x, y)
    if y.ndim != 2 or not xp.isdtype(y.dtype, "real floating"):
        raise TypeError(f"y must be a 2-D real floating (n, cells) array; got {y.ndim}-D {y.dtype}.")
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"x must be real floating; got {x.dtype}.")
    if x.shape not in ((y.shape[0],), y.shape):
        raise ValueError(f"x must have shape ({y.shape[0]},) or {tuple(y.shape)} to match y; got {tuple(x.shape)}.")
    if y.shape[0] < 3:
        raise ValueError(f"x and y need at least 3 observations (rows); got {y.shape[0]}.")
    return xp


def _check_level(q: float, name: str) -> float:
    try:
        q = float(q)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a number in (0, 1); got {q!r}.") from err
    if not 0.0 < q < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1; got {q}.")
    return q


def _column(x: Array, xp: Any) -> Array:
    """A shared index ``(n,)`` as a column ``(n, 1)`` that broadcasts against ``(n, cells)``."""
    return xp.reshape(x, (x.shape[0], 1)) if x.ndim == 1 else x


# ------------------------------------------------------- bivariate normal


def bivariate_normal(x: Array, y: Array) -> BivariateNormal:
    """Maximum-likelihood bivariate normal of ``(X, Y)`` in every cell.

    Means, standard deviations with divisor n and the Pearson correlation
    ``rho = mean((x - mx)(y - my)) / (s_x s_y)``, from centred data (two
    passes). Cells where either series is constant get ``rho = NaN``.

    Parameters
    ----------
    x : array, shape (n,) or (n, cells)
        The index, shared by all cells or one series per cell.
    y : array, shape (n, cells)
        The field.
    """
    xp = _check_pair(x, y)
    xc = _column(x, xp)
    mean_x, mean_y = xp.mean(xc, axis=0), xp.mean(y, axis=0)
    dx, dy = xc - mean_x, y - mean_y
    sd_x = xp.sqrt(xp.mean(dx * dx, axis=0))
    sd_y = xp.sqrt(xp.mean(dy * dy, axis=0))
    cov = xp.mean(dx * dy, axis=0)
    denom = sd_x * sd_y
    ok = denom > 0
    rho = xp.where(ok, cov / xp.where(ok, denom, xp.ones_like(denom)), xp.full_like(cov, math.nan))
    cells = y.shape[1:]
    return BivariateNormal(
        mean_x=xp.broadcast_to(mean_x, cells),
        sd_x=xp.broadcast_to(sd_x, cells),
        mean_y=mean_y,
        sd_y=sd_y,
        rho=xp.clip(rho, -1.0, 1.0),  # round-off only
    )


def conditional_normal(mean_x: Array, sd_x: Array, mean_y: Array, sd_y: Array, rho: Array, x_values: Array) -> Conditional:
    """Mean and sd of ``Y | X = x`` under the bivariate normal, for every configured ``x``.

    ``E[Y | x] = mu_y + rho (s_y / s_x) (x - mu_x)`` and
    ``sd[Y | x] = s_y sqrt(1 - rho^2)`` (the same for every ``x``).

    Parameters
    ----------
    mean_x, sd_x, mean_y, sd_y, rho : arrays, shape (cells,) (or scalars for the index)
        As returned by :func:`bivariate_normal`.
    x_values : array, shape (n_x,)
        Values of the index, in its units.

    Returns
    -------
    Conditional
        ``mean`` and ``sd``, each ``(n_x, cells)``.
    """
    xp = _namespace(mean_x, sd_x, mean_y, sd_y, rho, x_values)
    mean_x, sd_x, mean_y, sd_y, rho, x_values = _as_float((mean_x, sd_x, mean_y, sd_y, rho, x_values), xp)
    if x_values.ndim != 1:
        raise ValueError(f"x_values must be 1-D (n_x,); got shape {tuple(x_values.shape)}.")
    xv = xp.reshape(x_values, (x_values.shape[0], 1))
    mean = mean_y + rho * (sd_y / sd_x) * (xv - mean_x)
    sd = sd_y * xp.sqrt(xp.clip((1.0 - rho) * (1.0 + rho), 0.0, 1.0))
    return Conditional(mean=mean, sd=xp.broadcast_to(sd, mean.shape))


def bvn_logpdf(x: Array, y: Array, means: tuple[Array, Array], sds: tuple[Array, Array], rho: Array) -> Array:
    """Log-density of the bivariate normal at ``(x, y)``, elementwise with broadcasting.

    ``log f = -log(2 pi s_x s_y sqrt(1 - rho^2)) - (zx^2 - 2 rho zx zy + zy^2) / (2 (1 - rho^2))``
    with ``zx = (x - mu_x) / s_x``, ``zy = (y - mu_y) / s_y``; ``|rho| < 1``.

    Parameters
    ----------
    x, y : arrays
        Points, broadcastable against the parameters (e.g. ``(n, cells)``).
    means, sds : pairs of arrays
        ``(mu_x, mu_y)`` and ``(s_x, s_y)``, e.g. each ``(cells,)``.
    rho : array
        Correlation.
    """
    xp = _namespace(x, y, *means, *sds, rho)
    x, y, mx, my, sx, sy, rho = _as_float((x, y, means[0], means[1], sds[0], sds[1], rho), xp)
    zx, zy = (x - mx) / sx, (y - my) / sy
    one_m = (1.0 - rho) * (1.0 + rho)
    quad = (zx * zx - 2.0 * rho * zx * zy + zy * zy) / one_m
    return -_LOG_2PI - xp.log(sx) - xp.log(sy) - 0.5 * xp.log(one_m) - 0.5 * quad


# ------------------------------------------------- orthant probabilities


@functools.lru_cache(maxsize=4)
def _gauss_legendre01(m: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes and weights of the m-point Gauss-Legendre rule on [0, 1] (Newton on P_m, pure Python)."""
    nodes, weights = [], []
    for i in range(1, m + 1):
        t = math.cos(math.pi * (i - 0.25) / (m + 0.5))
        for _ in range(100):
            p0, p1 = 1.0, t
            for j in range(2, m + 1):
                p0, p1 = p1, ((2 * j - 1) * t * p1 - (j - 1) * p0) / j
            dp = m * (t * p1 - p0) / (t * t - 1.0)
            step = p1 / dp
            t -= step
            if abs(step) < 1e-16:
                break
        nodes.append(0.5 * (1.0 + t))
        weights.append(1.0 / ((1.0 - t * t) * dp * dp))  # (2 / ((1 - t^2) P'^2)) / 2
    return tuple(nodes), tuple(weights)


def _upper_orthant(h: Array, k: Array, r: Array, xp: Any) -> Array:
    """``P(X > h, Y > k)`` for a standard bivariate normal of correlation ``r`` (Genz's BVNU, vectorized).

    Both branches are evaluated everywhere and chosen with ``where``:

    * ``|r| < 0.925``: Sheppard's formula
      ``Phi(-h) Phi(-k) + (1/2pi) int_0^asin r exp(-(h^2 + k^2 - 2hk sin t) / (2 cos^2 t)) dt``
      with Gauss-Legendre nodes on a smooth integrand;
    * ``|r| >= 0.925``: the remainder to ``r = +-1`` written in ``x = cos t``,
      ``(1/2pi) int_0^sqrt(1-r^2) exp(-(h-k)^2/(2x^2) - hk/(1 + sqrt(1-x^2))) / sqrt(1-x^2) dx``;
      its near-singular factor times a two-term Taylor expansion of the rest is
      integrated in closed form (through ``Phi``) and the smooth residual by
      Gauss-Legendre (Drezner & Wesolowsky 1990; Genz 2004, Stat. Comput. 14).

    Absolute error ~1e-15 in float64, including ``r = +-1`` exactly.
    """
    nodes, weights = _gauss_legendre01(_GL_POINTS)
    dev = array_api_compat.device(h)
    t = xp.asarray(nodes, dtype=h.dtype, device=dev)
    w = xp.asarray(weights, dtype=h.dtype, device=dev)
    zero = xp.zeros_like(h)
    h, k = xp.clip(h, -_Z_CLIP, _Z_CLIP), xp.clip(k, -_Z_CLIP, _Z_CLIP)
    hk = h * k
    near_one = xp.abs(r) >= _RHO_SWITCH

    # Sheppard's integral over [0, asin r] (any r; used where |r| < 0.925)
    ra = xp.where(near_one, zero, r)
    asr = xp.asin(ra)
    sn = xp.sin(asr[..., None] * t)
    hs = (0.5 * (h * h + k * k))[..., None]
    sheppard = asr * xp.sum(w * xp.exp((sn * hk[..., None] - hs) / (1.0 - sn * sn)), axis=-1) / _TWO_PI
    low_r = special.ndtr(-h) * special.ndtr(-k) + sheppard

    # remainder to r = sign(r) (used where |r| >= 0.925); for r < 0 work with (h, -k, -r)
    neg = r < 0
    kk = xp.where(neg, -k, k)
    hkk = xp.where(neg, -hk, hk)
    a2 = xp.where(near_one, (1.0 - r) * (1.0 + r), xp.full_like(r, 0.5))  # exact-ish as |r| -> 1
    a2 = xp.clip(a2, 0.0, 1.0)
    pos = a2 > 0
    a2s = xp.where(pos, a2, xp.ones_like(a2))
    a = xp.sqrt(a2s)
    bs = (h - kk) ** 2
    c = (4.0 - hkk) / 8.0
    d = (12.0 - hkk) / 16.0
    e1 = -0.5 * (bs / a2s + hkk)
    series = 1.0 - c * (bs - a2s) * (1.0 - d * bs / 5.0) / 3.0 + c * d * a2s * a2s / 5.0
    closed = xp.where(e1 > _EXP_FLOOR, a * xp.exp(e1) * series, zero)
    b = xp.sqrt(bs)
    tail = xp.exp(xp.minimum(-0.5 * hkk, -0.5 * _EXP_FLOOR)) * math.sqrt(_TWO_PI) * special.ndtr(-b / a) * b
    closed = closed - xp.where(hkk > _EXP_FLOOR, tail * (1.0 - c * bs * (1.0 - d * bs / 5.0) / 3.0), zero)
    xs = (a[..., None] * t) ** 2
    e2 = -0.5 * (bs[..., None] / xs + hkk[..., None])
    taylor = 1.0 + c[..., None] * xs * (1.0 + d[..., None] * xs)
    rs = xp.sqrt(1.0 - xs)
    ep = xp.exp(e2 - 0.5 * hkk[..., None] * xs / (1.0 + rs) ** 2) / rs
    resid = xp.where(e2 > _EXP_FLOOR, xp.exp(e2) * taylor - ep, xp.zeros_like(xs))
    integral = xp.where(pos, a * xp.sum(w * resid, axis=-1) - closed, zero) / _TWO_PI  # = -(1/2pi) int ...
    # r > 0: L(h, k, 1) = Phi(-max(h, k)); r < 0: L(h, k, r) = Phi(-h) - L(h, -k, -r)
    pos_r = special.ndtr(-xp.maximum(h, kk)) + integral
    gap = xp.where(h < 0, special.ndtr(kk) - special.ndtr(h), special.ndtr(-h) - special.ndtr(-kk))
    neg_r = xp.where(h >= kk, -integral, gap - integral)
    high_r = xp.where(neg, neg_r, pos_r)

    out = xp.clip(xp.where(near_one, high_r, low_r), 0.0, 1.0) + 0.0  # + 0.0: no -0.0
    bad = xp.isnan(h) | xp.isnan(k) | xp.isnan(r) | (xp.abs(r) > 1.0)
    return xp.where(bad, xp.full_like(out, math.nan), out)


def _orthant_args(a: Array, b: Array, rho: Array) -> tuple[Any, list[Array]]:
    xp = _namespace(a, b, rho)
    return xp, list(xp.broadcast_arrays(*_as_float((a, b, rho), xp)))


def bvn_cdf(a: Array, b: Array, rho: Array) -> Array:
    """Bivariate standard normal lower orthant ``Phi2(a, b; rho) = P(X <= a, Y <= b)``, elementwise.

    Sheppard's integral with 20 Gauss-Legendre nodes for ``|rho| < 0.925`` and
    Genz's expansion about ``|rho| = 1`` beyond (see :func:`_upper_orthant`);
    absolute error ~1e-15 in float64. ``a``, ``b`` may be infinite; ``rho`` in
    ``[-1, 1]`` (NaN outside). Arguments broadcast.
    """
    xp, (a, b, rho) = _orthant_args(a, b, rho)
    return _upper_orthant(-a, -b, rho, xp)


def bvn_sf(a: Array, b: Array, rho: Array) -> Array:
    """Bivariate standard normal upper orthant ``P(X > a, Y > b)``, elementwise.

    Computed directly (not as ``1 - ...``): relative accuracy ~1e-12 in the
    upper tail for ``rho >= 0``; for ``rho < 0`` deep in the tail the result is
    a difference of ``Phi(-a) Phi(-b)`` and the integral, accurate in absolute
    terms only. Same method and conventions as :func:`bvn_cdf`.
    """
    xp, (a, b, rho) = _orthant_args(a, b, rho)
    return _upper_orthant(a, b, rho, xp)


def conditional_exceedance(rho: Array, q_x: float, q_y: float) -> Exceedance:
    """``P(Y > y_q | X > x_q)`` and ``P(Y > y_q)`` for a bivariate normal or Gaussian copula.

    ``x_q``, ``y_q`` are the ``q_x``, ``q_y`` quantiles of the margins, so
    ``P(Y > y_q | X > x_q) = P(Zx > ndtri(q_x), Zy > ndtri(q_y); rho) / (1 - q_x)``
    whatever the margins; the marginal probability is ``1 - q_y``.

    Parameters
    ----------
    rho : array, shape (cells,)
        Correlation (Pearson for the bivariate normal, copula correlation otherwise).
    q_x, q_y : float
        Quantile levels in (0, 1).
    """
    q_x, q_y = _check_level(q_x, "q_x"), _check_level(q_y, "q_y")
    xp = _namespace(rho)
    (rho,) = _as_float((rho,), xp)
    zx = special.ndtri(xp.full_like(rho, q_x))
    zy = special.ndtri(xp.full_like(rho, q_y))
    p = _upper_orthant(zx, zy, rho, xp) / (1.0 - q_x)
    return Exceedance(conditional=xp.clip(p, 0.0, 1.0), marginal=xp.full_like(rho, 1.0 - q_y))


# ---------------------------------------------------------- Gaussian copula


def _scores(u: Array, xp: Any) -> Array:
    """Normal scores ``ndtri(u)`` with ``u`` clipped to ``[eps, 1 - eps]`` (finite, symmetric: |z| <= ~8.1 in float64)."""
    eps = float(xp.finfo(u.dtype).eps)
    return special.ndtri(xp.clip(u, eps, 1.0 - eps))


def _copula_cubic(r: Array, s: Array, q: Array) -> tuple[Array, Array]:
    """``f(r) = r^3 - s r^2 + (q - 1) r - s`` and ``f'(r)``: the copula score is ``-n f(r) / (1 - r^2)^2``."""
    return ((r - s) * r + (q - 1.0)) * r - s, (3.0 * r - 2.0 * s) * r + (q - 1.0)


def _copula_loglik(r: Array, s: Array, q: Array, xp: Any) -> Array:
    """Log-likelihood per observation of unit-margin scores, up to a constant; -inf at |r| >= 1."""
    one_m = (1.0 - r) * (1.0 + r)
    ok = one_m > 0
    safe = xp.where(ok, one_m, xp.ones_like(one_m))
    value = -0.5 * xp.log(safe) - (q - 2.0 * r * s) / (2.0 * safe)
    return xp.where(ok, value, xp.full_like(value, -math.inf))


def gaussian_copula(u_x: Array, u_y: Array) -> GaussianCopula:
    """Normal scores and the Gaussian-copula correlation, given the margins' PITs.

    The scores ``z = ndtri(u)`` (``u`` clipped to ``[eps, 1 - eps]``) are
    standard normal under the fitted margins, so given the margins the copula
    log-likelihood is that of a bivariate normal with zero means, unit variances
    and correlation ``rho``. With ``s = mean(zx zy)`` and
    ``q = mean(zx^2 + zy^2)`` its score vanishes where

        ``f(rho) = rho^3 - s rho^2 + (q - 1) rho - s = 0``,

    a cubic with ``f(-1) <= 0 <= f(1)``. ``rho`` is the **exact maximum-likelihood
    estimate**: a safeguarded Newton iteration on ``f`` (bisection on the bracket
    ``[-1, 1]`` when a step leaves it) started at the score correlation, then the
    two other roots from the deflated quadratic, keeping the root of highest
    likelihood (the root is unique when ``q > 1 + s^2 / 3``, as for scores of
    about unit variance). ``rho_scores`` is the Pearson correlation of the
    scores (centred, divisor n) for comparison.

    Parameters
    ----------
    u_x : array, shape (n,) or (n, cells)
        ``F(x)`` of the index under its fitted margin, in [0, 1].
    u_y : array, shape (n, cells)
        ``G(y)`` of the field under its fitted margins, in [0, 1].
    """
    xp = _check_pair(u_x, u_y)
    if bool(xp.any((u_x < 0) | (u_x > 1))) or bool(xp.any((u_y < 0) | (u_y > 1))):
        raise ValueError("u_x and u_y must be probabilities in [0, 1] (the margins' CDFs at the data).")
    z_x, z_y = _scores(u_x, xp), _scores(u_y, xp)
    zxc = _column(z_x, xp)
    s = xp.mean(zxc * z_y, axis=0)
    q = xp.mean(zxc * zxc, axis=0) + xp.mean(z_y * z_y, axis=0)
    rho_scores = bivariate_normal(z_x, z_y).rho

    lo, hi = -xp.ones_like(s), xp.ones_like(s)
    r = xp.clip(s / xp.sqrt(xp.mean(zxc * zxc, axis=0) * xp.mean(z_y * z_y, axis=0)), -0.99, 0.99)
    tol = 4.0 * float(xp.finfo(s.dtype).eps)
    for _ in range(_NEWTON_MAX_ITER):
        f, df = _copula_cubic(r, s, q)
        lo, hi = xp.where(f < 0, r, lo), xp.where(f > 0, r, hi)
        newton = r - f / xp.where(df > 0, df, xp.ones_like(df))
        inside = (df > 0) & (newton > lo) & (newton < hi)
        r_new = xp.where(inside, newton, 0.5 * (lo + hi))
        r_new = xp.where(f == 0, r, r_new)
        active = xp.abs(r_new - r) > tol
        r = r_new
        if not bool(xp.any(active)):
            break

    # other roots: f(rho) = (rho - r) (rho^2 + (r - s) rho + r^2 - s r + q - 1)
    bq = r - s
    cq = (r - s) * r + q - 1.0
    disc = bq * bq - 4.0 * cq
    root = xp.sqrt(xp.where(disc >= 0, disc, xp.zeros_like(disc)))
    best, best_ll = r, _copula_loglik(r, s, q, xp)
    for other in (0.5 * (-bq + root), 0.5 * (-bq - root)):
        ll = xp.where(disc >= 0, _copula_loglik(other, s, q, xp), xp.full_like(s, -math.inf))
        better = ll > best_ll
        best, best_ll = xp.where(better, other, best), xp.where(better, ll, best_ll)
    for _ in range(2):  # polish a deflated root; a maximum has f' >= 0
        f, df = _copula_cubic(best, s, q)
        best = xp.where(df > 0, xp.clip(best - f / xp.where(df > 0, df, xp.ones_like(df)), -1.0, 1.0), best)
    return GaussianCopula(z_x=z_x, z_y=z_y, rho=best, rho_scores=rho_scores)


def copula_logpdf(u: Array, v: Array, rho: Array) -> Array:
    """Log-density of the Gaussian copula, elementwise with broadcasting.

    ``log c(u, v) = -log(1 - rho^2)/2 - (rho^2 (x^2 + y^2) - 2 rho x y) / (2 (1 - rho^2))``
    with ``x = ndtri(u)``, ``y = ndtri(v)`` (``u``, ``v`` clipped to
    ``[eps, 1 - eps]``); ``-inf`` outside the unit square; ``|rho| < 1``.
    The joint density over margins ``F``, ``G`` is
    ``exp(copula_logpdf(F(x), G(y), rho)) f(x) g(y)``.
    """
    xp = _namespace(u, v, rho)
    u, v, rho = _as_float((u, v, rho), xp)
    x, y = _scores(u, xp), _scores(v, xp)
    one_m = (1.0 - rho) * (1.0 + rho)
    value = -0.5 * xp.log(one_m) - (rho * rho * (x * x + y * y) - 2.0 * rho * x * y) / (2.0 * one_m)
    outside = (u < 0) | (u > 1) | (v < 0) | (v > 1)
    return xp.where(outside, xp.full_like(value, -math.inf), value)


def copula_conditional_cdf(u: Array, v: Array, rho: Array) -> Array:
    """``P(V <= v | U = u)`` under the Gaussian copula (its h-function), elementwise.

    ``Phi((ndtri(v) - rho ndtri(u)) / sqrt(1 - rho^2))``; with margins ``F``, ``G``
    this is ``P(Y <= y | X = x)`` at ``u = F(x)``, ``v = G(y)``. ``|rho| < 1``.
    """
    xp = _namespace(u, v, rho)
    u, v, rho = _as_float((u, v, rho), xp)
    return special.ndtr((_scores(v, xp) - rho * _scores(u, xp)) / xp.sqrt((1.0 - rho) * (1.0 + rho)))


# -------------------------------------------------------------- empirical


def _type7_quantile(sorted_x: Array, q: float) -> Array:
    """Type-7 (linear) sample quantile of each column of an ascending-sorted ``(n, cells)`` array."""
    n = sorted_x.shape[0]
    h = (n - 1) * q
    lo = min(int(math.floor(h)), n - 1)
    hi = min(lo + 1, n - 1)
    return sorted_x[lo, ...] + (h - lo) * (sorted_x[hi, ...] - sorted_x[lo, ...])


def empirical_conditional_exceedance(x: Array, y: Array, q_x: float, q_y: float) -> EmpiricalExceedance:
    """Counted ``P(Y > y_q | X > x_q)`` and ``P(Y > y_q)`` per cell, with type-7 sample quantiles.

    ``x_q``, ``y_q`` are the type-7 (linear interpolation, numpy's default)
    ``q_x``, ``q_y`` quantiles of each column (one sort per column);
    ``conditional = #(x > x_q and y > y_q) / #(x > x_q)``,
    ``marginal = #(y > y_q) / n``. Columns with a NaN, or with no ``x > x_q``,
    give NaN.

    Parameters
    ----------
    x : array, shape (n,) or (n, cells)
    y : array, shape (n, cells)
    q_x, q_y : float
        Quantile levels in (0, 1).
    """
    q_x, q_y = _check_level(q_x, "q_x"), _check_level(q_y, "q_y")
    xp = _check_pair(x, y)
    xc = _column(x, xp)
    x_q = _type7_quantile(xp.sort(xc, axis=0), q_x)
    y_q = _type7_quantile(xp.sort(y, axis=0), q_y)
    above_x = xc > x_q
    above_y = y > y_q
    dtype = y.dtype
    n_x = xp.sum(xp.astype(above_x, dtype), axis=0) * xp.ones_like(y_q)
    n_xy = xp.sum(xp.astype(above_x & above_y, dtype), axis=0)
    marginal = xp.sum(xp.astype(above_y, dtype), axis=0) / y.shape[0]
    conditional = n_xy / xp.where(n_x > 0, n_x, xp.ones_like(n_x))
    nan = xp.full_like(y_q, math.nan)
    missing = xp.any(xp.isnan(y), axis=0) | xp.any(xp.isnan(xc), axis=0)
    return EmpiricalExceedance(
        conditional=xp.where(missing | (n_x == 0), nan, conditional),
        marginal=xp.where(missing, nan, marginal),
        x_q=xp.where(missing, nan, x_q * xp.ones_like(y_q)),
        y_q=xp.where(missing, nan, y_q),
    )
