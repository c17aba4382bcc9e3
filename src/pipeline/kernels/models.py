"""Log posterior densities, with analytic gradients, for sampling every cell at once.

Raw arrays in, raw arrays out, written against the Python array API. A
:class:`Model` holds a function ``logp_grad(theta)`` of unconstrained
parameters ``theta`` of shape ``(p, chains, cells)`` that returns the log
posterior density ``(chains, cells)`` (Jacobian of the transform included, up
to a constant per cell) and its gradient ``(p, chains, cells)``. The samplers
of :mod:`pipeline.kernels.mcmc` need nothing else. ``constrain(theta)`` maps
parameters of shape ``(p, ...)`` to a dict of natural-scale arrays ``(...)``.

Models
------
* :func:`bayes_regression`: the conjugate ridge regression of
  :mod:`pipeline.kernels.posterior` in ``(beta, log sigma^2)``; its exact
  posterior is the reference for the samplers.
* :func:`normal_unknown`, :func:`lognormal_unknown`: normal law (of ``x`` or of
  ``log x``) with unknown mean and variance under the conjugate
  normal--inverse-gamma prior, in ``(mu, log sigma)``; exact posterior in
  :func:`normal_posterior`.
* :func:`bayes_gev`: GEV with weakly informative normal priors on location and
  log-scale and the Martins & Stedinger (2000) beta prior on the shape, in
  standardized units; :func:`gev_return_levels` turns draws into return levels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import array_api_compat

from pipeline.kernels import gev as _gev
from pipeline.kernels import special

Array = Any


@dataclass(frozen=True)
class Model:
    """A log posterior density over unconstrained parameters, batched over chains and cells.

    Attributes
    ----------
    name : str
    param_names : tuple of str
        Names of the unconstrained parameters, in the order of ``theta``'s first axis.
    logp_grad : callable
        ``theta (p, chains, cells) -> (logp (chains, cells), grad (p, chains, cells))``;
        ``logp`` is ``-inf`` where the density is zero (the gradient is then finite
        but meaningless).
    constrain : callable
        ``theta (p, ...) -> dict`` of natural-scale arrays ``(...)``.
    init : callable or None
        ``init(chains, seed) -> theta0 (p, chains, cells)``: starting points near
        the bulk of the posterior (a cheap point estimate, jittered per chain),
        all with finite ``logp``.
    """

    name: str
    param_names: tuple[str, ...]
    logp_grad: Callable[[Array], tuple[Array, Array]]
    constrain: Callable[[Array], dict[str, Array]]
    init: Callable[[int, int], Array] | None = None

    @property
    def dim(self) -> int:
        """Number of unconstrained parameters ``p``."""
        return len(self.param_names)


def _float64(a: Array, xp: Any) -> Array:
    return a if a.dtype == xp.float64 else xp.astype(a, xp.float64)


def _finite(x: Array, name: str, xp: Any) -> None:
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} must be finite everywhere; drop or fill missing values first.")


def _positive(value: float, name: str) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive; got {value}.")


def _jittered(center: Array, spread: Array, logp_grad: Callable, chains: int, seed: int) -> Array:
    """``center (p, cells) + spread * N(0, 1)`` per chain; a chain whose jittered start has ``logp = -inf``
    starts at ``center``."""
    xp = array_api_compat.array_namespace(center)
    p, cells = center.shape
    noise = special.ndtri(special.uniform((p, chains, cells), seed=seed, like=center))
    theta = center[:, None, :] + spread[:, None, :] * noise
    ok = xp.isfinite(logp_grad(theta)[0])
    return xp.where(ok, theta, center[:, None, :])


def _boxed(theta: Array, center: Array, half: Array) -> tuple[Array, Array]:
    """Whether ``|theta - center| <= half`` for every parameter (``center, half`` ``(p, cells)``), and ``theta`` with
    the chains outside moved to ``center``.

    Far outside the box the posterior density underflows to zero anyway; evaluating
    there instead would overflow ``exp`` (a sampler's wild trial points). Such points
    get ``logp = -inf`` and a zero gradient.
    """
    xp = array_api_compat.array_namespace(theta, center)
    c, h = center[:, None, ...], half[:, None, ...]
    ok = xp.all(xp.abs(theta - c) <= h, axis=0)
    return ok, xp.where(ok, theta, c)


def _outside(ok: Array, logp: Array, grad: Array) -> tuple[Array, Array]:
    xp = array_api_compat.array_namespace(logp)
    return xp.where(ok, logp, xp.full_like(logp, -xp.inf)), xp.where(ok, grad, 0.0)


# ------------------------------------------------------------- regression


def bayes_regression(Z: Array, Yc: Array, *, alpha: float, a0: float, b0: float) -> Model:
    """The conjugate Bayesian ridge regression of every cell, in ``(beta_1..beta_k, log sigma^2)``.

    The model of :mod:`pipeline.kernels.posterior`: ``y = Z beta + e``,
    ``e ~ N(0, s2 I)``, ``beta | s2 ~ N(0, s2/alpha I)`` (flat for ``alpha = 0``),
    ``s2 ~ InvGamma(a0, b0)``, intercept integrated out by centring (``n - 1``
    effective samples). With ``l = log s2`` and the Jacobian ``ds2/dl = s2``,

        log p(beta, l | y) = -c l - Q(beta) exp(-l) / 2,
        Q(beta) = |y - Z beta|^2 + alpha |beta|^2 + 2 b0,
        c = a0 + (n - 1)/2 + k/2   (k/2 left out when alpha = 0),

    so ``grad_beta = -(G beta - Z^T y) exp(-l)`` with ``G = Z^T Z + alpha I``
    and ``grad_l = -c + Q exp(-l)/2``. :func:`pipeline.kernels.posterior.conjugate`
    gives the exact posterior. With ``v = (y^T y + 2 b0)/n``, points with
    ``|l - log v| > 50`` or ``|beta_j| > 1e8 sqrt(v)`` have ``logp = -inf``
    (the density there is below ``exp(-1e15)`` of its peak unless ``b0`` is
    negligible against a perfect fit).

    Parameters
    ----------
    Z : ``(n, k)`` standardized design, shared by all cells.
    Yc : ``(n, cells)`` centred responses.
    alpha, a0, b0 : prior parameters (``alpha >= 0``, ``a0, b0 > 0``).
    """
    xp = array_api_compat.array_namespace(Z, Yc)
    if Z.ndim != 2 or Yc.ndim != 2 or Z.shape[0] != Yc.shape[0]:
        raise ValueError(f"Z (n, k) and Yc (n, cells) must share n; got shapes {tuple(Z.shape)} and {tuple(Yc.shape)}.")
    if not alpha >= 0:
        raise ValueError(f"alpha must be non-negative; got {alpha}.")
    _positive(a0, "a0")
    _positive(b0, "b0")
    Z, Yc = _float64(Z, xp), _float64(Yc, xp)
    n, k = Z.shape
    gram = xp.matrix_transpose(Z) @ Z + alpha * xp.eye(k, dtype=Z.dtype, device=array_api_compat.device(Z))
    zty = (xp.matrix_transpose(Z) @ Yc)[:, None, :]  # (k, 1, cells)
    yy = xp.sum(Yc * Yc, axis=0)  # (cells,)
    c = a0 + 0.5 * (n - 1) + (0.5 * k if alpha > 0 else 0.0)
    v = (yy + 2.0 * b0) / n
    center = xp.stack([xp.zeros_like(v)] * k + [xp.log(v)])
    half = xp.stack([1e8 * xp.sqrt(v)] * k + [xp.full_like(v, 50.0)])

    def logp_grad(theta: Array) -> tuple[Array, Array]:
        ok, theta = _boxed(theta, center, half)
        beta, l = theta[:k, ...], theta[k, ...]
        g_beta = xp.tensordot(gram, beta, axes=1)
        q = yy + xp.sum(beta * (g_beta - 2.0 * zty), axis=0) + 2.0 * b0
        e = xp.exp(-l)
        grad = xp.concat([-(g_beta - zty) * e, (-c + 0.5 * q * e)[None, ...]], axis=0)
        return _outside(ok, -c * l - 0.5 * q * e, grad)

    def constrain(theta: Array) -> dict[str, Array]:
        out = {f"beta_{j + 1}": theta[j, ...] for j in range(k)}
        out["sigma2"] = xp.exp(theta[k, ...])
        return out

    def init(chains: int, seed: int) -> Array:
        # posterior mean of beta and s2 ~ b_n / a_n, jittered by about one posterior sd
        gram_inv = xp.linalg.inv(gram)
        mean = gram_inv @ zty[:, 0, :]
        a_n = a0 + 0.5 * (n - 1 - (0 if alpha > 0 else k))
        s2 = (b0 + 0.5 * (yy - xp.sum(mean * zty[:, 0, :], axis=0))) / a_n
        center = xp.concat([mean, xp.log(s2)[None, :]], axis=0)
        sd_beta = xp.sqrt(xp.linalg.diagonal(gram_inv)[:, None] * s2)
        spread = xp.concat([sd_beta, xp.full_like(s2, (1.0 / a_n) ** 0.5)[None, :]], axis=0)
        return _jittered(center, spread, logp_grad, chains, seed)

    names = tuple(f"beta_{j + 1}" for j in range(k)) + ("log_sigma2",)
    return Model("bayes_regression", names, logp_grad, constrain, init)


# ------------------------------------------------------------- normal with unknown mean and variance


class NIG(NamedTuple):
    """Normal--inverse-gamma law: ``mu | s2 ~ N(loc, s2/kappa)``, ``s2 ~ InvGamma(a, b)``; arrays ``(cells,)``."""

    loc: Array
    kappa: Array
    a: Array
    b: Array


def _nig_prior(x: Array, loc0: Any, kappa0: float, a0: float, b0: Any) -> tuple[Any, NIG, Array, Array]:
    """Validated ``x`` (float64), the prior as arrays ``(cells,)``, and each cell's mean and sum of squares."""
    xp = array_api_compat.array_namespace(x)
    if x.ndim != 2 or not xp.isdtype(x.dtype, "real floating") or x.shape[0] < 2:
        raise ValueError(
            f"x must be a real floating (sample, cell) array with at least 2 samples; got {tuple(x.shape)} {x.dtype}."
        )
    _finite(x, "x", xp)
    _positive(kappa0, "kappa0")
    _positive(a0, "a0")
    x = _float64(x, xp)
    n = x.shape[0]
    mean = xp.mean(x, axis=0)
    sxx = xp.sum((x - mean) ** 2, axis=0)
    zeros = xp.zeros_like(mean)
    loc = mean if loc0 is None else zeros + loc0
    b = a0 * sxx / (n - 1) if b0 is None else zeros + b0
    if not bool(xp.all(b > 0)):
        raise ValueError("b0 must be positive (with b0=None, every cell needs two distinct values).")
    return xp, NIG(loc, zeros + kappa0, zeros + a0, b), mean, sxx


def normal_posterior(x: Array, *, loc0: Any = None, kappa0: float = 0.01, a0: float = 0.01, b0: Any = None) -> NIG:
    """Exact posterior ``NIG(m_n, kappa_n, a_n, b_n)`` of :func:`normal_unknown` (conjugate update).

    ``kappa_n = kappa0 + n``, ``m_n = (kappa0 m0 + n xbar)/kappa_n``, ``a_n = a0 + n/2``,
    ``b_n = b0 + S/2 + kappa0 n (xbar - m0)^2 / (2 kappa_n)`` with ``S = sum (x - xbar)^2``.
    Marginally ``mu`` is Student-t with ``2 a_n`` degrees of freedom, location ``m_n``
    and squared scale ``b_n/(a_n kappa_n)``; ``log sigma = log(s2)/2`` has mean
    ``(log b_n - digamma(a_n))/2`` and variance ``trigamma(a_n)/4``.
    """
    _, prior, mean, sxx = _nig_prior(x, loc0, kappa0, a0, b0)
    n = x.shape[0]
    kappa = prior.kappa + n
    d = mean - prior.loc
    b = prior.b + 0.5 * sxx + 0.5 * prior.kappa * n * d * d / kappa
    return NIG((prior.kappa * prior.loc + n * mean) / kappa, kappa, prior.a + 0.5 * n, b)


def normal_unknown(
    x: Array, *, loc0: Any = None, kappa0: float = 0.01, a0: float = 0.01, b0: Any = None, name: str = "normal_unknown"
) -> Model:
    """Normal law of each column of ``x`` (sample, cell) with unknown mean and variance, in ``(mu, log sigma)``.

    Prior (conjugate): ``mu | s2 ~ N(loc0, s2/kappa0)``, ``s2 ~ InvGamma(a0, b0)``.
    The defaults are weakly informative and relative to each cell's data:
    ``loc0 = None`` centres the prior of ``mu`` on the cell's sample mean with
    the weight of ``kappa0 = 0.01`` observations, and ``b0 = None`` sets
    ``b0 = a0 * s^2`` (``s^2`` the sample variance) with ``a0 = 0.01``; numbers
    or ``(cells,)`` arrays may be given instead. With ``l = log sigma`` and the
    Jacobian ``ds2/dl = 2 s2``,

        log p(mu, l | x) = -(n + 1 + 2 a0) l - Q exp(-2 l) / 2,
        Q = S + n (xbar - mu)^2 + kappa0 (mu - loc0)^2 + 2 b0,

    ``grad_mu = (n (xbar - mu) - kappa0 (mu - loc0)) exp(-2 l)``,
    ``grad_l = -(n + 1 + 2 a0) + Q exp(-2 l)``. The exact posterior is
    :func:`normal_posterior`. ``x`` must be finite. With ``v = (S + 2 b0)/n``,
    points with ``|l - log(v)/2| > 25`` or ``|mu - xbar| > 1e8 sqrt(v) + |loc0 - xbar|``
    have ``logp = -inf`` (see :func:`bayes_regression`).
    """
    xp, prior, mean, sxx = _nig_prior(x, loc0, kappa0, a0, b0)
    n = x.shape[0]
    c = n + 1.0 + 2.0 * prior.a
    v = (sxx + 2.0 * prior.b) / n
    center = xp.stack([mean, 0.5 * xp.log(v)])
    half = xp.stack([1e8 * xp.sqrt(v) + xp.abs(prior.loc - mean), xp.full_like(v, 25.0)])

    def logp_grad(theta: Array) -> tuple[Array, Array]:
        ok, theta = _boxed(theta, center, half)
        mu, l = theta[0, ...], theta[1, ...]
        dm, d0 = mean - mu, mu - prior.loc
        q = sxx + n * dm * dm + prior.kappa * d0 * d0 + 2.0 * prior.b
        e = xp.exp(-2.0 * l)
        grad = xp.stack([(n * dm - prior.kappa * d0) * e, -c + q * e])
        return _outside(ok, -c * l - 0.5 * q * e, grad)

    def constrain(theta: Array) -> dict[str, Array]:
        return {"mu": theta[0, ...], "sigma": xp.exp(theta[1, ...])}

    def init(chains: int, seed: int) -> Array:
        post = normal_posterior(x, loc0=loc0, kappa0=kappa0, a0=a0, b0=b0)
        s2 = post.b / post.a
        center = xp.stack([post.loc, 0.5 * xp.log(s2)])
        spread = xp.stack([xp.sqrt(s2 / post.kappa), 0.5 * xp.sqrt(1.0 / post.a)])
        return _jittered(center, spread, logp_grad, chains, seed)

    return Model(name, ("mu", "log_sigma"), logp_grad, constrain, init)


def lognormal_unknown(x: Array, *, loc0: Any = None, kappa0: float = 0.01, a0: float = 0.01, b0: Any = None) -> Model:
    """:func:`normal_unknown` of ``log x`` (``x > 0``): ``mu`` and ``sigma`` are those of ``log x``.

    The density of ``x`` differs from that of ``log x`` by ``-sum log x``, a constant
    per cell, so the posterior is that of the normal model of ``log x`` (exact:
    ``normal_posterior(log x, ...)``); the prior hyperparameters are on the log scale.
    """
    xp = array_api_compat.array_namespace(x)
    if not bool(xp.all(x > 0)):
        raise ValueError("x must be positive (and finite) for the lognormal model.")
    return normal_unknown(xp.log(_float64(x, xp)), loc0=loc0, kappa0=kappa0, a0=a0, b0=b0, name="lognormal_unknown")


# ------------------------------------------------------------- GEV


def bayes_gev(
    x: Array,
    *,
    prior_loc_sd: float = 10.0,
    prior_log_scale_sd: float = 2.0,
    shape_prior: tuple[float, float] = (6.0, 9.0),
    valid: Array | None = None,
    reference: tuple[Any, Any] | None = None,
) -> Model:
    """GEV law of each column of ``x`` (sample, cell) with the geophysical shape prior.

    Each cell is standardized once, ``z = (x - m)/s`` with its mean ``m`` and sd
    ``s`` (:func:`pipeline.kernels.gev.standardize_gev`: NaN entries and those
    where ``valid`` is False are left out). The parameters are the standardized
    ``(mu, eta, xi)`` named ``("mu_z", "log_sigma_z", "xi")``:
    ``loc = m + s mu``, ``scale = s exp(eta)``, shape ``xi`` (``xi > 0`` heavy
    upper tail; scipy's ``genextreme(c=-xi, loc, scale)``). The map from
    ``(loc, log scale)`` is affine, so this is the posterior in
    ``(loc, log scale, xi)`` up to a constant. Priors, independent:

    * ``mu ~ N(0, prior_loc_sd^2)``: ``loc ~ N(m, (prior_loc_sd s)^2)``;
    * ``eta ~ N(0, prior_log_scale_sd^2)``: ``log scale ~ N(log s, prior_log_scale_sd^2)``;
    * Martins & Stedinger (2000): with ``(p, q) = shape_prior`` and their shape
      ``kappa = -xi`` (Hosking's sign, scipy's ``c``), ``kappa + 1/2 ~ Beta(p, q)``,
      i.e. ``1/2 - xi ~ Beta(p, q)`` on ``xi`` in ``(-1/2, 1/2)``; for ``(6, 9)``
      the mean of ``xi`` is ``+0.10`` (sd 0.122), a mildly heavy tail. The log
      density is ``-inf`` outside.

    ``reference = (center, scale)`` (numbers or ``(cells,)`` arrays, ``scale > 0``)
    replaces each cell's own mean and sd by values fixed before seeing the data,
    so that the prior does not depend on the data: simulation-based calibration
    draws ``(mu, eta, xi)`` from this prior and needs exactly that.

    Likelihood and gradient are :func:`pipeline.kernels.gev.gev_objective`
    (chains broadcast against the cell axis). Cells with fewer than
    ``gev.MIN_OBS`` distinct values get NaN from ``constrain``.
    """
    xp = array_api_compat.array_namespace(x)
    if x.ndim != 2 or not xp.isdtype(x.dtype, "real floating"):
        raise ValueError(f"x must be a 2-D real floating (sample, cell) array; got {x.ndim}-D {x.dtype}.")
    _positive(prior_loc_sd, "prior_loc_sd")
    _positive(prior_log_scale_sd, "prior_log_scale_sd")
    bp, bq = (float(v) for v in shape_prior)
    _positive(bp, "shape_prior[0]")
    _positive(bq, "shape_prior[1]")
    x = _float64(x, xp)
    st = _gev.standardize_gev(x, valid)
    if reference is not None:
        center = xp.zeros_like(st.center) + reference[0]
        scale = xp.zeros_like(st.scale) + reference[1]
        if not bool(xp.all(scale > 0)) or not bool(xp.all(xp.isfinite(center))):
            raise ValueError("reference must be (center, scale) with finite centers and positive scales.")
        z_ref = xp.where(st.mask, (xp.where(st.mask, x, 0.0) - center) / scale, 0.0)
        st = st._replace(z=xp.where(st.usable, z_ref, st.z), center=center, scale=scale)
    z = st.z[:, None, :]
    weight = None if st.weight is None else st.weight[:, None, :]
    inv_var = (1.0 / prior_loc_sd**2, 1.0 / prior_log_scale_sd**2)
    z_lo = xp.min(xp.where(st.mask, st.z, xp.inf), axis=0)
    z_hi = xp.max(xp.where(st.mask, st.z, -xp.inf), axis=0)

    def logp_grad(theta: Array) -> tuple[Array, Array]:
        mu, eta, xi = theta[0, ...], theta[1, ...], theta[2, ...]
        # prior support, gev's domain box, and every valid value inside the law's support; other points are
        # evaluated at (0, 0, 0) (harmless for the left-out entries too) and get -inf
        inv_s = xp.exp(-xp.clip(eta, -20.0, 20.0))
        inside = (xi > -0.5) & (xi < 0.5) & (xp.abs(mu) <= 1e4) & (xp.abs(eta) <= 20.0)
        inside = inside & (1.0 + xi * (z_lo - mu) * inv_s > 0.0) & (1.0 + xi * (z_hi - mu) * inv_s > 0.0)
        theta = xp.where(inside, theta, 0.0)
        mu, eta, xi = theta[0, ...], theta[1, ...], theta[2, ...]
        loglik, grad, _ = _gev.gev_objective(theta, z, weight, hessian=False)
        lo, hi = xp.where(inside, 0.5 + xi, 0.5), xp.where(inside, 0.5 - xi, 0.5)
        prior = (bp - 1.0) * xp.log(hi) + (bq - 1.0) * xp.log(lo)
        prior = prior - 0.5 * (inv_var[0] * mu * mu + inv_var[1] * eta * eta)
        logp = xp.where(inside & xp.isfinite(loglik), loglik + prior, xp.full_like(loglik, -xp.inf))
        d_xi = xp.where(inside, (bq - 1.0) / lo - (bp - 1.0) / hi, 0.0)
        grad = grad + xp.stack([-inv_var[0] * mu, -inv_var[1] * eta, d_xi])
        return logp, xp.where(xp.isfinite(grad) & xp.isfinite(logp), grad, 0.0)

    def constrain(theta: Array) -> dict[str, Array]:
        nan = xp.full_like(st.center, xp.nan)
        center, scale = xp.where(st.usable, st.center, nan), xp.where(st.usable, st.scale, nan)
        return {"loc": center + scale * theta[0, ...], "scale": scale * xp.exp(theta[1, ...]), "shape": theta[2, ...]}

    def init(chains: int, seed: int) -> Array:
        start = _gev.gev_start(st.z, st.mask, st.count, xp)
        center = xp.stack([start[0, ...], start[1, ...], xp.clip(start[2, ...], -0.4, 0.4)])
        spread = xp.stack([xp.full_like(st.center, s) for s in (0.1, 0.1, 0.05)])
        return _jittered(center, spread, logp_grad, chains, seed)

    return Model("bayes_gev", ("mu_z", "log_sigma_z", "xi"), logp_grad, constrain, init)


def gev_return_levels(params: dict[str, Array], periods: Any) -> Array:
    """Return levels ``(period, ...)`` of GEV draws ``params`` (``constrain``'s dict: loc, scale, shape ``(...)``).

    The ``T``-block return level is the ``1 - 1/T`` quantile,
    ``loc + scale ((-log(1 - 1/T))^(-xi) - 1)/xi``; ``periods`` are numbers > 1.
    """
    xp = array_api_compat.array_namespace(params["loc"])
    periods = [float(t) for t in periods]
    if not periods or min(periods) <= 1.0:
        raise ValueError(f"periods must be a non-empty list of return periods greater than 1; got {periods}.")
    stacked = xp.stack([params["loc"], params["scale"], params["shape"]])
    like = stacked[0, ...]
    prob = xp.asarray([1.0 - 1.0 / t for t in periods], dtype=like.dtype, device=array_api_compat.device(like))
    prob = xp.reshape(prob, (len(periods),) + (1,) * like.ndim)
    return _gev.gev_ppf(prob, stacked)
