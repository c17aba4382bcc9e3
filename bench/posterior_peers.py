"""Bayesian GEV per cell: this pipeline's HMC against NumPyro's NUTS with vectorized chains.

One synthetic field: ``--cells`` cells of ``--n-years`` GEV annual maxima with
ξ planted from -0.2 to 0.3. Both samplers target the same posterior:
:func:`pipeline.kernels.models.bayes_gev`, with each cell standardised, a normal
prior on loc and log scale, and the Martins & Stedinger prior ½ − ξ ~ Beta(6, 9).

- The pipeline runs :func:`pipeline.kernels.mcmc.hmc` on all cells × chains at once.
- NumPyro runs NUTS on one model with a plate over the cells and
  ``chain_method="vectorized"``, which is how NumPyro users batch independent
  cells. Its step size and mass matrix are therefore shared across cells.

Both run ``--chains`` chains, ``--warmup`` adaptation steps and ``--draws`` draws.
The script reports the bulk ESS of ξ per cell from the pipeline's diagnostics
(which equal ArviZ's), effective samples per second per cell (ESS over wall
time, times the cell count), and whether the posterior means of ξ agree within
4 combined Monte Carlo standard errors.

    python bench/posterior_peers.py                    # 200 cells
    python bench/posterior_peers.py --cells 2000 --tag 2core_2000
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.backend import resolve, to_numpy  # noqa: E402
from pipeline.kernels import diagnostics, mcmc, models  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def planted(n_years: int, cells: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xi = np.linspace(-0.2, 0.3, cells)
    return stats.genextreme.rvs(-xi, loc=30.0, scale=5.0, size=(n_years, cells), random_state=rng)


def run_pipeline(x: np.ndarray, args) -> tuple[float, np.ndarray]:
    b = resolve(args.backend)
    model = models.bayes_gev(b.asarray(x))
    theta0 = model.init(args.chains, args.seed)
    t0 = time.perf_counter()
    out = mcmc.hmc(model, theta0, n_warmup=args.warmup, n_draws=args.draws, seed=args.seed,
                   n_leapfrog=args.n_leapfrog)
    xi = to_numpy(out["draws"][2, ...])  # (chains, draws, cells)
    return time.perf_counter() - t0, xi


def run_numpyro(x: np.ndarray, args) -> tuple[float, np.ndarray] | None:
    try:
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist
        from numpyro.infer import MCMC, NUTS, init_to_value
    except Exception:  # noqa: BLE001 -- the peer is optional
        return None
    jax.config.update("jax_enable_x64", True)
    m, s = x.mean(axis=0), x.std(axis=0)
    z = jnp.asarray((x - m) / s)

    def model():
        with numpyro.plate("cells", x.shape[1]):
            mu = numpyro.sample("mu_z", dist.Normal(0.0, 10.0))
            eta = numpyro.sample("log_sigma_z", dist.Normal(0.0, 2.0))
            u = numpyro.sample("u", dist.Beta(6.0, 9.0))  # u = 1/2 - xi
        xi = 0.5 - u
        y = (z - mu) * jnp.exp(-eta)
        t = 1.0 + xi * y
        safe = jnp.where(t > 0, t, 1.0)
        log_t = jnp.log(safe)
        small = jnp.abs(xi) < 1e-6
        xi_safe = jnp.where(small, 1.0, xi)
        a = jnp.where(small, y, log_t / xi_safe)
        ll = jnp.where(t > 0, -eta - log_t - a - jnp.exp(-a), -jnp.inf)
        numpyro.factor("lik", jnp.sum(ll, axis=0))

    c = x.shape[1]  # start every chain at the Gumbel law of scale 0.8 sd: inside the support of every cell
    start = {"mu_z": jnp.zeros(c), "log_sigma_z": jnp.full(c, np.log(0.8)), "u": jnp.full(c, 0.5)}
    mc = MCMC(NUTS(model, init_strategy=init_to_value(values=start)), num_warmup=args.warmup, num_samples=args.draws, num_chains=args.chains,
              chain_method="vectorized", progress_bar=False)
    t0 = time.perf_counter()
    mc.run(jax.random.PRNGKey(args.seed))
    u = np.asarray(mc.get_samples(group_by_chain=True)["u"])  # (chains, draws, cells)
    return time.perf_counter() - t0, 0.5 - u


def summary(xi: np.ndarray, seconds: float) -> dict:
    ess = to_numpy(diagnostics.ess(xi, method="bulk"))
    mcse = to_numpy(diagnostics.mcse_mean(xi))
    return {"seconds": seconds, "ess_bulk_median": float(np.median(ess)),
            "ess_per_second_per_cell": float(np.median(ess) / seconds * xi.shape[-1]),
            "rhat_max": float(np.max(to_numpy(diagnostics.rhat(xi)))), "mean": xi.mean(axis=(0, 1)), "mcse": mcse}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=200)
    ap.add_argument("--n-years", type=int, default=50)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--n-leapfrog", type=int, default=8)
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tag", default="2core")
    args = ap.parse_args(argv)
    x = planted(args.n_years, args.cells, args.seed)
    rows = {}
    secs, xi = run_pipeline(x, args)
    rows["pipeline hmc"] = summary(xi, secs)
    peer = run_numpyro(x, args)
    if peer is not None:
        rows["numpyro nuts (vectorized chains)"] = summary(peer[1], peer[0])
    out = {"machine": {"cpu": platform.processor(), "python": platform.python_version()}, "args": vars(args),
           "rows": {k: {kk: vv for kk, vv in v.items() if kk not in ("mean", "mcse")} for k, v in rows.items()}}
    if peer is not None:
        a, b = rows["pipeline hmc"], rows["numpyro nuts (vectorized chains)"]
        z = np.abs(a["mean"] - b["mean"]) / np.sqrt(a["mcse"] ** 2 + b["mcse"] ** 2)
        out["means_agree_within_4_mcse"] = float(np.mean(z < 4))
        out["ess_per_second_ratio"] = a["ess_per_second_per_cell"] / b["ess_per_second_per_cell"]
    print(json.dumps(out, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"posterior_peers_{args.tag}.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
