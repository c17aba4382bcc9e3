"""This pipeline's EOFs against scikit-learn, xeofs and eofs on the same in-memory data.

One synthetic field (planted modes plus white noise, float32, written once with
:func:`pipeline.synthetic.write_planted_modes_store`) is decomposed by every
method, each in a fresh subprocess that loads the whole field into memory
first. Every method sees the same data and the same sqrt(cos lat) weights, and
returns its leading ``k`` EOFs in weighted space and their eigenvalues. For each
the harness records

* wall time of the call (data already in memory, imports excluded; the first
  call in the process unless ``--warmup`` is given; the minimum and all values
  over ``--repeats``),
* peak resident memory above the loaded data (Linux ``VmHWM`` after resetting
  it through ``/proc/self/clear_refs`` once the data are loaded),
* the largest principal angle (degrees) between its k EOFs and those of a
  float64 dense SVD of the weighted anomaly matrix, and the largest relative
  eigenvalue error against the same reference.

    python bench/eof_peers.py                                  # 2000 x (200 x 500), k = 10
    python bench/eof_peers.py --n-time 200 --n-lat 40 --n-lon 60 --out /tmp/peers
    python bench/eof_peers.py --backend cupy --warmup 1        # adds the pipeline on CuPy

Peers are run only when they import (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_METHODS = ("pipeline-gram", "pipeline-randomized", "sklearn-randomized", "sklearn-full", "xeofs", "eofs")
OPTIONAL_METHODS = ("pipeline-exact",)
CUPY_METHODS = ("pipeline-gram-cupy", "pipeline-randomized-cupy", "pipeline-exact-cupy")
PEER_MODULE = {"sklearn": "sklearn", "xeofs": "xeofs", "eofs": "eofs"}


# ------------------------------------------------------------ measuring


def _proc_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process in bytes (Linux), empty elsewhere."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    return {key: int(re.search(rf"{key}:\s+(\d+) kB", text).group(1)) * 1024 for key in ("VmRSS", "VmHWM")}


def reset_peak_rss() -> int:
    """Reset the process's peak RSS to its current RSS; return the current RSS in bytes.

    Uses ``/proc/self/clear_refs`` (Linux >= 4.0). Where that is missing the
    peak cannot be reset and :func:`peak_rss_above` reports the rise of the
    lifetime peak instead (an underestimate if loading peaked higher).
    """
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    status = _proc_status()
    if status:
        return status["VmRSS"]
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss_above(baseline: int) -> int:
    """Peak resident memory since :func:`reset_peak_rss`, minus that call's RSS, in bytes."""
    status = _proc_status()
    if status:
        return status["VmHWM"] - baseline
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline


def _total_ram() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None


def machine_info() -> dict[str, Any]:
    """Platform, CPU, RAM, NumPy/BLAS and (when present) GPU of this machine."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_bytes": _total_ram(),
        "numpy": np.__version__,
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = re.search(r"model name\s*:\s*(.*)", cpuinfo).group(1).strip()
    except (OSError, AttributeError):
        info["cpu_model"] = platform.processor() or platform.machine()
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer")} for d in threadpool_info()]
    except ImportError:
        deps = np.show_config(mode="dicts").get("Build Dependencies", {})
        info["blas"] = {k: deps.get(k, {}) for k in ("blas", "lapack")}
    from pipeline.backend import cupy_available

    if cupy_available():
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = {"name": props["name"].decode(), "memory_bytes": int(props["totalGlobalMem"]),
                       "cupy": cupy.__version__, "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion()}  # fmt: skip
    return info


# ------------------------------------------------------------ methods


def sqrt_coslat(lat: np.ndarray) -> np.ndarray:
    """The pipeline's sqrt(cos lat) weights (the same formula xeofs uses)."""
    from pipeline.grid import latitude_weights

    return latitude_weights(xr.DataArray(lat, dims="lat"), "sqrt_coslat").values


def run_method(name: str, field: xr.DataArray, k: int, seed: int, budget_mb: int,
               precision: str = "float64") -> tuple[np.ndarray, np.ndarray, str]:
    """EOFs ``(k, n_cells)`` in weighted space, eigenvalues ``(k,)`` and the library version, for one method."""
    n_time = field.sizes["time"]
    if name.startswith("pipeline-"):
        import pipeline
        from pipeline.eof import decompose

        parts = name.split("-")
        backend = parts[2] if len(parts) > 2 else "numpy"
        ds = decompose(field, n_modes=k, method=parts[1], weights="sqrt_coslat", backend=backend,
                       memory_budget_mb=budget_mb, seed=seed, precision=precision)  # fmt: skip
        return ds["eof"].values.reshape(k, -1), ds["eigenvalue"].values, pipeline.__version__
    w = sqrt_coslat(field["lat"].values).astype(field.dtype)
    if name.startswith("sklearn-"):
        import sklearn
        from sklearn.decomposition import PCA

        xw = (field.values * w[None, :, None]).reshape(n_time, -1)  # the harness's weighted copy: PCA may overwrite it
        pca = PCA(n_components=k, svd_solver=name.split("-")[1], random_state=seed, copy=False).fit(xw)
        return pca.components_, pca.explained_variance_, sklearn.__version__
    if name == "xeofs":
        import xeofs

        model = xeofs.single.EOF(n_modes=k, use_coslat=True, random_state=seed)
        model.fit(field, dim="time")
        eofs = model.components().transpose("mode", "lat", "lon").values.reshape(k, -1)
        return eofs, model.explained_variance().values, xeofs.__version__
    if name == "eofs":
        import eofs
        from eofs.standard import Eof

        solver = Eof(field.values, weights=w[:, None], center=True, ddof=1)
        return solver.eofs(neofs=k, eofscaling=0).reshape(k, -1), solver.eigenvalues(neigs=k), eofs.__version__
    raise ValueError(f"Unknown method {name!r}; known: {', '.join(DEFAULT_METHODS + OPTIONAL_METHODS + CUPY_METHODS)}.")


