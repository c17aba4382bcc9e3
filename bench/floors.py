"""What this machine's arithmetic allows: lower bounds for the EOF timing targets.

The CPU targets of the large-grids work are ratios: the in-memory EOF against
the fastest peer, the out-of-core exact EOF against one plain read. Whether a
ratio is reachable on a machine depends on how fast its BLAS does the products
the methods cannot avoid. This script measures that and sets it beside what
the pipeline does:

* **Krylov products** -- the two products of a randomized pass,
  ``Z_t = x_tᵀ Q`` and ``x_t Z_t``, on cache-sized tiles of an in-memory
  ``n × p`` float32 field, width ``l = 16``; the better of one thread per
  core with a single-threaded BLAS (what the pipeline does for in-memory
  fields) and the multithreaded BLAS on one tile after another;
* **Gram update** -- ``x_t x_tᵀ`` of ``n × cells`` tiles (SYRK), float64 and
  float32;
* **accuracy against products** -- the pipeline's ``randomized`` EOFs of the
  planted field of ``eof_peers.py`` for ``power_iterations`` 1 to 5 at the
  default block width 16, and for the settings of ``--also``: the
  largest principal angle to the exact EOFs, the number of tile products and
  the time of the whole ``decompose`` call, moments included.

From these it prints the in-memory floor (the products of the cheapest
setting whose angle is at most ``--peer-angle``, at the measured rate) and the
out-of-core floor (``n² p`` of the Gram of a ``--size-gb`` store at the SYRK
rate, beside ``--read-seconds`` of one plain read of it).

    python bench/floors.py --peer-angle 0.0094 --read-seconds 11.0 --tag 2core
    python bench/floors.py --n-lat 40 --n-lon 100 --out /tmp/floors        # a quick check
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eof_peers import accuracy, exact_reference, machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def best_of(fn: Any, repeats: int) -> float:
    """Fewest seconds of ``repeats`` calls of ``fn``, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _cpus() -> set[int]:
    import os

    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def krylov_products(x: np.ndarray, width: int, tile_cells: int, repeats: int) -> dict[str, float]:
    """Seconds of one pass of both Krylov products over ``(n, tile_cells)`` tiles of ``x``, two ways."""
    from threadpoolctl import threadpool_limits

    n, p = x.shape
    q = np.linalg.qr(np.random.default_rng(0).standard_normal((n, width)))[0].astype(x.dtype)
    starts = range(0, p, tile_cells)

    def tile(j: int) -> None:
        t = x[:, j : j + tile_cells]
        t @ (q.T @ t).T

    def threads() -> None:
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(len(_cpus())) as pool:
            list(pool.map(tile, starts))

    seconds = {"threads": best_of(threads, repeats), "blas": best_of(lambda: [tile(j) for j in starts], repeats)}
    flops = 4.0 * n * p * width
    return {"seconds_per_pass": min(seconds.values()), "gflops": flops / min(seconds.values()) / 1e9,
            "seconds_threads": seconds["threads"], "seconds_blas_threads": seconds["blas"]}  # fmt: skip


def gram_rate(n: int, cells: int, repeats: int) -> dict[str, float]:
    """Rate of the pipeline's Gram update (NumPy calls SYRK for ``a @ a.T``): ``n² · cells / s`` in GFLOP/s, float64 and float32."""
    from pipeline.kernels.streaming import gram_update

    rng = np.random.default_rng(1)
    out = {}
    for dtype in ("float64", "float32"):
        xw = rng.standard_normal((n, cells)).astype(dtype)
        gram = np.zeros((n, n), dtype=dtype)

        out[dtype] = n * n * cells / best_of(lambda xw=xw, gram=gram: gram_update(gram, xw), repeats) / 1e9
    return out


