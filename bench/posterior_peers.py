"""Bayesian GEV per cell: this pipeline's HMC against NumPyro's NUTS with vectorized chains.

One synthetic field: ``--cells`` cells of ``--n-years`` GEV annual maxima with
ξ planted from -0.2 to 0.3. Both samplers target the same posterior:
:func:`pipeline.kernels.models.bayes_gev`, with each cell standardised, a normal
prior on loc and log scale, and the Martins & Stedinger prior ½ − ξ ~ Beta(6, 9).

- The pipeline runs :func:`pipeline.kernels.mcmc.hmc` on all cells × chains at
  once, with the bayes stage's defaults (8 jittered leapfrog steps).
- NumPyro runs NUTS on one model with a plate over the cells and
  ``chain_method="vectorized"``, which is how NumPyro users batch independent
  cells. Its step size and mass matrix are therefore shared across cells.

Both run ``--chains`` chains, ``--warmup`` adaptation steps and ``--draws`` draws,
in float64. Reported per sampler:

- wall time of the whole run (model set-up and initialisation included); for
  NumPyro also its JAX compile time (trace, lowering and XLA compile, from
  ``jax.monitoring``) and the time without it;
- bulk ESS per cell of each parameter (the pipeline's diagnostics, equal to
  ArviZ's) and effective samples per second per cell: the median ESS over the
  wall time per cell (``seconds / cells``). The headline uses ξ; the smallest
  ESS of the three parameters in each cell is reported beside it;
- the cost of one gradient evaluation of all chains and cells (the pipeline's
  ``logp_grad``; NumPyro's jitted, chain-vmapped potential gradient), timed
  alone, and leapfrog steps per effective sample of ξ in the sampling phase;
- whether the posterior means of each parameter agree within 4 combined Monte
  Carlo standard errors.

``--malloc-top-pad-mb`` sets glibc's ``M_TOP_PAD`` for the whole process (both
samplers) before anything runs: NumPy's large temporaries are then taken from a
heap that is not returned to the system after every call (see
``bench/results/README.md``). 0 leaves the allocator alone.

    python bench/posterior_peers.py                    # 200 cells
    python bench/posterior_peers.py --cells 2000 --tag 2core_2000
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.backend import resolve, to_numpy  # noqa: E402
from pipeline.kernels import diagnostics, mcmc, models  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ("mu_z", "log_sigma_z", "xi")
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


def planted(n_years: int, cells: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xi = np.linspace(-0.2, 0.3, cells)
    return stats.genextreme.rvs(-xi, loc=30.0, scale=5.0, size=(n_years, cells), random_state=rng)


def machine() -> dict[str, str]:
    cpu = platform.processor() or ""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    cpu = names[0] if names else cpu
    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(), "numpy": np.__version__,
            "load_average_at_start": " ".join(f"{v:.2f}" for v in os.getloadavg())}


def set_top_pad(mb: int) -> bool:
    """glibc ``mallopt(M_TOP_PAD, mb MiB)``; False where there is no glibc."""
    if mb <= 0:
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-2, mb << 20))  # M_TOP_PAD = -2
    except OSError:
        return False


def best_of(fun, repeat: int = 5, number: int = 20) -> float:
    """Fastest mean seconds per call of ``fun`` over ``repeat`` rounds of ``number`` calls."""
    fun()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fun()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def run_pipeline(x: np.ndarray, args) -> dict:
    b = resolve(args.backend)
    calls = [0]
    t0 = time.perf_counter()
    model = models.bayes_gev(b.asarray(x))

    def counted(theta):
        calls[0] += 1
        return model.logp_grad(theta)

    theta0 = model.init(args.chains, args.seed)
    out = mcmc.hmc(models.Model(model.name, model.param_names, counted, model.constrain, model.init), theta0,
                   n_warmup=args.warmup, n_draws=args.draws, seed=args.seed, n_leapfrog=args.n_leapfrog)
    draws = to_numpy(out["draws"])  # (p, chains, draws, cells)
    seconds = time.perf_counter() - t0
    # the jitter of mcmc.hmc, replayed: steps of each sampling iteration (the same for every chain and cell)
    jitter = random.Random(args.seed)
    lo = (args.n_leapfrog + 1) // 2
    steps = [jitter.randint(lo, args.n_leapfrog) for _ in range(args.warmup + args.draws)][args.warmup:]
    grad_s = best_of(lambda: model.logp_grad(theta0))
    return {"seconds": seconds, "draws": draws, "gradient_evaluations": calls[0],
            "sampling_leapfrog_steps": args.chains * sum(steps), "gradient_seconds": grad_s,
            "divergent_fraction": float(np.mean(to_numpy(out["divergent"])))}


def run_numpyro(x: np.ndarray, args) -> dict | None:
    try:
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist
        from numpyro.infer import MCMC, NUTS, init_to_value
        from numpyro.infer.util import initialize_model
    except Exception:  # noqa: BLE001 -- the peer is optional
        return None
    jax.config.update("jax_enable_x64", True)
    compile_s = {}

    def listen(event, secs, **_):
        if event in COMPILE_EVENTS:
            compile_s[event] = compile_s.get(event, 0.0) + secs

    jax.monitoring.register_event_duration_secs_listener(listen)
    t0 = time.perf_counter()
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
    mc = MCMC(NUTS(model, init_strategy=init_to_value(values=start)), num_warmup=args.warmup,
              num_samples=args.draws, num_chains=args.chains, chain_method="vectorized", progress_bar=False)
    mc.run(jax.random.PRNGKey(args.seed), extra_fields=("num_steps",))
    samples = mc.get_samples(group_by_chain=True)
    draws = np.stack([np.asarray(samples["mu_z"]), np.asarray(samples["log_sigma_z"]), 0.5 - np.asarray(samples["u"])])
    seconds = time.perf_counter() - t0
    compiled = dict(compile_s)
    num_steps = np.asarray(mc.get_extra_fields(group_by_chain=True)["num_steps"])  # (chains, draws)
    # one gradient of all chains and cells, as the vectorized sampler evaluates it
    info = initialize_model(jax.random.PRNGKey(0), model, init_strategy=init_to_value(values=start))
    batch = {k: jnp.broadcast_to(v, (args.chains,) + v.shape) for k, v in info.param_info.z.items()}
    grad = jax.jit(jax.vmap(jax.value_and_grad(info.potential_fn)))
    grad_s = best_of(lambda: jax.block_until_ready(grad(batch)))
    return {"seconds": seconds, "draws": draws, "compile_seconds": sum(compiled.values()),
            "compile_breakdown": {k.rsplit("/", 1)[1]: v for k, v in compiled.items()},
            "sampling_leapfrog_steps": int(num_steps.sum()), "lockstep_leapfrog_steps": int(num_steps.max(0).sum()),
            "gradient_seconds": grad_s, "jax": jax.__version__, "numpyro": numpyro.__version__}


def summary(run: dict, cells: int) -> dict:
    draws = run["draws"]
    ess = np.stack([to_numpy(diagnostics.ess(draws[i], method="bulk")) for i in range(3)])  # (3, cells)
    per_cell = run["seconds"] / cells
    row = {k: v for k, v in run.items() if k != "draws"}
    row.update({
        "ess_bulk_median": {n: float(np.median(e)) for n, e in zip(NAMES, ess)},
        "ess_bulk_min_param_median": float(np.median(ess.min(axis=0))),
        "ess_per_second_per_cell": float(np.median(ess[2]) / per_cell),
        "ess_min_param_per_second_per_cell": float(np.median(ess.min(axis=0)) / per_cell),
        "leapfrog_steps_per_ess_xi": run["sampling_leapfrog_steps"] / float(np.median(ess[2])),
        "rhat_max": float(max(np.max(to_numpy(diagnostics.rhat(draws[i]))) for i in range(3))),
    })
    if "compile_seconds" in run:
        row["ess_per_second_per_cell_without_compile"] = float(
            np.median(ess[2]) / ((run["seconds"] - run["compile_seconds"]) / cells))
    row["_mean"] = draws.mean(axis=(1, 2))
    row["_mcse"] = np.stack([to_numpy(diagnostics.mcse_mean(draws[i])) for i in range(3)])
    return row


def markdown(out: dict) -> str:
    a = out["args"]
    lines = [f"# Bayesian GEV per cell: pipeline HMC vs NumPyro NUTS ({a['tag']})", "",
             f"Machine: {out['machine']['cpu']}, {out['machine']['cores']} cores; numpy {out['machine']['numpy']}; "
             f"load average at start {out['machine']['load_average_at_start']}; glibc M_TOP_PAD "
             f"{'%d MiB' % a['malloc_top_pad_mb'] if out['top_pad_set'] else 'untouched'}.", "",
             f"{a['cells']} cells × {a['n_years']} years, {a['chains']} chains, {a['warmup']} warm-up + "
             f"{a['draws']} draws, float64.", "",
             "| sampler | seconds | compile s | median bulk ESS ξ (μ, η) | ESS/s/cell ξ | ESS/s/cell min param | "
             "µs per gradient alone (in run) | leapfrog steps per ESS ξ | max R-hat |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in out["rows"].items():
        e = r["ess_bulk_median"]
        in_run = f" ({1e6 * r['seconds'] / r['gradient_evaluations']:.0f})" if "gradient_evaluations" in r else ""
        lines.append(f"| {name} | {r['seconds']:.1f} | {r.get('compile_seconds', 0.0):.1f} | {e['xi']:.0f} "
                     f"({e['mu_z']:.0f}, {e['log_sigma_z']:.0f}) | {r['ess_per_second_per_cell']:.0f} | "
                     f"{r['ess_min_param_per_second_per_cell']:.0f} | {1e6 * r['gradient_seconds']:.0f}{in_run} | "
                     f"{r['leapfrog_steps_per_ess_xi']:.1f} | {r['rhat_max']:.3f} |")
    if "ratio" in out:
        q = out["ratio"]
        lines += ["", f"Ratio of ESS/s per cell (pipeline / NumPyro), ξ: **{q['xi']:.2f}×** (NumPyro's compile "
                  f"time excluded: {q['xi_without_compile']:.2f}×); smallest-ESS parameter: {q['min_param']:.2f}× "
                  f"({q['min_param_without_compile']:.2f}×). Posterior means within 4 MCSE: "
                  + ", ".join(f"{n} {100 * v:.1f} %" for n, v in out["means_agree_within_4_mcse"].items()) + "."]
    return "\n".join(lines) + "\n"


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
    ap.add_argument("--malloc-top-pad-mb", type=int, default=0)
    ap.add_argument("--no-peer", action="store_true", help="run the pipeline only")
    ap.add_argument("--tag", default="2core")
    args = ap.parse_args(argv)
    top_pad = set_top_pad(args.malloc_top_pad_mb)
    out = {"machine": machine(), "args": vars(args), "top_pad_set": top_pad}
    x = planted(args.n_years, args.cells, args.seed)
    rows = {"pipeline hmc": summary(run_pipeline(x, args), args.cells)}
    peer = None if args.no_peer else run_numpyro(x, args)
    if peer is not None:
        rows["numpyro nuts (vectorized chains)"] = summary(peer, args.cells)
        a, b = rows["pipeline hmc"], rows["numpyro nuts (vectorized chains)"]
        z = np.abs(a["_mean"] - b["_mean"]) / np.sqrt(a["_mcse"] ** 2 + b["_mcse"] ** 2)
        out["means_agree_within_4_mcse"] = {n: float(np.mean(z[i] < 4)) for i, n in enumerate(NAMES)}
        out["ratio"] = {
            "xi": a["ess_per_second_per_cell"] / b["ess_per_second_per_cell"],
            "xi_without_compile": a["ess_per_second_per_cell"] / b["ess_per_second_per_cell_without_compile"],
            "min_param": a["ess_min_param_per_second_per_cell"] / b["ess_min_param_per_second_per_cell"],
            "min_param_without_compile": a["ess_min_param_per_second_per_cell"]
            / (b["ess_min_param_per_second_per_cell"] * b["seconds"] / (b["seconds"] - b["compile_seconds"])),
            "gradient_time_numpyro_over_pipeline": b["gradient_seconds"] / a["gradient_seconds"],
        }
    out["rows"] = {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")} for k, v in rows.items()}
    print(json.dumps(out, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"posterior_peers_{args.tag}.json").write_text(json.dumps(out, indent=1))
    (RESULTS / f"posterior_peers_{args.tag}.md").write_text(markdown(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
