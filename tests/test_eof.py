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
import xarray as xr

from pipeline import eof, eof_sign, io, moments
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


# --- sign conventions (eof.sign) -------------------------------------------------------------------------------

SIGN_METHODS = ["gram", "space", "randomized", "exact"]
POINT = {"lat": -3.5, "lon": -279.0}  # nearest cell: lat -7.5 (index 3), lon 75 (index 2) of the 8 x 12 grid
CELL = (3, 2)


@pytest.fixture(scope="module")
def planted():
    fields = planted_modes(n_time=30, n_lat=8, n_lon=12, land_fraction=0.2, mean=15.0)
    fields.attrs["field_name"] = "sst"
    return fields


def _series(values: np.ndarray, years, name: str = "index") -> xr.DataArray:
    time = np.array([f"{y:04d}-01-15" for y in years], dtype="datetime64[ns]")
    return xr.DataArray(np.asarray(values, dtype=np.float64), dims="time", coords={"time": time}, name=name)


def _reference(planted, mode: int, sign: float = 1.0) -> xr.DataArray:
    """``sign`` times the true PC of ``mode`` (1-based) plus noise, over 1960-1989 (20 years shared with 1950-1979)."""
    noise = np.random.default_rng(mode).standard_normal(30)
    values = np.concatenate([sign * planted["true_pc"].values[10:, mode - 1], np.zeros(10)]) + 0.5 * noise
    return _series(values, range(1960, 1990))


def _decompose(planted, method: str, sign=eof_sign.DEFAULT) -> xr.Dataset:
    return eof.decompose(planted, n_modes=3, method=method, backend="numpy", sign=sign)


def _corr(out: xr.Dataset, mode: int, ref: xr.DataArray) -> float:
    """numpy's correlation of a PC with a reference series over their shared years."""
    shared = np.intersect1d(out["time"].values, ref["time"].values)
    return np.corrcoef(out["pc"].sel(time=shared).values[:, mode - 1], ref.sel(time=shared).values)[0, 1]


@pytest.mark.parametrize("wanted", ["positive", "negative"])
def test_point_and_series_rules_give_the_requested_signs_on_every_method(planted, wanted):
    ref = _reference(planted, mode=2)
    rules = [{"mode": 1, "sign": wanted, **POINT}, {"mode": 2, "series": ref, "sign": wanted}]
    outs = {method: _decompose(planted, method, rules) for method in SIGN_METHODS}
    target = 1.0 if wanted == "positive" else -1.0
    for method, out in outs.items():
        assert out.attrs["method"] == method
        assert np.sign(out["eof"].values[0][CELL]) == target, method
        assert np.sign(_corr(out, 2, ref)) == target, method
        flat = out["eof"].values[2].ravel()
        assert flat[np.nanargmax(np.abs(flat))] > 0, method  # mode 3 has no rule: max_positive
        for key in ("eof", "pc", "eof_correlation", "eof_covariance"):
            np.testing.assert_allclose(out[key].values, outs["exact"][key].values, rtol=0, atol=1e-8,
                                       equal_nan=True, err_msg=f"{method} {key}")
        record = json.loads(out.attrs["sign_convention"])
        assert record["default"] == "max_positive" and [r["mode"] for r in record["rules"]] == [1, 2]
        assert record["rules"][0]["cell"] == [-7.5, 75.0] and record["rules"][0]["sign"] == wanted
        assert record["rules"][1]["n_steps"] == 20
        assert record["rules"][1]["correlation"] == pytest.approx(_corr(out, 2, ref), abs=1e-12)


def test_flipping_a_rule_flips_the_eof_its_pc_and_its_maps(planted):
    up = _decompose(planted, "exact", [{"mode": 1, "sign": "positive", **POINT}])
    down = _decompose(planted, "exact", [{"mode": 1, "sign": "negative", **POINT}])
    for key in ("eof", "eof_correlation", "eof_covariance"):
        np.testing.assert_array_equal(down[key].values[0], -up[key].values[0])
        np.testing.assert_array_equal(down[key].values[1:], up[key].values[1:])
    np.testing.assert_array_equal(down["pc"].values[:, 0], -up["pc"].values[:, 0])
    np.testing.assert_array_equal(down["pc"].values[:, 1:], up["pc"].values[:, 1:])
    # the pairs stay consistent: the PC is the projection of the weighted anomaly on its EOF either way
    w = np.sqrt(np.cos(np.deg2rad(planted["lat"].values)))[:, None]
    anomaly = (planted["field"] - planted["field"].mean("time")).values * w
    projection = np.nansum(anomaly * down["eof"].values[0], axis=(1, 2))
    np.testing.assert_allclose(projection, down["pc"].values[:, 0], rtol=0, atol=1e-9)


