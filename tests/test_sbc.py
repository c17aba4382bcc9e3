"""The sbc stage: its store and figure, the stated power of its rank test, and its refusals.

References: the chi-squared test recomputed by scipy.stats.chisquare on the
stored counts; the power of the test checked by simulating ranks under each
stated alternative (a Gaussian sampler off in mean or sd); the prior draws
against scipy's inverse-gamma law.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import yaml
from scipy import stats

from pipeline import config, figures, io, sbc
from pipeline.backend import resolve
from pipeline.kernels import calibration as kcal

SMALL = {"cells": 200, "samplers": ["hmc", "rejection"], "warmup": 150, "seed": 2}


@pytest.fixture(scope="module")
def normal_ds() -> xr.Dataset:
    return sbc.compute("normal", params=SMALL, backend=resolve("numpy"))


def test_store_layout_and_the_test_recomputed_by_scipy(normal_ds):
    ds = normal_ds
    assert list(ds["sampler"].values) == ["hmc", "hmc", "rejection", "rejection"]
    assert list(ds["param"].values) == ["mu", "log_sigma"] * 2
    assert ds.sizes == {"test": 4, "cell": 200, "bin": 20, "alternative": 4}
    rank = ds["rank"].values
    assert rank.min() >= 0 and rank.max() <= 99
    for t in range(4):
        counts = np.bincount(rank[t] // 5, minlength=20)
        np.testing.assert_array_equal(ds["counts"].values[t], counts)
        ref = stats.chisquare(counts)
        assert float(ds["statistic"][t]) == pytest.approx(ref.statistic, rel=1e-12)
        assert float(ds["p_value"][t]) == pytest.approx(ref.pvalue, rel=1e-9)
    # exact-posterior samplers on a correct model: no rejection at this size (p-values well above 0.001)
    assert float(ds["p_value"].min()) > 1e-3
    np.testing.assert_array_equal(ds["passed"].values, (ds["p_value"].values > 0.01).astype(np.int8))
    # the truth is the prior draw: sigma^2 ~ InvGamma(a0 = 3, b0 = 2), so 2 log_sigma ~ log InvGamma
    s2 = np.exp(2.0 * ds["truth"].sel(test=1).values)
    assert stats.kstest(s2, stats.invgamma(3.0, scale=2.0).cdf).pvalue > 1e-3


@pytest.mark.parametrize("shift, sd_ratio", [(0.25, 1.0), (0.0, 0.8), (0.0, 1.0)])
def test_stated_power_matches_simulated_rejections(shift, sd_ratio):
    """The non-central chi-squared power equals the rejection rate of the rank test on ranks simulated from the
    alternative (a Gaussian sampler off by ``shift`` posterior sd, its sd times ``sd_ratio``)."""
    cells, n_bins, level, L, reps = 1000, 20, 0.01, 99, 400
    rng = np.random.default_rng(0)
    rejected = 0
    for _ in range(reps):
        z = rng.standard_normal(cells)
        draws = shift + sd_ratio * rng.standard_normal((L, cells))
        ranks = np.sum(draws < z, axis=0)
        rejected += kcal.rank_uniformity(ranks, L + 1, n_bins)[2] <= level
    stated = sbc.power(cells, n_bins, level, shift, sd_ratio)
    se = np.sqrt(stated * (1 - stated) / reps)
    assert abs(rejected / reps - stated) < 4 * se + 0.01
    if shift == 0.0 and sd_ratio == 1.0:
        assert stated == pytest.approx(level, rel=1e-9)


def test_bin_probabilities_of_the_alternatives():
    np.testing.assert_allclose(sbc.bin_probabilities(20, 0.0, 1.0), np.full(20, 0.05), rtol=1e-12)
    wide = sbc.bin_probabilities(20, 0.0, 1.2)  # a sampler too wide: ranks pile up in the middle
    narrow = sbc.bin_probabilities(20, 0.0, 0.8)  # too narrow: at both ends
    assert wide[10] > 0.05 > wide[0] and narrow[0] > 0.05 > narrow[10]
    assert sbc.bin_probabilities(20, 0.5, 1.0).sum() == pytest.approx(1.0)


def test_store_and_figure_are_written(normal_ds, tmp_path):
    store = io.write_store(normal_ds, tmp_path / "sbc" / "normal.zarr", stage="sbc")
    back = io.open_store(store)
    np.testing.assert_array_equal(back["rank"].values, normal_ds["rank"].values)
    assert list(back["sampler"].values) == list(normal_ds["sampler"].values)
    png = tmp_path / "sbc_ranks_normal.png"
    figures.make("sbc_ranks", store, png, params={})
    assert png.stat().st_size > 10_000
    fig = figures.sbc_ranks(back)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 4
    assert all(ax.get_xlabel() or ax.get_ylabel() or ax.get_title() for ax in panels)


def test_a_failed_test_is_drawn_red_and_counted(normal_ds):
    ds = normal_ds.copy(deep=True)
    ds["p_value"][0] = 1e-6
    fig = figures.sbc_ranks(ds)
    titles = {ax.get_title(): ax.title.get_color() for ax in fig.axes if ax.axison}
    assert sum(color == "#c44e52" for color in titles.values()) == 1


@pytest.mark.parametrize("params, needle", [
    ({"samplers": ["nuts"]}, "sbc.samplers"),
    ({"n_bins": 7}, "must divide sbc.n_ranks"),
    ({"cells": 5}, "sbc.cells"),
    ({"gev": {"prior_sd": 1.0}}, "sbc.gev has unknown key"),
    ({"draws": 10}, "sbc has unknown key"),
])
def test_bad_settings_are_refused_in_one_sentence(params, needle):
    with pytest.raises(ValueError, match=needle):
        sbc.check_params(params)
    with pytest.raises(ValueError, match="sbc case must be one of"):
        sbc.make_case("poisson", sbc.check_params({}), resolve("numpy"))


def test_the_config_check_refuses_bins_that_do_not_divide_the_ranks(tmp_path):
    from pathlib import Path
    demo = yaml.safe_load((Path(__file__).parents[1] / "config" / "synthetic.yaml").read_text())
    demo["sbc"] = {"cases": ["normal"], "n_ranks": 99, "n_bins": 30}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(demo))
    with pytest.raises(config.ConfigError, match="sbc.n_bins"):
        config.check([path])
