"""Per-cell GEV and gamma fits: this pipeline against a scipy.stats loop (and xclim's ``fit`` when it imports).

One synthetic field of planted parameters is made. Each cell holds ``--n-years``
annual maxima drawn from a GEV whose shape ξ runs over ``[-0.3, 0.3]`` across the
cells, and a gamma sample of the same size for the two-parameter family. Then:

- the pipeline fits every cell at once (``pipeline.kernels``);
- ``scipy.stats.<family>.fit`` runs cell by cell on the first ``--scipy-cells``
  cells, since a loop over all of them would take hours;
- xclim's ``xclim.indices.stats.fit`` runs on the same subset when xclim imports.

The speed ratio is per cell: scipy's seconds per cell over the pipeline's. On the
shared cells the script counts how often the pipeline's maximised log-likelihood is
at least scipy's minus ``1e-6·|ℓ|``. With ``--profile`` it also times the 100-year
return level with profile-likelihood intervals. The results go to
``bench/results/extremes_<tag>.json`` and ``.md``.

    python bench/extremes_peers.py                                  # 100 000 cells x 50 years
    python bench/extremes_peers.py --cells 20000 --scipy-cells 200  # a quick check
    python bench/extremes_peers.py --backend cupy --cells 1000000 --tag h100
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pipeline.backend import resolve, to_numpy  # noqa: E402
from pipeline.kernels import distributions as kd  # noqa: E402
from pipeline.kernels import return_levels as rl  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SCIPY = {"gev": stats.genextreme, "gamma": stats.gamma, "weibull": stats.weibull_min, "gumbel_r": stats.gumbel_r}


def planted(family: str, n_years: int, n_cells: int, seed: int) -> np.ndarray:
    """Samples of ``family`` with planted parameters varying over the cells (GEV: ξ from -0.3 to 0.3)."""
    rng = np.random.default_rng(seed)
    size = (n_years, n_cells)
    if family == "gev":
        xi = np.linspace(-0.3, 0.3, n_cells)
        loc = 30.0 + 5.0 * rng.standard_normal(n_cells)
        scale = 8.0 * np.exp(0.2 * rng.standard_normal(n_cells))
        return stats.genextreme.rvs(-xi, loc=loc, scale=scale, size=size, random_state=rng)
    shape = np.exp(rng.uniform(np.log(0.7), np.log(5.0), n_cells))
    if family == "gamma":
        return stats.gamma.rvs(shape, scale=4.0, size=size, random_state=rng)
    if family == "weibull":
        return stats.weibull_min.rvs(shape, scale=4.0, size=size, random_state=rng)
    if family == "gumbel_r":
        return stats.gumbel_r.rvs(loc=30.0, scale=shape, size=size, random_state=rng)
    raise ValueError(f"no planted sample for {family!r}")


def machine() -> dict[str, str]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform()}


def time_pipeline(x: np.ndarray, family: str, backend: str, repeat: int) -> tuple[float, dict]:
    b = resolve(backend)
    xd = b.asarray(x)
    fam = kd.family(family)
    best = np.inf
    for _ in range(repeat):
        b.synchronize() if hasattr(b, "synchronize") else None
        t0 = time.perf_counter()
        fit = fam.fit(xd)
        _ = to_numpy(fit["loglik"])
        best = min(best, time.perf_counter() - t0)
    return best, {k: to_numpy(v) for k, v in fit.items()}


def scipy_loop(x: np.ndarray, family: str) -> tuple[float, np.ndarray]:
    dist = SCIPY[family]
    ll = np.empty(x.shape[1])
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(x.shape[1]):
            if family in ("gamma", "weibull"):
                params = dist.fit(x[:, j], floc=0)  # the two-parameter form this pipeline fits
            else:
                params = dist.fit(x[:, j])
            ll[j] = np.sum(dist.logpdf(x[:, j], *params))
    return time.perf_counter() - t0, ll


def xclim_loop(x: np.ndarray, family: str) -> float | None:
    try:
        import xarray as xr
        from xclim.indices.stats import fit as xfit
    except Exception:  # noqa: BLE001 -- a missing or broken peer is skipped
        return None
    dist = {"gev": "genextreme", "gamma": "gamma", "weibull": "weibull_min", "gumbel_r": "gumbel_r"}[family]
    time_axis = xr.date_range("1950-01-01", periods=x.shape[0], freq="YS", use_cftime=False)
    da = xr.DataArray(x, dims=("time", "cell"), coords={"time": time_axis}, attrs={"units": "mm"})
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xfit(da, dist=dist).load()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--n-years", type=int, default=50)
    ap.add_argument("--scipy-cells", type=int, default=500)
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="also time 100-year profile-likelihood intervals")
    ap.add_argument("--seed", type=int, default=20261203)
    ap.add_argument("--tag", default="2core")
    ap.add_argument("--families", nargs="+", default=["gev", "weibull", "gamma", "gumbel_r"], choices=list(SCIPY))
    args = ap.parse_args(argv)

    m = min(args.scipy_cells, args.cells)
    idx = np.linspace(0, args.cells - 1, m).astype(int)  # spread over the whole ξ range
    rows = []
    for family in args.families:
        x = planted(family, args.n_years, args.cells, args.seed)
        ours, fit = time_pipeline(x, family, args.backend, args.repeat)
        scipy_s, scipy_ll = scipy_loop(x[:, idx], family)
        ll = fit["loglik"][idx]
        ok = ll >= scipy_ll - 1e-6 * np.abs(scipy_ll)
        row = {
            "family": family, "cells": args.cells, "n_years": args.n_years, "backend": args.backend,
            "pipeline_s": ours, "pipeline_us_per_cell": 1e6 * ours / args.cells,
            "scipy_cells": m, "scipy_s": scipy_s, "scipy_us_per_cell": 1e6 * scipy_s / m,
            "speedup_per_cell": (scipy_s / m) / (ours / args.cells),
            "loglik_at_least_scipy_fraction": float(ok.mean()),
            "loglik_gain_median": float(np.median(ll - scipy_ll)),
            "loglik_worst": float(np.min(ll - scipy_ll)),
            "not_converged": int(np.sum(~fit["converged"].astype(bool))),
        }
        xs = xclim_loop(x[:, idx], family)
        if xs is not None:
            row.update(xclim_s=xs, xclim_us_per_cell=1e6 * xs / m, speedup_vs_xclim=(xs / m) / (ours / args.cells))
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    if args.profile:
        b = resolve(args.backend)
        x = b.asarray(planted("gev", args.n_years, args.cells, args.seed))
        fit = kd.family("gev").fit(x)
        periods = b.asarray(np.array([100.0]))
        t0 = time.perf_counter()
        lo, hi = rl.profile_interval_gev(x, fit["params"], fit["loglik"], periods, level=0.95)[:2]
        lo = to_numpy(lo)
        t_prof = time.perf_counter() - t0
        rows.append({"what": "gev 100-year profile-likelihood interval", "cells": args.cells,
                     "backend": args.backend, "seconds": t_prof, "us_per_cell": 1e6 * t_prof / args.cells,
                     "finite_fraction": float(np.isfinite(lo).mean())})
        print(json.dumps(rows[-1], indent=1), flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": machine(), "args": vars(args), "rows": rows}
    (RESULTS / f"extremes_{args.tag}.json").write_text(json.dumps(out, indent=1))
    lines = [f"# Per-cell fits: pipeline vs scipy.stats loop ({args.tag})", "",
             f"Machine: {out['machine']['cpu']}, {out['machine']['cores']} cores; numpy {np.__version__}; "
             f"backend {args.backend}.", "",
             "| family | cells × years | pipeline µs/cell | scipy µs/cell | speed-up | ℓ ≥ scipy − 1e-6·|ℓ| | xclim µs/cell |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "family" in r:
            lines.append(f"| {r['family']} | {r['cells']} × {r['n_years']} | {r['pipeline_us_per_cell']:.1f} | "
                         f"{r['scipy_us_per_cell']:.0f} | {r['speedup_per_cell']:.0f}× | "
                         f"{100 * r['loglik_at_least_scipy_fraction']:.2f} % of {r['scipy_cells']} | "
                         f"{r.get('xclim_us_per_cell', float('nan')):.0f} |")
        else:
            lines.append(f"\n{r['what']}: {r['seconds']:.2f} s for {r['cells']} cells "
                         f"({r['us_per_cell']:.1f} µs/cell), finite bounds in {100 * r['finite_fraction']:.1f} %.")
    (RESULTS / f"extremes_{args.tag}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