def test_series_rule_sign_matches_numpys_correlation_with_the_true_pc(planted):
    default = _decompose(planted, "gram")
    for mode, flip in ((1, -1.0), (2, 1.0), (3, -1.0)):
        ref = _reference(planted, mode, sign=flip)
        r_default = _corr(default, mode, ref)
        out = _decompose(planted, "gram", [{"mode": mode, "series": ref}])
        # the rule keeps the default PC when numpy's correlation is positive, and flips it otherwise
        np.testing.assert_array_equal(out["pc"].values[:, mode - 1],
                                      np.sign(r_default) * default["pc"].values[:, mode - 1])
        truth = np.corrcoef(out["pc"].values[:, mode - 1], planted["true_pc"].values[:, mode - 1])[0, 1]
        assert truth == pytest.approx(flip, abs=1e-10)  # the reference was flip x the true PC
        assert _corr(out, mode, ref) > 0


def test_series_rule_reads_netcdf_zarr_and_csv_files(planted, tmp_path):
    ref = _reference(planted, mode=1, sign=-1.0)
    expected = _decompose(planted, "exact", [{"mode": 1, "series": ref}])
    ref.to_dataset(name="nao").to_netcdf(tmp_path / "nao.nc")
    ref.to_dataset(name="nao").assign(other=ref * 2).to_zarr(tmp_path / "nao.zarr", consolidated=False)
    years = ref["time"].dt.year.values
    dates = np.datetime_as_string(ref["time"].values, "D")
    (tmp_path / "nao.csv").write_text("date,nao\n" + "".join(f"{t},{v:.17g}\n" for t, v in zip(dates, ref.values)))
    (tmp_path / "years.csv").write_text("year, nao\n" + "".join(f"{y}, {v:.17g}\n" for y, v in zip(years, ref.values)))
    for rule in ({"series": str(tmp_path / "nao.nc")}, {"series": str(tmp_path / "nao.zarr"), "variable": "nao"},
                 {"series": str(tmp_path / "nao.csv")}, {"series": str(tmp_path / "years.csv")}):
        params = {"n_modes": 3, "method": "exact", "sign": [{"mode": 1, **rule}]}
        fields, mom = planted, moments.compute(planted, params={"weights": "sqrt_coslat"}, backend=BACKEND)
        out = eof.compute(fields, mom, params=params, backend=BACKEND)
        np.testing.assert_array_equal(out["pc"].values, expected["pc"].values, err_msg=str(rule))
        record = json.loads(out.attrs["sign_convention"])["rules"][0]
        assert record["series"] == rule["series"] and record["n_steps"] == 20
    assert np.sign(expected["pc"].values[:, 0] @ planted["true_pc"].values[:, 0]) == -1


def test_default_and_rules_for_other_fields_leave_the_max_positive_convention(planted):
    default = _decompose(planted, "exact")
    assert json.loads(default.attrs["sign_convention"]) == {"default": "max_positive", "rules": []}
    for sign in ([], [{"mode": 1, "field": "z500", "sign": "negative", **POINT}]):
        out = _decompose(planted, "exact", sign)
        for key in ("eof", "pc", "eof_correlation", "eof_covariance"):
            np.testing.assert_array_equal(out[key].values, default[key].values)
    out = _decompose(planted, "exact", [{"mode": 1, "field": "sst", "sign": "negative", **POINT}])
    assert out["eof"].values[0][CELL] < 0 and json.loads(out.attrs["sign_convention"])["rules"][0]["field"] == "sst"


