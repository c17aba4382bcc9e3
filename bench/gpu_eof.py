"""GPU against CPU for the streamed EOF (k modes, gram method), on one machine.

Three measurements, each NumPy and CuPy on the same data:

1. end to end from host memory: ``pipeline.eof.decompose`` on an in-memory
   ``(time, lat, lon)`` float32 field (moments pass + projection pass, all
   host-to-device transfers included);
2. the compute alone, with the data already resident (host RAM for NumPy,
   device memory for CuPy): the same kernels, tile by tile, without reading;
3. streamed from a Zarr store: ``decompose`` on a fields store beside one plain
   tile-by-tile read of it; the effective throughput counts both passes.

    python bench/gpu_eof.py --n-time 2000 --n-lat 500 --n-lon 2000 --out bench/results

Writes ``gpu_eof.json`` and ``gpu_eof.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.linalg import subspace_angles

from pipeline import eof, stream
from pipeline.backend import cupy_available, to_numpy
from pipeline.grid import latitude_weights
from pipeline.kernels import streaming as ks
from pipeline.synthetic import write_planted_modes_store


def make_field(n_time: int, n_lat: int, n_lon: int, k: int, noise: float, seed: int = 0) -> xr.DataArray:
    """A float32 field of k planted modes plus white noise, built row band by row band."""
    rng = np.random.default_rng(seed)
    lat = np.linspace(-60, 60, n_lat)
    lon = np.linspace(0, 360, n_lon, endpoint=False)
    w = np.sqrt(np.cos(np.deg2rad(lat)))
    la, lo = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]
    patterns = np.stack([np.cos((1 + m // 2) * la * 1.5 + 0.3 * m) * np.cos((1 + (m + 1) // 2) * lo + m) for m in range(k)])
    q, _ = np.linalg.qr(patterns.reshape(k, -1).T)
    pcs = rng.standard_normal((n_time, k)) * np.sqrt(np.geomspace(20.0, 1.0, k))
    x = np.empty((n_time, n_lat, n_lon), dtype=np.float32)
    band = max(1, n_lat // 50)
    # One band of noise, shifted in time for each band: data making stays fast at 8 GB.
    noise_band = noise * rng.standard_normal((n_time, band, n_lon), dtype=np.float32)
    for j, i in enumerate(range(0, n_lat, band)):
        rows = slice(i, min(i + band, n_lat))
        cells = q.reshape(n_lat, n_lon, k)[rows].reshape(-1, k)
        signal = (pcs @ cells.T).reshape(n_time, -1, n_lon) / w[rows][None, :, None]
        x[:, rows] = signal + np.roll(noise_band[:, : signal.shape[1]], 37 * j, axis=0)
    return xr.DataArray(x, dims=("time", "lat", "lon"),
                        coords={"time": np.arange(n_time), "lat": lat, "lon": lon}, attrs={"units": "K"})


def timed(fn, *args, sync=None, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    if sync is not None:
        sync()
    return out, time.perf_counter() - start


def resident_compute(xp, x, weight_lat, k: int, n_tiles: int):
    """Moments + Gram + eigh + projection with the data already in this namespace's memory."""
    n_time, n_lat, n_lon = x.shape
    bounds = np.linspace(0, n_lat, n_tiles + 1).astype(int)
    gram = xp.zeros((n_time, n_time), dtype=xp.float64)
    w = xp.asarray(weight_lat, dtype=xp.float64)
    means = []
    for i0, i1 in zip(bounds[:-1], bounds[1:]):
        block = xp.reshape(xp.astype(x[:, i0:i1, :], xp.float64), (n_time, -1))
        m = ks.block_moments(block)
        means.append(m.mean)
        wt = xp.reshape(xp.broadcast_to(w[i0:i1][:, None], (i1 - i0, n_lon)), (-1,))
        gram = ks.gram_update(gram, (block - m.mean[None, :]) * wt[None, :])
    values, vectors = xp.linalg.eigh(gram / (n_time - 1.0))
    u = xp.flip(vectors, axis=1)[:, :k]
    s = xp.sqrt(xp.flip(values, axis=0)[:k])
    eofs = []
    for (i0, i1), mean in zip(zip(bounds[:-1], bounds[1:]), means):
        block = xp.reshape(xp.astype(x[:, i0:i1, :], xp.float64), (n_time, -1))
        wt = xp.reshape(xp.broadcast_to(w[i0:i1][:, None], (i1 - i0, n_lon)), (-1,))
        eofs.append(ks.project((block - mean[None, :]) * wt[None, :], u, s * np.sqrt(n_time - 1.0)))
    return xp.concat(eofs, axis=0), s**2


