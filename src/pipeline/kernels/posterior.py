"""Exact posterior sampling of the Bayesian ridge regression, all cells at once.

Raw arrays in, raw arrays out, written against the Python array API. The model
is per cell, on the standardized, centred problem ``y = Z beta + e`` with
``e ~ N(0, sigma^2 I)`` and the conjugate normal--inverse-gamma prior

    beta | sigma^2 ~ N(0, sigma^2 / alpha I),    sigma^2 ~ InvGamma(a0, b0).

The intercept has a flat prior and is integrated out by centring, which leaves
``n - 1`` effective samples. The posterior is

    Lambda_n = Z^T Z + alpha I,    mu_n = Lambda_n^{-1} Z^T y,
    a_n = a0 + (n - 1) / 2,        b_n = b0 + (y^T y - mu_n^T Lambda_n mu_n) / 2,

and for ``alpha = 0`` the flat prior ``p(beta) ∝ 1`` (not the ``alpha -> 0``
limit of the conjugate prior, whose ``sigma^-k`` factor would remain), which
leaves ``a_n = a0 + (n - 1 - k) / 2`` with ``k`` predictors: the classical
result that ``beta`` is Student-t about the OLS fit with ``n - 1 - k`` degrees
of freedom when ``a0, b0 -> 0``. In both cases
    sigma^2 | y ~ InvGamma(a_n, b_n),   beta | sigma^2, y ~ N(mu_n, sigma^2 Lambda_n^{-1}),

so ``mu_n`` is the ridge solution for ``alpha`` and each coefficient is marginally
Student-t with ``2 a_n`` degrees of freedom, location ``mu_n`` and squared scale
``(b_n / a_n) (Lambda_n^{-1})_jj``. One thin SVD ``Z = U S V^T``, shared by all
cells, gives ``Lambda_n^{-1} = V (S^2 + alpha)^{-1} V^T`` and its factor
``L = V (S^2 + alpha)^{-1/2}``.

Sampling is exact: ``sigma^2 = b_n / g`` with ``g ~ Gamma(a_n, 1)`` and
``beta = mu_n + sigma L eps`` with ``eps ~ N(0, I)``.

Random draws and chunking
-------------------------
Two generators are used, one for the gamma draws and one for the normal draws,
and each block of cells draws cell-major arrays (``(cell, draw)`` gammas,
``(cell, draw, predictor)`` normals). With NumPy generators, consecutive draws
continue one stream, so the draws of a cell do not depend on ``chunk_cells``:
for a fixed seed the results are identical whatever the block size (tested).
CuPy's generators do not promise this; there a fixed seed and a fixed
``chunk_cells`` reproduce the draws.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import array_api_compat

from pipeline.backend import standard_gamma, standard_normal

Array = Any


class Factor(NamedTuple):
    """The SVD pieces of ``Z`` that every cell shares.

    ``L`` is ``(predictor, predictor)`` with ``L L^T = Lambda_n^{-1}``.
    """

    U: Array
    s: Array
    V: Array
    L: Array
    alpha: float


class Conjugate(NamedTuple):
    """Posterior parameters: ``mu`` ``(predictor, cell)``, ``a_n`` scalar, ``b_n`` ``(cell,)``."""

    mu: Array
    a_n: float
    b_n: Array


class Summary(NamedTuple):
    """Per-cell posterior summaries; coefficient arrays are ``(predictor, cell)``."""

    mean: Array
    sd: Array
    ci_lower: Array
    ci_upper: Array
    p_positive: Array
    sigma: Array


def factor(Z: Array, alpha: float) -> Factor:
    """Thin SVD of ``Z`` and the factor ``L = V diag((s^2 + alpha)^{-1/2})`` of ``Lambda_n^{-1}``.

    Raises
    ------
    ValueError
        If ``Z`` has more columns than rows, or ``Z^T Z + alpha I`` is singular
        (``alpha == 0`` with a rank-deficient design).
    """
    xp = array_api_compat.array_namespace(Z)
    n, k = Z.shape
    U, s, Vt = xp.linalg.svd(Z, full_matrices=False)
    tiny = float(xp.max(s)) ** 2 * max(n, k) * float(xp.finfo(Z.dtype).eps)
    if k > n:
        raise ValueError(f"The posterior needs at least as many samples ({n}) as predictors ({k}).")
    if float(xp.min(s)) ** 2 + alpha <= tiny:
        raise ValueError(
            f"The posterior precision Z^T Z + alpha I is singular (alpha = {alpha}); "
            "use a positive alpha or a full-rank design."
        )
    V = xp.matrix_transpose(Vt)
    return Factor(U=U, s=s, V=V, L=V / xp.sqrt(s * s + alpha), alpha=float(alpha))


def lambda_inverse(f: Factor) -> Array:
    """``Lambda_n^{-1} = (Z^T Z + alpha I)^{-1} = L L^T``."""
    xp = array_api_compat.array_namespace(f.L)
    return f.L @ xp.matrix_transpose(f.L)


def conjugate(f: Factor, Yc: Array, a0: float, b0: float) -> Conjugate:
    """Posterior parameters for the centred responses ``Yc`` ``(sample, cell)``.

    With ``c = U^T y``: ``mu_n = V diag(s/(s^2+alpha)) c`` and
    ``mu_n^T Lambda_n mu_n = sum_i s_i^2 c_i^2 / (s_i^2 + alpha)``.
    """
    xp = array_api_compat.array_namespace(f.U, Yc)
    n = Yc.shape[0]
    c = xp.matrix_transpose(f.U) @ Yc
    denom = (f.s * f.s + f.alpha)[:, None]
    mu = f.V @ (f.s[:, None] * c / denom)
    quad = xp.sum((f.s * f.s)[:, None] * c * c / denom, axis=0)
    b_n = b0 + 0.5 * (xp.sum(Yc * Yc, axis=0) - quad)
    # alpha = 0 is the flat prior p(beta) ∝ 1 (no sigma^-k of the conjugate prior): k fewer degrees of freedom
    k = 0 if f.alpha > 0 else f.V.shape[0]
    return Conjugate(mu=mu, a_n=a0 + 0.5 * (n - 1 - k), b_n=b_n)


def draw(post: Conjugate, L: Array, n_draws: int, rng_gamma: Any, rng_normal: Any) -> tuple[Array, Array]:
    """Exact joint draws ``(sigma^2, beta)`` for every cell of ``post``.

    Returns
    -------
    sigma2 : ``(cell, draw)`` array
    beta : ``(cell, draw, predictor)`` array, standardized units
    """
    xp = array_api_compat.array_namespace(post.mu, L)
    k, n_cells = post.mu.shape
    g = standard_gamma(rng_gamma, xp, post.a_n, (n_cells, n_draws), dtype=L.dtype)
    sigma2 = post.b_n[:, None] / g
    eps = standard_normal(rng_normal, xp, (n_cells, n_draws, k), dtype=L.dtype)
    beta = xp.matrix_transpose(post.mu)[:, None, :] + xp.sqrt(sigma2)[:, :, None] * (eps @ xp.matrix_transpose(L))
    return sigma2, beta


def sorted_quantile(sorted_draws: Array, q: float, axis: int) -> Array:
    """Quantile ``q`` of draws already sorted along ``axis`` (linear interpolation).

    Position ``q (D - 1)`` between order statistics, as NumPy's default
    ``quantile`` method.
    """
    d = sorted_draws.shape[axis]
    pos = q * (d - 1)
    lo = min(int(pos), d - 1)
    hi = min(lo + 1, d - 1)
    w = pos - lo
    at = [slice(None)] * sorted_draws.ndim
    lower = sorted_draws[tuple(at[:axis] + [lo] + at[axis + 1 :])]
    upper = sorted_draws[tuple(at[:axis] + [hi] + at[axis + 1 :])]
    return (1.0 - w) * lower + w * upper


def summarize(beta: Array, sigma2: Array, level: float) -> Summary:
    """Mean, sd (divisor D-1), equal-tailed ``level`` interval, P(beta > 0), E[sigma].

    ``beta`` is ``(cell, draw, predictor)``; summaries come back ``(predictor, cell)``.
    """
    xp = array_api_compat.array_namespace(beta, sigma2)
    sorted_beta = xp.sort(beta, axis=1)
    tail = 0.5 * (1.0 - level)
    out = [
        xp.mean(beta, axis=1),
        xp.std(beta, axis=1, correction=1),
        sorted_quantile(sorted_beta, tail, axis=1),
        sorted_quantile(sorted_beta, 1.0 - tail, axis=1),
        xp.mean(xp.astype(beta > 0, beta.dtype), axis=1),
    ]
    return Summary(*[xp.matrix_transpose(a) for a in out], sigma=xp.mean(xp.sqrt(sigma2), axis=1))


def sample_summaries(
    Z: Array,
    Yc: Array,
    std: Array,
    alpha: float,
    *,
    a0: float,
    b0: float,
    n_draws: int,
    level: float,
    chunk_cells: int,
    rng_gamma: Any,
    rng_normal: Any,
) -> Summary:
    """Posterior summaries in original units, processing ``chunk_cells`` cells at a time.

    Parameters
    ----------
    Z : ``(sample, predictor)`` standardized design; ``std`` its predictors' scales,
        so a coefficient in original units is ``beta_j / std_j``.
    Yc : ``(sample, cell)`` centred responses.

    Peak memory is about ``4 * chunk_cells * n_draws * (predictor + 1)`` numbers.
    """
    xp = array_api_compat.array_namespace(Z, Yc, std)
    f = factor(Z, alpha)
    parts = []
    n_cells = Yc.shape[1]
    for start in range(0, n_cells, chunk_cells):
        post = conjugate(f, Yc[:, start : min(start + chunk_cells, n_cells)], a0, b0)
        sigma2, beta = draw(post, f.L, n_draws, rng_gamma, rng_normal)
        parts.append(summarize(beta / std, sigma2, level))
    return Summary(*[xp.concat([getattr(p, name) for p in parts], axis=-1) for name in Summary._fields])
