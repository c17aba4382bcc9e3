"""MCMC and importance-sampling diagnostics, vectorized over a trailing batch of cells.

Draws come as ``x`` of shape ``(chains, draws, *batch)`` (ArviZ's ``(chain, draw)``
order, any number of trailing cell dimensions); every diagnostic returns an array of
shape ``batch``, float64. Nothing loops over cells: the per-cell work is sorting, an FFT
along the draw axis and ``ceil(log2 n)`` doubling steps (Hillis & Steele) for the one
running minimum Geyer's monotone sequence needs.

The definitions are those of Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021),
"Rank-normalization, folding, and localization: an improved R-hat", Bayesian Analysis
16(2), as ArviZ 0.23 computes them (``arviz.rhat``, ``arviz.ess``, ``arviz.mcse``), down
to its tie rules:

* chains are split in halves (the middle draw of an odd count is dropped);
* rank normalization: average ranks ``r`` over all split chains and draws, then
  ``z = Phi^-1((r - 3/8) / (S + 1/4))`` (Blom 1958), ``S`` the number of values;
* R-hat of ``m`` chains of ``n`` draws: ``sqrt(((n - 1) / n W + B / n) / W)`` with ``W``
  the mean within-chain variance and ``B / n`` the variance of the chain means; the
  rank-normalized split R-hat is ``max(R(z(x)), R(z(|x - median x|)))``;
* ESS ``= S / tau``, ``tau = -1 + 2 sum_t rho_t`` with the autocorrelations ``rho_t``
  combined over chains (BDA3 eq. 11.7), summed in pairs until the first non-positive
  pair (Geyer's initial positive sequence, with ArviZ's handling of the last pair),
  made non-increasing (Geyer's initial monotone sequence), and ``tau`` floored at
  ``1 / log10 S`` (so ``ESS <= S log10 S``). Bulk ESS is that of the rank-normalized
  split chains, tail ESS the smaller of those of the indicators ``x <= q_0.05`` and
  ``x <= q_0.95`` (type-7 quantiles), ``mcse_mean = sd(x) / sqrt(ESS(split x))``.

Cells that hold a NaN give NaN. A constant cell has ESS ``S`` (as in ArviZ) and an
undefined (NaN) R-hat; chains that are each constant but differ give R-hat ``inf``.
R-hat needs 2 chains (ArviZ returns NaN for one; here it is an error), ESS one.

:func:`psis_khat` is the Pareto-smoothed importance-sampling shape estimate of Vehtari,
Simpson, Gelman, Yao & Gabry (2024), with Zhang & Stephens' (2009) empirical-Bayes fit
of a generalized Pareto distribution to the largest ``M = ceil(min(S/5, 3 sqrt(S/r_eff)))``
ratios, as ``arviz.psislw``: ``k < 0.7`` means the importance weights (and the
approximation behind them) can be trusted.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from pipeline.kernels.special import ndtri

__all__ = ["ess", "mcse_mean", "psis_khat", "rank_normalize", "rhat"]

_BLOM = 3.0 / 8.0
_RESOLUTION = 1e-15  # numpy.finfo(float64).resolution: the range below which ArviZ calls a cell constant
_RHAT_METHODS = ("rank", "split")
_ESS_METHODS = ("bulk", "tail", "mean")


# -------------------------------------------------------------- input and shapes


def _check_draws(x: Any, name: str, min_chains: int = 1) -> tuple[Any, Any, tuple[int, ...]]:
    """Namespace, ``x`` as float64 of shape (chains, draws, cells), and the batch shape."""
    try:
        xp = array_api_compat.array_namespace(x)
    except TypeError as err:
        raise TypeError(
            f"{name} needs an array of draws shaped (chains, draws, *batch); got {type(x).__name__}."
        ) from err
    if x.ndim < 2:
        raise ValueError(f"{name} needs draws shaped (chains, draws, *batch); got a {x.ndim}-D array.")
    if not xp.isdtype(x.dtype, ("real floating", "integral")):
        raise TypeError(f"{name} needs real (integer or floating) draws; got dtype {x.dtype}.")
    chains, draws, batch = x.shape[0], x.shape[1], tuple(x.shape[2:])
    if draws < 4:
        raise ValueError(f"{name} needs at least 4 draws per chain; got {draws}.")
    if chains < min_chains:
        raise ValueError(f"{name} needs at least {min_chains} chains; got {chains}.")
    cells = math.prod(batch)
    return xp, xp.reshape(xp.astype(x, xp.float64), (chains, draws, cells)), batch


def _split(y: Any, xp: Any) -> Any:
    """Chains cut in halves and stacked: (m, n, B) -> (2m, n // 2, B), the middle draw of an odd n dropped."""
    half = y.shape[1] // 2
    return xp.concat([y[:, :half, :], y[:, y.shape[1] - half :, :]], axis=0)


def _nan_cells(y: Any, xp: Any) -> Any:
    """Cells (B,) of y (m, n, B) that hold a NaN."""
    return xp.any(xp.isnan(xp.reshape(y, (-1, y.shape[-1]))), axis=0)


def _finish(value: Any, bad: Any, batch: tuple[int, ...], xp: Any) -> Any:
    return xp.reshape(xp.where(bad, xp.nan, value), batch)


def _scan(a: Any, xp: Any, op: Any, fill: float) -> Any:
    """Running ``op`` (minimum or maximum) down axis 0 of a (K, B) array by doubling steps."""
    step = 1
    while step < a.shape[0]:
        head = xp.full((step, a.shape[1]), fill, dtype=a.dtype, device=array_api_compat.device(a))
        a = op(a, xp.concat([head, a[:-step, :]], axis=0))
        step *= 2
    return a


def _pick(a: Any, index: Any, xp: Any) -> Any:
    """``a[index[b], b]`` for a (K, B) array and integer indices (B,), without fancy indexing."""
    rows = xp.arange(a.shape[0], device=array_api_compat.device(a))[:, None]
    return xp.sum(xp.where(rows == index[None, :], a, 0.0), axis=0)


# ------------------------------------------------------------- rank normalization


def _average_ranks(v: Any, xp: Any) -> Any:
    """1-based average ranks (ties share the mean of their positions) down axis 0 of (S, B).

    With a stable sort, an element's position among the ascending values is the count
    of smaller values plus the count of equal values before it; sorting the reversed
    array counts the equal values after it instead. Their mean plus one is its average rank.
    """
    before = xp.argsort(xp.argsort(v, axis=0, stable=True), axis=0, stable=True)
    flipped = xp.flip(v, axis=0)
    after = xp.flip(xp.argsort(xp.argsort(flipped, axis=0, stable=True), axis=0, stable=True), axis=0)
    return xp.astype(before + after, xp.float64) / 2.0 + 1.0


def _z_scale(y: Any, xp: Any) -> Any:
    """Normal scores of the average ranks over all chains and draws of each cell of y (m, n, B)."""
    size = y.shape[0] * y.shape[1]
    ranks = _average_ranks(xp.reshape(y, (size, y.shape[2])), xp)
    z = ndtri((ranks - _BLOM) / (size - 2 * _BLOM + 1))
    return xp.reshape(z, y.shape)


def _median(y: Any, xp: Any) -> Any:
    """Median over chains and draws of y (m, n, B), as numpy.median: shape (B,)."""
    size = y.shape[0] * y.shape[1]
    s = xp.sort(xp.reshape(y, (size, y.shape[2])), axis=0)
    mid = size // 2
    return s[mid, :] if size % 2 else (s[mid - 1, :] + s[mid, :]) / 2.0


def rank_normalize(x: Any) -> Any:
    """Rank-normalized draws ``z = Phi^-1((r - 3/8) / (S + 1/4))``, ranks over all chains and draws.

    Parameters
    ----------
    x : array, shape (chains, draws, *batch)

    Returns
    -------
    array, shape of ``x``, float64
        Normal scores of the average ranks ``r`` (ties share their mean rank) among the
        ``S = chains * draws`` values of each cell.
    """
    xp, y, batch = _check_draws(x, "rank_normalize")
    z = xp.where(_nan_cells(y, xp)[None, None, :], xp.nan, _z_scale(y, xp))
    return xp.reshape(z, tuple(x.shape))


# ----------------------------------------------------------------------- R-hat


def _rhat_core(y: Any, xp: Any) -> Any:
    """Potential scale reduction of the m chains of y (m, n, B).

    ``inf`` if only the chain means vary, NaN if nothing does.
    """
    n = y.shape[1]
    between = n * xp.var(xp.mean(y, axis=1), axis=0, correction=1)
    # Shifted by each chain's first draw, so a constant chain has a within-variance of exactly 0.
    within = xp.mean(xp.var(y - y[:, :1, :], axis=1, correction=1), axis=0)
    ratio = between / xp.where(within > 0, within, 1.0)
    ratio = xp.where(within > 0, ratio, xp.where(between > 0, math.inf, xp.full_like(between, math.nan)))
    return xp.sqrt((ratio + n - 1) / n)


def rhat(x: Any, *, method: str = "rank") -> Any:
    """Split R-hat of each cell.

    Parameters
    ----------
    x : array, shape (chains, draws, *batch)
        At least 2 chains of at least 4 draws.
    method : {"rank", "split"}
        "rank": ``max(bulk, tail)`` R-hat of the rank-normalized split chains and of
        the rank-normalized folded split chains ``|x - median|`` (Vehtari et al. 2021,
        ``arviz.rhat(method="rank")``); "split": the classic split R-hat of the raw draws.

    Returns
    -------
    array, shape batch, float64
    """
    if method not in _RHAT_METHODS:
        raise ValueError(f"method must be one of {_RHAT_METHODS}; got {method!r}.")
    xp, y, batch = _check_draws(x, "rhat", min_chains=2)
    s = _split(y, xp)
    if method == "split":
        value = _rhat_core(s, xp)
    else:
        bulk = _rhat_core(_z_scale(s, xp), xp)
        tail = _rhat_core(_z_scale(xp.abs(s - _median(s, xp)[None, None, :]), xp), xp)
        value = xp.where(tail > bulk, tail, bulk)  # Python's max(bulk, tail): NaN bulk wins, NaN tail loses
    return _finish(value, _nan_cells(y, xp), batch, xp)


# ------------------------------------------------------------------------- ESS


def _fft_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _autocov(y: Any, xp: Any) -> Any:
    """Biased autocovariances (divided by n) at lags 0..n-1 of each chain of y (m, n, B), by FFT."""
    n = y.shape[1]
    size = _fft_len(2 * n)
    f = xp.fft.rfft(y - xp.mean(y, axis=1, keepdims=True), n=size, axis=1)
    return xp.fft.irfft(f * xp.conj(f), n=size, axis=1)[:, :n, :] / n


def _ess_core(y: Any, xp: Any) -> Any:
    """Effective sample size of the m chains of y (m, n, B), ArviZ's ``_ess``."""
    m, n, cells = y.shape
    size = m * n
    flat = xp.reshape(y, (size, cells))
    const = (xp.max(flat, axis=0) - xp.min(flat, axis=0)) < _RESOLUTION
    acov = xp.mean(_autocov(y, xp), axis=0)  # (n, B), averaged over chains
    mean_var = acov[0, :] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if m > 1:
        var_plus = var_plus + xp.var(xp.mean(y, axis=1), axis=0, correction=1)
    var_plus = xp.where(const, 1.0, var_plus)

    # Pairs (rho_2k, rho_2k+1), k = 0..last; ArviZ's loop visits k <= (n - 3) // 2.
    last = max((n - 3) // 2, 0)
    rho = 1.0 - (mean_var[None, :] - acov[: 2 * last + 2, :]) / var_plus[None, :]
    dev = array_api_compat.device(y)
    k = xp.arange(last + 1, device=dev)[:, None]
    even = xp.where(k == 0, 1.0, rho[0::2, :])
    pair = even + rho[1::2, :]
    # Initial positive sequence: pairs before the first non-positive one (or the last pair).
    stop = xp.min(xp.where(pair <= 0.0, k, last), axis=0)
    # Initial monotone sequence: the pairs before `stop` made non-increasing.
    mono = _scan(pair, xp, xp.minimum, math.inf)
    body = xp.sum(xp.where(k < stop[None, :], mono, 0.0), axis=0)
    # The pair at `stop` adds its even term if ArviZ kept it (pair >= 0) or it is positive.
    even_stop, pair_stop = _pick(even, stop, xp), _pick(pair, stop, xp)
    tail = xp.where((pair_stop >= 0.0) | (even_stop > 0.0), even_stop, 0.0)
    tau = -1.0 + 2.0 * body + tail
    floor = 1.0 / math.log10(size)
    tau = xp.where(floor > tau, floor, tau)
    return xp.where(const, float(size), size / tau)


def _quantile7(y: Any, p: float, xp: Any) -> Any:
    """Type-7 quantile over chains and draws of y (m, n, B), as ``scipy.stats.mstats.mquantiles(alphap=1, betap=1)``."""
    size = y.shape[0] * y.shape[1]
    s = xp.sort(xp.reshape(y, (size, y.shape[2])), axis=0)
    aleph = size * p + (1.0 + p * (1.0 - 1.0 - 1.0))
    k = int(math.floor(min(max(aleph, 1.0), size - 1.0)))
    gamma = min(max(aleph - k, 0.0), 1.0)
    return (1.0 - gamma) * s[k - 1, :] + gamma * s[k, :]


def _ess_tail(y: Any, xp: Any, prob: float) -> Any:
    def indicator_ess(q: float) -> Any:
        below = xp.astype(y <= _quantile7(y, q, xp)[None, None, :], xp.float64)
        return _ess_core(_split(below, xp), xp)

    low, high = indicator_ess(prob), indicator_ess(1.0 - prob)
    return xp.where(high < low, high, low)  # Python's min(low, high)


def ess(x: Any, *, method: str = "bulk", prob: float = 0.05) -> Any:
    """Effective sample size of each cell (Vehtari et al. 2021; ``arviz.ess``).

    Parameters
    ----------
    x : array, shape (chains, draws, *batch)
        At least 4 draws per chain; one chain is allowed (it is split in two).
    method : {"bulk", "tail", "mean"}
        "bulk": ESS of the rank-normalized split chains; "tail": the smaller ESS of
        the indicators ``x <= q_prob`` and ``x <= q_(1-prob)``; "mean": ESS of the raw
        split chains (the one ``mcse_mean`` uses).
    prob : float
        Tail probability of the "tail" method, in (0, 1/2).

    Returns
    -------
    array, shape batch, float64
        At most ``S log10 S`` for ``S`` split draws in all; ``S`` for a constant cell.
    """
    if method not in _ESS_METHODS:
        raise ValueError(f"method must be one of {_ESS_METHODS}; got {method!r}.")
    if not 0.0 < prob < 0.5:
        raise ValueError(f"prob must lie in (0, 0.5); got {prob!r}.")
    xp, y, batch = _check_draws(x, "ess")
    if method == "bulk":
        value = _ess_core(_z_scale(_split(y, xp), xp), xp)
    elif method == "tail":
        value = _ess_tail(y, xp, prob)
    else:
        value = _ess_core(_split(y, xp), xp)
    return _finish(value, _nan_cells(y, xp), batch, xp)


def mcse_mean(x: Any) -> Any:
    """Monte Carlo standard error of the posterior mean: ``sd(x) / sqrt(ESS_mean)`` (``arviz.mcse``).

    Parameters
    ----------
    x : array, shape (chains, draws, *batch)

    Returns
    -------
    array, shape batch, float64
        ``sd`` with ``ddof=1`` over all chains and draws; ``ESS_mean`` that of the raw split chains.
    """
    xp, y, batch = _check_draws(x, "mcse_mean")
    sd = xp.std(xp.reshape(y, (-1, y.shape[2])), axis=0, correction=1)
    value = sd / xp.sqrt(_ess_core(_split(y, xp), xp))
    return _finish(value, _nan_cells(y, xp), batch, xp)


# ---------------------------------------------------------------- PSIS k-hat


def _gpd_shape(tail: Any, n: Any, xp: Any) -> Any:
    """Zhang & Stephens (2009) estimate of the GPD shape, with ArviZ's weak prior, per cell.

    ``tail`` (M, B) holds each cell's ``n`` exceedances sorted ascending in its last
    ``n`` rows and zeros above them (``log1p(-b * 0) = 0`` leaves the sums alone).
    """
    rows, cells = tail.shape
    dev = array_api_compat.device(tail)
    nf = xp.astype(n, xp.float64)
    m_est = 30.0 + xp.floor(xp.sqrt(nf))  # (B,)
    j = xp.arange(1, 31 + math.isqrt(rows), dtype=xp.float64, device=dev)[:, None]
    used = j <= m_est[None, :]
    quarter = (rows - n) + xp.astype(xp.floor(nf / 4.0 + 0.5), n.dtype) - 1
    b = (1.0 - xp.sqrt(m_est[None, :] / (j - 0.5))) / (3.0 * _pick(tail, quarter, xp))[None, :]
    b = b + 1.0 / tail[rows - 1, :][None, :]
    b = xp.where(used, b, b[0:1, :])  # unused grid points: a harmless copy, weight 0 below
    k = xp.stack([xp.sum(xp.log1p(-b[i, :][None, :] * tail), axis=0) for i in range(b.shape[0])]) / nf
    log_lik = nf * (xp.log(-(b / k)) - k - 1.0)
    log_lik = xp.where(used, log_lik, -math.inf)
    top = xp.max(log_lik, axis=0, keepdims=True)
    w = xp.exp(log_lik - top - xp.log(xp.sum(xp.exp(log_lik - top), axis=0, keepdims=True)))
    w = xp.where(used & (w >= 10 * xp.finfo(xp.float64).eps), w, 0.0)
    b_post = xp.sum(b * w, axis=0) / xp.sum(w, axis=0)
    k_post = xp.sum(xp.log1p(-b_post[None, :] * tail), axis=0) / nf
    return (nf * k_post + 10 * 0.5) / (nf + 10)


def psis_khat(log_ratios: Any, *, reff: float = 1.0) -> Any:
    """Pareto-smoothed importance-sampling shape estimate k-hat of each cell (``arviz.psislw``).

    The ``M = ceil(min(S/5, 3 sqrt(S / reff)))`` largest of the ``S`` ratios (those
    above the ``(M+1)``-th largest, and above ``tiny`` times the largest) are fitted by
    a generalized Pareto distribution (Zhang & Stephens 2009) with the shape pulled
    towards 1/2 by a weak prior, ``k = (M k_ZS + 5) / (M + 10)``. ``k < 0.7``: the
    importance weights are reliable; larger: the proposal (e.g. a VI fit) misses the tail.

    Parameters
    ----------
    log_ratios : array, shape (draws, *batch)
        Log importance ratios ``log p(theta) - log q(theta)`` (any constant offset), at least 2 draws.
    reff : float
        Relative efficiency ``ESS / S`` of the draws (1 for independent draws).

    Returns
    -------
    array, shape batch, float64
        ``inf`` where 4 or fewer ratios exceed the cutoff or a ratio is ``+inf``; NaN where a
        ratio is NaN or all are ``-inf``.
    """
    try:
        xp = array_api_compat.array_namespace(log_ratios)
    except TypeError as err:
        raise TypeError(f"psis_khat needs an array of log ratios; got {type(log_ratios).__name__}.") from err
    if log_ratios.ndim < 1:
        raise ValueError("psis_khat needs log ratios shaped (draws, *batch); got a 0-D array.")
    if not xp.isdtype(log_ratios.dtype, "real floating"):
        raise TypeError(f"psis_khat needs real floating log ratios; got dtype {log_ratios.dtype}.")
    if not (isinstance(reff, int | float) and reff > 0):
        raise ValueError(f"reff must be a positive number; got {reff!r}.")
    draws, batch = log_ratios.shape[0], tuple(log_ratios.shape[1:])
    if draws < 2:
        raise ValueError(f"psis_khat needs at least 2 draws; got {draws}.")
    y = xp.reshape(xp.astype(log_ratios, xp.float64), (draws, math.prod(batch)))
    dev = array_api_compat.device(y)
    peak = xp.max(y, axis=0)
    undefined = xp.any(xp.isnan(y), axis=0) | (peak == -math.inf)
    bad = undefined | (peak == math.inf)
    rows = int(math.ceil(min(draws / 5.0, 3 * (draws / reff) ** 0.5)))
    if rows <= 4:
        return _finish(xp.full(peak.shape, math.inf, dtype=xp.float64, device=dev), undefined, batch, xp)
    s = xp.sort(y - xp.where(bad, 0.0, peak)[None, :], axis=0)
    cut = xp.maximum(s[draws - rows - 1, :], math.log(xp.finfo(xp.float64).smallest_normal))
    top = s[draws - rows :, :]
    inside = top > cut[None, :]
    n = xp.sum(xp.astype(inside, xp.int64), axis=0)
    ok = (n > 4) & ~bad
    # Cells without a usable tail get a stand-in tail 1..M, and inf at the end (as ArviZ).
    stand_in = xp.arange(1, rows + 1, dtype=xp.float64, device=dev)[:, None]
    tail = xp.where(inside, xp.exp(top) - xp.exp(cut)[None, :], 0.0)
    tail = xp.where(ok[None, :], tail, stand_in)
    k = xp.where(ok, _gpd_shape(tail, xp.where(ok, n, rows), xp), math.inf)
    return _finish(k, undefined, batch, xp)
