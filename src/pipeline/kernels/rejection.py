"""Exact posterior draws by rejection from a Student-t envelope, all cells at once.

Raw arrays in, raw arrays out, written against the Python array API. A model
(see :mod:`pipeline.kernels.models`) gives the unnormalized log posterior and its
gradient in the unconstrained space, ``logp_grad(theta) -> (logp, grad)`` with
``theta`` of shape ``(p, chains, cells)``; here the ``chains`` axis carries
batches of points (finite-difference stencils, proposals).

Two steps:

* :func:`laplace` finds the posterior mode per cell by damped Newton
  (:func:`pipeline.kernels.newton.maximize`) with the model's gradient and a
  Hessian by central differences of the gradient, and returns the Laplace
  covariance ``Sigma = (-H)^{-1}``;
* :func:`rejection_sample` draws exactly from the posterior by rejection from
  the envelope ``q = t_nu(mode, s^2 Sigma)``, a multivariate Student-t with
  ``nu = df`` degrees of freedom (Gaussian for ``df = inf``) and scale factor
  ``s = scale``. A proposal ``x ~ q`` is accepted when ``log u < log p(x) -
  log q(x) - log M`` with ``u ~ U(0, 1)``; accepted points are draws from ``p``
  whenever ``p <= M q`` everywhere.

The bound
---------
``log M`` is not known in closed form. It is taken from a pilot batch of
``n_pilot`` proposals (and the mode itself), never used as draws:
``log M = max(log p - log q) + margin``. The pilot only sets ``M``; the draws
come from later, independent proposals, each of which is checked against the
bound: a cell where some proposal has ``log p - log q > log M`` has an envelope
that does not cover its posterior, its draws are not exact, and it is flagged
``failed`` (its draws are NaN) so that MCMC can take over. With a covering
envelope the expected acceptance rate is ``Z_p / M``, ``Z_p`` the integral of
the unnormalized posterior (``q`` is normalized).

Proposals come in rounds for all cells together (the model is evaluated on
every cell at once); a round's size is set by the slowest cell that still needs
draws (from its acceptance so far), capped by memory. Cells that still lack
draws after ``max_rounds`` rounds are flagged ``unfinished``. All random numbers
come from :func:`pipeline.kernels.special.uniform`, one seed per round derived
from ``seed``: normals by ``ndtri``; the chi-squared of the t as ``-2 sum log u``
over ``df/2`` uniforms (a gamma with integer shape is a sum of exponentials),
plus one squared normal for odd ``df``, for integer ``df <= 64``, and by
``gammaincinv`` otherwise.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from pipeline.kernels import newton, special

Array = Any

_MAX_FLOATS = 2**23  # uniforms per round: (p + 1 + chi-squared uniforms) * batch * cells
_MAX_CHAIN_CELLS = 2**18  # points per model evaluation (chains * cells)


class Laplace(NamedTuple):
    """Laplace approximation per cell.

    ``mode`` (p, cells); ``cov`` (p, p, cells), NaN where ``-H`` is not positive
    definite; ``logp`` (cells,) at the mode; ``converged`` (cells,) bool.
    """

    mode: Array
    cov: Array
    logp: Array
    converged: Array


class Rejection(NamedTuple):
    """Rejection draws per cell.

    ``draws`` (p, n_draws, cells): exact posterior draws, NaN for failed cells
    and in the slots an unfinished cell did not fill; ``acceptance`` (cells,),
    accepted / proposed after the pilot (NaN where there is no usable envelope);
    ``failed`` (cells,) bool, the envelope did not cover the posterior (or there
    was none: no mode, no covariance); ``unfinished`` (cells,) bool, not failed
    but fewer than ``n_draws`` draws after ``max_rounds``, or given up because its
    acceptance rate fell below ``min_acceptance``; ``log_bound`` (cells,),
    ``log M``; ``n_proposed``, ``n_accepted`` (cells,) counts after the pilot.
    """

    draws: Array
    acceptance: Array
    failed: Array
    unfinished: Array
    log_bound: Array
    n_proposed: Array
    n_accepted: Array

    @property
    def needs_mcmc(self) -> Array:
        """Cells without ``n_draws`` exact draws: ``failed | unfinished``."""
        return self.failed | self.unfinished


# ------------------------------------------------------------------- helpers


def _logp(model: Any, theta: Array, xp: Any) -> Array:
    """``log p`` at ``theta`` (p, chains, cells), in pieces along chains; -inf where not finite."""
    n_chains, n_cells = theta.shape[1], theta.shape[2]
    step = max(1, _MAX_CHAIN_CELLS // n_cells)
    parts = [model.logp_grad(theta[:, i : min(i + step, n_chains), :])[0] for i in range(0, n_chains, step)]
    lp = parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
    return xp.where(xp.isfinite(lp), lp, xp.full_like(lp, -xp.inf))


def _logp_grad_hess(model: Any, theta: Array, xp: Any) -> tuple[Array, Array, Array]:
    """``log p``, gradient and Hessian (central differences of the gradient) at ``theta`` (p, cells).

    One model call evaluates the ``2p + 1`` stencil points as chains. The step
    along ``theta_j`` is ``eps^(1/3) max(1, |theta_j|)`` (the steps actually
    taken, after rounding, divide the difference); the Hessian is symmetrized.
    """
    p = theta.shape[0]
    h = float(xp.finfo(theta.dtype).eps) ** (1.0 / 3.0) * xp.maximum(xp.abs(theta), xp.ones_like(theta))
    points, spans = [theta], []
    for j in range(p):
        e = xp.zeros_like(theta)
        e = xp.where(xp.reshape(xp.arange(p, device=array_api_compat.device(theta)), (p, 1)) == j, h, e)
        up, down = theta + e, theta - e
        points += [up, down]
        spans.append((up[j, ...] - theta[j, ...]) + (theta[j, ...] - down[j, ...]))
    lp, g = model.logp_grad(xp.stack(points, axis=1))
    cols = [(g[:, 1 + 2 * j, :] - g[:, 2 + 2 * j, :]) / spans[j] for j in range(p)]
    hess = xp.stack(cols, axis=1)  # hess[i, j] = d g_i / d theta_j
    hess = 0.5 * (hess + xp.permute_dims(hess, (1, 0, 2)))
    return lp[0, :], g[:, 0, :], hess


def _round_seed(seed: int, r: int) -> int:
    """An independent 32-bit seed for round ``r`` (0: the pilot) from the user's ``seed``."""
    return int(np.random.SeedSequence([seed, r]).generate_state(1)[0])