def prepare(name: str) -> None:
    """Import what ``name`` needs and touch the BLAS once, so neither counts in its time or memory."""
    module = {"pipeline": "pipeline.eof", "sklearn": "sklearn.decomposition", "xeofs": "xeofs", "eofs": "eofs.standard"}
    __import__(module.get(name.split("-")[0], "numpy"))
    for dtype in (np.float32, np.float64):
        a = np.ones((256, 256), dtype=dtype)
        np.linalg.svd(a @ a)
    if name.endswith("-cupy"):
        import cupy

        cupy.ones(1).sum()  # create the CUDA context


def worker(args: argparse.Namespace) -> None:
    """Subprocess side: load the field, reset the peak, run one method, save its result."""
    field = xr.open_zarr(args.store, consolidated=False)["field"].load()
    prepare(args.worker)
    baseline = reset_peak_rss()
    seconds = []
    for i in range(args.warmup + args.repeats):
        start = time.perf_counter()
        eofs, eigenvalues, version = run_method(args.worker, field, args.modes, args.seed, args.budget_mb,
                                                args.precision)
        if i >= args.warmup:
            seconds.append(time.perf_counter() - start)
    peak = peak_rss_above(baseline)
    extra = {}
    if "cupy" in args.worker:
        import cupy

        extra["gpu_pool_bytes"] = int(cupy.get_default_memory_pool().total_bytes())  # the pool keeps freed blocks: ~ the peak
    np.savez(args.result, eofs=np.asarray(eofs, dtype=np.float64), eigenvalues=np.asarray(eigenvalues, dtype=np.float64))
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak, "data_bytes": int(field.nbytes),
                      "version": version, **extra}))  # fmt: skip


# ------------------------------------------------------------ harness


def exact_reference(store: Path, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Leading k EOFs (weighted space) and eigenvalues of a float64 dense SVD; and its seconds."""
    field = xr.open_zarr(store, consolidated=False)["field"]
    start = time.perf_counter()
    x = field.values.astype(np.float64) * sqrt_coslat(field["lat"].values)[None, :, None]
    x = x.reshape(x.shape[0], -1)
    x -= x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    return vt[:k].copy(), s[:k] ** 2 / (x.shape[0] - 1), time.perf_counter() - start


def accuracy(eofs: np.ndarray, eigenvalues: np.ndarray, ref_eofs: np.ndarray, ref_eigenvalues: np.ndarray) -> dict[str, float]:
    """Largest principal angle (degrees) between the EOF subspaces, and largest relative eigenvalue error."""
    from scipy.linalg import subspace_angles

    angle = float(np.rad2deg(np.max(subspace_angles(eofs.T, ref_eofs.T))))
    lam = np.sort(eigenvalues)[::-1]
    return {"max_angle_deg": angle, "max_rel_eigenvalue_error": float(np.max(np.abs(lam - ref_eigenvalues) / ref_eigenvalues))}


def available(name: str) -> str | None:
    """Why ``name`` cannot run here, or None when it can."""
    if name.startswith("pipeline-"):
        if name.endswith("-cupy"):
            from pipeline.backend import cupy_available

            return None if cupy_available() else "CuPy with a CUDA device is not available"
        return None
    module = PEER_MODULE.get(name.split("-")[0])
    try:
        __import__(module)
    except ImportError:
        return f"{module} is not installed"
    return None


def run_one(name: str, store: Path, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one method in a fresh subprocess; its timing, memory and raw result."""
    result = workdir / f"{name}.npz"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--store", str(store), "--result", str(result),
           "--modes", str(args.modes), "--seed", str(args.seed), "--budget-mb", str(args.budget_mb),
           "--precision", args.precision,
           "--repeats", str(args.repeats), "--warmup", str(args.warmup)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["exit code %d" % proc.returncode])[-1]}
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(result) as npz:
        record["eofs"], record["eigenvalues"] = npz["eofs"], npz["eigenvalues"]
    return record


