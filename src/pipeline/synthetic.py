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
  normal or Gumbel distribution.

Generation happens on the host with NumPy: it is data making, not the numerical
core.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from pipeline.grid import latitude_weights


def grid_coords(
    n_time: int,
    n_lat: int,
    n_lon: int,
    lat_range: tuple[float, float] = (-60.0, 60.0),
    lon_range: tuple[float, float] = (0.0, 360.0),
    start_year: int = 1950,
) -> dict[str, np.ndarray]:
    """Yearly ``time`` (mid-January) and cell-centred ``lat``/``lon`` coordinates."""
    years = np.arange(start_year, start_year + n_time)
    time = np.array([f"{y:04d}-01-15" for y in years], dtype="datetime64[ns]")
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


def _cf_coords(ds: xr.Dataset) -> xr.Dataset:
    ds["lat"].attrs.update(units="degrees_north", standard_name="latitude", long_name="latitude")
    ds["lon"].attrs.update(units="degrees_east", standard_name="longitude", long_name="longitude")
    ds["time"].attrs.update(standard_name="time", long_name="time")
    return ds
