"""EOFs of a store larger than memory: time, peak memory and accuracy against a plain read.

Writes a synthetic planted-modes store (:func:`pipeline.synthetic.write_planted_modes_store`)
at least four times larger than a memory cap, then, each in a fresh subprocess,

(a) reads it once, tile by tile, doing nothing else (:func:`pipeline.stream.read_throughput`);
(b) computes its EOFs with ``pipeline.eof.decompose(path, method=..., memory_budget_mb=cap/4)``,

and records both wall times, their ratio (b)/(a) -- how many plain reads the
decomposition costs -- the peak resident memory of each process (Linux
``VmHWM``: the whole process, interpreter and imports included) against the
cap, and the largest principal angle between the computed EOFs and the planted
``true_eof`` over the ocean cells. By default the field has no noise, so that
angle is the method's numerical error alone; with ``--noise-std`` it also holds
the sampling error of the noise, which is large when cells far outnumber time
steps (for p cells, n steps and per-cell noise variance s2, a mode of variance
lam is rotated by about ``arcsin(sqrt(p s2 / (n lam)))``).

    python bench/out_of_core.py                                    # 8 GB store, 1 GB cap
    python bench/out_of_core.py --size-gb 0.25 --cap-mb 60 --out /tmp/ooc

The store goes to a temporary directory under ``--workdir`` and is deleted
afterwards unless ``--keep``. The store is read right after it is written, so
the operating system's page cache may hold part of it for both (a) and (b);
``--drop-caches`` (root, Linux) empties it before each.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eof_peers import _proc_status, machine_info, peak_rss_above, reset_peak_rss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ITEMSIZE = 4  # the store is float32


def grid_for(size_bytes: float, n_time: int) -> tuple[int, int]:
    """``(n_lat, n_lon)`` with n_lon = 2 n_lat so the float32 field holds about ``size_bytes``."""
    n_cells = size_bytes / (n_time * ITEMSIZE)
    n_lat = max(1, round(math.sqrt(n_cells / 2)))
    return n_lat, max(1, math.ceil(n_cells / n_lat))


def tile_bytes(budget_mb: float) -> int:
    """Bytes of stored data per tile that the stages use under ``budget_mb`` (see pipeline.moments.tile_budget)."""
    from pipeline.moments import tile_budget

    return tile_budget(budget_mb, ITEMSIZE, 8)


def drop_caches() -> bool:
    """Empty the page cache (needs root on Linux); whether it worked."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


# ------------------------------------------------------------ subprocess side


def worker(args: argparse.Namespace) -> None:
    """Run (a) ``read`` or (b) ``decompose`` on the store; print one JSON line."""
    from pipeline import stream
    from pipeline.eof import decompose

    budget_mb = args.cap_mb / 4
    baseline = reset_peak_rss()
    start = time.perf_counter()
    if args.worker == "read":
        seconds = stream.read_throughput(stream.ZarrSource(args.store), tile_bytes(budget_mb))
    else:
        ds = decompose(args.store, n_modes=args.modes, method=args.method, backend=args.backend,
                       memory_budget_mb=budget_mb, seed=args.seed, precision=args.precision)  # fmt: skip
        seconds = time.perf_counter() - start
        np.savez(args.result, eof=ds["eof"].values, eigenvalue=ds["eigenvalue"].values)
    record = {"seconds": seconds, "peak_rss_bytes": _proc_status().get("VmHWM"), "peak_rss_above_start_bytes": peak_rss_above(baseline)}
    print(json.dumps(record))


# ------------------------------------------------------------ harness


def run_worker(kind: str, store: Path, result: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--store", str(store), "--result", str(result),
           "--cap-mb", str(args.cap_mb), "--modes", str(args.modes), "--method", args.method, "--precision", args.precision,
           "--backend", args.backend, "--seed", str(args.seed)]  # fmt: skip
    cache = {"page_cache_dropped": drop_caches()} if args.drop_caches else {}
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the {kind} run failed:\n{proc.stderr[-4000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), **cache}


def accuracy(result: Path, store: Path) -> dict[str, float]:
    """Largest principal angle (degrees) to the planted EOFs and relative eigenvalue error to the planted variances."""
    from scipy.linalg import subspace_angles

    truth = xr.open_zarr(store, consolidated=False)
    ocean = ~truth["land"].values.ravel()
    true_eof = truth["true_eof"].values.reshape(truth.sizes["mode"], -1)[:, ocean]
    with np.load(result) as npz:
        eof, lam = npz["eof"].reshape(npz["eof"].shape[0], -1)[:, ocean], npz["eigenvalue"]
    k = min(len(lam), true_eof.shape[0])
    angle = np.rad2deg(np.max(subspace_angles(eof[:k].T, true_eof[:k].T)))
    var = truth["true_variance"].values[:k]
    return {"max_angle_to_truth_deg": float(angle), "max_rel_eigenvalue_error": float(np.max(np.abs(lam[:k] - var) / var))}