def _check_model(model: Any, p: int) -> None:
    if not callable(getattr(model, "logp_grad", None)):
        raise TypeError("model must have a callable logp_grad(theta) -> (logp, grad); see kernels.models.Model.")
    dim = getattr(model, "dim", p)
    if dim != p:
        raise ValueError(f"The parameter axis has length {p} but the model has {dim} parameters.")


# ------------------------------------------------------------------ Laplace


def laplace(model: Any, theta0: Array, *, max_iter: int = 100, tol: float = 1e-10) -> Laplace:
    """Posterior mode and Laplace covariance ``(-H)^{-1}`` per cell.

    Parameters
    ----------
    model : Model
        ``model.logp_grad(theta (p, chains, cells)) -> (logp (chains, cells), grad (p, chains, cells))``.
    theta0 : array (p, cells)
        Starting points (unconstrained), where ``logp`` is finite.
    max_iter : int
        Cap on Newton iterations (line-search trials included) per cell.
    tol : float
        Convergence tolerance on the Newton decrement (see ``newton.maximize``).

    Returns
    -------
    Laplace
        ``mode``, ``cov``, ``logp``, ``converged``.
    """
    xp = array_api_compat.array_namespace(theta0)
    if theta0.ndim != 2:
        raise ValueError(f"theta0 must be (p, cells); got shape {tuple(theta0.shape)}.")
    if max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer; got {max_iter}.")
    _check_model(model, theta0.shape[0])
    n_cells = theta0.shape[1]

    def objective(theta: Array, idx: Array) -> tuple[Array, Array, Array]:
        # the model is bound to all cells: put the working cells into a full array
        full = theta if idx.shape[0] == n_cells else newton.scatter_cells(theta0, idx, theta, xp)
        lp, g, hess = _logp_grad_hess(model, full, xp)
        if idx.shape[0] != n_cells:
            lp, g, hess = (xp.take(a, idx, axis=a.ndim - 1) for a in (lp, g, hess))
        good = xp.isfinite(lp) & xp.all(xp.isfinite(g), axis=0) & xp.all(xp.isfinite(hess), axis=(0, 1))
        return (
            xp.where(good, lp, xp.full_like(lp, -xp.inf)),
            xp.where(good, g, xp.zeros_like(g)),
            xp.where(good, hess, xp.zeros_like(hess)),
        )

    idx = xp.arange(n_cells, device=array_api_compat.device(theta0))
    res = newton.maximize(objective, theta0, (idx,), max_iter=max_iter, tol=tol)
    cov = newton.spd_inverse(-res["hess"])
    return Laplace(mode=res["theta"], cov=cov, logp=res["loglik"], converged=res["converged"])


