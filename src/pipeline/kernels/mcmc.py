"""Markov chain Monte Carlo for every cell and chain at once: adaptive random-walk Metropolis and HMC.

Raw arrays in, raw arrays out, written against the Python array API. A sampler
takes a :class:`pipeline.kernels.models.Model` (``logp_grad`` of parameters
``(p, chains, cells)``) and a start ``theta0 (p, chains, cells)``; every chain
of every cell is an independent Markov chain with its own adapted tuning, and
all of them advance in lock step (one ``logp_grad`` call per proposal or
leapfrog step for the whole batch). Draws come back as
``(p, chains, n_draws, cells)``: ArviZ's (chain, draw) order after the
parameter axis.

Warm-up (both samplers)
-----------------------
The warm-up follows Stan's schedule: a fast interval (15 %) adapts the step
size only; slow windows of 25, 50, 100, ... iterations (the last one stretched
to the end of the slow phase) each estimate the posterior covariance of their
own draws (Welford's running mean and covariance, diagonal or dense, shrunk
as Stan does: ``(w/(w+5)) S + 1e-3 (5/(w+5)) I``, ``w`` the window length); a
final interval (10 %) adapts the step size to the last covariance. Fewer than
20 warm-up iterations adapt the step size only. The step size (HMC) or
proposal scale (RWM) follows the dual averaging of Hoffman & Gelman (2014,
Alg. 5; ``gamma = 0.05``, ``t0 = 10``, ``kappa = 0.75``), restarted after each
covariance update; the averaged iterate is used after warm-up.

* :func:`rwm`: adaptive random-walk Metropolis in the spirit of Haario et al.
  (2001): proposals ``theta + s L z`` with ``L L^T`` the window covariance,
  ``z ~ N(0, I)`` and ``s`` restarted at ``2.38/sqrt(p)`` (Roberts, Gelman &
  Gilks 1997) after each update, then tuned toward ``target_accept``.
* :func:`hmc`: Hamiltonian Monte Carlo with metric ``Sigma = L L^T`` (the
  window covariance, diagonal or dense), run in whitened coordinates
  ``theta = L u`` (momentum ``r ~ N(0, I)``, kinetic energy ``|r|^2/2``,
  ``theta += eps L r``, ``r += eps L^T grad``). Every cell takes the same
  number of leapfrog steps, optionally jittered per iteration uniformly in
  ``{ceil(n/2), ..., n}`` (the same for all cells). A transition whose energy
  error exceeds 1000 (or is NaN) at any leapfrog step is divergent and
  rejected; both events are symmetric in the trajectory, so the chain stays
  reversible. ``n_leapfrog=1`` without jitter is MALA.

Random numbers are :func:`pipeline.kernels.special.uniform` with a seed derived
from ``seed`` and the iteration (normals by ``ndtri``): a seed reproduces the
run, and NumPy and other host namespaces give the same draws.
"""

from __future__ import annotations

import math
import random
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from pipeline.kernels import newton, special
from pipeline.kernels.models import Model

Array = Any

MAX_ENERGY_ERROR = 1000.0
_DA_GAMMA, _DA_T0, _DA_KAPPA = 0.05, 10.0, 0.75


# ------------------------------------------------------------- shared pieces


def _seed(seed: int, stream: int, i: int) -> int:
    """Independent seed for iteration ``i`` of ``stream`` (NumPy's SeedSequence hashing; host integers only)."""
    return int(np.random.SeedSequence((seed, stream, i)).generate_state(1, np.uint64)[0])


def _evaluate(model: Model, theta: Array, xp: Any) -> tuple[Array, Array]:
    """``logp`` with NaN -> ``-inf`` and a gradient with non-finite entries -> 0 (a deterministic force either way)."""
    logp, grad = model.logp_grad(theta)
    logp = xp.where(xp.isnan(logp), xp.full_like(logp, -xp.inf), logp)
    return logp, xp.where(xp.isfinite(grad), grad, 0.0)


