"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018) of the posterior samplers.

Raw arrays in, raw arrays out, written against the Python array API; every cell
is one SBC replicate and all cells run at once. For each cell a parameter
``theta`` is drawn from the prior, data are simulated from it, the sampler
draws ``L`` posterior draws given those data, and the rank of ``theta`` among
them (:func:`pipeline.kernels.calibration.sbc_ranks`) is uniform on ``0..L``
for every parameter exactly when the sampler draws from the posterior of the
prior that generated ``theta``. Any disagreement (a sampler that has not
converged or targets the wrong density, a model whose prior differs from the
simulator's) shows as non-uniform ranks: ``U``-shaped for posteriors that are
too narrow, humped for too wide ones, tilted for biased ones.

A :class:`Case` bundles the three pieces, with one prior shared by simulator
and model (the hyperparameters are numbers fixed before seeing the data):

* :func:`regression_case`: :func:`pipeline.kernels.models.bayes_regression`,
  ``s2 ~ InvGamma(a0, b0)``, ``beta | s2 ~ N(0, s2/alpha I)``,
  ``y = Z beta + e``, ``e ~ N(0, s2 I)``, then centred;
* :func:`normal_case`: :func:`pipeline.kernels.models.normal_unknown`
  (``log=True``: ``lognormal_unknown`` of ``exp`` of the normal draws);
* :func:`gev_case`: :func:`pipeline.kernels.models.bayes_gev` with a fixed
  ``reference=(0, 1)``, data from :func:`pipeline.kernels.gev.gev_ppf`.

:func:`run` draws the posterior with one of :data:`SAMPLERS`: ``"hmc"``,
``"rwm"`` (chains thinned to near independence), ``"rejection"`` (exact draws
from a Laplace-centred envelope, HMC where the envelope fails), or ADVI
(``"vi_fullrank"``, ``"vi_meanfield"``: approximate by design, SBC shows how
much). :func:`uniformity` tests the ranks of every parameter with the
chi-squared test of :func:`pipeline.kernels.calibration.rank_uniformity`.

Thinning
--------
Ranks are uniform only for nearly independent draws: correlated draws fall on
one side of ``theta`` together and pile ranks up at ``0`` and ``L``. The
default thinning keeps about one effective draw per kept draw on the four
cases (ESS of the thinned chains measured on 200 cells): HMC with
``n_leapfrog = 8`` (4 to 8 steps) is antithetic, ESS about 2-2.6 per
iteration, but every second iteration is positively correlated (ESS about
0.6-0.7 per kept draw) while every fifth gives 0.9-1.1; random-walk
Metropolis has ESS of about 0.07 (``p = 3``) to 0.1 (``p = 2``) per
iteration, so it keeps every 30th. Chains of ``ceil(L/chains) * thin``
iterations (125 for HMC) exceed R-hat's usual 1.01 by chance in most cells,
so the flags use :data:`RHAT_LIMIT` = 1.05 (exceeded in 0.5-2.6 % of cells of
converged runs).

Random numbers are :func:`pipeline.kernels.special.uniform` turned into normal
and gamma variates by ``ndtri`` and ``gammaincinv``; the prior, the simulation
and the sampler take seeds derived from ``run``'s ``seed``, so a seed reproduces
a run on any host namespace.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from pipeline.kernels import calibration, diagnostics, mcmc, models, newton, rejection, special, vi
from pipeline.kernels import gev as _gev

Array = Any

SAMPLERS = ("hmc", "rwm", "rejection", "vi_fullrank", "vi_meanfield")
DEFAULT_THIN = {"hmc": 5, "rwm": 30}
KHAT_DRAWS = 1000  # draws from q per cell for PSIS k-hat
# SBC chains are short (about 25 kept draws x thin per chain): R-hat's own noise there exceeds 1.01 in most
# converged cells, so the flag uses the looser 1.05 (Vehtari et al. 2021 give 1.01 for long runs).
RHAT_LIMIT, KHAT_LIMIT = 1.05, 0.7
_STREAMS = {"prior": 0, "simulate": 1, "init": 2, "sampler": 3, "fallback": 4, "draws": 5, "khat": 6}


class Case(NamedTuple):
    """One SBC problem: a prior, a simulator and the model whose prior is exactly that one.

    Attributes
    ----------
    name : ``"regression"``, ``"normal"``, ``"lognormal"`` or ``"gev"``.
    param_names : names of the unconstrained parameters, those of ``posterior(data).param_names``.
    prior_draw : ``(cells, seed, like) -> theta (p, cells)`` float64 on ``like``'s namespace and device.
    simulate : ``(theta (p, cells), seed) -> data (n_obs, cells)``.
    posterior : ``data -> models.Model``.
    """

    name: str
    param_names: tuple[str, ...]
    prior_draw: Callable[[int, int, Any], Array]
    simulate: Callable[[Array, int], Array]
    posterior: Callable[[Array], models.Model]


class Result(NamedTuple):
    """Ranks of one SBC run.

    Attributes
    ----------
    prior : ``(p, cells)`` the parameters the data were simulated from.
    ranks : ``(p, cells)`` int64 in ``0..n_ranks``: posterior draws below the prior draw.
    n_ranks : ``L``, posterior draws per cell (ranks take ``L + 1`` values).
    ess : ``(p, cells)`` bulk ESS of the kept draws before thinning (MCMC, and the cells
        rejection handed to HMC); ``L`` for exact and VI draws.
    flagged : ``(cells,)`` bool: MCMC, R-hat above :data:`RHAT_LIMIT` (2 chains or more) or a divergence;
        rejection, the envelope failed (or did not finish) and HMC re-sampled the cell;
        VI, PSIS k-hat above 0.7.
    seconds : wall time of the run.
    """

    prior: Array
    ranks: Array
    n_ranks: int
    ess: Array
    flagged: Array
    seconds: float


# ------------------------------------------------------------- helpers


def _seed(seed: int, stream: str) -> int:
    """A 32-bit seed for one stream of randomness of the run seeded by ``seed``."""
    return int(np.random.SeedSequence((seed, _STREAMS[stream])).generate_state(1)[0])


def _float64_like(like: Array) -> Array:
    """A float64 array on ``like``'s namespace and device (whose dtype and device :func:`special.uniform` takes)."""
    xp = array_api_compat.array_namespace(like)
    return xp.zeros((1,), dtype=xp.float64, device=array_api_compat.device(like))


def _on(a: Array, like: Array) -> Array:
    """``a`` on ``like``'s namespace and device (a host array is copied there)."""
    xp = array_api_compat.array_namespace(like)
    if array_api_compat.array_namespace(a) is xp:
        return a
    try:
        host = np.from_dlpack(a)
    except (TypeError, RuntimeError, BufferError, AttributeError):
        host = np.asarray(a)
    return xp.asarray(host, device=array_api_compat.device(like))


def _normals(shape: tuple[int, ...], seed: int, like: Array) -> Array:
    return special.ndtri(special.uniform(shape, seed=seed, like=like))


def _positive(value: float, name: str) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number; got {value!r}.")
    return float(value)


def _count(value: Any, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer of at least {least}; got {value!r}.")
    return int(value)


def _inv_gamma(a: float, b: float, u: Array) -> Array:
    """``InvGamma(a, b)`` variates ``b / G`` with ``G = P^-1(a, u)`` a ``Gamma(a, 1)`` variate of the uniforms ``u``."""
    return b / special.gammaincinv(a, u)


# ------------------------------------------------------------- cases


def regression_case(Z: Array, *, alpha: float = 1.0, a0: float = 3.0, b0: float = 2.0) -> Case:
    """SBC case of the conjugate ridge regression :func:`pipeline.kernels.models.bayes_regression`.

    Prior ``s2 ~ InvGamma(a0, b0)``, ``beta | s2 ~ N(0, s2/alpha I)`` (``alpha > 0``:
    SBC needs a proper prior); data ``y = Z beta + e``, ``e ~ N(0, s2 I)``, centred.
    Since ``Z`` is column-centred, ``C y = Z beta + C e`` with ``C = I - 11^T/n``, and
    ``C e`` is ``N(0, s2 I)`` on the ``n - 1`` dimensions orthogonal to ``1``, where
    ``|C y - Z beta|^2`` is its whole squared norm: the likelihood is
    ``s2^-(n-1)/2 exp(-|y_c - Z beta|^2 / 2 s2)``, the model's, whatever intercept
    ``y`` had. The posterior is then exactly :func:`pipeline.kernels.posterior.conjugate`.

    Parameters
    ----------
    Z : ``(n, k)`` column-centred design (``n > k + 1``), shared by all cells.
    alpha, a0, b0 : positive prior parameters.
    """
    xp = array_api_compat.array_namespace(Z)
    if Z.ndim != 2 or Z.shape[0] < Z.shape[1] + 2:
        raise ValueError(f"Z must be an (n, k) design with n > k + 1; got shape {tuple(Z.shape)}.")
    alpha = _positive(alpha, "alpha (the prior precision of beta; SBC needs a proper prior)")
    a0, b0 = _positive(a0, "a0"), _positive(b0, "b0")
    Z = xp.astype(Z, xp.float64)
    if not bool(xp.all(xp.isfinite(Z))):
        raise ValueError("Z must be finite everywhere.")
    if float(xp.max(xp.abs(xp.mean(Z, axis=0)))) > 1e-10 * (1.0 + float(xp.max(xp.abs(Z)))):
        raise ValueError("Z must be column-centred (the model integrates the intercept out by centring); "
                         "subtract each column's mean.")
    n, k = Z.shape

    def prior_draw(cells: int, seed: int, like: Array) -> Array:
        u = special.uniform((k + 1, cells), seed=seed, like=_float64_like(like))
        xq = array_api_compat.array_namespace(u)
        s2 = _inv_gamma(a0, b0, u[k, :])
        beta = xq.sqrt(s2 / alpha) * special.ndtri(u[:k, :])
        return xq.concat([beta, xq.log(s2)[None, :]], axis=0)

    def simulate(theta: Array, seed: int) -> Array:
        xq = array_api_compat.array_namespace(theta)
        e = _normals((n, theta.shape[1]), seed, theta)
        y = _on(Z, theta) @ theta[:k, :] + xq.exp(0.5 * theta[k, :]) * e
        return y - xq.mean(y, axis=0)

    def posterior(data: Array) -> models.Model:
        return models.bayes_regression(_on(Z, data), data, alpha=alpha, a0=a0, b0=b0)

    names = tuple(f"beta_{j + 1}" for j in range(k)) + ("log_sigma2",)
    return Case("regression", names, prior_draw, simulate, posterior)


def normal_case(
    n_obs: int, *, loc0: float = 0.0, kappa0: float = 1.0, a0: float = 3.0, b0: float = 2.0, log: bool = False
) -> Case:
    """SBC case of :func:`pipeline.kernels.models.normal_unknown` (``log=True``: ``lognormal_unknown``).

    Prior ``s2 ~ InvGamma(a0, b0)``, ``mu | s2 ~ N(loc0, s2/kappa0)``, in ``(mu, log sigma)``;
    data ``x_i ~ N(mu, s2)``, ``i = 1..n_obs`` (``exp(x_i)`` for the lognormal). The
    hyperparameters are fixed numbers: the model's data-dependent defaults would make
    the prior depend on the data, which SBC cannot test. The exact posterior is
    :func:`pipeline.kernels.models.normal_posterior` (of ``log x`` for the lognormal).
    """
    n_obs = _count(n_obs, "n_obs", 2)
    if not (isinstance(loc0, (int, float)) and math.isfinite(loc0)):
        raise ValueError(f"loc0 must be a finite number; got {loc0!r}.")
    loc0 = float(loc0)
    kappa0, a0, b0 = _positive(kappa0, "kappa0"), _positive(a0, "a0"), _positive(b0, "b0")
    prior = dict(loc0=loc0, kappa0=kappa0, a0=a0, b0=b0)

    def prior_draw(cells: int, seed: int, like: Array) -> Array:
        u = special.uniform((2, cells), seed=seed, like=_float64_like(like))
        xq = array_api_compat.array_namespace(u)
        s2 = _inv_gamma(a0, b0, u[1, :])
        return xq.stack([loc0 + xq.sqrt(s2 / kappa0) * special.ndtri(u[0, :]), 0.5 * xq.log(s2)])

    def simulate(theta: Array, seed: int) -> Array:
        xq = array_api_compat.array_namespace(theta)
        x = theta[0, :] + xq.exp(theta[1, :]) * _normals((n_obs, theta.shape[1]), seed, theta)
        return xq.exp(x) if log else x

    def posterior(data: Array) -> models.Model:
        return models.lognormal_unknown(data, **prior) if log else models.normal_unknown(data, **prior)

    return Case("lognormal" if log else "normal", ("mu", "log_sigma"), prior_draw, simulate, posterior)


def gev_case(
    n_obs: int,
    *,
    prior_loc_sd: float = 1.0,
    prior_log_scale_sd: float = 0.5,
    shape_prior: tuple[float, float] = (6.0, 9.0),
) -> Case:
    """SBC case of :func:`pipeline.kernels.models.bayes_gev` with a fixed ``reference=(0, 1)``.

    Prior ``mu ~ N(0, prior_loc_sd^2)``, ``eta ~ N(0, prior_log_scale_sd^2)``,
    ``1/2 - xi ~ Beta(p, q)`` with ``(p, q) = shape_prior`` (a beta variate as
    ``G_p / (G_p + G_q)`` of two gamma variates); data ``n_obs`` values of
    ``GEV(loc=mu, scale=exp(eta), shape=xi)`` by :func:`pipeline.kernels.gev.gev_ppf`
    of uniforms (scipy's ``genextreme(c=-xi, mu, exp(eta))``). The reference fixes the
    model's standardization to ``z = x``, so its prior is this one whatever the data.
    """
    n_obs = _count(n_obs, "n_obs", _gev.MIN_OBS)
    sd_loc, sd_eta = _positive(prior_loc_sd, "prior_loc_sd"), _positive(prior_log_scale_sd, "prior_log_scale_sd")
    if len(tuple(shape_prior)) != 2:
        raise ValueError(f"shape_prior must be a pair (p, q) of positive numbers; got {shape_prior!r}.")
    bp, bq = (_positive(v, "shape_prior's p and q") for v in shape_prior)

    def prior_draw(cells: int, seed: int, like: Array) -> Array:
        u = special.uniform((4, cells), seed=seed, like=_float64_like(like))
        xq = array_api_compat.array_namespace(u)
        g_p, g_q = special.gammaincinv(bp, u[2, :]), special.gammaincinv(bq, u[3, :])
        xi = 0.5 - g_p / (g_p + g_q)
        return xq.stack([sd_loc * special.ndtri(u[0, :]), sd_eta * special.ndtri(u[1, :]), xi])

    def simulate(theta: Array, seed: int) -> Array:
        xq = array_api_compat.array_namespace(theta)
        params = xq.stack([theta[0, :], xq.exp(theta[1, :]), theta[2, :]])
        return _gev.gev_ppf(special.uniform((n_obs, theta.shape[1]), seed=seed, like=theta), params)

    def posterior(data: Array) -> models.Model:
        return models.bayes_gev(data, prior_loc_sd=sd_loc, prior_log_scale_sd=sd_eta, shape_prior=(bp, bq),
                                reference=(0.0, 1.0))

    return Case("gev", ("mu_z", "log_sigma_z", "xi"), prior_draw, simulate, posterior)


# ------------------------------------------------------------- samplers


def _mcmc(model: models.Model, sampler: str, theta0: Array, n_ranks: int, *, chains: int, warmup: int, thin: int,
          n_leapfrog: int, seed: int) -> tuple[Array, Array, Array]:
    """``L`` thinned draws ``(p, L, cells)`` interleaved over chains, bulk ESS ``(p, cells)`` and flags ``(cells,)``."""
    xp = array_api_compat.array_namespace(theta0)
    keep = math.ceil(n_ranks / chains)
    if sampler == "hmc":
        out = mcmc.hmc(model, theta0, n_warmup=warmup, n_draws=keep * thin, seed=seed, n_leapfrog=n_leapfrog)
        flagged = xp.any(out["divergent"], axis=(0, 1))
    else:
        out = mcmc.rwm(model, theta0, n_warmup=warmup, n_draws=keep * thin, seed=seed)
        flagged = xp.zeros(theta0.shape[2], dtype=xp.bool, device=array_api_compat.device(theta0))
    d = out["draws"]  # (p, chains, keep * thin, cells)
    p, cells = d.shape[0], d.shape[3]
    ess = xp.stack([diagnostics.ess(d[j, ...]) for j in range(p)])
    if chains > 1:  # one chain: divergences only
        rhat = xp.stack([diagnostics.rhat(d[j, ...]) for j in range(p)])
        flagged = flagged | xp.any(~(rhat <= RHAT_LIMIT), axis=0)  # NaN R-hat (stuck chains) is flagged too
    kept = xp.permute_dims(d[:, :, thin - 1 :: thin, :], (0, 2, 1, 3))  # (p, keep, chains, cells)
    return xp.reshape(kept, (p, keep * chains, cells))[:, :n_ranks, :], ess, flagged


def _start(case: Case, model: models.Model, init: str, chains: int, cells: int, seed: int, like: Array) -> Array:
    """Starting points ``(p, chains, cells)``: ``model.init``, or fresh prior draws (where ``logp`` is finite)."""
    theta0 = model.init(chains, seed)
    if init == "model":
        return theta0
    xp = array_api_compat.array_namespace(theta0)
    fresh = xp.reshape(case.prior_draw(chains * cells, seed, like), (theta0.shape[0], chains, cells))
    return xp.where(xp.isfinite(model.logp_grad(fresh)[0]), fresh, theta0)


def _rejection(case: Case, model: models.Model, data: Array, n_ranks: int, mcmc_kw: dict[str, Any],
               seed: int) -> tuple[Array, Array, Array]:
    """Exact draws by rejection; cells whose envelope failed (or did not finish) are re-sampled by HMC."""
    xp = array_api_compat.array_namespace(data)
    lap = rejection.laplace(model, model.init(1, seed)[:, 0, :])
    rej = rejection.rejection_sample(model, lap.mode, lap.cov, n_draws=n_ranks, seed=seed)
    needs = rej.needs_mcmc
    draws, ess = rej.draws, xp.full(tuple(lap.mode.shape), float(n_ranks), dtype=xp.float64,
                                    device=array_api_compat.device(data))
    m = int(xp.sum(xp.astype(needs, xp.int64)))
    if m:
        # the needy cells first (stable order), then a model of those cells alone
        idx = xp.argsort(xp.astype(~needs, xp.int8), stable=True)[:m]
        sub = case.posterior(xp.take(data, idx, axis=1))
        sub_draws, sub_ess, _ = _mcmc(sub, "hmc", sub.init(mcmc_kw["chains"], seed), n_ranks, **mcmc_kw,
                                      seed=_seed(seed, "fallback"))
        draws = newton.scatter_cells(draws, idx, sub_draws, xp)
        ess = newton.scatter_cells(ess, idx, sub_ess, xp)
    return draws, ess, needs


def _vi(model: models.Model, family: str, n_ranks: int, seed: int) -> tuple[Array, Array, Array]:
    fit = vi.advi(model, None, family=family, seed=seed)
    draws = vi.draws(fit, n_ranks, _seed(seed, "draws"))
    khat = vi.khat(model, fit, KHAT_DRAWS, _seed(seed, "khat"))
    xp = array_api_compat.array_namespace(draws)
    ess = xp.full((draws.shape[0], draws.shape[2]), float(n_ranks), dtype=xp.float64,
                  device=array_api_compat.device(draws))
    return draws, ess, ~(khat <= KHAT_LIMIT)


# ------------------------------------------------------------- run and test


def run(
    case: Case,
    sampler: str,
    *,
    cells: int,
    seed: int,
    like: Array,
    n_ranks: int = 99,
    chains: int = 4,
    warmup: int = 300,
    thin: int | None = None,
    n_leapfrog: int = 8,
    init: str = "model",
    n_obs_check: int | None = None,
) -> Result:
    """SBC ranks of ``sampler`` on ``case`` over ``cells`` replicates.

    Parameters
    ----------
    case : a :class:`Case`.
    sampler : one of :data:`SAMPLERS`.
    cells : replicates (prior draws, data sets, posteriors), all sampled at once.
    seed : non-negative seed; the prior, the simulation and the sampler take seeds derived from it.
    like : array whose namespace and device everything runs on.
    n_ranks : ``L`` posterior draws per cell; the ranks take ``L + 1`` values (for the
        chi-squared test with ``n_bins`` bins, ``n_bins`` must divide ``L + 1``).
    chains, warmup, n_leapfrog : MCMC settings (HMC and RWM, and HMC for the cells
        rejection could not handle); each chain runs ``ceil(L / chains) * thin``
        iterations after warm-up, keeps every ``thin``-th, and the chains' kept draws are
        interleaved; the first ``L`` are used.
    thin : ``None`` takes :data:`DEFAULT_THIN` (hmc 5, rwm 30: about one effective draw
        per kept draw on these cases).
    init : ``"model"`` starts the chains at ``model.init``; ``"prior"`` at fresh prior
        draws (where the posterior density is zero there, at ``model.init``): with a
        short warm-up this is the unconverged sampler SBC must catch.
    n_obs_check : if given, the number of rows the simulated data must have.

    Rejection starts Newton at ``model.init`` (``init`` is for HMC and RWM only); VI is
    :func:`pipeline.kernels.vi.advi` with its defaults, k-hat from ``KHAT_DRAWS`` draws.

    Returns
    -------
    Result
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}.")
    if init not in ("model", "prior"):
        raise ValueError(f"init must be 'model' or 'prior'; got {init!r}.")
    cells, seed, n_ranks = _count(cells, "cells", 1), _count(seed, "seed", 0), _count(n_ranks, "n_ranks", 1)
    chains, warmup = _count(chains, "chains", 1), _count(warmup, "warmup", 0)
    n_leapfrog = _count(n_leapfrog, "n_leapfrog", 1)
    thin = DEFAULT_THIN.get(sampler, DEFAULT_THIN["hmc"]) if thin is None else _count(thin, "thin", 1)
    if sampler in ("hmc", "rwm", "rejection") and math.ceil(n_ranks / chains) * thin < 4:
        raise ValueError(f"Each chain needs at least 4 iterations after warm-up for R-hat and ESS; got "
                         f"ceil(n_ranks/chains) * thin = {math.ceil(n_ranks / chains) * thin}: raise n_ranks or thin.")
    start = time.perf_counter()
    theta = case.prior_draw(cells, _seed(seed, "prior"), like)
    data = case.simulate(theta, _seed(seed, "simulate"))
    if n_obs_check is not None and data.shape[0] != n_obs_check:
        raise ValueError(f"The simulated data have {data.shape[0]} rows, not n_obs_check = {n_obs_check}.")
    model = case.posterior(data)
    if tuple(model.param_names) != tuple(case.param_names):
        raise ValueError(f"The case's parameters {case.param_names} are not the model's {model.param_names}.")
    s = _seed(seed, "sampler")
    mcmc_kw = dict(chains=chains, warmup=warmup, thin=thin, n_leapfrog=n_leapfrog)
    if sampler in ("hmc", "rwm"):
        theta0 = _start(case, model, init, chains, cells, _seed(seed, "init"), like)
        draws, ess, flagged = _mcmc(model, sampler, theta0, n_ranks, **mcmc_kw, seed=s)
    elif sampler == "rejection":
        draws, ess, flagged = _rejection(case, model, data, n_ranks, mcmc_kw, s)
    else:
        draws, ess, flagged = _vi(model, sampler[3:], n_ranks, s)
    xp = array_api_compat.array_namespace(theta)
    ranks = xp.stack([calibration.sbc_ranks(theta[j, :], draws[j, ...]) for j in range(theta.shape[0])])
    return Result(theta, ranks, n_ranks, ess, flagged, time.perf_counter() - start)


def uniformity(result: Result, *, n_bins: int = 20) -> tuple[list[float], list[float]]:
    """Chi-squared statistic and p-value of each parameter's ranks (``n_bins`` must divide ``L + 1``)."""
    if (result.n_ranks + 1) % n_bins:
        raise ValueError(f"n_bins ({n_bins}) must divide n_ranks + 1 ({result.n_ranks + 1}); choose n_ranks "
                         f"so that it does (e.g. 99 for 20 bins).")
    tests = [calibration.rank_uniformity(result.ranks[j, :], result.n_ranks + 1, n_bins)
             for j in range(result.ranks.shape[0])]
    return [t[1] for t in tests], [t[2] for t in tests]