# ---------------------------------------------------------------- rejection


class _Envelope(NamedTuple):
    mode: Array  # (p, cells)
    low: Array  # (p, p, cells), scale * Cholesky factor of cov
    log_norm: Array  # (cells,), log density of q at its centre
    df: float


def _envelope(mode: Array, cov: Array, df: float, scale: float, xp: Any) -> tuple[_Envelope, Array]:
    """The t envelope, and which cells have one (finite mode, positive definite cov)."""
    p = mode.shape[0]
    low, ok = newton.cholesky(cov)
    ok = ok & xp.all(xp.isfinite(mode), axis=0)
    eye = xp.eye(p, dtype=mode.dtype, device=array_api_compat.device(mode))[:, :, None]
    low = xp.where(ok, low, eye)  # harmless stand-ins for cells without an envelope
    mode = xp.where(ok, mode, xp.zeros_like(mode))
    log_det = sum(xp.log(low[j, j, :]) for j in range(p)) + p * math.log(scale)
    if math.isinf(df):
        const = -0.5 * p * math.log(2.0 * math.pi)
    else:
        const = math.lgamma(0.5 * (df + p)) - math.lgamma(0.5 * df) - 0.5 * p * math.log(df * math.pi)
    return _Envelope(mode=mode, low=scale * low, log_norm=const - log_det, df=df), ok


def _chi2_uniforms(df: float) -> int:
    """Uniforms one chi-squared draw takes: ``df // 2`` exponentials (+ a normal) for integer ``df <= 64``, else 1."""
    if math.isinf(df):
        return 0
    return int(df) // 2 + int(df) % 2 if df == int(df) and df <= 64 else 1


def _chi2(u: Array, df: float, xp: Any) -> Array:
    """Chi-squared draws from uniforms ``u`` (m, ...): ``-2 sum log u`` (+ a squared normal), or ``2 P^-1(df/2, u)``."""
    if df == int(df) and df <= 64:
        half = int(df) // 2
        w = -2.0 * xp.sum(xp.log(u[:half, ...]), axis=0) if half else xp.zeros_like(u[0, ...])
        if int(df) % 2:
            w = w + special.ndtri(u[half, ...]) ** 2
        return w
    return 2.0 * special.gammaincinv(0.5 * df, u[0, ...])


