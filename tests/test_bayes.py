"""The bayes stage: a Bayesian GEV per cell against planted truth, ArviZ on its draws, and its refusals.

References: planted GEV parameters and return levels (scipy.stats.genextreme),
the maximum-likelihood fit of the distributions stage, ArviZ's R-hat on the
stored (thinned) draws, HMC's posterior for the rejection and VI samplers,
and, for the held-out calibration, the uniformity of the PIT of a stationary
planted GEV (and its failure under a planted trend) and a brute-force CRPS.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from pipeline import bayes, bayes_predictive, distributions, io
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
    with pytest.raises(ValueError, match="bayes.sampler must be one of hmc, rwm, rejection, vi"):
        bayes.compute(dist_ds, params={"sampler": "nuts"}, backend=resolve("numpy"))
    with pytest.raises(ValueError, match="unknown key"):
        bayes.compute(dist_ds, params={"n_chains": 4}, backend=resolve("numpy"))
    peaks = dist_ds.assign_attrs(series="exceedances")
    with pytest.raises(ValueError, match="describes maxima of blocks"):
        bayes.compute(peaks, params=PARAMS, backend=resolve("numpy"))
    with pytest.raises(ValueError, match="bayes.vi_family must be one of meanfield, fullrank"):
        bayes.compute(dist_ds, params={"sampler": "vi", "vi_family": "diag"}, backend=resolve("numpy"))
    with pytest.raises(ValueError, match="bayes.khat_max must be a positive number"):
        bayes.compute(dist_ds, params={"khat_max": 0}, backend=resolve("numpy"))
    with pytest.raises(ValueError, match=r"bayes.holdout: 51 leaves 9 of the 60 values of the rx1day series to fit; "
                       r"keep at least 10 \(holdout <= 50\)"):
        bayes.compute(dist_ds, params={**PARAMS, "holdout": 51}, backend=resolve("numpy"))


def test_independent_draws_are_not_judged_by_chain_diagnostics(dist_ds):
    """Thresholds no chain could meet flag every HMC cell, but no cell drawn by exact rejection: its R-hat and ESS
    are noise about 1 and chains x draws, and its envelope is what says whether to trust it."""
    strict = {**PARAMS, "rhat_max": 1.0 + 1e-12, "ess_min": 1e9}
    rej = bayes.compute(dist_ds, params={**strict, "sampler": "rejection"}, backend=resolve("numpy"))
    by_rejection = rej["method"] == 2
    assert int(by_rejection.sum()) > 0
    assert not bool(rej["failed"].where(by_rejection, 0).any())
    assert bool(rej["failed"].where(~by_rejection, 1).all())  # any HMC fallback cell is flagged
    hmc = bayes.compute(dist_ds, params={**strict, "warmup": 50, "draws": 50}, backend=resolve("numpy"))
    assert int(hmc["failed"].sum()) == dist_ds.sizes["lat"] * dist_ds.sizes["lon"]


# ---------------------------------------------------------------- rejection and VI against HMC
@pytest.fixture(scope="module")
def by_sampler(dist_ds) -> dict[str, xr.Dataset]:
    return {s: bayes.compute(dist_ds, params={**PARAMS, "sampler": s}, backend=resolve("numpy"))
            for s in ("hmc", "rejection", "vi")}


def test_rejection_draws_are_exact_and_agree_with_hmc(by_sampler):
    hmc, rej = by_sampler["hmc"], by_sampler["rejection"]
    meanings = rej["method"].attrs["flag_meanings"].split()
    assert meanings == ["not_sampled", "hmc", "rwm", "rejection", "vi"]
    assert list(rej["method"].attrs["flag_values"]) == [-1, 0, 1, 2, 3] and rej["method"].dtype == np.int8
    assert np.all(rej["method"] == 2) and rej.attrs["n_fallback"] == 0  # every envelope covered its posterior
    rate = rej["rejection_acceptance"].values
    assert np.all((rate > 0.1) & (rate < 0.6))  # t_4 envelope 1.2x the Laplace scale, margin e^-0.5
    # independent draws as 4 pseudo-chains of 300: R-hat about 1, ESS about 1200
    n = PARAMS["draws"] * 4
    assert float(rej["rhat"].max()) < 1.02  # the max of 72 rank-normalized R-hats of 8 split pseudo-chains of 150
    assert 0.5 * n < float(rej["ess_bulk"].min()) and float(rej["ess_bulk"].max()) < 1.5 * n
    assert np.all(np.isnan(rej["accept"])) and float(rej["divergences"].max()) == 0.0
    # the same posterior: means within a quarter of a posterior sd (Monte Carlo error about sd/30)
    sd = hmc["posterior_sd"]
    assert float(np.abs((rej["posterior_mean"] - hmc["posterior_mean"]) / sd).max()) < 0.25
    np.testing.assert_allclose(rej["posterior_sd"], sd, rtol=0.2)


def test_vi_fits_are_close_to_hmc_and_its_khat_is_mostly_good(by_sampler):
    hmc, fit = by_sampler["hmc"], by_sampler["vi"]
    khat = fit["khat"].values
    assert np.isfinite(khat).all() and np.mean(khat < 0.7) > 0.5  # GEV posteriors are skewed: 0.4-0.8, noisy
    assert np.median(khat) < 0.7
    assert fit.attrs["vi_family"] == "fullrank" and fit.attrs["khat_max"] == 0.7
    # cells above 0.7 were re-sampled by HMC (method 0), the others keep their VI draws (method 3)
    np.testing.assert_array_equal(fit["method"].values, np.where(khat > 0.7, 0, 3))
    assert fit.attrs["n_fallback"] == int(np.sum(khat > 0.7))
    kept = fit["method"] == 3
    assert np.all(np.isnan(fit["accept"].where(kept))) and np.all(np.isfinite(fit["accept"].where(~kept, 0.5)))
    # a Gaussian q in (mu, log sigma, xi) is close to, not equal to, the posterior: within half a posterior sd
    z = np.abs((fit["posterior_mean"] - hmc["posterior_mean"]) / hmc["posterior_sd"])
    assert float(z.max()) < 0.5
    np.testing.assert_allclose(fit["posterior_sd"], hmc["posterior_sd"], rtol=0.35)
    assert float(fit["rhat"].where(kept).max()) < 1.02  # pseudo-chains of independent draws


def test_fallback_to_hmc_when_the_envelope_or_the_fit_fails(dist_ds):
    fast = {**PARAMS, "draws": 150, "ess_min": 100.0, "rhat_max": 1.05}  # short chains: looser thresholds
    # a Gaussian envelope at half the Laplace scale, bounded by 10 pilot proposals: exceeded at once
    narrow = bayes.compute(dist_ds, params={**fast, "sampler": "rejection", "rejection_df": float("inf"),
                                            "rejection_scale": 0.5, "rejection_pilot": 10}, backend=resolve("numpy"))
    assert np.all(narrow["method"] == 0) and narrow.attrs["n_fallback"] == 12
    assert np.all(np.isfinite(narrow["accept"])) and float(narrow["rhat"].max()) < 1.05  # HMC's chains
    # every cell fails khat_max = 0.05: re-sampled by HMC, or (vi_fallback: false) kept and flagged
    strict = {**fast, "sampler": "vi", "khat_max": 0.05}
    redo = bayes.compute(dist_ds, params=strict, backend=resolve("numpy"))
    assert np.all(redo["method"] == 0) and np.all(redo["failed"] == 0)
    assert np.all(redo["khat"] > 0.05)  # VI's own diagnostic is kept, the reason for the fallback
    kept = bayes.compute(dist_ds, params={**strict, "vi_fallback": False}, backend=resolve("numpy"))
    assert np.all(kept["method"] == 3) and np.all(kept["failed"] == 1) and kept.attrs["n_failed"] == 12


# ---------------------------------------------------------------- held-out calibration
N_TRAIN, N_HELD = 30, 10
CALIB = {"warmup": 150, "draws": 100, "seed": 5, "keep_draws": 20, "holdout": N_HELD, "ess_min": 100.0,
         "rhat_max": 1.05}


def planted_series(shift: float = 0.0, nlat: int = 8, nlon: int = 10) -> xr.Dataset:
    """A distributions-store stand-in: GEV(30, 5, xi) block maxima, the held-out years raised by ``shift`` scales
    times a ramp from 1/N_HELD to 1 (a trend the fit never saw)."""
    rng = np.random.default_rng(21)
    xi = rng.uniform(-0.15, 0.25, size=(nlat, nlon))
    x = stats.genextreme.rvs(-xi, loc=30.0, scale=5.0, size=(N_TRAIN + N_HELD, nlat, nlon), random_state=rng)
    x[N_TRAIN:] += 5.0 * shift * np.linspace(1.0 / N_HELD, 1.0, N_HELD)[:, None, None]
    return xr.Dataset({"series": (("sample", "lat", "lon"), x, {"units": "mm"})},
                      coords={"sample": np.arange(N_TRAIN + N_HELD), "lat": np.linspace(40.0, 54.0, nlat),
                              "lon": np.linspace(-10.0, 17.0, nlon)},
                      attrs={"field_name": "rain", "field_units": "mm", "series": "block_maxima",
                             "series_description": "annual maxima"})


@pytest.fixture(scope="module")
def calibrated() -> xr.Dataset:
    return bayes.compute(planted_series(), params=CALIB, backend=resolve("numpy"))


def test_pit_of_a_stationary_gev_is_uniform_and_a_trend_piles_it_at_the_top(calibrated):
    out = calibrated
    assert out["pit"].dims == ("heldout", "lat", "lon")
    np.testing.assert_array_equal(out["heldout"].values, np.arange(N_TRAIN, N_TRAIN + N_HELD))
    pit = out["pit"].values
    assert np.isfinite(pit).all() and ((pit > 0) & (pit < 1)).all()
    # 800 values: the stored chi-squared test on 10 bins, and scipy's KS test
    assert out.attrs["pit_n"] == pit.size and out.attrs["pit_bins"] == 10
    counts = np.bincount(np.floor(pit.ravel() * 10).astype(int), minlength=10)
    np.testing.assert_array_equal(out.attrs["pit_counts"], counts)
    np.testing.assert_allclose(out.attrs["pit_chi2_pvalue"], stats.chisquare(counts).pvalue, rtol=1e-8)
    assert out.attrs["pit_chi2_pvalue"] > 1e-3 and stats.kstest(pit.ravel(), "uniform").pvalue > 1e-3
    # the posterior predictive beats the 30 training values as an ensemble, a little, on average
    assert -0.05 < float(out["crps_skill"].mean()) < 0.1
    np.testing.assert_allclose(out["crps_skill"], 1.0 - out["crps"] / out["crps_climatology"])
    trend = bayes.compute(planted_series(shift=2.0), params=CALIB, backend=resolve("numpy"))
    np.testing.assert_array_equal(trend["posterior_mean"], out["posterior_mean"])  # the same training years
    assert trend.attrs["pit_chi2_pvalue"] < 1e-3
    top = np.bincount(np.floor(trend["pit"].values.ravel() * 10).astype(int), minlength=10)
    assert top.argmax() == 9 and top[9] > 2.0 * top.mean()  # piled at the top
    assert float(trend["crps"].mean()) > float(out["crps"].mean())


def test_scores_against_brute_force_crps_and_pit(xp, to_np):
    rng = np.random.default_rng(8)
    S, cells = 400, 3
    params = np.stack([30.0 + rng.normal(0, 0.5, (S, cells)), 5.0 * np.exp(rng.normal(0, 0.1, (S, cells))),
                       rng.uniform(-0.2, 0.3, (S, cells))])
    train = stats.genextreme.rvs(-0.1, loc=30.0, scale=5.0, size=(25, cells), random_state=rng)
    held = stats.genextreme.rvs(-0.1, loc=30.0, scale=5.0, size=(2, cells), random_state=rng)
    held[1, 2] = np.nan  # a missing held-out value: NaN scores there only
    got = {k: to_np(v) for k, v in bayes_predictive.scores(xp.asarray(params), xp.asarray(train), xp.asarray(held),
                                                           seed=9).items()}
    for j in range(2):
        sim = to_np(bayes_predictive.predictive_draws(xp.asarray(params), seed=9, j=j))
        for c in range(cells):
            y = held[j, c]
            if np.isnan(y):
                assert np.isnan([got[k][j, c] for k in got]).all()
                continue
            x, t = sim[:, c], train[:, c]
            brute = np.mean(np.abs(x - y)) - 0.5 * np.mean(np.abs(x[:, None] - x[None, :]))
            np.testing.assert_allclose(got["crps"][j, c], brute, rtol=1e-10)
            clim = np.mean(np.abs(t - y)) - 0.5 * np.mean(np.abs(t[:, None] - t[None, :]))
            np.testing.assert_allclose(got["crps_climatology"][j, c], clim, rtol=1e-10)
            below = np.sum(x < y)
            assert below / (S + 1) < got["pit"][j, c] < (below + 1) / (S + 1)
    # one GEV draw per posterior draw, scipy's genextreme with c = -xi
    one = np.broadcast_to(np.array([30.0, 5.0, 0.2])[:, None, None], (3, 4000, 1)).copy()
    sim = to_np(bayes_predictive.predictive_draws(xp.asarray(one), seed=1))[:, 0]
    assert stats.kstest(sim, stats.genextreme(-0.2, loc=30.0, scale=5.0).cdf).pvalue > 1e-3


def test_holdout_variables_are_written_and_labelled(tmp_path):
    series = planted_series(nlat=2, nlon=3).assign_coords(year=("sample", 1981 + np.arange(N_TRAIN + N_HELD)))
    source = io.write_store(series, tmp_path / "distributions" / "rain.zarr", stage="distributions")
    target = tmp_path / "bayes" / "rain.zarr"
    bayes.run(source, target, params={**CALIB, "sampler": "vi", "vi_iter": 200}, backend="numpy")
    back = io.open_store(target)
    for name in ("pit", "crps", "crps_climatology", "crps_skill", "khat", "method"):
        assert name in back and back[name].attrs["long_name"], name
    assert back["crps"].attrs["units"] == "mm" and back["pit"].sizes["heldout"] == N_HELD
    np.testing.assert_array_equal(back["pit"]["year"], np.arange(2011, 2021))  # a coordinate along sample follows
    assert back.attrs["holdout"] == N_HELD and "correlated across cells" in back.attrs["pit_test"]