def table(rows: dict[str, dict[str, Any]]) -> str:
    """The results as a markdown table."""
    lines = ["| method | version | seconds (min) | peak RSS above data (MiB) | max principal angle (deg) | max rel. eigenvalue error |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name, r in rows.items():
        if "error" in r or "skipped" in r:
            lines.append(f"| {name} | | {r.get('skipped') or 'failed: ' + r['error']} | | | |")
            continue
        lines.append(f"| {name} | {r['version']} | {min(r['seconds']):.2f} | {r['peak_rss_bytes'] / 2**20:.0f} | "
                     f"{r['max_angle_deg']:.3g} | {r['max_rel_eigenvalue_error']:.2e} |")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-time", type=int, default=2000)
    p.add_argument("--n-lat", type=int, default=200)
    p.add_argument("--n-lon", type=int, default=500)
    p.add_argument("--modes", type=int, default=10, help="k, the EOFs computed and compared")
    p.add_argument("--leading-variance", type=float, default=1000.0, help="planted variance of mode 1 (K^2)")
    p.add_argument("--ratio", type=float, default=0.7, help="planted variance of mode m+1 over mode m")
    p.add_argument("--noise-std", type=float, default=0.5, help="white noise per cell (K)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="METHOD",
                   help=f"from {', '.join(DEFAULT_METHODS + OPTIONAL_METHODS + CUPY_METHODS)}")  # fmt: skip
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy", help="cupy adds pipeline-gram/randomized on CuPy")
    p.add_argument("--budget-mb", type=int, default=512, help="memory_budget_mb passed to decompose")
    p.add_argument("--precision", choices=["float64", "float32"], default="float64",
                   help="accumulation precision passed to decompose")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--warmup", type=int, default=0, help="untimed calls before the timed ones (same process)")
    p.add_argument("--workdir", type=Path, default=None, help="where the synthetic store goes (default: a temporary directory)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--tag", default="", help="suffix of the result files, e.g. the machine")
    # subprocess side
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = sorted(set(args.methods) - set(DEFAULT_METHODS + OPTIONAL_METHODS + CUPY_METHODS))
    if unknown:
        p.error(f"unknown --methods {', '.join(unknown)}; choose from {', '.join(DEFAULT_METHODS + OPTIONAL_METHODS + CUPY_METHODS)}.")
    for flag in ("n_time", "n_lat", "n_lon", "modes", "repeats", "budget_mb"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1; got {getattr(args, flag)}.")
    if args.warmup < 0 or args.noise_std < 0 or not 0 < args.ratio <= 1:
        p.error("--warmup and --noise-std must be >= 0 and --ratio in (0, 1].")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    from pipeline.synthetic import write_planted_modes_store

    extra = [m for m in CUPY_METHODS[:2] if m not in args.methods] if args.backend == "cupy" else []
    methods = list(dict.fromkeys(args.methods)) + extra
    variances = [args.leading_variance * args.ratio**m for m in range(args.modes)]
    workdir = Path(tempfile.mkdtemp(prefix="eof_peers-", dir=args.workdir))
    try:
        store = write_planted_modes_store(workdir / "field.zarr", n_time=args.n_time, n_lat=args.n_lat, n_lon=args.n_lon,
                                          variances=variances, noise_std=args.noise_std, seed=args.seed, dtype="float32")  # fmt: skip
        ref_eofs, ref_lam, ref_seconds = exact_reference(store, args.modes)
        print(f"reference: float64 dense SVD in {ref_seconds:.1f} s", flush=True)
        rows: dict[str, dict[str, Any]] = {}
        for name in methods:
            why = available(name)
            rows[name] = {"skipped": why} if why else run_one(name, store, workdir, args)
            if "eofs" in rows[name]:
                rows[name].update(accuracy(rows[name].pop("eofs"), rows[name].pop("eigenvalues"), ref_eofs, ref_lam))
            print(f"{name}: {json.dumps(rows[name])}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "benchmark": "eof_peers",
        "data": {"n_time": args.n_time, "n_lat": args.n_lat, "n_lon": args.n_lon, "dtype": "float32", "modes": args.modes,
                 "variances": variances, "noise_std": args.noise_std, "seed": args.seed, "weights": "sqrt_coslat"},
        "timing": {"repeats": args.repeats, "warmup": args.warmup, "budget_mb": args.budget_mb,
                   "precision": args.precision,
                   "note": "wall time of one call on data already in memory, imports excluded, in a fresh process per method"},
        "reference": {"method": "numpy.linalg.svd, float64, dense", "seconds": ref_seconds, "eigenvalues": ref_lam.tolist()},
        "machine": machine_info(),
        "methods": rows,
    }  # fmt: skip
    md = table(rows)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "eof_peers" + (f"_{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=float))
    (args.out / f"{stem}.md").write_text(f"{args.n_time} time steps x {args.n_lat} x {args.n_lon} cells, float32, k = {args.modes}, "
                                         f"on {report['machine']['cpu_model']} ({report['machine']['cpus_usable']} CPUs)"
                                         + (f", {report['machine']['gpu']['name']}" if "gpu" in report["machine"] else "")
                                         + "\n\n" + md + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
