"""Synthetic fields with planted truth, reproducible from a seed.

One factory for the tests, the benchmarks and the ``synthetic`` source of the
ingest stage. Each function returns a Dataset in the layout of a
``fields/{field}.zarr`` store (a ``field(time, lat, lon)`` variable) plus the
truth that was planted in it:

* :func:`planted_modes` -- a field that is an exact sum of known EOFs times
  known, mutually orthogonal PCs of known variance, plus optional noise;
* :func:`planted_regression` -- a field that is a known linear function of given
  predictors, per cell, plus Gaussian noise;
* :func:`planted_distribution` -- independent draws per cell from a known
  normal or Gumbel distribution;
* :func:`planted_daily_extremes` -- a daily record of independent gamma draws
  per cell (rain-like), whose annual maxima have the known law ``F**365``;
* :func:`write_planted_modes_store` -- the field of :func:`planted_modes`
  written straight to a Zarr store chunk by chunk, for grids larger than memory.

Generation happens on the host with NumPy: it is data making, not the numerical
core.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from pipeline.grid import latitude_weights
from pipeline.io import atomic_directory, cf_labelled, provenance

log = logging.getLogger(__name__)


def grid_coords(
    n_time: int,
    n_lat: int,
    n_lon: int,
    lat_range: tuple[float, float] = (-60.0, 60.0),
    lon_range: tuple[float, float] = (0.0, 360.0),
    start_year: int = 1950,
) -> dict[str, np.ndarray]:
    """Yearly ``time`` (mid-January) and cell-centred ``lat``/``lon`` coordinates.

    Records too long for yearly steps within datetime64[ns] (past 2200) get
    daily steps from 1 January of ``start_year`` instead.
    """
    if start_year + n_time <= 2200:
        years = np.arange(start_year, start_year + n_time)
        time = np.array([f"{y:04d}-01-15" for y in years], dtype="datetime64[ns]")
    else:
        time = np.datetime64(f"{start_year:04d}-01-01", "ns") + np.arange(n_time) * np.timedelta64(1, "D")
    dlat = (lat_range[1] - lat_range[0]) / n_lat
    dlon = (lon_range[1] - lon_range[0]) / n_lon
    lat = lat_range[0] + dlat * (np.arange(n_lat) + 0.5)
    lon = lon_range[0] + dlon * (np.arange(n_lon) + 0.5)
    return {"time": time, "lat": lat, "lon": lon}


def _land_mask(rng: np.random.Generator, n_lat: int, n_lon: int, land_fraction: float) -> np.ndarray:
    """Boolean (lat, lon) mask, True on land: one rectangular continent."""
    land = np.zeros((n_lat, n_lon), dtype=bool)
    n_land = int(round(land_fraction * n_lat * n_lon))
    if n_land == 0:
        return land
    height = max(1, min(n_lat, int(round(np.sqrt(n_land * n_lat / n_lon)))))
    width = max(1, min(n_lon, int(np.ceil(n_land / height))))
    i0 = int(rng.integers(0, n_lat - height + 1))
    j0 = int(rng.integers(0, n_lon - width + 1))
    land[i0 : i0 + height, j0 : j0 + width] = True
    return land


def _smooth_patterns(lat: np.ndarray, lon: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k smooth, distinct large-scale patterns on the grid, shape (k, n_lat, n_lon)."""
    la = np.deg2rad(lat)[:, None]
    lo = np.deg2rad(lon)[None, :]
    patterns = []
    for m in range(k):
        wave_lat = 1 + m // 2
        wave_lon = 1 + (m + 1) // 2
        phase = rng.uniform(0, 2 * np.pi)
        patterns.append(np.cos(wave_lat * la * 1.5 + 0.3 * m) * np.cos(wave_lon * lo + phase) + 0.1 * rng.standard_normal((lat.size, lon.size)))
    return np.stack(patterns)