def max_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Largest principal angle (degrees) between two (k, ...) sets of EOF maps over finite cells."""
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    ok = np.isfinite(a).all(axis=0) & np.isfinite(b).all(axis=0)
    return float(np.rad2deg(np.max(subspace_angles(a[:, ok].T, b[:, ok].T))))


def section(report: dict, name: str, fn) -> None:
    print(f"== {name}", flush=True)
    try:
        report[name] = fn()
    except Exception as err:  # noqa: BLE001 -- a failed section is reported, the others still run
        traceback.print_exc()
        report[name] = {"error": f"{type(err).__name__}: {err}"}
    print(json.dumps(report[name], indent=1), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-time", type=int, default=2000)
    parser.add_argument("--n-lat", type=int, default=500)
    parser.add_argument("--n-lon", type=int, default=2000)
    parser.add_argument("--zarr-lat", type=int, default=125, help="latitude rows of the Zarr case (same time and lon)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--budget-mb", type=int, default=4096)
    parser.add_argument("--tiles", type=int, default=32, help="tiles of the resident-compute case")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gpu_eof"))
    parser.add_argument("--skip", nargs="*", default=[],
                        help="sections (end_to_end_host_memory, resident_compute, zarr_stream) or runs "
                             "(numpy_end_to_end, cupy_end_to_end, numpy_resident, numpy_zarr, cupy_zarr) to skip")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    gpu = cupy_available()
    report: dict = {"machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                                "numpy": np.__version__}, "args": {k: str(v) for k, v in vars(args).items()}}
    if gpu:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        report["machine"].update(gpu=props["name"].decode(), cupy=cupy.__version__)
        sync = cupy.cuda.Device().synchronize
        eof.decompose(make_field(50, 20, 40, 3, 0.1), n_modes=3, method="gram", backend="cupy")  # warm-up
    da, t_make = timed(make_field, args.n_time, args.n_lat, args.n_lon, args.k, args.noise)
    gb = da.nbytes / 1e9
    report["data"] = {"shape": list(da.shape), "dtype": "float32", "GB": round(gb, 3), "seconds_to_make": round(t_make, 1)}
    kw = dict(n_modes=args.k, method="gram", memory_budget_mb=args.budget_mb)
    results = {}

    def end_to_end():
        out = {}
        for name in (["cupy"] if gpu else []) + ["numpy"]:
            if f"{name}_end_to_end" in args.skip:
                continue
            res, t = timed(eof.decompose, da, backend=name, **kw)
            results[name] = res
            out[f"seconds_{name}"] = round(t, 3)
            out[f"GB_per_s_{name}"] = round(2 * gb / t, 2)
        if "numpy" in results and "cupy" in results:
            out["speedup"] = round(out["seconds_numpy"] / out["seconds_cupy"], 1)
            out["max_angle_deg_cupy_vs_numpy"] = max_angle(results["numpy"]["eof"].values, results["cupy"]["eof"].values)
            out["max_rel_eigenvalue_difference"] = float(np.max(np.abs(
                results["cupy"]["eigenvalue"].values / results["numpy"]["eigenvalue"].values - 1)))
        return out

    def resident():
        w = latitude_weights(da["lat"], "sqrt_coslat").values
        out = {}
        if "numpy_resident" not in args.skip:
            import array_api_compat.numpy as xnp

            (_, lam_np), t = timed(resident_compute, xnp, da.values, w, args.k, args.tiles)
            out["seconds_numpy"] = round(t, 3)
        if gpu:
            import array_api_compat.cupy as xcp
            import cupy

            x_dev, t_h2d = timed(cupy.asarray, da.values, sync=sync)
            out["seconds_host_to_device_pageable"] = round(t_h2d, 3)
            resident_compute(xcp, x_dev[:, :8], w[:8], args.k, 2)  # warm-up at this n_time
            sync()
            (_, lam_cp), t = timed(resident_compute, xcp, x_dev, w, args.k, args.tiles, sync=sync)
            out["seconds_cupy"] = round(t, 3)
            del x_dev
            cupy.get_default_memory_pool().free_all_blocks()
            if "seconds_numpy" in out:
                out["speedup"] = round(out["seconds_numpy"] / out["seconds_cupy"], 1)
                out["max_rel_eigenvalue_difference"] = float(np.max(np.abs(to_numpy(lam_cp) / lam_np - 1)))
        return out

    def zarr_case():
        args.workdir.mkdir(parents=True, exist_ok=True)
        path = args.workdir / "field.zarr"
        _, t_write = timed(write_planted_modes_store, path, n_time=args.n_time, n_lat=args.zarr_lat, n_lon=args.n_lon,
                           variances=tuple(np.geomspace(20.0, 1.0, args.k)), noise_std=args.noise, dtype="float32")
        src = stream.ZarrSource(path)
        out = {"GB": round(src.nbytes / 1e9, 3), "chunks": list(src.chunks), "seconds_write": round(t_write, 1)}
        t_read = stream.read_throughput(src, 256 * 2**20)
        out["seconds_plain_read"] = round(t_read, 3)
        out["GB_per_s_plain_read"] = round(src.nbytes / 1e9 / t_read, 2)
        for name in (["cupy"] if gpu else []) + ["numpy"]:
            if f"{name}_zarr" in args.skip:
                continue
            _, t = timed(eof.decompose, path, backend=name, **kw)
            out[f"seconds_{name}"] = round(t, 3)
            out[f"GB_per_s_per_pass_{name}"] = round(2 * src.nbytes / 1e9 / t, 2)
            out[f"fraction_of_plain_read_{name}"] = round(2 * t_read / t, 2)
        shutil.rmtree(path, ignore_errors=True)
        return out

    for name, fn in (("resident_compute", resident), ("zarr_stream", zarr_case), ("end_to_end_host_memory", end_to_end)):
        if name not in args.skip:
            section(report, name, fn)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "_" + report["machine"].get("gpu", "cpu").replace(" ", "_")
    (args.out / f"gpu_eof{tag}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
