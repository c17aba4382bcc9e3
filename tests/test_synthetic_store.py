"""pipeline.synthetic.write_planted_modes_store: a planted-modes field written chunk by chunk.

The reference is :func:`pipeline.synthetic.planted_modes`, which builds the same
field in memory in one go: without noise the two must agree (exactly in float64,
to float32 rounding in float32). Noise, memory and atomicity are checked on the
written store read back with Zarr/xarray.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline import grid, io, synthetic
from pipeline.synthetic import _default_chunks, write_planted_modes_store

SMALL = dict(n_time=30, n_lat=11, n_lon=13, variances=(5.0, 2.0, 1.0), land_fraction=0.2, mean=280.0, seed=4)


def _read(path) -> xr.Dataset:
    return io.open_store(path, "synthetic store")


@pytest.mark.parametrize(
    ("dtype", "chunks", "rtol"),
    [("float64", (7, 4, 5), 0.0), ("float64", None, 0.0), ("float32", (30, 3, 13), 1e-6)],
)
def test_noise_free_store_equals_planted_modes(tmp_path, dtype, chunks, rtol):
    ref = synthetic.planted_modes(**SMALL)
    ds = _read(write_planted_modes_store(tmp_path / "sst.zarr", dtype=dtype, chunks=chunks, **SMALL))
    field = ds["field"].values
    assert field.dtype == np.dtype(dtype)
    assert ds["field"].dims == ("time", "lat", "lon")
    expected = ref["field"].values
    np.testing.assert_array_equal(np.isnan(field), np.isnan(expected))
    if rtol == 0.0:
        np.testing.assert_array_equal(field, expected)
    else:
        np.testing.assert_allclose(field, expected, rtol=rtol, atol=0)
    for name in ("true_eof", "true_pc", "true_variance", "land"):
        xr.testing.assert_equal(ds[name], ref[name])
    for name in ("time", "lat", "lon"):
        np.testing.assert_array_equal(ds[name].values, ref[name].values)


def test_store_layout_and_attributes(tmp_path):
    path = write_planted_modes_store(tmp_path / "runs" / "sst.zarr", dtype="float32", units="degC", **SMALL)
    ds = _read(path)
    assert ds.attrs["field_name"] == "sst"
    assert ds.attrs["field_units"] == "degC"
    assert ds.attrs["source"] == "synthetic"
    assert ds.attrs["pipeline_stage"] == "synthetic"
    assert ds["field"].attrs["units"] == "degC"
    assert ds["lat"].attrs["units"] == "degrees_north" and ds["lon"].attrs["units"] == "degrees_east"
    assert np.issubdtype(ds["time"].dtype, np.datetime64)
    assert list(ds["mode"].values) == [1, 2, 3]
    # the land mask is NaN at every time step, the ocean complete
    land = ds["land"].values
    assert 0 < land.sum() < land.size
    assert np.isnan(ds["field"].values[:, land]).all()
    assert not np.isnan(ds["field"].values[:, ~land]).any()
    field, name = grid.field_of(ds, 3, "3 steps")  # readable by the stages
    assert name == "sst" and grid.complete_cells(field).n_features == int((~land).sum())
    renamed = _read(write_planted_modes_store(tmp_path / "x.zarr", field_name="t2m", **SMALL))
    assert renamed.attrs["field_name"] == "t2m"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["sst.zarr"]  # no temporary left behind


def test_planted_truth_is_recoverable(tmp_path):
    """The weighted anomaly of the stored field has exactly the planted EOFs and variances."""
    ds = _read(write_planted_modes_store(tmp_path / "f.zarr", dtype="float64", **SMALL))
    land = ds["land"].values
    w = grid.latitude_weights(ds["lat"]).values
    x = (ds["field"].values - SMALL["mean"]) * w[None, :, None]
    xw = x[:, ~land]
    _, s, vt = np.linalg.svd(xw - xw.mean(axis=0), full_matrices=False)
    k = len(SMALL["variances"])
    np.testing.assert_allclose(s[:k] ** 2 / (SMALL["n_time"] - 1), SMALL["variances"], rtol=1e-10)
    true_eof = ds["true_eof"].values[:, ~land]
    np.testing.assert_allclose(np.abs(np.sum(vt[:k] * true_eof, axis=1)), 1.0, rtol=1e-10)


def test_noise_is_reproducible_per_seed_and_chunks(tmp_path):
    args = dict(SMALL, noise_std=0.5, land_fraction=0.0)
    chunks = (30, 4, 13)
    a = _read(write_planted_modes_store(tmp_path / "a.zarr", chunks=chunks, **args))["field"].values
    b = _read(write_planted_modes_store(tmp_path / "b.zarr", chunks=chunks, **args))["field"].values
    np.testing.assert_array_equal(a, b)
    other_seed = _read(write_planted_modes_store(tmp_path / "c.zarr", chunks=chunks, **{**args, "seed": 5}))
    assert not np.allclose(other_seed["field"].values, a)

    clean = synthetic.planted_modes(**{**args, "noise_std": 0.0})["field"].values
    noise = (a - clean).astype(np.float64)
    assert abs(noise.std() / 0.5 - 1) < 0.1  # 30*11*13 = 4290 draws: std within ~2 % (1 sigma)
    assert abs(noise.mean()) < 0.05
    # chunks draw from different streams: the noise of the first two lat bands is not repeated
    band0, band1 = noise[:, 0:4, :], noise[:, 4:8, :]
    assert abs(np.corrcoef(band0.ravel(), band1.ravel())[0, 1]) < 0.1


def test_peak_memory_far_below_store_size(tmp_path):
    """A 200 MB (float32, uncompressed) store is written holding about one chunk at a time."""
    n_time, n_lat, n_lon = 500, 200, 500
    nominal = n_time * n_lat * n_lon * 4
    tracemalloc.start()
    try:
        path = write_planted_modes_store(
            tmp_path / "big.zarr", n_time=n_time, n_lat=n_lat, n_lon=n_lon, noise_std=0.5, land_fraction=0.1,
            chunks=(n_time, 5, n_lon),
        )  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.15 * nominal, f"peak {peak / 2**20:.0f} MiB while writing a {nominal / 2**20:.0f} MiB store"
    array = zarr.open_array(path / "field", mode="r")
    assert array.shape == (n_time, n_lat, n_lon) and array.chunks == (n_time, 5, n_lon)
    last = np.asarray(array[:, -5:, :])  # the last band was written, with noise
    assert np.isfinite(last).any() and np.nanstd(last) > 0.4


def test_default_chunks_are_about_64_mb():
    mb = 2**20
    # all time and lon, a lat band of <= 64 MB: 4 MB rows, 16 a band would leave a last band of 4,
    # so 100 rows go in 7 bands of at most 15
    assert _default_chunks((1000, 100, 1000), 4) == (1000, 15, 1000)
    assert _default_chunks((2000, 500, 1000), 4) == (2000, 8, 1000)  # 8 MB rows
    assert _default_chunks((10, 20, 30), 4) == (10, 20, 30)  # small: one chunk
    # one lat row over 64 MB: split lon instead
    t, la, lo = _default_chunks((100_000, 10, 1000), 4)
    assert (t, la) == (100_000, 1) and lo * 100_000 * 4 <= 64 * mb


def test_replaces_an_existing_store(tmp_path):
    path = tmp_path / "sst.zarr"
    write_planted_modes_store(path, **{**SMALL, "seed": 1})
    write_planted_modes_store(path, **{**SMALL, "seed": 2})
    assert _read(path).attrs["seed"] == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_time": 0}, "n_time must be a positive integer"),
        ({"n_lat": 2.5}, "n_lat must be a positive integer"),
        ({"dtype": "int16"}, "dtype must be one of float32, float64"),
        ({"chunks": (4, 4)}, "chunks must be three positive integers"),
        ({"chunks": (4, 0, 4)}, "chunks must be three positive integers"),
        ({"land_fraction": 1.0}, r"land_fraction must be in \[0, 1\)"),
        ({"noise_std": -1.0}, "noise_std must be >= 0"),
        ({"seed": -3}, "seed must be a non-negative integer"),
        ({"weights": "area"}, "weights must be one of none, coslat, sqrt_coslat"),
        ({"n_time": 3}, r"fewer modes \(3\) than time steps \(3\)"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_planted_modes_store(tmp_path / "bad.zarr", **{**SMALL, **kwargs})
    assert not (tmp_path / "bad.zarr").exists()
