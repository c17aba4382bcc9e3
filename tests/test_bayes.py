"""The bayes stage: a Bayesian GEV per cell against planted truth, ArviZ on its draws, and its refusals.

References: planted GEV parameters and return levels (scipy.stats.genextreme),
the maximum-likelihood fit of the distributions stage, and ArviZ's R-hat on the
stored (thinned) draws.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from pipeline import bayes, distributions, io
from pipeline.backend import resolve

N_YEARS, NLAT, NLON = 60, 3, 4
PARAMS = {"warmup": 200, "draws": 300, "seed": 3, "keep_draws": 50}


@pytest.fixture(scope="module")
def dist_ds() -> xr.Dataset:
    rng = np.random.default_rng(11)
    time = np.array([f"{y}-07-01" for y in range(1950, 1950 + N_YEARS)], dtype="datetime64[ns]")
    xi = np.linspace(-0.2, 0.3, NLAT * NLON).reshape(NLAT, NLON)
    x = stats.genextreme.rvs(-xi, loc=30.0, scale=5.0, size=(N_YEARS, NLAT, NLON), random_state=rng)
    fields = xr.Dataset({"field": (("time", "lat", "lon"), x, {"units": "mm"}),
                         "true_shape": (("lat", "lon"), xi)},
                        coords={"time": time, "lat": [10.0, 20.0, 30.0], "lon": [0.0, 10.0, 20.0, 30.0]},
                        attrs={"field_name": "rx1day"})
    out = distributions.compute(fields, params={"families": ["gev"], "goodness_of_fit": {"n_bootstrap": 0}},
                                backend=resolve("numpy"))
    out["true_shape"] = fields["true_shape"]
    return out


def test_posterior_against_planted_truth_and_the_mle(dist_ds):
    out = bayes.compute(dist_ds, params=PARAMS, backend=resolve("numpy"))
    assert out["rhat"].max() < 1.05 and out["ess_bulk"].min() > 200
    mean = out["posterior_mean"]
    mle = dist_ds[["loc", "scale", "shape"]].sel(family="gev")
    # 60 values a cell: the posterior mean is near the MLE (within one posterior sd; the shape prior pulls a little)
    for k in ("loc", "scale"):
        assert np.all(np.abs(mean.sel(param=k) - mle[k]) < out["posterior_sd"].sel(param=k))
    truth = stats.genextreme.ppf(0.99, -dist_ds["true_shape"].values, 30.0, 5.0)
    lo, hi = (out[f"return_level_{b}"].sel(return_period=100.0).values for b in ("lower", "upper"))
    assert np.mean((lo <= truth) & (truth <= hi)) >= 0.75  # 12 cells, 90 % intervals
    assert np.all(lo < out["return_level_median"].sel(return_period=100.0).values)
    # the shape prior pulls towards +0.1, never outside (-0.5, 0.5)
    assert float(out["shape"].min()) > -0.5 and float(out["shape"].max()) < 0.5
    assert out["p_shape_positive"].dims == ("lat", "lon")
    assert list(out["return_period"].values) == [10.0, 50.0, 100.0]  # the distributions stage's periods


def test_stored_draws_open_in_arviz(dist_ds, tmp_path):
    az = pytest.importorskip("arviz")
    target = tmp_path / "bayes" / "rx1day.zarr"
    source = io.write_store(dist_ds, tmp_path / "distributions" / "rx1day.zarr", stage="distributions")
    bayes.run(source, target, params=PARAMS, backend="numpy")
    back = io.open_store(target)
    assert back["loc"].dims == ("chain", "draw", "lat", "lon") and back.sizes["draw"] == 50
    idata = az.convert_to_inference_data(back[["loc", "scale", "shape"]])
    rhat = az.rhat(idata)
    assert float(rhat["shape"].max()) < 1.1
    assert back.attrs["pipeline_stage"] == "bayes"


def test_refusals(dist_ds):
    with pytest.raises(ValueError, match="bayes.sampler must be hmc or rwm"):
        bayes.compute(dist_ds, params={"sampler": "nuts"}, backend=resolve("numpy"))
    with pytest.raises(ValueError, match="unknown key"):
        bayes.compute(dist_ds, params={"n_chains": 4}, backend=resolve("numpy"))
    peaks = dist_ds.assign_attrs(series="exceedances")
    with pytest.raises(ValueError, match="describes maxima of blocks"):
        bayes.compute(peaks, params=PARAMS, backend=resolve("numpy"))
