"""Run every numerical stage on the embedded data with each available backend.

For each stage this times ``compute`` on NumPy and, where CuPy and a CUDA
device are present, on CuPy, and reports the largest difference between the
two backends' outputs (posterior draws differ by design across backends, so
for that stage only the analytic-looking summaries are compared loosely).

    python bench/backend_parity.py --out bench/results
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import yaml

from pipeline import distributions, eof, ingest, moments, posterior, regression
from pipeline.backend import cupy_available, resolve

ROOT = Path(__file__).resolve().parents[1]


def run_stages(config: dict, backend_name: str) -> tuple[dict, dict]:
    """All stages on the default config's fields; returns outputs and timings."""
    b = resolve(backend_name)
    fields = {name: ingest.compute(name, {**spec, "path": str(ROOT / spec["path"])}) for name, spec in config["fields"].items()}
    out, seconds = {}, {}

    def timed(key, fn, *args, **kwargs):
        start = time.perf_counter()
        out[key] = fn(*args, **kwargs)
        seconds[key] = time.perf_counter() - start

    for name in config["eof"]["fields"]:
        timed(f"moments/{name}", moments.compute, fields[name], params=config["moments"], backend=b)
        eof_params = {k: v for k, v in config["eof"].items() if k != "fields"}
        timed(f"eof/{name}", eof.compute, out[f"moments/{name}"], params=eof_params, backend=b)
    reg = config["regression"]
    target, predictor = reg["target"], reg["predictor"]
    timed(f"regression/{target}", regression.compute, fields[target], out[f"eof/{predictor}"], params=reg, backend=b)
    timed(
        f"posterior/{target}", posterior.compute, fields[target], out[f"eof/{predictor}"], out[f"regression/{target}"],
        params=config["posterior"], regression_params=reg, backend=b,
    )  # fmt: skip
    dist_params = {k: v for k, v in config["distributions"].items() if k != "fields"}
    for name in config["distributions"]["fields"]:
        timed(f"distributions/{name}", distributions.compute, fields[name], params=dist_params, backend=b)
    return out, seconds


def max_difference(a, b) -> float:
    """Largest difference over the float variables of two Datasets, relative to each variable's scale.

    Variables that are zero up to round-off (e.g. the mean of standardized
    predictors, ~1e-16) are compared on an absolute scale of 1e-12 instead,
    since their relative difference is meaningless.
    """
    worst = 0.0
    for name, var in a.data_vars.items():
        if not np.issubdtype(var.dtype, np.floating):
            continue
        x, y = np.asarray(var.values, dtype=np.float64), np.asarray(b[name].values, dtype=np.float64)
        scale = max(float(np.nanmax(np.abs(x))), 1e-12)
        worst = max(worst, float(np.nanmax(np.abs(x - y)) / scale))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    report = {"machine": platform.platform(), "processor": platform.processor(), "stages": {}}
    ref, t_np = run_stages(config, "numpy")
    t_np2 = run_stages(config, "numpy")[1]  # second pass: warm caches
    backends = {"numpy": t_np2}
    if cupy_available():
        import cupy

        run_stages(config, "cupy")  # warm-up: kernel compilation
        got, t_cp = run_stages(config, "cupy")
        backends["cupy"] = t_cp
        report["device"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        for key in ref:
            report["stages"][key] = {"max_rel_difference_cupy_vs_numpy": max_difference(ref[key], got[key])}
    for key in ref:
        report["stages"].setdefault(key, {})
        for name, t in backends.items():
            report["stages"][key][f"seconds_{name}"] = round(t[key], 4)
    for key in ("eof/sst", "eof/z500"):
        report["stages"][key]["variance_fraction_1_3"] = [round(float(v), 4) for v in ref[key]["variance_fraction"].values[:3]]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "backend_parity.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
