"""Batched damped-Newton maximization over grid cells, and small-matrix algebra per cell.

Every cell carries its own small problem: ``p`` parameters (2 to 5), stacked as
``theta`` of shape ``(p, cells)``. The objective returns the log-likelihood
``(cells,)``, its gradient ``(p, cells)`` and Hessian ``(p, p, cells)``; the
engine moves all cells at once and each cell stops on its own. Matrices are
``(p, p, cells)``: the small dimensions come first, the cells last, and all the
algebra below loops over ``p`` in Python while working elementwise over cells.

The iteration (per cell):

* direction: ``(-H + lam I) d = g`` by a hand-written Cholesky; ``lam = 0``
  when ``-H`` is positive definite, else increased tenfold from a small
  multiple of ``max |diag H|`` until it is (Levenberg);
* step: ``theta + s d``, ``s = 1`` first and halved while the log-likelihood does
  not increase or is not finite (the objective returns ``-inf`` outside the
  support), with one objective evaluation per iteration for all cells;
* stop: once the Newton decrement ``g.d`` falls below ``tol (1 + |l|)`` (or the
  step is negligible) the cell takes that last full step, which quadratic
  convergence makes exact to round-off, and then stops moving.

Cells that finish are dropped from the working set once at least half of it has
finished, so late iterations cost only what the slow cells need.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat

Objective = Callable[..., tuple[Any, Any, Any]]


# ------------------------------------------------------------ small matrices


def _rows(a: Any) -> list[list[Any]]:
    """A ``(p, p, cells)`` array as nested lists of ``(cells,)`` arrays."""
    p = a.shape[0]
    return [[a[i, j, ...] for j in range(p)] for i in range(p)]


def _stack2(m: list[list[Any]], xp: Any) -> Any:
    return xp.stack([xp.stack(row) for row in m])


def _cholesky_lists(m: list[list[Any]], xp: Any) -> tuple[list[list[Any]], Any]:
    """Lower Cholesky factor of symmetric ``m`` (lists of (cells,) arrays) and a positive-definite flag.

    A pivot below ``1e-13 max |diag|`` (or NaN) marks the cell as not positive
    definite; its factor is finite but meaningless.
    """
    p = len(m)
    scale = m[0][0] * 0.0
    for j in range(p):
        scale = xp.maximum(scale, xp.abs(m[j][j]))
    floor = 1e-13 * scale + float(xp.finfo(m[0][0].dtype).smallest_normal)
    low: list[list[Any]] = [[None] * p for _ in range(p)]
    ok = None
    for j in range(p):
        s = m[j][j]
        for k in range(j):
            s = s - low[j][k] * low[j][k]
        good = s > floor
        ok = good if ok is None else ok & good
        pivot = xp.sqrt(xp.where(good, s, xp.ones_like(s)))
        low[j][j] = pivot
        for i in range(j + 1, p):
            s = m[i][j]
            for k in range(j):
                s = s - low[i][k] * low[j][k]
            low[i][j] = s / pivot
    return low, ok


def _cholesky_solve_lists(low: list[list[Any]], b: list[Any]) -> list[Any]:
    """Solve ``L L^T x = b`` for each cell (forward then backward substitution)."""
    p = len(b)
    y: list[Any] = []
    for i in range(p):
        s = b[i]
        for k in range(i):
            s = s - low[i][k] * y[k]
        y.append(s / low[i][i])
    x: list[Any] = [None] * p
    for i in range(p - 1, -1, -1):
        s = y[i]
        for k in range(i + 1, p):
            s = s - low[k][i] * x[k]
        x[i] = s / low[i][i]
    return x


def cholesky(a: Any) -> tuple[Any, Any]:
    """Batched Cholesky factor ``L`` (``a = L L^T``) of symmetric ``a`` of shape (p, p, cells).

    Returns
    -------
    low : array (p, p, cells)
        Lower triangular factor (zeros above the diagonal); all NaN where ``a``
        is not positive definite.
    ok : array (cells,) bool
        Whether the cell's matrix is positive definite.
    """
    xp = array_api_compat.array_namespace(a)
    low, ok = _cholesky_lists(_rows(a), xp)
    zero = xp.zeros_like(a[0, 0, ...])
    p = a.shape[0]
    full = [[xp.where(ok, low[i][j] if j <= i else zero, xp.nan) for j in range(p)] for i in range(p)]
    return _stack2(full, xp), ok


def spd_solve(a: Any, b: Any) -> Any:
    """Solve ``a x = b`` per cell for symmetric positive definite ``a`` (p, p, cells), ``b`` (p, cells).

    NaN for cells whose ``a`` is not positive definite.
    """
    xp = array_api_compat.array_namespace(a, b)
    low, ok = _cholesky_lists(_rows(a), xp)
    x = _cholesky_solve_lists(low, [b[i, ...] for i in range(b.shape[0])])
    nan = xp.full_like(x[0], xp.nan)
    return xp.stack([xp.where(ok, xi, nan) for xi in x])


def spd_inverse(a: Any) -> Any:
    """Inverse of symmetric positive definite ``a`` (p, p, cells); NaN where not positive definite.

    Used for covariances ``(-H)^-1`` at a maximum: a cell whose ``-H`` is not
    positive definite has no Wald covariance, and gets NaN rather than a matrix
    with negative variances.
    """
    xp = array_api_compat.array_namespace(a)
    p = a.shape[0]
    low, ok = _cholesky_lists(_rows(a), xp)
    zero = xp.zeros_like(a[0, 0, ...])
    cols = [_cholesky_solve_lists(low, [zero + (1.0 if i == j else 0.0) for i in range(p)]) for j in range(p)]
    nan = xp.full_like(zero, xp.nan)
    # symmetrize: average the two triangles, which round-off makes differ slightly
    m = [[xp.where(ok, 0.5 * (cols[j][i] + cols[i][j]), nan) for j in range(p)] for i in range(p)]
    return _stack2(m, xp)


def solve(a: Any, b: Any) -> Any:
    """Solve ``a x = b`` per cell by Gauss-Jordan elimination with partial pivoting.

    Parameters
    ----------
    a : array (p, p, cells)
    b : array (p, cells) or (p, m, cells)

    Returns
    -------
    array shaped like ``b``; NaN for cells whose ``a`` is singular.
    """
    xp = array_api_compat.array_namespace(a, b)
    p = a.shape[0]
    vector = b.ndim == a.ndim - 1
    bb = xp.expand_dims(b, axis=1) if vector else b
    m = bb.shape[1]
    rows = [[a[i, j, ...] for j in range(p)] + [bb[i, k, ...] for k in range(m)] for i in range(p)]
    scale = xp.zeros_like(rows[0][0])
    for i in range(p):
        for j in range(p):
            scale = xp.maximum(scale, xp.abs(rows[i][j]))
    tiny = 1e-14 * scale
    for j in range(p):
        for r in range(j + 1, p):  # bring the largest |a_rj| to row j, cell by cell
            swap = xp.abs(rows[r][j]) > xp.abs(rows[j][j])
            rows[j], rows[r] = (
                [xp.where(swap, u, v) for u, v in zip(rows[r], rows[j], strict=True)],
                [xp.where(swap, v, u) for u, v in zip(rows[r], rows[j], strict=True)],
            )
        pivot = rows[j][j]
        pivot = xp.where(xp.abs(pivot) > tiny, pivot, xp.full_like(pivot, xp.nan))  # NaN, not 1/0
        rows[j] = [v / pivot for v in rows[j]]
        for r in range(p):
            if r != j:
                f = rows[r][j]
                rows[r] = [u - f * v for u, v in zip(rows[r], rows[j], strict=True)]
    x = xp.stack([xp.stack(rows[i][p:]) for i in range(p)])
    return x[:, 0, ...] if vector else x


def inverse(a: Any) -> Any:
    """Inverse of ``a`` (p, p, cells) by :func:`solve`; NaN for singular cells."""
    xp = array_api_compat.array_namespace(a)
    p = a.shape[0]
    eye = xp.stack(
        [xp.stack([xp.zeros_like(a[0, 0, ...]) + (1.0 if i == j else 0.0) for j in range(p)]) for i in range(p)]
    )
    return solve(a, eye)


def sandwich(jac: Any, cov: Any) -> Any:
    """``J C J^T`` per cell for ``jac`` (q, p, cells), ``cov`` (p, p, cells): covariance after a change of variables."""
    xp = array_api_compat.array_namespace(jac, cov)
    q, p = jac.shape[0], jac.shape[1]
    jc = [[sum(jac[i, k, ...] * cov[k, j, ...] for k in range(p)) for j in range(p)] for i in range(q)]
    return _stack2([[sum(jc[i][k] * jac[j, k, ...] for k in range(p)) for j in range(q)] for i in range(q)], xp)


# ------------------------------------------------------------------- engine


def _direction(g: Any, h: Any, max_step: Sequence[float] | None, xp: Any) -> tuple[Any, Any, Any]:
    """Levenberg-damped Newton direction ``d``, decrement ``g.d`` and whether no damping was needed."""
    p = g.shape[0]
    m = [[-h[i, j, ...] for j in range(p)] for i in range(p)]
    gl = [g[i, ...] for i in range(p)]
    scale = xp.abs(m[0][0])
    for j in range(1, p):
        scale = xp.maximum(scale, xp.abs(m[j][j]))
    scale = xp.where(xp.isfinite(scale), scale, xp.ones_like(scale))
    lam = xp.zeros_like(scale)
    low, ok = _cholesky_lists(m, xp)
    undamped = ok
    for _ in range(40):  # lam grows tenfold per round: 40 rounds take any finite matrix to definite
        if bool(xp.all(ok)):
            break
        lam = xp.where(ok, lam, xp.where(lam == 0.0, 1e-8 * (1.0 + scale), 10.0 * lam))
        damped = [[m[i][j] + lam if i == j else m[i][j] for j in range(p)] for i in range(p)]
        low, ok = _cholesky_lists(damped, xp)
    d = _cholesky_solve_lists(low, gl)
    zero = xp.zeros_like(d[0])
    d = [xp.where(ok & xp.isfinite(di), di, zero) for di in d]  # hopeless cells stand still
    if max_step is not None:  # cap each component (e.g. the shape) at its own trust length
        shrink = xp.ones_like(zero)
        for di, cap in zip(d, max_step, strict=True):
            shrink = xp.minimum(shrink, cap / xp.maximum(xp.abs(di), xp.full_like(di, cap)))
        d = [di * shrink for di in d]
    dec = sum(gi * di for gi, di in zip(gl, d, strict=True))
    return xp.stack(d), dec, undamped


def take_cells(a: Any, pos: Any, k: int, xp: Any) -> Any:
    """Columns ``pos`` of ``a`` along its last (cell) axis; arrays broadcast over cells pass through."""
    if a.shape[-1] != k:
        return a
    return xp.take(a, pos, axis=a.ndim - 1)


def scatter_cells(full: Any, idx: Any, values: Any, xp: Any) -> Any:
    """``full`` with cells ``idx`` (sorted ascending) replaced by ``values`` (last axis aligned with ``idx``)."""
    n_cells = full.shape[-1]
    if idx.shape[0] == 0:
        return full
    cells = xp.arange(n_cells, device=array_api_compat.device(idx), dtype=idx.dtype)
    pos = xp.clip(xp.searchsorted(idx, cells), 0, idx.shape[0] - 1)
    hit = xp.take(idx, pos) == cells
    return xp.where(hit, xp.take(values, pos, axis=values.ndim - 1), full)


def maximize(
    objective: Objective,
    theta0: Any,
    data: Sequence[Any] = (),
    *,
    max_iter: int = 100,
    tol: float = 1e-10,
    xtol: float = 1e-12,
    max_step: Sequence[float] | None = None,
    active: Any = None,
    final_step: bool = True,
) -> dict[str, Any]:
    """Maximize ``objective`` for every cell by damped Newton with a halving line search.

    Parameters
    ----------
    objective : callable
        ``objective(theta, *data) -> (loglik, grad, hess)`` with ``theta`` (p, k),
        ``loglik`` (k,), ``grad`` (p, k), ``hess`` (p, p, k), for any subset of
        ``k`` cells (the engine passes the matching columns of ``data``). It must
        return ``-inf`` (with finite derivatives) where ``theta`` is outside the
        domain, and must not warn there. It may return a fourth array
        ``aux`` (k,), any by-product wanted at the maximum (returned as ``aux``).
    theta0 : array (p, cells)
        Starting values, inside the domain.
    data : sequence of arrays
        Per-cell data with cells along the last axis (arrays whose last axis has
        length 1 are broadcast and passed unchanged).
    max_iter : int
        Cap on objective evaluations per cell (line-search trials included).
    tol : float
        Convergence when the Newton decrement ``g.d <= tol (1 + |l|)`` (at least
        64 unit round-offs).
    xtol : float
        ... or when ``max_j |d_j| / (1 + |theta_j|) <= xtol``.
    max_step : sequence of p floats, optional
        Cap on each component of a step (the direction is shrunk uniformly).
    active : array (cells,) bool, optional
        Cells to optimize; the others are returned unchanged, not converged.
    final_step : bool
        Take the last (round-off sized) step once converged; without it the
        log-likelihood is short of the maximum by about ``tol (1 + |l|)/2``,
        one evaluation earlier.

    Returns
    -------
    dict
        ``theta`` (p, cells), ``loglik`` (cells,), ``grad`` (p, cells), ``hess``
        (p, p, cells) at ``theta``; ``converged`` (cells,) bool; ``n_iter``
        (cells,) int32, objective evaluations after the first; ``aux``
        (cells,) when the objective returns it.
    """
    xp = array_api_compat.array_namespace(theta0)
    n_cells = theta0.shape[-1]
    dev = array_api_compat.device(theta0)
    idx = xp.arange(n_cells, device=dev)
    data = tuple(data)
    sub = theta0
    keep = None
    if active is not None:
        n_active = int(xp.sum(xp.astype(active, xp.int32)))
        if 4 * n_active <= 3 * n_cells:  # many inactive cells: drop them before the first evaluation
            pos = xp.argsort(xp.astype(~active, xp.int8), stable=True)[:n_active]
            idx = xp.take(idx, pos)
            data = tuple(take_cells(a, pos, n_cells, xp) for a in data)
            sub = xp.take(theta0, pos, axis=1)
        else:  # a few: cheaper to carry them along, frozen
            keep = active
    eps = float(xp.finfo(theta0.dtype).eps)
    tol = max(tol, 64.0 * eps)  # a decrement below round-off cannot be reached
    l, g, h, *aux = objective(sub, *data)
    k = sub.shape[-1]
    state = {
        "theta": sub,
        "loglik": l,
        "grad": g,
        "hess": h,
        "converged": xp.zeros(k, dtype=xp.bool, device=dev),
        "n_iter": xp.zeros(k, dtype=xp.int32, device=dev),
    }
    if aux:
        state["aux"] = aux[0]
    live = xp.isfinite(l) if keep is None else xp.isfinite(l) & keep
    d, dec, undamped = _direction(g, h, max_step, xp)
    step = xp.ones_like(l)
    final = _small_step(d, dec, undamped, state["theta"], l, tol, xtol, xp)
    full = {
        "theta": theta0,
        "loglik": xp.full_like(theta0[0, ...], -xp.inf),
        "grad": xp.zeros_like(theta0),
        "hess": xp.zeros((theta0.shape[0],) * 2 + (n_cells,), dtype=theta0.dtype, device=dev),
        "converged": xp.zeros(n_cells, dtype=xp.bool, device=dev),
        "n_iter": xp.zeros(n_cells, dtype=xp.int32, device=dev),
    }
    if aux:
        full["aux"] = xp.full_like(full["loglik"], xp.nan)
    if not final_step:  # converged at the first evaluation already
        state["converged"], live = final & live, live & ~final
    for _ in range(max_iter):
        n_live = int(xp.sum(xp.astype(live, xp.int32)))
        if n_live == 0:
            break
        if 2 * n_live <= k and k > 64:  # compact: finished cells leave the working set
            full = {key: scatter_cells(full[key], idx, state[key], xp) for key in full}
            pos = xp.argsort(xp.astype(~live, xp.int8), stable=True)[:n_live]
            idx = xp.take(idx, pos)
            data = tuple(take_cells(a, pos, k, xp) for a in data)
            state = {key: take_cells(v, pos, k, xp) for key, v in state.items()}
            live, d, dec, step, final, undamped = (
                take_cells(v, pos, k, xp) for v in (live, d, dec, step, final, undamped)
            )
            k = n_live
        theta = state["theta"]
        trial = xp.where(live, theta + step * d, theta)
        lt, gt, ht, *aux = objective(trial, *data)
        state["n_iter"] = state["n_iter"] + xp.astype(live, xp.int32)
        l = state["loglik"]
        slack = 64.0 * eps * (1.0 + xp.abs(l))
        accept = live & xp.isfinite(lt) & (lt >= l - slack)
        state["theta"] = xp.where(accept, trial, theta)
        state["loglik"] = xp.where(accept, lt, l)
        state["grad"] = xp.where(accept, gt, state["grad"])
        state["hess"] = xp.where(accept, ht, state["hess"])
        if aux:
            state["aux"] = xp.where(accept, aux[0], state["aux"])
        done = live & final  # a final step ends the cell whether or not it was taken
        state["converged"] = state["converged"] | done
        retry = live & ~accept & ~final
        step = xp.where(retry, 0.5 * step, xp.ones_like(step))
        stuck = retry & (step < 1e-9)
        # a line search that fails at round-off level is convergence too
        state["converged"] = state["converged"] | (stuck & (dec <= 1e-6 * (1.0 + xp.abs(l))))
        fresh = accept & ~final
        d_new, dec_new, undamped_new = _direction(state["grad"], state["hess"], max_step, xp)
        d = xp.where(fresh, d_new, d)
        dec = xp.where(fresh, dec_new, dec)
        undamped = xp.where(fresh, undamped_new, undamped)
        small = fresh & _small_step(d, dec, undamped, state["theta"], state["loglik"], tol, xtol, xp)
        if final_step:
            final = final | small
        else:
            state["converged"] = state["converged"] | small
            done = done | small
        live = live & ~done & ~stuck
    full = {key: scatter_cells(full[key], idx, state[key], xp) for key in full}
    return full


def _small_step(d: Any, dec: Any, undamped: Any, theta: Any, l: Any, tol: float, xtol: float, xp: Any) -> Any:
    """Whether the next step is the last: tiny Newton decrement (undamped) or tiny relative step."""
    rel = xp.max(xp.abs(d) / (1.0 + xp.abs(theta)), axis=0)
    return (undamped & (dec <= tol * (1.0 + xp.abs(l)))) | (rel <= xtol)