def _propose(model: Any, env: _Envelope, n: int, seed: int, xp: Any) -> tuple[Array, Array, Array]:
    """``n`` proposals per cell: points (p, n, cells), ``log p - log q`` (n, cells), ``log u`` (n, cells)."""
    p, n_cells = env.mode.shape
    m = _chi2_uniforms(env.df)
    u = special.uniform((p + 1 + m, n, n_cells), seed=seed, like=env.mode)
    z = special.ndtri(u[:p, ...])
    r2 = xp.sum(z * z, axis=0)
    if math.isinf(env.df):
        stretch = xp.ones_like(r2)
        log_q = env.log_norm - 0.5 * r2
    else:
        w = _chi2(u[p + 1 :, ...], env.df, xp)
        stretch = xp.sqrt(env.df / w)
        log_q = env.log_norm - 0.5 * (env.df + p) * xp.log1p(r2 / w)
    # x = mode + stretch * (scale L) z, the lower-triangular product written out per row
    rows = [sum(env.low[i, j, None, :] * z[j, ...] for j in range(i + 1)) for i in range(p)]
    x = xp.stack([env.mode[i, None, :] + stretch * rows[i] for i in range(p)])
    return x, _logp(model, x, xp) - log_q, xp.log(u[p, ...])


def _append(out: Array, count: Array, x: Array, accept: Array, xp: Any) -> Array:
    """``out`` (p, n_draws, cells) with each cell's accepted points appended after its ``count`` draws.

    Accepted points keep their proposal order; fixed shapes only (no boolean
    indexing): a stable sort brings the accepted ones first, then a gather by
    flat index fills the slots ``count .. count + accepted - 1``.
    """
    p, n_draws, n_cells = out.shape
    n = x.shape[1]
    dev = array_api_compat.device(out)
    m = min(n, n_draws)
    order = xp.argsort(xp.astype(~accept, xp.int8), axis=0, stable=True)[:m, :]  # (m, cells)
    n_acc = xp.sum(xp.astype(accept, count.dtype), axis=0)
    slot = xp.reshape(xp.arange(n_draws, dtype=count.dtype, device=dev), (n_draws, 1)) - count[None, :]
    fill = (slot >= 0) & (slot < n_acc[None, :])
    slot = xp.clip(slot, 0, m - 1)
    cell = xp.arange(n_cells, dtype=count.dtype, device=dev)[None, :]
    src = xp.take(xp.reshape(order, (-1,)), xp.reshape(slot * n_cells + cell, (-1,)))  # proposal index
    flat = xp.reshape(xp.astype(xp.reshape(src, (n_draws, n_cells)), count.dtype) * n_cells + cell, (-1,))
    picked = xp.reshape(xp.take(xp.reshape(x, (p, -1)), flat, axis=1), (p, n_draws, n_cells))
    return xp.where(fill[None, ...], picked, out)


