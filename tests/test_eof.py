"""The labelled eof stage: planted truth through moments -> eof, layout, stores, errors.

References: the planted EOFs/PCs/variances of ``planted_modes`` (noiseless, so
recovered to ~1e-10 up to sign), and for ``eof_covariance`` the closed form
``eof·sqrt(λ)/w`` that holds for a noiseless planted field (its unweighted
anomaly is ``Σ_m pc_m eof_m / w``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import eof, io, moments
from pipeline.backend import resolve
from pipeline.synthetic import planted_modes

BACKEND = resolve("numpy")


def _moments(n_time: int = 30, n_lat: int = 8, n_lon: int = 12, noise_std: float = 0.0, **kw):
    fields = planted_modes(n_time=n_time, n_lat=n_lat, n_lon=n_lon, noise_std=noise_std, land_fraction=0.2,
                           mean=15.0, **kw)
    fields.attrs["field_name"] = "sst"
    return fields, moments.compute(fields, params={"weights": "sqrt_coslat"}, backend=BACKEND)


def _sign(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-mode sign matching ``got`` to ``ref`` over (mode, ...) arrays."""
    axes = tuple(range(1, got.ndim))
    return np.sign(np.nansum(got * ref, axis=axes))


@pytest.mark.parametrize("method", ["auto", "gram", "space", "randomized", "exact", "time", "svd"])
@pytest.mark.parametrize("sizes", [(30, 8, 12), (60, 4, 5)], ids=["time-kind", "space-kind"])
def test_planted_modes_recovered(method, sizes):
    fields, mom = _moments(*sizes)
    kind = mom["covariance"].attrs["kind"]
    if {"gram": "time", "time": "time", "space": "space"}.get(method, kind) != kind:
        with pytest.raises(ValueError, match="needs the .* covariance"):
            eof.compute(fields, mom, params={"n_modes": 3, "method": method}, backend=BACKEND)
        return
    out = eof.compute(fields, mom, params={"n_modes": 3, "method": method}, backend=BACKEND)
    true_eof = fields["true_eof"].values
    s = _sign(out["eof"].values, true_eof)
    np.testing.assert_allclose(out["eof"].values * s[:, None, None], true_eof, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(np.isnan(out["eof"].values), np.isnan(true_eof))
    np.testing.assert_allclose(out["pc"].values * s[None, :], fields["true_pc"].values, rtol=0, atol=1e-9)
    np.testing.assert_allclose(out["eigenvalue"].values, fields["true_variance"].values, rtol=1e-10)
    assert out["variance_fraction"].values.sum() == pytest.approx(1.0, abs=1e-12)
    expected = {"auto": "exact", "time": "gram", "svd": "exact"}.get(method, method)
    assert out.attrs["method"] == expected
    assert out.attrs["rank"] == 3 and out.attrs["n_samples"] == sizes[0]
    flat = out["eof"].values.reshape(3, -1)
    peak = flat[np.arange(3), np.nanargmax(np.abs(flat), axis=1)]
    assert (peak > 0).all()  # sign rule: largest-magnitude element positive, whatever the solver


def test_auto_choice_follows_size_and_the_stored_covariance():
    assert eof.choose_method(30, 80, "time") == "exact"
    assert eof.choose_method(2000, 100_000, "time") == "gram"
    assert eof.choose_method(100_000, 2000, "space") == "space"
    assert eof.choose_method(20_000, 1_000_000, None) == "randomized"
    fields, mom_time = _moments(30, 8, 12)
    out = eof.compute(fields, mom_time, params={"n_modes": 2, "exact_max_mb": 0}, backend=BACKEND)
    assert out.attrs["method"] == "gram"
    # the stored covariance is what gram decomposes: scaling it scales the eigenvalues
    scaled = mom_time.copy()
    scaled["covariance"] = mom_time["covariance"] * 2.0
    out = eof.compute(fields, scaled, params={"n_modes": 2, "method": "gram"}, backend=BACKEND)
    np.testing.assert_allclose(out["eigenvalue"].values, [18.0, 8.0], rtol=1e-10)
    fields, mom_space = _moments(60, 4, 5)
    out = eof.compute(fields, mom_space, params={"n_modes": 2, "exact_max_mb": 0}, backend=BACKEND)
    assert out.attrs["method"] == "space"


def test_diagnostic_maps_closed_forms():
    fields, mom = _moments()
    out = eof.compute(fields, mom, params={"n_modes": 3, "method": "svd"}, backend=BACKEND)
    lam = out["eigenvalue"].values
    n = out.attrs["n_samples"]
    np.testing.assert_allclose(out["north_error"].values, lam * np.sqrt(2.0 / n), rtol=1e-14)
    w = np.sqrt(np.cos(np.deg2rad(out["lat"].values)))[None, :, None]
    expected = out["eof"].values * np.sqrt(lam)[:, None, None] / w
    np.testing.assert_allclose(out["eof_covariance"].values, expected, rtol=0, atol=1e-10, equal_nan=True)
    # correlation of a cell's anomaly with the PC, against np.corrcoef on one cell
    i, j = np.argwhere(mom["valid"].values)[7]
    ref = np.corrcoef(mom["anomaly"].values[:, i, j], out["pc"].values[:, 0])[0, 1]
    assert out["eof_correlation"].values[0, i, j] == pytest.approx(ref, abs=1e-12)
    assert np.nanmax(np.abs(out["eof_correlation"].values)) <= 1.0 + 1e-12


def test_layout_units_and_nan_placement():
    fields, mom = _moments(noise_std=0.1)
    out = eof.compute(fields, mom, params={"n_modes": 2, "method": "auto", "fields": ["sst"]}, backend=BACKEND)
    assert set(out.data_vars) == {"eof", "pc", "eigenvalue", "variance_fraction", "north_error",
                                  "eof_correlation", "eof_covariance"}
    np.testing.assert_array_equal(out["mode"].values, [1, 2])
    assert out["eof"].dims == ("mode", "lat", "lon") and out["pc"].dims == ("time", "mode")
    units = {"eof": "1", "pc": "K", "eigenvalue": "(K)^2", "variance_fraction": "1", "north_error": "(K)^2",
             "eof_correlation": "1", "eof_covariance": "K"}
    for name, unit in units.items():
        assert out[name].attrs["units"] == unit and out[name].attrs["long_name"], name
    invalid = ~mom["valid"].values
    for name in ("eof", "eof_correlation", "eof_covariance"):
        np.testing.assert_array_equal(np.isnan(out[name].values), np.broadcast_to(invalid, out[name].shape))
    assert out.attrs["weighting"] == "sqrt_coslat" and out.attrs["field_name"] == "sst"
    assert out.attrs["field_units"] == "K" and 2 <= out.attrs["rank"] <= 29
    np.testing.assert_allclose(np.nansum(out["eof"].values ** 2, axis=(1, 2)), 1.0, rtol=1e-12)
    peak = [np.nanmax(e) >= -np.nanmin(e) for e in out["eof"].values]
    assert all(peak)  # sign rule: the largest-magnitude element is positive


def test_errors():
    fields, mom = _moments()
    for method in ("exact", "gram"):
        with pytest.raises(ValueError, match=r"^n_modes=7 exceeds the rank \(3\) of the sst anomalies; ask for at most 3 modes\.$"):
            eof.compute(fields, mom, params={"n_modes": 7, "method": method}, backend=BACKEND)
    with pytest.raises(ValueError, match="eof.n_modes must be an integer of at least 1; got 0"):
        eof.compute(fields, mom, params={"n_modes": 0}, backend=BACKEND)
    with pytest.raises(ValueError, match="eof.method must be one of auto, gram, space, randomized, exact; got 'pca'"):
        eof.compute(fields, mom, params={"n_modes": 2, "method": "pca"}, backend=BACKEND)
    with pytest.raises(ValueError, match="needs the time covariance, but the moments store of sst kept none"):
        eof.compute(fields, mom.drop_vars("covariance"), params={"n_modes": 2, "method": "gram"}, backend=BACKEND)
    with pytest.raises(ValueError, match="'exact' needs the whole sst matrix in memory"):
        eof.compute(fields, mom, params={"n_modes": 2, "method": "exact", "memory_budget_mb": 0.001}, backend=BACKEND)


def test_run_round_trip(tmp_path):
    fields, _ = _moments(noise_std=0.05)
    src = io.write_store(fields, tmp_path / "fields" / "sst.zarr", stage="ingest")
    mom_path, eof_path = tmp_path / "moments" / "sst.zarr", tmp_path / "eof" / "sst.zarr"
    moments.run(src, mom_path, params={"weights": "sqrt_coslat", "min_time_steps": 3}, backend="numpy")
    params = {"fields": ["sst"], "n_modes": 3, "method": "auto"}
    eof.run(src, mom_path, eof_path, params=params, backend="numpy")
    back = io.open_store(eof_path)
    expected = eof.compute(fields, io.open_store(mom_path), params=params, backend=BACKEND)
    for name in expected.data_vars:
        np.testing.assert_array_equal(back[name].values, expected[name].values)
    np.testing.assert_array_equal(back["time"].values, fields["time"].values)
    assert back.attrs["pipeline_stage"] == "eof" and json.loads(back.attrs["pipeline_config"]) == params
    for key in ("method", "weighting", "n_samples", "rank", "field_name", "field_units"):
        assert back.attrs[key] == expected.attrs[key], key