def _check(model: Model, theta0: Array, n_warmup: int, n_draws: int, thin: int) -> tuple[Any, Array]:
    xp = array_api_compat.array_namespace(theta0)
    if theta0.ndim != 3 or theta0.shape[0] != model.dim:
        raise ValueError(f"theta0 must have shape (p={model.dim}, chains, cells); got {tuple(theta0.shape)}.")
    if n_warmup < 0 or n_draws < 1 or thin < 1:
        raise ValueError(f"Need n_warmup >= 0, n_draws >= 1 and thin >= 1; got {n_warmup}, {n_draws}, {thin}.")
    theta0 = theta0 if theta0.dtype == xp.float64 else xp.astype(theta0, xp.float64)
    if not bool(xp.all(xp.isfinite(model.logp_grad(theta0)[0]))):
        raise ValueError(
            "logp is not finite at theta0 for some chains and cells; start inside the support (model.init)."
        )
    return xp, theta0


def windows(n_warmup: int) -> list[tuple[int, int]]:
    """Slow adaptation windows ``[start, end)`` of warm-up iterations (Stan's schedule); empty below 20."""
    if n_warmup < 20:
        return []
    start, end = int(0.15 * n_warmup), n_warmup - max(int(0.1 * n_warmup), 1)
    size, out = min(25, max((end - start) // 3, 1)), []
    while start < end:
        stop = start + size
        if end - stop < 2 * size:  # the next window would not fit: stretch this one to the end
            stop = end
        out.append((start, stop))
        start, size = stop, 2 * size
    return out


class _Adaptation:
    """Which warm-up iterations feed the covariance, and when it is re-estimated."""

    def __init__(self, n_warmup: int, theta: Array, dense: bool):
        self.spans, self.dense, self.welford = windows(n_warmup), dense, None
        self.ends = {end for _, end in self.spans}

    def step(self, i: int, theta: Array) -> Array | None:
        """Feed iteration ``i`` (0-based); at a window's end return the new factor (else None)."""
        if not self.spans or not self.spans[0][0] <= i < self.spans[-1][1]:
            return None
        if self.welford is None:
            self.welford = _Welford(theta, self.dense)
        self.welford.update(theta)
        if i + 1 not in self.ends:
            return None
        factor, self.welford = self.welford.factor(), None
        return factor


class _Welford:
    """Running mean and (co)variance of the draws of one window, diagonal or dense, per chain and cell."""

    def __init__(self, like: Array, dense: bool):
        xp = array_api_compat.array_namespace(like)
        self.xp, self.dense, self.n = xp, dense, 0
        self.mean = xp.zeros_like(like)
        self.m2 = _eye_like(like) * 0.0 if dense else xp.zeros_like(like)

    def update(self, x: Array) -> None:
        self.n += 1
        d = x - self.mean
        self.mean = self.mean + d / self.n
        d2 = x - self.mean
        self.m2 = self.m2 + (d[:, None, ...] * d2[None, ...] if self.dense else d * d2)

    def factor(self) -> Array:
        """Shrunk covariance's factor: ``(p, ...)`` standard deviations (diagonal) or lower ``L`` ``(p, p, ...)``."""
        xp, w = self.xp, float(self.n)
        cov = self.m2 / max(w - 1.0, 1.0) * (w / (w + 5.0))
        ridge = 1e-3 * 5.0 / (w + 5.0)
        if not self.dense:
            return xp.sqrt(cov + ridge)
        eye = _eye_like(cov[0, ...])
        low, ok = newton.cholesky(cov + ridge * eye)
        diag = xp.sqrt(xp.linalg.diagonal(xp.moveaxis(cov, (0, 1), (-2, -1))) + ridge)  # (..., p)
        return xp.where(ok, low, eye * xp.moveaxis(diag, -1, 0)[None, ...])


def _mul(factor: Array, v: Array) -> Array:
    """``L v`` per chain and cell (``factor`` diagonal ``(p, ...)`` or lower ``(p, p, ...)``)."""
    xp = array_api_compat.array_namespace(factor, v)
    return factor * v if factor.ndim == v.ndim else xp.sum(factor * v[None, ...], axis=1)


def _mul_t(factor: Array, v: Array) -> Array:
    """``L^T v`` per chain and cell."""
    xp = array_api_compat.array_namespace(factor, v)
    return factor * v if factor.ndim == v.ndim else xp.sum(factor * v[:, None, ...], axis=0)


class _DualAveraging(NamedTuple):
    """Hoffman & Gelman (2014) dual averaging state of ``log eps`` per chain and cell."""

    mu: Array
    log_eps: Array
    log_eps_bar: Array
    h_bar: Array
    m: int


def _da_start(log_eps: Array, shift: float) -> _DualAveraging:
    return _DualAveraging(log_eps + shift, log_eps, log_eps, log_eps * 0.0, 0)


def _da_update(da: _DualAveraging, accept: Array, target: float) -> _DualAveraging:
    m = da.m + 1
    w = 1.0 / (m + _DA_T0)
    h_bar = (1.0 - w) * da.h_bar + w * (target - accept)
    log_eps = da.mu - math.sqrt(m) / _DA_GAMMA * h_bar
    eta = m ** (-_DA_KAPPA)
    return _DualAveraging(da.mu, log_eps, eta * log_eps + (1.0 - eta) * da.log_eps_bar, h_bar, m)


def _accept_prob(log_ratio: Array, xp: Any) -> Array:
    """``min(1, exp(log_ratio))``, 0 where NaN."""
    return xp.where(xp.isnan(log_ratio), 0.0, xp.exp(xp.minimum(log_ratio, 0.0)))


def _eye_like(theta: Array) -> Array:
    """Identity matrices ``(p, p, ...)`` for every chain and cell of ``theta`` ``(p, ...)``."""
    xp = array_api_compat.array_namespace(theta)
    p = theta.shape[0]
    eye = xp.eye(p, dtype=theta.dtype, device=array_api_compat.device(theta))
    return xp.reshape(eye, (p, p) + (1,) * (theta.ndim - 1)) + xp.zeros_like(theta)[None, ...]


def _identity_factor(theta: Array, dense: bool) -> Array:
    xp = array_api_compat.array_namespace(theta)
    return _eye_like(theta) if dense else xp.ones_like(theta)


# ------------------------------------------------------------- random-walk Metropolis


def rwm(
    model: Model,
    theta0: Array,
    *,
    n_warmup: int,
    n_draws: int,
    seed: int,
    thin: int = 1,
    dense: bool = True,
    init_scale: float = 0.1,
    target_accept: float = 0.3,
) -> dict[str, Array]:
    """Adaptive random-walk Metropolis of every chain and cell.

    Parameters
    ----------
    model : the log posterior.
    theta0 : ``(p, chains, cells)`` start, with finite ``logp``.
    n_warmup, n_draws : adaptation iterations (discarded) and kept draws;
        ``n_draws * thin`` iterations follow the warm-up.
    seed : seed of all random numbers.
    dense : adapt a full proposal covariance (else its diagonal).
    init_scale : proposal sd (isotropic) before the first covariance estimate.
    target_accept : acceptance rate the scale is tuned to (0.234 is optimal in
        high dimension, about 0.3--0.44 for ``p`` of 1 to 4).

    Returns
    -------
    dict with ``draws`` ``(p, chains, n_draws, cells)``, ``logp``
    ``(chains, n_draws, cells)``, ``accept`` ``(chains, cells)`` (acceptance rate
    of the kept iterations), ``scale`` ``(chains, cells)`` (the final ``s``).
    """
    if not init_scale > 0 or not 0.0 < target_accept < 1.0:
        raise ValueError(f"Need init_scale > 0 and 0 < target_accept < 1; got {init_scale}, {target_accept}.")
    xp, theta = _check(model, theta0, n_warmup, n_draws, thin)
    p = theta.shape[0]
    logp, _ = _evaluate(model, theta, xp)
    factor = _identity_factor(theta, dense)
    da = _da_start(xp.full_like(logp, math.log(init_scale)), 0.0)
    adapt = _Adaptation(n_warmup, theta, dense)
    kept, kept_logp, n_acc = [], [], xp.zeros_like(logp)
    for i in range(n_warmup + n_draws * thin):
        warm = i < n_warmup
        scale = xp.exp(da.log_eps if warm else da.log_eps_bar)
        u = special.uniform((p + 1,) + tuple(logp.shape), seed=_seed(seed, 0, i), like=theta)
        prop = theta + scale * _mul(factor, special.ndtri(u[:p, ...]))
        logp_prop, _ = _evaluate(model, prop, xp)
        log_ratio = logp_prop - logp
        take = xp.log(u[p, ...]) < log_ratio
        theta = xp.where(take, prop, theta)
        logp = xp.where(take, logp_prop, logp)
        if warm:
            da = _da_update(da, _accept_prob(log_ratio, xp), target_accept)
            new = adapt.step(i, theta)
            if new is not None:
                factor = new
                da = _da_start(xp.full_like(logp, math.log(2.38 / math.sqrt(p))), 0.0)
        else:
            n_acc = n_acc + xp.astype(take, theta.dtype)
            if (i - n_warmup + 1) % thin == 0:
                kept.append(theta)
                kept_logp.append(logp)
    return {
        "draws": xp.stack(kept, axis=2),
        "logp": xp.stack(kept_logp, axis=1),
        "accept": n_acc / float(n_draws * thin),
        "scale": xp.exp(da.log_eps_bar),
    }


# ------------------------------------------------------------- Hamiltonian Monte Carlo


class _Trajectory(NamedTuple):
    theta: Array
    logp: Array
    grad: Array
    accept: Array  # Metropolis acceptance probability (0 when divergent)
    divergent: Array


def _leapfrog(
    model: Model, factor: Array, eps: Array, n: int, theta: Array, logp: Array, grad: Array, r: Array
) -> _Trajectory:
    """``n`` leapfrog steps in whitened coordinates from ``(theta, r)``, watching the energy error at each."""
    xp = array_api_compat.array_namespace(theta)
    h0 = -logp + 0.5 * xp.sum(r * r, axis=0)
    divergent = xp.zeros(tuple(logp.shape), dtype=xp.bool, device=array_api_compat.device(logp))
    half = 0.5 * eps
    for _ in range(n):
        r = r + half * _mul_t(factor, grad)
        theta = theta + eps * _mul(factor, r)
        logp, grad = _evaluate(model, theta, xp)
        r = r + half * _mul_t(factor, grad)
        err = -logp + 0.5 * xp.sum(r * r, axis=0) - h0
        divergent = divergent | ~(err <= MAX_ENERGY_ERROR)
    accept = xp.where(divergent, 0.0, _accept_prob(-err, xp))
    return _Trajectory(theta, logp, grad, accept, divergent)


def _initial_step(model: Model, factor: Array, eps: Array, theta: Array, logp: Array, grad: Array, seed: int) -> Array:
    """Hoffman & Gelman (2014, Alg. 4) per chain and cell: double or halve ``eps`` until the acceptance
    probability of one leapfrog step crosses 1/2."""
    xp = array_api_compat.array_namespace(theta)
    r = special.ndtri(special.uniform(tuple(theta.shape), seed=seed, like=theta))

    def log_ratio(e: Array) -> Array:
        t = _leapfrog(model, factor, e, 1, theta, logp, grad, r)
        return xp.where(t.divergent, -xp.inf, xp.log(xp.maximum(t.accept, 1e-300)))

    up = log_ratio(eps) > math.log(0.5)
    moving = up == up
    for _ in range(40):
        eps = xp.where(moving, xp.where(up, 2.0 * eps, 0.5 * eps), eps)
        lr = log_ratio(eps)
        moving = moving & xp.where(up, lr > math.log(0.5), ~(lr > math.log(0.5)))
        if not bool(xp.any(moving)):
            break
    # the halving direction stops at the first eps that crosses; the doubling one steps back once
    return xp.where(up, 0.5 * eps, eps)


def hmc(
    model: Model,
    theta0: Array,
    *,
    n_warmup: int,
    n_draws: int,
    seed: int,
    n_leapfrog: int = 16,
    jitter: bool = True,
    mass: str = "diag",
    target_accept: float = 0.8,
    thin: int = 1,
) -> dict[str, Array]:
    """Hamiltonian Monte Carlo of every chain and cell, with step size and metric adapted in warm-up.

    Parameters
    ----------
    model : the log posterior (with gradient).
    theta0 : ``(p, chains, cells)`` start, with finite ``logp``.
    n_warmup, n_draws : adaptation iterations (discarded) and kept draws.
    seed : seed of all random numbers (momenta, acceptances, jitter).
    n_leapfrog : leapfrog steps per iteration (``1`` without jitter: MALA).
    jitter : draw the number of steps per iteration uniformly from
        ``{ceil(n_leapfrog/2), ..., n_leapfrog}``, the same for all cells.
    mass : ``"diag"`` or ``"dense"`` metric (posterior covariance estimate).
    target_accept : mean acceptance probability the step size is tuned to.
    thin : keep every ``thin``-th iteration after warm-up.

    Returns
    -------
    dict with ``draws`` ``(p, chains, n_draws, cells)``, ``logp``
    ``(chains, n_draws, cells)``, ``accept`` ``(chains, cells)`` (mean acceptance
    probability of the kept iterations), ``step_size`` ``(chains, cells)``,
    ``divergent`` ``(chains, n_draws, cells)`` bool, and ``metric`` (the
    factor ``L`` of the metric: ``(p, chains, cells)`` standard deviations or
    ``(p, p, chains, cells)`` lower triangular).
    """
    if mass not in ("diag", "dense"):
        raise ValueError(f"mass must be 'diag' or 'dense'; got {mass!r}.")
    if n_leapfrog < 1 or not 0.0 < target_accept < 1.0:
        raise ValueError(f"Need n_leapfrog >= 1 and 0 < target_accept < 1; got {n_leapfrog}, {target_accept}.")
    xp, theta = _check(model, theta0, n_warmup, n_draws, thin)
    p = theta.shape[0]
    dense = mass == "dense"
    logp, grad = _evaluate(model, theta, xp)
    factor = _identity_factor(theta, dense)
    eps = _initial_step(model, factor, xp.full_like(logp, 0.1), theta, logp, grad, _seed(seed, 1, 0))
    da = _da_start(xp.log(eps), math.log(10.0))
    adapt = _Adaptation(n_warmup, theta, dense)
    steps = random.Random(seed)
    lo = (n_leapfrog + 1) // 2 if jitter else n_leapfrog
    kept, kept_logp, kept_div, acc = [], [], [], xp.zeros_like(logp)
    for i in range(n_warmup + n_draws * thin):
        warm = i < n_warmup
        eps = xp.exp(da.log_eps if warm else da.log_eps_bar)
        u = special.uniform((p + 1,) + tuple(logp.shape), seed=_seed(seed, 0, i), like=theta)
        t = _leapfrog(model, factor, eps, steps.randint(lo, n_leapfrog), theta, logp, grad, special.ndtri(u[:p, ...]))
        take = u[p, ...] < t.accept
        theta = xp.where(take, t.theta, theta)
        logp, grad = xp.where(take, t.logp, logp), xp.where(take, t.grad, grad)
        if warm:
            da = _da_update(da, t.accept, target_accept)
            new = adapt.step(i, theta)
            if new is not None:
                factor = new
                eps = _initial_step(model, factor, xp.exp(da.log_eps), theta, logp, grad, _seed(seed, 1, i + 1))
                da = _da_start(xp.log(eps), math.log(10.0))
        else:
            acc = acc + t.accept
            if (i - n_warmup + 1) % thin == 0:
                kept.append(theta)
                kept_logp.append(logp)
                kept_div.append(t.divergent)
    return {
        "draws": xp.stack(kept, axis=2),
        "logp": xp.stack(kept_logp, axis=1),
        "accept": acc / float(n_draws * thin),
        "step_size": xp.exp(da.log_eps_bar),
        "divergent": xp.stack(kept_div, axis=1),
        "metric": factor,
    }