def rejection_sample(
    model: Any,
    mode: Array,
    cov: Array,
    *,
    n_draws: int,
    seed: int,
    df: float = 4.0,
    scale: float = 1.2,
    max_rounds: int = 50,
    n_pilot: int = 1000,
    margin: float = 0.5,
    min_acceptance: float = 0.01,
) -> Rejection:
    """Exact posterior draws per cell by rejection from a scaled Student-t envelope.

    Parameters
    ----------
    model : Model
        ``model.logp_grad(theta (p, chains, cells)) -> (logp (chains, cells), grad)``.
    mode : array (p, cells)
        Envelope centre (e.g. :func:`laplace`'s mode).
    cov : array (p, p, cells)
        Envelope shape before scaling (e.g. the Laplace covariance); cells with a
        non-finite or not positive definite ``cov`` are flagged ``failed``.
    n_draws : int
        Draws wanted per cell.
    seed : int
        Non-negative seed; the same seed gives the same draws.
    df : float
        Degrees of freedom of the envelope (``math.inf``: Gaussian).
    scale : float
        Factor on the envelope's scale (``cov`` is multiplied by ``scale^2``).
    max_rounds : int
        Cap on proposal rounds after the pilot.
    n_pilot : int
        Pilot proposals per cell that set the bound ``log M`` (not used as draws).
    margin : float
        Added to the pilot's maximum of ``log p - log q`` to form ``log M``; the
        acceptance rate is lower by the factor ``exp(-margin)``.
    min_acceptance : float
        A cell whose acceptance rate (the pilot's estimate, then the rate so far)
        is below this is given up and returned ``unfinished``, for MCMC: its
        draws would cost more than ``1/min_acceptance`` proposals each, and, as
        every cell proposes as many values as the slowest one needs, it would
        slow all the others down too.

    Returns
    -------
    Rejection
    """
    xp = array_api_compat.array_namespace(mode, cov)
    if mode.ndim != 2 or tuple(cov.shape) != (mode.shape[0], mode.shape[0], mode.shape[1]):
        raise ValueError(
            f"mode must be (p, cells) and cov (p, p, cells); got {tuple(mode.shape)} and {tuple(cov.shape)}."
        )
    for name, value in (("n_draws", n_draws), ("max_rounds", max_rounds), ("n_pilot", n_pilot)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value}.")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed}.")
    if not (df > 0 and scale > 0 and margin >= 0):
        raise ValueError(f"df and scale must be positive and margin non-negative; got {df}, {scale}, {margin}.")
    if not 0.0 <= min_acceptance < 1.0:
        raise ValueError(f"min_acceptance must lie in [0, 1); got {min_acceptance}.")
    p, n_cells = mode.shape
    _check_model(model, p)
    dev = array_api_compat.device(mode)
    env, ok = _envelope(mode, cov, float(df), float(scale), xp)

    # pilot: the bound, from n_pilot proposals and the mode (where log q = log_norm)
    _, log_r, _ = _propose(model, env, n_pilot, _round_seed(seed, 0), xp)
    at_mode = _logp(model, env.mode[:, None, :], xp)[0, :] - env.log_norm
    top = xp.maximum(xp.max(log_r, axis=0), at_mode)
    ok = ok & xp.isfinite(top)
    log_bound = xp.where(ok, top + margin, xp.zeros_like(top))
    pilot_rate = xp.mean(xp.exp(log_r - log_bound), axis=0)

    count = xp.zeros(n_cells, dtype=xp.int64, device=dev)
    n_prop, n_acc = xp.zeros_like(count), xp.zeros_like(count)
    failed = ~ok
    out = xp.full((p, n_draws, n_cells), xp.nan, dtype=mode.dtype, device=dev)
    cap = max(64, _MAX_FLOATS // ((p + 1 + _chi2_uniforms(float(df))) * n_cells))
    given_up = xp.zeros_like(failed)
    for r in range(1, max_rounds + 1):
        # every cell proposes in every round: after the first, the rate so far; before it, the pilot's
        rate = pilot_rate if r == 1 else xp.astype(n_acc, mode.dtype) / xp.astype(n_prop, mode.dtype)
        given_up = given_up | (~failed & (count < n_draws) & (rate < min_acceptance))
        need = xp.where(failed | given_up, xp.zeros_like(count), n_draws - count)
        if int(xp.max(need)) == 0:
            break
        rate = xp.maximum(rate, xp.full_like(rate, 1.0 / cap))
        want = float(xp.max(xp.where(need > 0, xp.astype(need, mode.dtype) / rate, xp.zeros_like(rate))))
        n = min(cap, max(64, math.ceil(1.2 * want) + 16))
        x, log_r, log_u = _propose(model, env, n, _round_seed(seed, r), xp)
        failed = failed | xp.any(log_r > log_bound, axis=0)
        accept = log_u < log_r - log_bound
        out = _append(out, count, x, accept, xp)
        got = xp.sum(xp.astype(accept, count.dtype), axis=0)
        count = xp.minimum(count + got, xp.full_like(count, n_draws))
        n_prop, n_acc = n_prop + n, n_acc + got
    unfinished = ~failed & (count < n_draws)
    out = xp.where(failed[None, None, :], xp.full_like(out, xp.nan), out)
    seen = xp.astype(n_prop, mode.dtype)
    acceptance = xp.astype(n_acc, mode.dtype) / xp.where(n_prop > 0, seen, xp.ones_like(seen))
    acceptance = xp.where(ok & (n_prop > 0), acceptance, xp.full_like(acceptance, xp.nan))
    log_bound = xp.where(ok, log_bound, xp.full_like(log_bound, xp.nan))
    return Rejection(out, acceptance, failed, unfinished, log_bound, n_prop, n_acc)