def table(r: dict[str, Any]) -> str:
    mib = 2**20
    rows = [
        ("store (uncompressed / on disk)", f"{r['store']['nbytes'] / 1e9:.2f} GB / {r['store']['disk_bytes'] / 1e9:.2f} GB"),
        ("memory cap / decompose budget", f"{r['cap_mb']} MiB / {r['cap_mb'] / 4:g} MiB"),
        ("(a) plain read", f"{r['read']['seconds']:.1f} s, peak RSS {r['read']['peak_rss_bytes'] / mib:.0f} MiB"),
        (f"(b) decompose ({r['method']}, {r['backend']}, {r.get('precision', 'float64')})", f"{r['decompose']['seconds']:.1f} s, peak RSS {r['decompose']['peak_rss_bytes'] / mib:.0f} MiB"),
        ("ratio (b)/(a)", f"{r['ratio']:.2f}"),
        ("peak RSS of (b) within the cap", "yes" if r["decompose"]["peak_rss_bytes"] <= r["cap_mb"] * mib else "NO"),
        (f"max principal angle to true_eof (noise_std {r['store']['noise_std']:g})", f"{r['accuracy']['max_angle_to_truth_deg']:.3g} deg"),
        ("max rel. eigenvalue error vs true_variance", f"{r['accuracy']['max_rel_eigenvalue_error']:.2e}"),
    ]  # fmt: skip
    return "\n".join(["| quantity | value |", "| --- | --- |", *(f"| {a} | {b} |" for a, b in rows)])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-gb", type=float, default=8.0, help="uncompressed size of the float32 field (1e9 bytes)")
    p.add_argument("--cap-mb", type=float, default=1024.0, help="memory cap (MiB); decompose gets a budget of cap/4")
    p.add_argument("--n-time", type=int, default=2000)
    p.add_argument("--modes", type=int, default=5)
    p.add_argument("--noise-std", type=float, default=0.0,
                   help="white noise per cell (K); above 0 the angle to true_eof includes the sampling error of the noise")
    p.add_argument("--method", choices=("gram", "randomized"), default="gram")
    p.add_argument("--backend", choices=("numpy", "cupy", "auto"), default="numpy")
    p.add_argument("--precision", choices=("float64", "float32"), default="float64", help="accumulation precision")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where the big store goes")
    p.add_argument("--keep", action="store_true", help="keep the store afterwards")
    p.add_argument("--drop-caches", action="store_true", help="empty the page cache before (a) and (b) (root, Linux)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--tag", default="")
    p.add_argument("--worker", choices=("read", "decompose"), help=argparse.SUPPRESS)
    p.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cap_mb <= 0 or args.size_gb <= 0 or args.modes < 1 or args.n_time <= args.modes:
        p.error("--cap-mb and --size-gb must be positive, and --n-time larger than --modes >= 1.")
    if args.worker is None and args.size_gb * 1e9 < 4 * args.cap_mb * 2**20:
        p.error(f"--size-gb {args.size_gb} is not at least 4x the cap of {args.cap_mb} MiB; raise it or lower --cap-mb.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    from pipeline.synthetic import _default_chunks, write_planted_modes_store

    n_lat, n_lon = grid_for(args.size_gb * 1e9, args.n_time)
    shape = (args.n_time, n_lat, n_lon)
    chunks = _default_chunks(shape, ITEMSIZE, target=min(64 * 2**20, tile_bytes(args.cap_mb / 4)))
    nbytes = math.prod(shape) * ITEMSIZE
    if shutil.disk_usage(args.workdir).free < 1.1 * nbytes:
        sys.exit(f"{args.workdir} has less free space than the {nbytes / 1e9:.1f} GB store needs; use --workdir.")
    workdir = Path(tempfile.mkdtemp(prefix="out_of_core-", dir=args.workdir))
    store = workdir / "field.zarr"
    try:
        start = time.perf_counter()
        variances = [1000.0 * 0.7**m for m in range(args.modes)]
        write_planted_modes_store(store, n_time=args.n_time, n_lat=n_lat, n_lon=n_lon, variances=variances,
                                  noise_std=args.noise_std, land_fraction=0.1, seed=args.seed, dtype="float32", chunks=chunks)  # fmt: skip
        written = time.perf_counter() - start
        disk = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
        print(f"wrote {store}: {shape} float32 in chunks {chunks}, {nbytes / 1e9:.2f} GB ({disk / 1e9:.2f} GB on disk) in {written:.0f} s", flush=True)
        read = run_worker("read", store, workdir / "result.npz", args)
        print(f"(a) plain read: {json.dumps(read)}", flush=True)
        dec = run_worker("decompose", store, workdir / "result.npz", args)
        print(f"(b) decompose: {json.dumps(dec)}", flush=True)
        acc = accuracy(workdir / "result.npz", store)
    finally:
        if args.keep:
            print(f"kept {store}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "benchmark": "out_of_core",
        "store": {"shape": shape, "chunks": chunks, "nbytes": nbytes, "disk_bytes": disk, "write_seconds": written,
                  "variances": variances, "noise_std": args.noise_std, "land_fraction": 0.1, "seed": args.seed},
        "cap_mb": args.cap_mb, "memory_budget_mb": args.cap_mb / 4, "method": args.method, "backend": args.backend, "precision": args.precision,
        "read": read, "decompose": dec, "ratio": dec["seconds"] / read["seconds"], "accuracy": acc,
        "machine": machine_info(),
    }  # fmt: skip
    md = table(report)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "out_of_core" + (f"_{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=float))
    (args.out / f"{stem}.md").write_text(f"{report['machine']['cpu_model']} ({report['machine']['cpus_usable']} CPUs)\n\n{md}\n")


if __name__ == "__main__":
    main()
