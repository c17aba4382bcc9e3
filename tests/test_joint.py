"""The labelled joint stage: pairing with an index, the stored quantities against closed forms, errors.

A planted bivariate normal: in each cell ``Y = mu + rho_c * s * X + s * sqrt(1 - rho_c^2) * e`` with X
the index. References: numpy correlations, the bivariate-normal conditional moments,
``scipy.stats.multivariate_normal`` orthant probabilities, and counts in the data.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from pipeline import io, joint
from pipeline.backend import resolve
from pipeline.synthetic import grid_coords

N, NLAT, NLON = 400, 3, 4


@pytest.fixture(scope="module")
def planted() -> tuple[xr.Dataset, xr.Dataset, np.ndarray]:
    rng = np.random.default_rng(5)
    coords = grid_coords(N, NLAT, NLON, start_year=1800)
    coords["time"] = xr.date_range("1801-01-01", periods=N, freq="YS", calendar="noleap", use_cftime=True).values
    rho = np.linspace(-0.8, 0.8, NLAT * NLON).reshape(NLAT, NLON)
    x = rng.standard_normal(N)
    e = rng.standard_normal((N, NLAT, NLON))
    y = 10.0 + 3.0 * (rho * x[:, None, None] + np.sqrt(1 - rho**2) * e)
    fields = xr.Dataset({"field": (("time", "lat", "lon"), y, {"units": "K"})}, coords=coords,
                        attrs={"field_name": "t2m", "field_units": "K"})
    eof = xr.Dataset({"pc": (("time", "mode"), np.stack([2.0 * x, rng.standard_normal(N)], axis=1), {"units": "1"})},
                     coords={"time": coords["time"], "mode": [1, 2]}, attrs={"field_name": "sst"})
    return fields, eof, rho


PARAMS = {"index": {"field": "sst", "mode": 1}, "margins": ["normal", "gumbel_r"], "x_values": [-1.0, 2.0],
          "q_x": 0.8, "q_y": 0.7}


def test_bivariate_normal_quantities_against_closed_forms(planted):
    fields, eof, rho_true = planted
    out = joint.compute(fields, eof, params=PARAMS, backend=resolve("numpy"))
    y = fields["field"].values.reshape(N, -1)
    x = eof["pc"].values[:, 0]
    r = np.array([np.corrcoef(x, y[:, j])[0, 1] for j in range(y.shape[1])]).reshape(NLAT, NLON)
    np.testing.assert_allclose(out["rho"].sel(model="normal").values, r, rtol=1e-10)
    assert np.max(np.abs(r - rho_true)) < 4 / np.sqrt(N)
    my, sy = y.mean(axis=0).reshape(NLAT, NLON), y.std(axis=0).reshape(NLAT, NLON)
    for k in (-1.0, 2.0):
        np.testing.assert_allclose(out["conditional_mean"].sel(x_value=k).values, my + r * sy * k, rtol=1e-10)
        np.testing.assert_allclose(out["conditional_sd"].sel(x_value=k).values, sy * np.sqrt(1 - r**2), rtol=1e-10)
    a, b = stats.norm.ppf(0.8), stats.norm.ppf(0.7)
    expected = np.array([stats.multivariate_normal([0, 0], [[1, c], [c, 1]]).cdf([-a, -b]) for c in r.ravel()])
    np.testing.assert_allclose(out["p_exceed_given"].sel(model="normal").values.ravel(), expected / 0.2, atol=1e-5)
    np.testing.assert_allclose(out["p_exceed"].values, 0.3)
    # the counted frequency is near the fitted one (normal data), the copula's rho near Pearson's
    assert np.max(np.abs(out["p_exceed_given_empirical"].values - out["p_exceed_given"].sel(model="normal").values)) < 0.12
    np.testing.assert_allclose(out["rho"].sel(model="copula").values, r, atol=0.06)
    assert out.attrs["index_name"] == "sst PC 1" and out.attrs["period"].startswith("1801")
    assert set(out.attrs["margins"].split()) == {"normal", "gumbel_r"}


def test_a_field_index_on_the_same_grid(planted):
    fields, _, _ = planted
    other = fields.copy()
    other["field"] = fields["field"] * 2.0 + 1.0  # perfectly correlated, cell by cell
    other.attrs["field_name"] = "twin"
    out = joint.compute(fields, other, params={**PARAMS, "index": {"field": "twin", "mode": 0}},
                        backend=resolve("numpy"))
    np.testing.assert_allclose(out["rho"].sel(model="normal").values, 1.0, atol=1e-12)
    # X above its 80th percentile puts Y above its 70th: probability one under the fit and in the data
    np.testing.assert_allclose(out["p_exceed_given"].sel(model="normal").values, 1.0, atol=1e-9)
    np.testing.assert_allclose(out["p_exceed_given_empirical"].values, 1.0)
    assert out.attrs["index_margin"] == "per cell"


def test_run_writes_the_store(planted, tmp_path):
    fields, eof, _ = planted
    f = io.write_store(fields, tmp_path / "fields" / "t2m.zarr", stage="ingest")
    e = io.write_store(eof, tmp_path / "eof" / "sst.zarr", stage="eof")
    joint.run(f, e, tmp_path / "joint" / "t2m.zarr", params=PARAMS, backend="numpy")
    back = io.open_store(tmp_path / "joint" / "t2m.zarr")
    assert back["rho"].dims == ("model", "lat", "lon") and back.attrs["pipeline_stage"] == "joint"
    assert back["conditional_mean"].dims == ("x_value", "lat", "lon")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"index": {"field": "sst", "mode": 3}}, "asks for PC 3 of 'sst', but its EOF store holds 2"),
        ({"margins": ["gpd"]}, "joint.margins must list families"),
        ({"q_x": 1.0}, "joint.q_x must lie in \\(0, 1\\)"),
        ({"index": "sst"}, "joint.index must name the index"),
    ],
)
def test_bad_settings(planted, change, match):
    fields, eof, _ = planted
    with pytest.raises(ValueError, match=match):
        joint.compute(fields, eof, params={**PARAMS, **change}, backend=resolve("numpy"))


def test_a_field_index_on_another_grid_is_refused(planted):
    fields, _, _ = planted
    other = fields.isel(lon=slice(0, 3))
    with pytest.raises(ValueError, match="is not on the grid of 't2m'"):
        joint.compute(fields, other, params={**PARAMS, "index": {"field": "x", "mode": 0}}, backend=resolve("numpy"))


def test_too_few_common_steps(planted):
    fields, eof, _ = planted
    with pytest.raises(ValueError, match="Only 3 yearly steps pair up"):
        joint.compute(fields, eof.isel(time=slice(0, 3)), params=PARAMS, backend=resolve("numpy"))