def accuracy_table(store: Path, field: xr.DataArray, k: int, settings: list[tuple[int, int]], repeats: int,
                   precision: str) -> list[dict[str, Any]]:
    """The pipeline's randomized EOFs for each ``(width, power_iterations)``: angle, products, seconds."""
    from pipeline.eof import decompose

    ref_eofs, ref_lam, _ = exact_reference(store, k)
    rows = []
    for width, it in settings:
        holder: dict[str, Any] = {}

        def call(it=it, width=width, holder=holder) -> None:
            holder["ds"] = decompose(field, n_modes=k, method="randomized", power_iterations=it, oversample=width - k,
                                     precision=precision, memory_budget_mb=512)  # fmt: skip

        seconds = best_of(call, repeats)
        ds = holder["ds"]
        acc = accuracy(ds["eof"].values.reshape(k, -1), ds["eigenvalue"].values, ref_eofs, ref_lam)
        rows.append({"width": width, "power_iterations": it, "passes": it + 1, "products": 2 * it + 1,
                     "seconds": seconds, **acc})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-time", type=int, default=2000)
    p.add_argument("--n-lat", type=int, default=200)
    p.add_argument("--n-lon", type=int, default=500)
    p.add_argument("--modes", type=int, default=10)
    p.add_argument("--width", type=int, default=16, help="Krylov block width (the pipeline's default for k = 10)")
    p.add_argument("--iterations", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="power_iterations to try")
    p.add_argument("--also", nargs="*", default=["40:3"], metavar="WIDTH:ITERATIONS",
                   help="further settings with another block width (a multiple of 8 above --modes)")
    p.add_argument("--precision", choices=("float32", "float64"), default="float32")
    p.add_argument("--peer-angle", type=float, default=None,
                   help="the fastest peer's largest principal angle (deg), e.g. from eof_peers*.json")
    p.add_argument("--gram-cells", type=int, default=4096, help="cells per tile in the Gram update")
    p.add_argument("--size-gb", type=float, default=8.0, help="out-of-core store size for the Gram floor")
    p.add_argument("--read-seconds", type=float, default=None, help="one plain read of that store (out_of_core.py)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    if min(args.n_time, args.n_lat, args.n_lon, args.modes, args.width, args.repeats, args.gram_cells) < 1 or min(args.iterations) < 0:
        p.error("sizes, --modes, --width and --repeats must be at least 1 and --iterations at least 0.")
    try:
        args.settings = [(args.width, it) for it in args.iterations] + [tuple(int(v) for v in a.split(":")) for a in args.also]
    except ValueError:
        p.error(f"--also takes WIDTH:ITERATIONS pairs of integers; got {' '.join(args.also)}.")
    if any(w <= args.modes or w % 8 for w, _ in args.settings):
        p.error(f"block widths must be multiples of 8 above --modes={args.modes} (the pipeline rounds up to 8).")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from pipeline.stream import CACHE_TILE_BYTES
    from pipeline.synthetic import write_planted_modes_store

    n, p = args.n_time, args.n_lat * args.n_lon
    with tempfile.TemporaryDirectory(prefix="floors-", dir=args.workdir) as tmp:
        store = write_planted_modes_store(Path(tmp) / "field.zarr", n_time=n, n_lat=args.n_lat, n_lon=args.n_lon,
                                          variances=[1000.0 * 0.7**m for m in range(args.modes)], noise_std=0.5,
                                          seed=0, dtype="float32")  # fmt: skip
        field = xr.open_zarr(store, consolidated=False)["field"].load()
        x = field.values.reshape(n, p)
        tile_cells = max(1, CACHE_TILE_BYTES // (n * x.itemsize))
        products = {w: krylov_products(x, w, tile_cells, args.repeats) for w in sorted({w for w, _ in args.settings})}
        print("Krylov products:", json.dumps(products), flush=True)
        rows = accuracy_table(store, field, args.modes, args.settings, args.repeats, args.precision)
    syrk = gram_rate(n, args.gram_cells, args.repeats)
    print("Gram (SYRK) GFLOP/s:", json.dumps(syrk), flush=True)

    for row in rows:
        row["product_floor_seconds"] = row["products"] * products[row["width"]]["seconds_per_pass"] / 2
    report: dict[str, Any] = {
        "benchmark": "floors", "shape": [n, args.n_lat, args.n_lon], "modes": args.modes,
        "precision": args.precision, "tile_cells": tile_cells, "krylov_products": products, "syrk_gflops": syrk,
        "accuracy": rows, "machine": machine_info(),
    }  # fmt: skip
    lines = [f"{n} x {p} float32 field, k = {args.modes}, tiles of {tile_cells} cells; "
             f"{report['machine']['cpu_model']} ({report['machine']['cpus_usable']} CPUs)", "",
             *(f"Both products of one pass, width {w}: {r['seconds_per_pass']:.3f} s ({r['gflops']:.0f} GFLOP/s; one thread "
               f"per core {r['seconds_threads']:.3f} s, threaded BLAS {r['seconds_blas_threads']:.3f} s)." for w, r in products.items()),
             f"Gram update of {args.gram_cells}-cell tiles (SYRK, n^2 p count): {syrk['float64']:.0f} GFLOP/s float64, {syrk['float32']:.0f} GFLOP/s float32.",
             "", f"| width | power_iterations | passes | tile products | products alone at that rate (s) | decompose, "
             f"{args.precision} (s) | max angle (deg) | max rel. eigenvalue error |", "| ---: " * 8 + "|"]  # fmt: skip
    lines += [f"| {r['width']} | {r['power_iterations']} | {r['passes']} | {r['products']} | {r['product_floor_seconds']:.2f} | "
              f"{r['seconds']:.2f} | {r['max_angle_deg']:.3g} | {r['max_rel_eigenvalue_error']:.2e} |" for r in rows]  # fmt: skip
    if args.peer_angle is not None:
        ok = sorted((r for r in rows if r["max_angle_deg"] <= args.peer_angle), key=lambda r: r["product_floor_seconds"])
        report["in_memory_floor"] = ok[0] if ok else None
        lines += ["", f"Cheapest setting at most {args.peer_angle:g} deg: " + (
            f"width {ok[0]['width']}, power_iterations {ok[0]['power_iterations']}, products alone {ok[0]['product_floor_seconds']:.2f} s "
            f"(whole call {ok[0]['seconds']:.2f} s)." if ok else "none of those tried.")]  # fmt: skip
    cells_big = args.size_gb * 1e9 / (4 * n)
    gram_seconds = {d: n * n * cells_big / (rate * 1e9) for d, rate in syrk.items()}
    report["out_of_core_gram_floor_seconds"] = gram_seconds
    line = (f"Gram of a {args.size_gb:g} GB float32 store with {n} time steps ({n}^2 x {cells_big:.3g} cells): "
            f"{gram_seconds['float64']:.0f} s float64, {gram_seconds['float32']:.0f} s float32 of arithmetic alone")
    if args.read_seconds:
        report["read_seconds"] = args.read_seconds
        line += (f", {gram_seconds['float64'] / args.read_seconds:.1f}x and {gram_seconds['float32'] / args.read_seconds:.1f}x "
                 f"a plain read of {args.read_seconds:g} s, before the two reads of the store")
    lines += ["", line + "."]
    md = "\n".join(lines)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "floors" + (f"_{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2, default=float))
    (args.out / f"{stem}.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