@pytest.mark.parametrize(
    ("sign", "message"),
    [
        ("min_positive", r"^eof\.sign must be 'max_positive' or a list of rules .*; got 'min_positive'\.$"),
        ({"mode": 1}, r"^eof\.sign must be 'max_positive' or a list of rules .*; got dict\.$"),
        ([{"mode": 0, **POINT}], r"^eof\.sign\[0\]\.mode must be an integer from 1 to eof\.n_modes \(3\); got 0\.$"),
        ([{"mode": 1, **POINT}, {"mode": 4, **POINT}], r"^eof\.sign\[1\]\.mode must be an integer from 1 .*got 4\.$"),
        ([{"mode": 1, "sign": "up", **POINT}], r"^eof\.sign\[0\]\.sign must be one of positive, negative; got 'up'\.$"),
        ([{"mode": 1, "colour": "red", **POINT}], r"^eof\.sign\[0\] has unknown key\(s\) colour; the keys are "),
        ([{"mode": 1}], r"^eof\.sign\[0\] needs either lat and lon \(a point\) or series .*, not neither\.$"),
        ([{"mode": 1, "series": "x.nc", **POINT}], r"^eof\.sign\[0\] needs either .*, not both\.$"),
        ([{"mode": 1, "lat": 10.0}], r"^eof\.sign\[0\] needs lat in \[-90, 90\] and a finite lon, .*lon None\.$"),
        ([{"mode": 1, "lat": 95.0, "lon": 0.0}], r"^eof\.sign\[0\] needs lat in \[-90, 90\]"),
        ([{"mode": 1, "series": "/no/such/index.csv"}],
         r"^eof\.sign\[0\]\.series '/no/such/index\.csv' does not exist"),
        ([{"mode": 2, **POINT}, {"mode": 2, "field": "sst", **POINT}],
         r"^eof\.sign\[0\] and eof\.sign\[1\] both set the sign of mode 2 for field 'sst'; keep one of them\.$"),
        ([{"mode": 1, "lat": 25.0, "lon": 200.0}],
         r"^eof\.sign\[0\]: the grid cell \(22\.5, 195\) nearest the point \(25, 200\) is not a complete cell"),
        ([{"mode": 1, "lat": 85.0, "lon": 200.0}], r"^eof\.sign\[0\]: the point \(85, 200\) lies outside the grid"),
    ],
)
def test_bad_sign_rules_raise_one_sentence(planted, sign, message):
    with pytest.raises(ValueError, match=message):
        _decompose(planted, "exact", sign)


def test_bad_reference_series_raise_one_sentence(planted):
    short = _series(np.arange(5.0), [1978, 1979, 1990, 1991, 1992])
    with pytest.raises(ValueError, match=r"^eof\.sign\[0\]: the PC and its reference series share 2 yearly time "
                                         r"steps with values, fewer than 3"):
        _decompose(planted, "exact", [{"mode": 1, "series": short}])
    monthly = xr.DataArray(np.arange(24.0), dims="time",
                           coords={"time": np.arange("1960-01", "1962-01", dtype="datetime64[M]")})
    with pytest.raises(ValueError, match=r"^The PC has yearly time steps but the reference series of eof\.sign\[0\] "
                                         r"has monthly time steps"):
        _decompose(planted, "exact", [{"mode": 1, "series": monthly}])
    constant = _series(np.ones(30), range(1950, 1980))
    with pytest.raises(ValueError, match=r"^eof\.sign\[0\]: the PC is uncorrelated with its reference series"):
        _decompose(planted, "exact", [{"mode": 1, "series": constant}])
    with pytest.raises(ValueError, match=r"^The reference series of eof\.sign\[0\] must be 1-D along time"):
        _decompose(planted, "exact", [{"mode": 1, "series": planted["true_pc"]}])


def test_decompose_accepts_the_dimension_aliases_in_any_order():
    truth = planted_modes(n_time=30, n_lat=8, n_lon=12, noise_std=0.05, land_fraction=0.1, seed=4)
    canonical = eof.decompose(truth["field"], n_modes=3, method="gram", backend="numpy")
    renamed = truth["field"].rename(time="t", lat="latitude", lon="longitude").transpose("longitude", "t", "latitude")
    for source in (renamed, renamed.to_dataset(name="field")):
        got = eof.decompose(source, n_modes=3, method="gram", backend="numpy")
        for name in ("eof", "pc", "eigenvalue", "eof_correlation"):
            np.testing.assert_allclose(got[name].values, canonical[name].values, rtol=1e-12, atol=1e-14, equal_nan=True)
    with pytest.raises(ValueError, match="has no lat dimension"):
        eof.decompose(truth["field"].rename(lat="y"), n_modes=3)
