"""Gaussian variational inference (ADVI) for every cell at once.

Raw arrays in, raw arrays out, written against the Python array API. Each cell
gets its own Gaussian ``q(theta) = N(m, L L^T)`` over the unconstrained
parameters of a :class:`pipeline.kernels.models.Model`, fitted by maximizing the
evidence lower bound

    ELBO(m, L) = E_q[log p(theta)] + H[q],    H[q] = sum_j log L_jj + p (1 + log 2 pi) / 2,

with reparameterization gradients (Kucukelbir et al. 2017): ``theta = m + L eps``,
``eps ~ N(0, I)``, so with ``g = grad log p(theta)``

    dELBO/dm = E[g],    dELBO/dL_ij = E[g_i eps_j] (i > j),
    dELBO/domega_j = E[g_j eps_j] exp(omega_j) + 1,

where ``L_jj = exp(omega_j)``. ``family="meanfield"`` keeps ``L`` diagonal,
``family="fullrank"`` lower triangular. The expectations are averages over
``n_mc`` draws per iteration, and the ``n_mc`` draws of all cells are the
``chains`` axis of one ``model.logp_grad`` call. Adam (Kingma & Ba 2015) moves all
cells together; the step is ``lr`` for the first half of the iterations and then
decays as ``lr / sqrt(1 + 10 (t - T/2) / T)``, while the parameters are averaged
over the second half (Polyak--Ruppert), which removes most of the Monte-Carlo
jitter of the last iterates. ``log p`` is known only up to a constant per cell,
so the ELBO is too: differences between families or iterations are meaningful,
the level is not.

Convergence is judged on the parameters, not on the ELBO (whose estimate is
noisy wherever ``q`` is far from ``p``): a cell has converged when, between the
last two tenths of the run, the average mean moved by less than ``tol`` sds of
``q`` and the average ``log sd`` by less than ``tol``.

Draws with ``log p = -inf`` or a non-finite gradient (outside the support)
are left out of the gradient averages, as Stan's ADVI drops them; the final ELBO
estimate keeps them, so it is ``-inf`` for a ``q`` that puts visible mass outside
the support. Nothing then pulls ``q`` back in, so where the support boundary cuts
the bulk of the posterior ``q`` leans outward; models should be unconstrained.

Diagnostic: :func:`khat` is the Pareto-k-hat of PSIS (Yao et al. 2018; Vehtari
et al. 2024) of the importance ratios ``log p - log q`` at draws from ``q``:
``k < 0.5`` q is good (importance sampling from it converges quickly),
``0.5 <= k <= 0.7`` usable, ``k > 0.7`` q is not to be trusted (the ratios have
an infinite-variance tail). For a Gaussian target and a Gaussian ``q`` of equal
mean the tail index is ``k = max(0, 1 - mu_min)`` (up to logarithmic factors),
``mu_min`` the smallest eigenvalue of ``L^T Sigma^{-1} L``: an underdispersed ``q``
has large ``k``. A target with heavier tails than any Gaussian has ``k -> 1`` as
the number of draws grows, so k-hat is a finite-sample reading: one cell's
estimate from a few thousand draws scatters by about 0.1-0.15.

Random numbers come from :func:`pipeline.kernels.special.uniform` through
``ndtri``; one ``SeedSequence(seed)`` gives one seed per iteration, so a seed
reproduces the fit on a given namespace and number of cells.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from pipeline.kernels import diagnostics, special

Array = Any

FAMILIES = ("meanfield", "fullrank")
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8
_N_WINDOWS = 10


class VIResult(NamedTuple):
    """A fitted Gaussian ``q = N(mean, factor factor^T)`` per cell.

    Attributes
    ----------
    family : ``"meanfield"`` or ``"fullrank"``.
    mean : ``(p, cells)``.
    factor : ``(p, p, cells)`` lower triangular with positive diagonal (diagonal
        for mean-field); the marginal sds are the row norms.
    elbo : ``(cells,)`` ELBO at the final ``q``, from ``n_elbo`` fresh draws
        (up to the model's constant per cell).
    elbo_se : ``(cells,)`` its Monte-Carlo standard error.
    elbo_trace : ``(windows, cells)`` mean ELBO estimate over each tenth of the iterations.
    converged : ``(cells,)`` bool, whether ``q`` stopped moving: between the last
        two tenths of the run, the average of ``m`` moved by less than ``tol`` sds
        of ``q`` and that of ``log sd(q)`` by less than ``tol``, in every coordinate.
        (The ELBO trace is too noisy for this where ``q`` is far from ``p``.)
    n_iter : number of Adam iterations run.
    """

    family: str
    mean: Array
    factor: Array
    elbo: Array
    elbo_se: Array
    elbo_trace: Array
    converged: Array
    n_iter: int


def _normals(shape: tuple[int, ...], seed: int, like: Array) -> Array:
    return special.ndtri(special.uniform(shape, seed=seed, like=like))


def _tril_mask(p: int, like: Array, xp: Any) -> Array:
    """``(p, p, 1)`` with ones strictly below the diagonal."""
    i = xp.arange(p, device=array_api_compat.device(like))
    return xp.astype(i[:, None] > i[None, :], like.dtype)[:, :, None]


def _factor(omega: Array, off: Array | None, xp: Any) -> Array:
    """``L = off (strictly lower) + diag(exp(omega))``, shape ``(p, p, cells)``."""
    p = omega.shape[0]
    eye = xp.eye(p, dtype=omega.dtype, device=array_api_compat.device(omega))[:, :, None]
    diag = eye * xp.exp(omega)[None, :, :]
    return diag if off is None else diag + off * _tril_mask(p, omega, xp)


def _transform(mean: Array, L: Array, eps: Array, xp: Any) -> Array:
    """``theta = m + L eps`` for ``eps`` ``(p, S, cells)``: ``(p, S, cells)``."""
    Lc = xp.permute_dims(L, (2, 0, 1))  # (cells, p, p)
    Lz = Lc @ xp.permute_dims(eps, (2, 0, 1))  # (cells, p, S)
    return mean[:, None, :] + xp.permute_dims(Lz, (1, 2, 0))


def _masked_grad(logp: Array, grad: Array, xp: Any) -> tuple[Array, Array, Array]:
    """Gradients with draws outside the support zeroed, their weights ``(S, cells)`` and count ``(cells,)``."""
    ok = xp.isfinite(logp) & xp.all(xp.isfinite(grad), axis=0)
    w = xp.astype(ok, logp.dtype)
    g = xp.where(ok[None, ...], grad, 0.0)
    return g, w, xp.maximum(xp.sum(w, axis=0), 1.0)


def _check(model: Any, theta0: Array, family: str, n_iter: int, n_mc: int, lr: float) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}; got {family!r}.")
    if theta0.ndim != 2 or theta0.shape[0] != model.dim:
        raise ValueError(f"theta0 must have shape (p={model.dim}, cells); got {tuple(theta0.shape)}.")
    if n_iter < 2 or n_mc < 1:
        raise ValueError(f"n_iter must be at least 2 and n_mc at least 1; got {n_iter} and {n_mc}.")
    if not lr > 0:
        raise ValueError(f"lr must be positive; got {lr}.")


class _Adam:
    """Adam ascent on a list of arrays, with Polyak averaging over the second half."""

    def __init__(self, params: list[Array], n_iter: int, lr: float) -> None:
        self.params, self.n_iter, self.lr, self.half = params, n_iter, lr, n_iter // 2
        self.mom = [a * 0.0 for a in params]
        self.vel = [a * 0.0 for a in params]
        self.avg = [a * 0.0 for a in params]

    def step(self, t: int, grads: list[Array], xp: Any) -> None:
        lr = self.lr if t < self.half else self.lr / math.sqrt(1.0 + 10.0 * (t - self.half) / self.n_iter)
        c1, c2 = 1.0 - _BETA1 ** (t + 1), 1.0 - _BETA2 ** (t + 1)
        for i, g in enumerate(grads):
            self.mom[i] = _BETA1 * self.mom[i] + (1.0 - _BETA1) * g
            self.vel[i] = _BETA2 * self.vel[i] + (1.0 - _BETA2) * g * g
            self.params[i] = self.params[i] + lr * (self.mom[i] / c1) / (xp.sqrt(self.vel[i] / c2) + _EPS)
            if t >= self.half:
                self.avg[i] = self.avg[i] + self.params[i] / (self.n_iter - self.half)


def _gradients(model: Any, params: list[Array], eps: Array, xp: Any) -> tuple[list[Array], Array, Array]:
    """ELBO gradients for ``params`` ``[m, omega(, off)]``, the ELBO estimate ``(cells,)`` and ``L``."""
    L = _factor(params[1], params[2] if len(params) > 2 else None, xp)
    logp, grad = model.logp_grad(_transform(params[0], L, eps, xp))
    g, w, count = _masked_grad(logp, grad, xp)
    grads = [xp.sum(g, axis=1) / count, xp.sum(g * eps, axis=1) / count * xp.exp(params[1]) + 1.0]
    if len(params) > 2:  # E[g_i eps_j] for the strictly lower entries
        gc, ec = xp.permute_dims(g, (2, 0, 1)), xp.permute_dims(eps, (2, 1, 0))
        grads.append(xp.permute_dims(gc @ ec, (1, 2, 0)) / count)
    # log p - log q per draw: the same mean as E[log p] + H[q], far less noise when q is close to p
    ratio = xp.where(w > 0, logp - _log_q(eps, L, xp), 0.0)
    return grads, xp.sum(ratio, axis=0) / count, L


def advi(
    model: Any,
    theta0: Array | None,
    *,
    family: str = "fullrank",
    n_iter: int = 1000,
    n_mc: int = 16,
    lr: float = 0.05,
    seed: int,
    scale0: float | Array = 0.1,
    n_elbo: int = 256,
    tol: float = 0.1,
) -> VIResult:
    """Fit ``q = N(m, L L^T)`` to ``model``'s posterior in every cell by ADVI.

    Parameters
    ----------
    model : :class:`pipeline.kernels.models.Model`
        ``logp_grad`` is called with ``theta`` of shape ``(p, n_mc, cells)``.
    theta0 : ``(p, cells)`` initial mean (a MAP estimate or a rough guess); ``None``
        takes the first chain of ``model.init(1, seed)``.
    family : ``"meanfield"`` (diagonal ``L``) or ``"fullrank"`` (lower triangular ``L``).
    n_iter : Adam iterations.
    n_mc : Monte-Carlo draws per iteration and cell.
    lr : Adam step size (in units of the unconstrained parameters and of ``log L_jj``).
    seed : seed of the draws.
    scale0 : initial sd of ``q`` (a number, or ``(p, cells)``).
    n_elbo : fresh draws for the final ELBO estimate.
    tol : convergence threshold, in sds of ``q`` (see :class:`VIResult`).

    Returns
    -------
    VIResult
    """
    if theta0 is None:
        if model.init is None:
            raise ValueError(f"theta0 is None and model {model.name!r} has no init; pass a starting point (p, cells).")
        theta0 = model.init(1, seed)[:, 0, :]
    xp = array_api_compat.array_namespace(theta0)
    _check(model, theta0, family, n_iter, n_mc, lr)
    m = xp.astype(theta0, xp.float64) if theta0.dtype != xp.float64 else theta0
    p, cells = m.shape
    dev = array_api_compat.device(m)
    omega = xp.zeros_like(m) + xp.log(xp.asarray(scale0, dtype=m.dtype, device=dev))
    params = [m, omega] + ([xp.zeros((p, p, cells), dtype=m.dtype, device=dev)] if family == "fullrank" else [])
    adam = _Adam(params, n_iter, lr)
    # per tenth of the run: sums of the ELBO estimates, of m and of log sd(q)
    sums = [[xp.zeros_like(m[0, ...]), xp.zeros_like(m), xp.zeros_like(m)] for _ in range(_N_WINDOWS)]
    counts = [0] * _N_WINDOWS
    seeds = np.random.SeedSequence(seed).generate_state(n_iter + 1, dtype=np.uint64)
    for t in range(n_iter):
        eps = _normals((p, n_mc, cells), int(seeds[t]), m)
        grads, est, L = _gradients(model, adam.params, eps, xp)
        k = min(t * _N_WINDOWS // n_iter, _N_WINDOWS - 1)
        row = [est, adam.params[0], 0.5 * xp.log(xp.sum(L * L, axis=1))]
        sums[k] = [a + b for a, b in zip(sums[k], row, strict=True)]
        counts[k] += 1
        adam.step(t, grads, xp)
    means = [[a / max(c, 1) for a in w] for w, c in zip(sums, counts, strict=True)]
    L = _factor(adam.avg[1], adam.avg[2] if family == "fullrank" else None, xp)
    (_, m_prev, s_prev), (_, m_last, s_last) = means[-2], means[-1]
    moved = xp.maximum(xp.abs(m_last - m_prev) * xp.exp(-s_last), xp.abs(s_last - s_prev))
    converged = xp.all(moved < tol, axis=0)
    elbo, elbo_se = _elbo(model, adam.avg[0], L, n_elbo, int(seeds[n_iter]), xp)
    trace = xp.stack([w[0] for w in means])
    return VIResult(family, adam.avg[0], L, elbo, elbo_se, trace, converged, n_iter)


def _log_q(eps: Array, L: Array, xp: Any) -> Array:
    """``log q(m + L eps)`` ``(S, cells)``."""
    p = eps.shape[0]
    logdet = xp.sum(xp.log(xp.stack([L[j, j, ...] for j in range(p)])), axis=0)
    return -0.5 * xp.sum(eps * eps, axis=0) - logdet - 0.5 * p * math.log(2.0 * math.pi)


def _elbo(model: Any, mean: Array, L: Array, n: int, seed: int, xp: Any) -> tuple[Array, Array]:
    eps = _normals((mean.shape[0], n, mean.shape[1]), seed, mean)
    logp, _ = model.logp_grad(_transform(mean, L, eps, xp))
    r = logp - _log_q(eps, L, xp)
    elbo = xp.mean(r, axis=0)
    finite = xp.isfinite(elbo)
    if n < 2:
        return elbo, xp.full_like(elbo, xp.nan)
    se = xp.std(xp.where(finite[None, :], r, 0.0), axis=0, correction=1) / math.sqrt(n)
    return elbo, xp.where(finite, se, xp.nan)


def draws(result: VIResult, n: int, seed: int) -> Array:
    """``n`` draws from each cell's ``q``: ``(p, n, cells)``."""
    if n < 1:
        raise ValueError(f"n must be a positive number of draws; got {n}.")
    xp = array_api_compat.array_namespace(result.mean, result.factor)
    eps = _normals((result.mean.shape[0], n, result.mean.shape[1]), seed, result.mean)
    return _transform(result.mean, result.factor, eps, xp)


def log_ratios(model: Any, result: VIResult, n: int, seed: int) -> Array:
    """``log p(theta) - log q(theta)`` ``(n, cells)`` at ``n`` draws from ``q`` (those of :func:`draws`)."""
    if n < 1:
        raise ValueError(f"n must be a positive number of draws; got {n}.")
    xp = array_api_compat.array_namespace(result.mean, result.factor)
    eps = _normals((result.mean.shape[0], n, result.mean.shape[1]), seed, result.mean)
    logp, _ = model.logp_grad(_transform(result.mean, result.factor, eps, xp))
    return logp - _log_q(eps, result.factor, xp)


def khat(model: Any, result: VIResult, n: int, seed: int) -> Array:
    """Pareto-k-hat ``(cells,)`` of the importance ratios ``p/q`` at ``n`` draws from ``q``.

    ``k < 0.5`` good, ``0.5-0.7`` ok, ``> 0.7`` do not trust ``q`` (see the module
    docstring). Uses :func:`pipeline.kernels.diagnostics.psis_khat`, which
    follows ``arviz.psislw``; with ``n`` of one to a few thousand one cell's
    estimate scatters by about 0.1-0.15, so read maps of k-hat, not single cells.
    """
    return diagnostics.psis_khat(log_ratios(model, result, n, seed))