def _planted_basis(
    n_time: int,
    n_lat: int,
    n_lon: int,
    variances: Sequence[float],
    land_fraction: float,
    weights: str,
    seed: int,
    lat_range: tuple[float, float],
    lon_range: tuple[float, float],
    start_year: int,
) -> tuple[np.random.Generator, dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The planted truth of :func:`planted_modes`, without the field itself.

    Returns the generator (positioned after the draws made here, so the caller
    can go on drawing noise), the coordinates, the land mask ``(lat, lon)``,
    the EOFs ``(n_ocean, k)`` orthonormal over the ocean cells, the PCs
    ``(n_time, k)`` and the latitude weights ``(lat,)``.
    """
    variances = np.asarray(variances, dtype=np.float64)
    k = variances.size
    if k >= n_time:
        raise ValueError(f"planted_modes needs fewer modes ({k}) than time steps ({n_time}).")
    rng = np.random.default_rng(seed)
    coords = grid_coords(n_time, n_lat, n_lon, lat_range, lon_range, start_year)
    land = _land_mask(rng, n_lat, n_lon, land_fraction)
    ocean = ~land.ravel()

    patterns = _smooth_patterns(coords["lat"], coords["lon"], k, rng).reshape(k, -1)[:, ocean]
    q, r = np.linalg.qr(patterns.T)
    eofs = q * np.sign(np.diag(r))  # (n_ocean, k), orthonormal

    raw = rng.standard_normal((n_time, k))
    raw -= raw.mean(axis=0)
    u, _ = np.linalg.qr(raw)  # centred, orthonormal columns
    pcs = u * np.sqrt(variances * (n_time - 1))

    w = latitude_weights(xr.DataArray(coords["lat"], dims="lat"), weights).values
    return rng, coords, land, eofs, pcs, w


def planted_modes(
    n_time: int = 60,
    n_lat: int = 20,
    n_lon: int = 36,
    variances: Sequence[float] = (9.0, 4.0, 1.0),
    noise_std: float = 0.0,
    mean: float = 0.0,
    land_fraction: float = 0.0,
    weights: str = "sqrt_coslat",
    seed: int = 0,
    lat_range: tuple[float, float] = (-60.0, 60.0),
    lon_range: tuple[float, float] = (0.0, 360.0),
    start_year: int = 1950,
    units: str = "K",
) -> xr.Dataset:
    """A field built from known EOFs and PCs, plus optional white noise.

    The weighted anomaly ``X_w = (field - mean)·w`` (``w`` the latitude weight of
    ``weights``) equals ``sum_k pc_k eof_k`` before noise, with the ``eof_k``
    orthonormal over the ocean cells and the ``pc_k`` centred, mutually
    orthogonal, with sample variance (divisor n−1) exactly ``variances[k]``.
    Without noise the EOF stage must therefore recover ``true_eof``,
    ``true_pc`` and ``true_variance`` exactly (up to sign).

    Returns
    -------
    xr.Dataset
        ``field(time, lat, lon)`` (NaN on land), ``true_eof(mode, lat, lon)``,
        ``true_pc(time, mode)``, ``true_variance(mode)`` and ``land(lat, lon)``.
    """
    rng, coords, land, eofs, pcs, w = _planted_basis(
        n_time, n_lat, n_lon, variances, land_fraction, weights, seed, lat_range, lon_range, start_year
    )
    variances = np.asarray(variances, dtype=np.float64)
    k = variances.size
    ocean = ~land.ravel()
    w_cells = np.broadcast_to(w[:, None], (n_lat, n_lon)).ravel()[ocean]
    anomaly = pcs @ eofs.T / w_cells
    if noise_std > 0:
        anomaly = anomaly + noise_std * rng.standard_normal(anomaly.shape)

    field = np.full((n_time, n_lat * n_lon), np.nan)
    field[:, ocean] = mean + anomaly
    true_eof = np.full((k, n_lat * n_lon), np.nan)
    true_eof[:, ocean] = eofs.T
    mode = np.arange(1, k + 1)
    ds = xr.Dataset(
        {
            "field": (("time", "lat", "lon"), field.reshape(n_time, n_lat, n_lon), {"units": units, "long_name": "synthetic field with planted modes"}),
            "true_eof": (("mode", "lat", "lon"), true_eof.reshape(k, n_lat, n_lon), {"units": "1", "weighting": weights}),
            "true_pc": (("time", "mode"), pcs, {"units": units}),
            "true_variance": (("mode",), variances, {"units": f"({units})^2"}),
            "land": (("lat", "lon"), land),
        },
        coords={**coords, "mode": mode},
        attrs={"source": "synthetic", "synthetic_kind": "modes", "seed": seed, "noise_std": noise_std},
    )
    return _cf_coords(ds)


def planted_regression(
    predictors: np.ndarray,
    coef: np.ndarray,
    intercept: float | np.ndarray = 0.0,
    noise_std: float | np.ndarray = 1.0,
    n_lat: int = 10,
    n_lon: int = 12,
    seed: int = 0,
    time: np.ndarray | None = None,
    units: str = "m",
) -> xr.Dataset:
    """A field ``y = intercept + predictors @ coef + noise`` in every cell.

    Parameters
    ----------
    predictors : (n_time, k) array
        The design (e.g. true PCs of another planted field).
    coef : (k,) or (k, n_lat, n_lon) array
        Planted coefficients, the same in every cell or per cell.
    intercept, noise_std : float or (n_lat, n_lon) array
        Planted intercept and Gaussian noise standard deviation.
    """
    predictors = np.asarray(predictors, dtype=np.float64)
    n_time, k = predictors.shape
    coef = np.asarray(coef, dtype=np.float64)
    if coef.ndim == 1:
        coef = np.broadcast_to(coef[:, None, None], (k, n_lat, n_lon))
    rng = np.random.default_rng(seed)
    coords = grid_coords(n_time, n_lat, n_lon)
    if time is not None:
        coords["time"] = np.asarray(time)
    intercept = np.broadcast_to(np.asarray(intercept, dtype=np.float64), (n_lat, n_lon))
    noise_std = np.broadcast_to(np.asarray(noise_std, dtype=np.float64), (n_lat, n_lon))
    signal = np.einsum("tk,kij->tij", predictors, coef)
    field = intercept + signal + noise_std * rng.standard_normal((n_time, n_lat, n_lon))
    ds = xr.Dataset(
        {
            "field": (("time", "lat", "lon"), field, {"units": units, "long_name": "synthetic regression target"}),
            "true_coef": (("predictor", "lat", "lon"), np.array(coef)),
            "true_intercept": (("lat", "lon"), np.array(intercept)),
            "true_noise_std": (("lat", "lon"), np.array(noise_std)),
            "predictors": (("time", "predictor"), predictors),
        },
        coords={**coords, "predictor": np.arange(1, k + 1)},
        attrs={"source": "synthetic", "synthetic_kind": "regression", "seed": seed},
    )
    return _cf_coords(ds)


def planted_distribution(
    family: str = "gumbel_r",
    loc: float | np.ndarray = 0.0,
    scale: float | np.ndarray = 1.0,
    n_time: int = 200,
    n_lat: int = 8,
    n_lon: int = 10,
    seed: int = 0,
    units: str = "m",
) -> xr.Dataset:
    """Independent draws per cell from ``normal``, ``gumbel_r`` or ``gumbel_l``.

    ``gumbel_r`` is the right-skewed Gumbel (maxima), ``gumbel_l`` its mirror
    image (minima); both as in ``scipy.stats``.
    """
    rng = np.random.default_rng(seed)
    coords = grid_coords(n_time, n_lat, n_lon)
    loc = np.broadcast_to(np.asarray(loc, dtype=np.float64), (n_lat, n_lon))
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n_lat, n_lon))
    size = (n_time, n_lat, n_lon)
    if family == "normal":
        z = rng.standard_normal(size)
    elif family == "gumbel_r":
        z = rng.gumbel(size=size)
    elif family == "gumbel_l":
        z = -rng.gumbel(size=size)
    else:
        raise ValueError(f"family must be one of normal, gumbel_r, gumbel_l; got {family!r}.")
    field = loc + scale * z
    ds = xr.Dataset(
        {
            "field": (("time", "lat", "lon"), field, {"units": units, "long_name": f"synthetic {family} draws"}),
            "true_loc": (("lat", "lon"), np.array(loc)),
            "true_scale": (("lat", "lon"), np.array(scale)),
        },
        coords=coords,
        attrs={"source": "synthetic", "synthetic_kind": "distribution", "family": family, "seed": seed},
    )
    return _cf_coords(ds)


def planted_daily_extremes(
    n_years: int = 40,
    shape: float | np.ndarray = 0.8,
    scale: float | np.ndarray = 6.0,
    n_lat: int = 6,
    n_lon: int = 8,
    start_year: int = 1981,
    seed: int = 0,
    units: str = "mm day-1",
) -> xr.Dataset:
    """A daily ``noleap`` record of independent gamma draws per cell, like daily rainfall.

    Every day of cell ``(i, j)`` is drawn from ``scipy.stats.gamma(a=shape[i, j],
    scale=scale[i, j])``; the annual maximum of 365 such days then has the CDF
    ``F(x)**365`` exactly, so the true ``T``-year return level of the annual
    maxima is ``F^-1((1 - 1/T)**(1/365))``. ``shape`` and ``scale`` default to
    a field varying smoothly from the given value over the grid (by up to
    +-30 %), and are kept as ``true_shape`` and ``true_scale``.
    """
    rng = np.random.default_rng(seed)
    coords = grid_coords(1, n_lat, n_lon)
    time = xr.date_range(f"{start_year:04d}-01-01", periods=365 * n_years, freq="D", calendar="noleap",
                         use_cftime=True)
    ramp = 1.0 + 0.3 * np.sin(np.deg2rad(coords["lat"]))[:, None] * np.cos(np.deg2rad(coords["lon"]))[None, :]
    shape = np.broadcast_to(np.asarray(shape, dtype=np.float64) * (ramp if np.ndim(shape) == 0 else 1.0),
                            (n_lat, n_lon))
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64) * (ramp if np.ndim(scale) == 0 else 1.0),
                            (n_lat, n_lon))
    field = rng.gamma(shape, scale, size=(time.size, n_lat, n_lon))
    ds = xr.Dataset(
        {
            "field": (("time", "lat", "lon"), field, {"units": units, "long_name": "synthetic daily gamma draws"}),
            "true_shape": (("lat", "lon"), np.array(shape)),
            "true_scale": (("lat", "lon"), np.array(scale)),
        },
        coords={"time": np.asarray(time), "lat": coords["lat"], "lon": coords["lon"]},
        attrs={"source": "synthetic", "synthetic_kind": "daily_extremes", "seed": seed},
    )
    return _cf_coords(ds)


def _cf_coords(ds: xr.Dataset) -> xr.Dataset:
    ds["lat"].attrs.update(units="degrees_north", standard_name="latitude", long_name="latitude")
    ds["lon"].attrs.update(units="degrees_east", standard_name="longitude", long_name="longitude")
    ds["time"].attrs.update(standard_name="time", long_name="time")
    return ds


# --------------------------------------------------------------------------
# Large stores, written chunk by chunk
# --------------------------------------------------------------------------

CHUNK_TARGET_BYTES = 64 * 2**20
STORE_DTYPES = ("float32", "float64")


def write_planted_modes_store(
    path: str | os.PathLike,
    *,
    n_time: int,
    n_lat: int,
    n_lon: int,
    variances: Sequence[float] = (9.0, 4.0, 1.0),
    noise_std: float = 0.0,
    mean: float = 0.0,
    land_fraction: float = 0.0,
    weights: str = "sqrt_coslat",
    seed: int = 0,
    dtype: str = "float32",
    chunks: tuple[int, int, int] | None = None,
    lat_range: tuple[float, float] = (-60.0, 60.0),
    lon_range: tuple[float, float] = (0.0, 360.0),
    start_year: int = 1950,
    units: str = "K",
    field_name: str | None = None,
) -> Path:
    """Write a :func:`planted_modes` field of any size to a Zarr store, chunk by chunk.

    The store has the layout of ``fields/{field}.zarr`` (docs/stores.md):
    ``field(time, lat, lon)`` plus the planted truth ``true_eof``, ``true_pc``,
    ``true_variance`` and ``land``. Only the truth (``k × n_cells`` EOFs and
    ``n_time × k`` PCs) is held in memory; each chunk of the field,

    .. math:: x_{t,c} = \\mu + \\frac{1}{w_c} \\sum_k \\mathrm{pc}_{t,k}\\, \\mathrm{eof}_{k,c} + \\sigma\\,\\varepsilon_{t,c},

    is computed and written on its own, one latitude row at a time, so memory
    stays near one chunk whatever the store's size. The noise
    :math:`\\varepsilon` of a chunk comes from a generator seeded by ``(seed,
    chunk index)``: the store is the same for the same arguments and chunks,
    whatever order chunks are written in. Without noise, the field equals
    ``planted_modes(...)["field"]`` with the same arguments (to the rounding
    of ``dtype``); with noise it is a different draw of the same distribution.

    Parameters
    ----------
    path : path-like
        The store to write; an existing store there is replaced once the new
        one is complete (it is written to a temporary sibling, then renamed).
    n_time, n_lat, n_lon : int
        Grid size.
    variances, noise_std, mean, land_fraction, weights, seed, lat_range, lon_range, start_year, units
        As in :func:`planted_modes`.
    dtype : {"float32", "float64"}
        Storage type of ``field`` (the truth is always float64).
    chunks : (int, int, int), optional
        Zarr chunk shape ``(time, lat, lon)``. Default: all time steps × a
        latitude band × all longitudes, about 64 MB a chunk.
    field_name : str, optional
        The dataset attribute ``field_name``; default the stem of ``path``.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    shape = _check_store_args(n_time, n_lat, n_lon, noise_std, land_fraction, seed, dtype)
    chunks = _default_chunks(shape, np.dtype(dtype).itemsize) if chunks is None else _check_chunks(chunks, shape)
    _, coords, land, eofs, pcs, w = _planted_basis(
        n_time, n_lat, n_lon, variances, land_fraction, weights, seed, lat_range, lon_range, start_year
    )
    eof_grid = np.full((pcs.shape[1], n_lat * n_lon), np.nan)
    eof_grid[:, ~land.ravel()] = eofs.T
    eof_grid = eof_grid.reshape(-1, n_lat, n_lon)
    name = field_name if field_name is not None else path.name.removesuffix(".zarr")
    truth = _truth_dataset(coords, land, eof_grid, pcs, variances, weights, units)
    truth.attrs = {
        "field_name": name,
        "field_units": units,
        "source": "synthetic",
        "synthetic_kind": "modes",
        "seed": seed,
        "noise_std": noise_std,
        "Conventions": "CF-1.10",
        **provenance("synthetic", {"n_time": n_time, "n_lat": n_lat, "n_lon": n_lon, "variances": list(variances),
                                   "noise_std": noise_std, "mean": mean, "land_fraction": land_fraction,
                                   "weights": weights, "seed": seed, "dtype": dtype, "chunks": list(chunks)},
                      dtype=dtype),
    }  # fmt: skip

    truth = cf_labelled(truth)  # axis, standard_name and units on the coordinates, as every store has
    with atomic_directory(path) as tmp:
        truth.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
        array = _create_field_array(tmp, shape, chunks, dtype, units)
        signal = _ChunkSignal(pcs, eof_grid, w, mean, noise_std, seed, np.dtype(dtype))
        for index in np.ndindex(*(-(-s // c) for s, c in zip(shape, chunks))):
            region = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunks, shape))
            array[region] = signal.block(index, region)
        log.info("wrote synthetic store %s: field %s %s in chunks %s", path, shape, dtype, chunks)
    return path


def _check_store_args(
    n_time: int, n_lat: int, n_lon: int, noise_std: float, land_fraction: float, seed: int, dtype: str
) -> tuple[int, int, int]:
    """Validate the scalar arguments of :func:`write_planted_modes_store`; return the field's shape."""
    for label, n in (("n_time", n_time), ("n_lat", n_lat), ("n_lon", n_lon)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"write_planted_modes_store: {label} must be a positive integer; got {n!r}.")
    if not noise_std >= 0:
        raise ValueError(f"write_planted_modes_store: noise_std must be >= 0; got {noise_std!r}.")
    if not 0 <= land_fraction < 1:
        raise ValueError(f"write_planted_modes_store: land_fraction must be in [0, 1); got {land_fraction!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"write_planted_modes_store: seed must be a non-negative integer; got {seed!r}.")
    if str(dtype) not in STORE_DTYPES:
        raise ValueError(f"write_planted_modes_store: dtype must be one of {', '.join(STORE_DTYPES)}; got {dtype!r}.")
    return int(n_time), int(n_lat), int(n_lon)


def _check_chunks(chunks: Sequence[int], shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Validate a ``(time, lat, lon)`` chunk shape, clipped to the array's shape."""
    try:
        parts = tuple(int(c) for c in chunks)
    except (TypeError, ValueError) as err:
        raise ValueError(f"write_planted_modes_store: chunks must be three positive integers (time, lat, lon); got {chunks!r}.") from err
    if len(parts) != 3 or min(parts) < 1:
        raise ValueError(f"write_planted_modes_store: chunks must be three positive integers (time, lat, lon); got {chunks!r}.")
    return tuple(min(c, s) for c, s in zip(parts, shape))  # type: ignore[return-value]


def _default_chunks(shape: tuple[int, int, int], itemsize: int, target: int = CHUNK_TARGET_BYTES) -> tuple[int, int, int]:
    """All time steps × a latitude band × all longitudes, about ``target`` bytes a chunk.

    Bands are evened out (e.g. 100 rows in bands of 34, 33, 33 rather than
    60 and 40). When one full latitude row exceeds ``target``, the row is split
    along longitude instead.
    """
    n_time, n_lat, n_lon = shape
    row = n_time * n_lon * itemsize
    if row > target:
        lon = max(1, target // (n_time * itemsize))
        n_parts = -(-n_lon // lon)
        return n_time, 1, -(-n_lon // n_parts)
    rows = max(1, min(n_lat, target // row))
    n_bands = -(-n_lat // rows)
    return n_time, -(-n_lat // n_bands), n_lon


def _truth_dataset(
    coords: dict[str, np.ndarray], land: np.ndarray, eof_grid: np.ndarray, pcs: np.ndarray,
    variances: Sequence[float], weights: str, units: str,
) -> xr.Dataset:  # fmt: skip
    """The small variables of a planted-modes store: coordinates and planted truth."""
    k = pcs.shape[1]
    ds = xr.Dataset(
        {
            "true_eof": (("mode", "lat", "lon"), eof_grid, {"units": "1", "weighting": weights, "long_name": "planted EOF (unit norm in weighted space)"}),
            "true_pc": (("time", "mode"), pcs, {"units": units, "long_name": "planted principal component"}),
            "true_variance": (("mode",), np.asarray(variances, dtype=np.float64), {"units": f"({units})^2", "long_name": "planted variance of each mode"}),
            "land": (("lat", "lon"), land, {"long_name": "land mask (True where the field is missing)"}),
        },
        coords={**coords, "mode": np.arange(1, k + 1)},
    )
    return _cf_coords(ds)


def _create_field_array(store: Path, shape: tuple[int, int, int], chunks: tuple[int, int, int], dtype: str, units: str):
    """Create the empty ``field`` array, NaN-filled, in the Zarr group at ``store``."""
    import zarr

    group = zarr.open_group(store, mode="r+", zarr_format=3)
    return group.create_array(
        "field",
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=np.nan,
        dimension_names=("time", "lat", "lon"),
        attributes={"units": units, "long_name": "synthetic field with planted modes"},
    )


class _ChunkSignal:
    """Computes one chunk of a planted-modes field from the planted truth."""

    def __init__(self, pcs, eof_grid, w, mean, noise_std, seed, dtype) -> None:
        self.pcs, self.eof_grid, self.w = pcs, np.nan_to_num(eof_grid), w
        self.land = np.isnan(eof_grid[0])
        self.mean, self.noise_std, self.seed, self.dtype = mean, noise_std, seed, dtype

    def block(self, index: tuple[int, ...], region: tuple[slice, slice, slice]) -> np.ndarray:
        """The field over ``region`` (chunk number ``index``), one latitude row at a time."""
        t, la, lo = region
        pcs = self.pcs[t]
        out = np.empty((pcs.shape[0], la.stop - la.start, lo.stop - lo.start), dtype=self.dtype)
        rng = np.random.default_rng([self.seed, *index]) if self.noise_std > 0 else None
        for j, i in enumerate(range(la.start, la.stop)):
            anomaly = pcs @ self.eof_grid[:, i, lo] / self.w[i]
            if rng is not None:
                anomaly += self.noise_std * rng.standard_normal(anomaly.shape)
            row = self.mean + anomaly
            row[:, self.land[i, lo]] = np.nan
            out[:, j, :] = row
        return out
