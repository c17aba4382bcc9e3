"""Tests of pipeline.figures: each family renders, shows the store's numbers, saves atomically,
and draws proper maps on every kind of domain.

Inputs are small Datasets laid out exactly as docs/stores.md describes (units
as the stages write them, e.g. ``(m)/(K)``), built from the planted fields of
:mod:`pipeline.synthetic` (with a land mask, so NaN cells occur) on the grids
of :data:`DOMAINS`. Expected numbers are recomputed here with NumPy.
"""

from __future__ import annotations

import os
import re
import warnings

import cartopy
import cartopy.crs as ccrs
import numpy as np
import pytest
import xarray as xr
from cartopy.io import shapereader
from cartopy.mpl.feature_artist import FeatureArtist
from cartopy.mpl.geoaxes import GeoAxes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection, QuadMesh
from matplotlib.figure import Figure
from matplotlib.image import imread
from PIL import Image
from scipy import stats

from pipeline import figures, io, synthetic
from pipeline.figures import _common, fits, maps
from test_figures_extremes import extremes_store, joint_store

N_TIME, N_LAT, N_LON = 24, 10, 20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: Synthetic grids (lat range, lon range) and the projection the rule must choose for them.
DOMAINS = {
    "regional": ((20.0, 80.0), (-90.0, 40.0), ccrs.LambertConformal),  # North Atlantic
    "wide": ((-30.0, 30.0), (0.0, 360.0), ccrs.Robinson),  # tropical band, all longitudes
    "global": ((-90.0, 90.0), (0.0, 360.0), ccrs.Robinson),
    "polar": ((60.0, 90.0), (0.0, 360.0), ccrs.NorthPolarStereo),
    "dateline": ((-20.0, 60.0), (120.0, 250.0), ccrs.PlateCarree),  # 120°E-110°W, across the tropics
}
MAP_KINDS = [k for k in figures.KINDS if k not in ("eof_spectrum", "pc_timeseries", "distribution_fits", "sbc_ranks")]


# ---------------------------------------------------------------- contract-following stores
def _planted(domain: str | None = None) -> xr.Dataset:
    ranges = {} if domain is None else {"lat_range": DOMAINS[domain][0], "lon_range": DOMAINS[domain][1]}
    return synthetic.planted_modes(n_time=N_TIME, n_lat=N_LAT, n_lon=N_LON, variances=(9.0, 4.0, 1.0, 0.5),
                                   land_fraction=0.15, seed=3, **ranges)


def eof_store(domain: str | None = None) -> xr.Dataset:
    src = _planted(domain)
    eig = src["true_variance"].values
    w = np.sqrt(np.cos(np.deg2rad(src["lat"].values)))[None, :, None]
    eof = src["true_eof"].values
    cov = eof * np.sqrt(eig)[:, None, None] / w
    coords = {"time": src["time"], "lat": src["lat"], "lon": src["lon"], "mode": src["mode"]}
    return xr.Dataset(
        {
            "eof": (("mode", "lat", "lon"), eof, {"units": "1", "long_name": "empirical orthogonal function"}),
            "pc": (("time", "mode"), src["true_pc"].values, {"units": "K", "long_name": "principal component"}),
            "eigenvalue": (("mode",), eig, {"units": "(K)^2", "long_name": "eigenvalue"}),
            "variance_fraction": (("mode",), 0.9 * eig / eig.sum(), {"units": "1", "long_name": "variance fraction"}),
            "north_error": (("mode",), eig * np.sqrt(2.0 / N_TIME), {"units": "(K)^2", "long_name": "North error"}),
            "eof_correlation": (("mode", "lat", "lon"), np.tanh(cov), {"units": "1", "long_name": "correlation"}),
            "eof_covariance": (("mode", "lat", "lon"), cov, {"units": "K", "long_name": "covariance with unit PC"}),
        },
        coords=coords,
        attrs={"field_name": "sst", "field_units": "K", "method": "time", "weighting": "sqrt_coslat",
               "n_samples": N_TIME, "rank": 4},
    )


def _land(domain: str | None = None) -> np.ndarray:
    """The planted land mask (True where no value), shared by all stores."""
    return np.isnan(_planted(domain)["field"].values[0])


def regression_store(domain: str | None = None) -> xr.Dataset:
    rng = np.random.default_rng(5)
    land = _land(domain)
    names = np.array(["sst_pc1", "sst_pc2", "sst_pc3", "sst_pc4"], dtype=object)
    coef = rng.normal(size=(4, N_LAT, N_LON)) * np.array([3.0, 1.0, 0.5, 0.2])[:, None, None]
    coef[:, land] = np.nan
    r2 = rng.uniform(0, 1, (N_LAT, N_LON))
    r2[land] = np.nan
    alphas = np.array([0.1, 1.0, 10.0])
    src = eof_store(domain)
    return xr.Dataset(
        {
            "coef": (("predictor", "lat", "lon"), coef, {"units": "(m)/(K)", "long_name": "regression coefficient"}),
            "intercept": (("lat", "lon"), np.where(land, np.nan, 5500.0), {"units": "m", "long_name": "intercept"}),
            "r2": (("lat", "lon"), r2, {"units": "1", "long_name": "coefficient of determination"}),
            "alpha": ((), 10.0, {"units": "1", "long_name": "chosen penalty"}),
            "alpha_grid": (("alpha_candidate",), alphas, {"units": "1", "long_name": "penalty grid"}),
            "cv_score": (("alpha_candidate",), np.array([3.0, 2.0, 2.5]), {"units": "m2", "long_name": "GCV score"}),
            "predictor_mean": (("predictor",), np.zeros(4), {"units": "K", "long_name": "predictor mean"}),
            "predictor_std": (("predictor",), np.ones(4), {"units": "K", "long_name": "predictor std"}),
        },
        coords={"predictor": names, "lat": src["lat"], "lon": src["lon"]},
        attrs={"field_name": "z500", "field_units": "m", "method": "ridge", "rank": 4,
               "condition_number": 1.5, "n_samples": N_TIME, "period": "1950 .. 1973", "alignment": "yearly", "lag": 0},
    )


def distributions_store(families: tuple[str, ...] = ("normal", "gumbel_r", "gumbel_l"),
                        domain: str | None = None) -> xr.Dataset:
    rng = np.random.default_rng(7)
    land = _land(domain)
    src = eof_store(domain)
    shape = (len(families), N_LAT, N_LON)
    loglik = -100.0 + 8.0 * rng.standard_normal(shape)
    loglik[:, land] = np.nan
    aic = 2 * 2 - 2 * loglik
    best = np.where(land, -1, np.argmin(np.where(np.isnan(aic), np.inf, aic), axis=0)).astype(np.int64)
    var = lambda a, u, n: (("family", "lat", "lon"), a, {"units": u, "long_name": n})  # noqa: E731
    return xr.Dataset(
        {
            "loc": var(np.where(land, np.nan, 5500.0 + rng.normal(size=shape)), "m", "location"),
            "scale": var(np.where(land, np.nan, 50.0 + rng.uniform(size=shape)), "m", "scale"),
            "loglik": var(loglik, "1", "log-likelihood"),
            "aic": var(aic, "1", "Akaike information criterion"),
            "ks": var(np.where(land, np.nan, rng.uniform(0.02, 0.2, shape)), "1", "Kolmogorov-Smirnov statistic"),
            "best_family": (("lat", "lon"), best, {"long_name": "family with the lowest AIC",
                                                   "flag_values": list(range(len(families))),
                                                   "flag_meanings": " ".join(families), "units": "1"}),
        },
        coords={"family": np.array(families, dtype=object), "lat": src["lat"], "lon": src["lon"]},
        attrs={"field_name": "z500", "field_units": "m"},
    )


def posterior_store(domain: str | None = None) -> xr.Dataset:
    rng = np.random.default_rng(11)
    land = _land(domain)
    src = eof_store(domain)
    names = np.array(["sst_pc1", "sst_pc2", "sst_pc3"], dtype=object)
    mean = rng.normal(size=(3, N_LAT, N_LON)) * 2.0
    sd = rng.uniform(0.5, 1.5, (3, N_LAT, N_LON))
    mean[:, land] = np.nan
    z = 1.6448536269514722
    p = stats.norm.cdf(mean / sd)
    var = lambda a, u, n: (("predictor", "lat", "lon"), a, {"units": u, "long_name": n})  # noqa: E731
    return xr.Dataset(
        {
            "mean": var(mean, "(m)/(K)", "posterior mean"),
            "sd": var(np.where(land, np.nan, sd), "(m)/(K)", "posterior sd"),
            "ci_lower": var(mean - z * sd, "(m)/(K)", "lower credible bound"),
            "ci_upper": var(mean + z * sd, "(m)/(K)", "upper credible bound"),
            "p_positive": var(p, "1", "posterior probability of a positive coefficient"),
            "sigma": (("lat", "lon"), np.where(land, np.nan, 30.0), {"units": "m", "long_name": "noise sd"}),
        },
        coords={"predictor": names, "lat": src["lat"], "lon": src["lon"]},
        attrs={"field_name": "z500", "field_units": "m", "n_draws": 1000, "seed": 1, "credible_level": 0.9,
               "alpha": 10.0, "prior_a0": 0.01, "prior_b0": 0.01},
    )


def _on_grid(domain: str | None) -> dict[str, np.ndarray]:
    s = eof_store(domain)
    return {"lat": s["lat"].values, "lon": s["lon"].values}


def bayes_store(domain: str | None = None) -> xr.Dataset:
    """A ``bayes/{field}.zarr`` store on a test domain: planted return levels and diagnostics."""
    g = _on_grid(domain)
    shape = (g["lat"].size, g["lon"].size)
    rng = np.random.default_rng(9)
    med = 50.0 + 10.0 * rng.random(shape)
    per = np.array([10.0, 100.0])
    level = np.stack([med * 0.8, med])
    ll, par = ("lat", "lon"), ("param", "lat", "lon")
    pit = rng.random((5, *shape))
    return xr.Dataset(
        {"pit": (("heldout", *ll), pit), "crps_skill": (ll, 0.3 * rng.standard_normal(shape)),
         "return_level_median": (("return_period", *ll), level, {"units": "mm day-1"}),
         "return_level_lower": (("return_period", *ll), level - 5.0, {"units": "mm day-1"}),
         "return_level_upper": (("return_period", *ll), level + 8.0 + rng.random(shape), {"units": "mm day-1"}),
         "rhat": (par, 1.0 + 0.02 * rng.random((3, *shape))), "ess_bulk": (par, 300 + 3000 * rng.random((3, *shape)))},
        coords={"return_period": per, "param": ["loc", "scale", "shape"], "heldout": np.arange(35, 40), **g},
        attrs={"field_name": "rain", "field_units": "mm day-1", "sampler": "hmc", "chains": 4, "draws": 500,
               "pit_bins": 10, "pit_chi2": 8.0, "pit_chi2_pvalue": 0.53,
               "credible_level": 0.9, "rhat_max": 1.01, "ess_min": 400.0, "series": "annual maxima"})


def sbc_store(domain: str | None = None) -> xr.Dataset:
    """An ``sbc/{case}.zarr`` store (no grid): ranks of two samplers on a two-parameter model."""
    rng = np.random.default_rng(4)
    ranks = rng.integers(0, 100, size=(4, 200))
    counts = np.stack([np.bincount(r // 5, minlength=20) for r in ranks])
    return xr.Dataset(
        {"rank": (("test", "cell"), ranks), "counts": (("test", "bin"), counts),
         "p_value": ("test", [0.4, 0.2, 0.7, 1e-5])},
        coords={"sampler": ("test", ["hmc", "hmc", "rwm", "rwm"]), "param": ("test", ["mu", "log_sigma"] * 2),
                "bin": np.arange(20)},
        attrs={"case": "normal", "cells": 200, "n_ranks": 99, "level": 0.01})


STORES = {"eof": eof_store, "regression": regression_store, "bayes": bayes_store, "sbc": sbc_store,
          "distributions": lambda domain=None: extremes_store(**_on_grid(domain)),
          "joint": lambda domain=None: joint_store(**_on_grid(domain)), "posterior": posterior_store}
PARAMS = {"n_maps": 3, "dpi": 50}


# ---------------------------------------------------------------- helpers
def map_meshes(fig: Figure) -> list[QuadMesh]:
    return [art for ax in panel_axes(fig) for art in ax.collections if isinstance(art, QuadMesh)]


def panel_axes(fig: Figure) -> list:
    """The figure's axes without the colorbar axes."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def plotted(mesh: QuadMesh) -> np.ndarray:
    """The mesh's array with masked cells as NaN, shaped (lat, lon)."""
    return np.ma.filled(np.ma.asarray(mesh.get_array(), dtype=float), np.nan)


def colorbars(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def geo_axes(fig: Figure) -> list[GeoAxes]:
    return [ax for ax in fig.axes if isinstance(ax, GeoAxes)]


def build(kind: str, ds: xr.Dataset, n_maps: int = 3, projection: str = "auto") -> Figure:
    return figures.KINDS[kind][1](ds, figures.Options(n_maps, projection))


def store_for(kind: str, domain: str | None = None) -> xr.Dataset:
    return STORES[figures.KINDS[kind][0]](domain)


def degree_labels(fig: Figure) -> list[str]:
    """The degree labels of every map, laid out and drawn first as save_png does."""
    fig.draw_without_rendering()
    FigureCanvasAgg(fig).draw()
    return [t.get_text() for ax in geo_axes(fig) for t in ax.texts if t.get_gid() == "grid_label" and t.get_visible()]


# ---------------------------------------------------------------- rendering through make()
@pytest.mark.parametrize("kind", list(figures.KINDS))
def test_make_writes_png_from_store(kind, tmp_path, caplog):
    what = figures.KINDS[kind][0]
    store = io.write_store(STORES[what](), tmp_path / f"{what}.zarr", stage=what)
    out = tmp_path / "fig" / f"{kind}.png"
    with caplog.at_level("INFO", logger="pipeline.figures"):
        figures.make(kind, store, out, params=PARAMS)
    assert f"figure {kind} of {store}" in caplog.text
    assert out.read_bytes()[:8] == PNG_MAGIC
    with Image.open(out) as png:
        assert png.format == "PNG" and png.text["Source"] == str(store)
        assert png.text["Title"].startswith(kind)
    assert out.stat().st_size > 5_000
    image = imread(out)
    assert image.ndim == 3 and 150 < image.shape[1] < 1000 and 100 < image.shape[0] < 1500
    assert image.std() > 0.05  # not a blank canvas
    assert sorted(os.listdir(out.parent)) == [out.name]  # no temporary file left behind


@pytest.mark.parametrize("kind", list(figures.KINDS))
def test_every_panel_is_labelled(kind):
    fig = build(kind, store_for(kind))
    assert fig.get_layout_engine() is not None
    assert fig.get_suptitle() or len(panel_axes(fig)) == 1, kind
    for ax in panel_axes(fig):
        assert ax.get_title(), kind
        if not isinstance(ax, GeoAxes):  # maps are labelled by their gridlines (test_gridline_labels_*)
            assert ax.get_ylabel(), kind
    plots = [ax for ax in panel_axes(fig) if not isinstance(ax, GeoAxes)]
    assert not plots or plots[-1].get_xlabel(), kind  # panels sharing an x axis label it once, at the bottom
    for ax in colorbars(fig):
        label = ax.get_ylabel() or ax.get_xlabel()
        assert label and ")/(" not in label and "^" not in label, (kind, label)


# ---------------------------------------------------------------- EOF figures
def test_eof_spectrum_points_and_north_bars():
    ds = eof_store()
    fig = figures.eof_spectrum(ds)
    ax = panel_axes(fig)[0]
    line, _, (bars,) = ax.containers[0].lines
    eig = ds["eigenvalue"].values
    expected = 100.0 * 0.9 * eig / eig.sum()
    np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12)
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3, 4])
    half_widths = np.array([abs(seg[1, 1] - seg[0, 1]) / 2 for seg in bars.get_segments()])
    np.testing.assert_allclose(half_widths, expected * np.sqrt(2.0 / N_TIME), rtol=1e-12)
    assert "sst" in ax.get_title() and "%" in ax.get_ylabel()
    right = ax.child_axes[0]  # the same points as eigenvalues: percent · total variance / 100
    assert right.get_ylabel() == "Eigenvalue (K²)"  # from the store's "(K)^2"
    FigureCanvasAgg(fig).draw()
    total = eig.sum() / 0.9
    np.testing.assert_allclose(right.get_ylim(), np.array(ax.get_ylim()) * total / 100.0, rtol=1e-12)


def test_eof_maps_plot_covariance_with_symmetric_limits():
    ds = eof_store()
    fig = figures.eof_maps(ds, n_maps=3)
    meshes = map_meshes(fig)
    assert len(meshes) == 3 and len(colorbars(fig)) == 3  # one scale per panel
    for k, mesh in enumerate(meshes):
        values = ds["eof_covariance"].values[k]
        np.testing.assert_array_equal(plotted(mesh), values)  # NaN exactly on land
        vmax = np.nanpercentile(np.abs(values), 99)  # a few extreme cells do not wash out the pattern
        assert mesh.norm.vmin == -mesh.norm.vmax == pytest.approx(-vmax, rel=1e-12)
        assert mesh.colorbar.extend in ("max", "min", "both")  # the cells beyond are marked
        assert mesh.get_cmap().name.startswith("RdBu_r")
    titles = [ax.get_title() for ax in panel_axes(fig)]
    pct = 100 * ds["variance_fraction"].values
    assert titles[0] == f"EOF 1 ({pct[0]:.1f}% of variance)"
    assert meshes[0].colorbar.ax.get_ylabel() + meshes[0].colorbar.ax.get_xlabel() == "sst anomaly per σ of PC (K)"


def test_eof_maps_fall_back_to_eof_and_cap_n_maps():
    ds = eof_store().drop_vars("eof_covariance")
    fig = figures.eof_maps(ds, n_maps=10)
    meshes = map_meshes(fig)
    assert len(meshes) == 4 and len(geo_axes(fig)) == 4  # capped at the number of modes
    np.testing.assert_array_equal(plotted(meshes[3]), ds["eof"].values[3])


def test_eof_correlation_shares_one_scale_from_minus_one_to_one():
    ds = eof_store()
    fig = figures.eof_correlation(ds, n_maps=3)
    meshes = map_meshes(fig)
    assert len(meshes) == 3
    for k, mesh in enumerate(meshes):
        np.testing.assert_array_equal(plotted(mesh), ds["eof_correlation"].values[k])
        assert (mesh.norm.vmin, mesh.norm.vmax) == (-1.0, 1.0)
        assert mesh.get_cmap().name.startswith("RdBu_r")
    (cbar,) = colorbars(fig)  # one colorbar for the shared scale
    assert cbar.get_xlabel() == "correlation with the PC"
    assert [ax.get_title() for ax in panel_axes(fig)][1].startswith("EOF 2 (")


def test_pc_timeseries_are_standardized_pcs_against_year():
    ds = eof_store()
    fig = figures.pc_timeseries(ds, n_maps=2)
    axes = panel_axes(fig)
    assert len(axes) == 2
    pc = ds["pc"].values
    for k, ax in enumerate(axes):
        line = ax.lines[0]
        np.testing.assert_allclose(line.get_ydata(), pc[:, k] / pc[:, k].std(ddof=1), rtol=1e-12)
        np.testing.assert_allclose(line.get_xdata(), 1950 + np.arange(N_TIME) + 14 / 365, atol=0.01)
        assert "standardized" in ax.get_ylabel()
    assert [ax.get_xlabel() for ax in axes] == ["", "Year"]


def test_summary_shows_eof1_pc1_and_spectrum():
    ds = eof_store()
    fig = figures.summary(ds)
    geo, (ax_pc, ax_sp) = geo_axes(fig), [ax for ax in panel_axes(fig) if not isinstance(ax, GeoAxes)]
    assert len(geo) == 1 and len(panel_axes(fig)) == 3
    (mesh,) = map_meshes(fig)
    np.testing.assert_array_equal(plotted(mesh), ds["eof_covariance"].values[0])
    assert mesh.norm.vmin == -mesh.norm.vmax
    pc = ds["pc"].values[:, 0]
    np.testing.assert_allclose(ax_pc.lines[0].get_ydata(), pc / pc.std(ddof=1), rtol=1e-12)
    eig = ds["eigenvalue"].values
    np.testing.assert_allclose(ax_sp.containers[0].lines[0].get_ydata(), 90.0 * eig / eig.sum(), rtol=1e-12)
    pct = 100 * ds["variance_fraction"].values[0]
    assert f"{pct:.1f}%" in fig.get_suptitle() and "1950–1973" in fig.get_suptitle()
    assert mesh.colorbar.ax.get_ylabel() + mesh.colorbar.ax.get_xlabel() == "sst anomaly per σ of PC 1 (K)"


# ---------------------------------------------------------------- fitted-map figures
def test_regression_maps_coefficients_and_r2():
    ds = regression_store()
    fig = figures.regression_maps(ds, n_maps=3)
    meshes = map_meshes(fig)
    assert len(meshes) == 4 and len(geo_axes(fig)) == 4  # 3 coefficients + R²
    for k in range(3):
        values = ds["coef"].values[k]
        np.testing.assert_array_equal(plotted(meshes[k]), values)
        vmax = np.nanpercentile(np.abs(values), 99)
        assert meshes[k].norm.vmax == -meshes[k].norm.vmin == pytest.approx(vmax, rel=1e-12)
        assert meshes[k].colorbar.ax.get_xlabel() + meshes[k].colorbar.ax.get_ylabel() == "coefficient (m K⁻¹)"
    np.testing.assert_array_equal(plotted(meshes[3]), ds["r2"].values)
    title = fig.get_suptitle()
    assert "Ridge" in title and "α = 10" in title and "z500" in title and "1950 .. 1973" in title


def test_symmetric_norm_centres_on_zero_and_marks_the_clipped_side():
    values = np.r_[np.linspace(-1.0, 1.0, 199), 5.0, np.nan]
    norm, extend = _common.symmetric_norm(values)
    assert norm.vmin == -norm.vmax == pytest.approx(-np.percentile(np.abs(values[:-1]), 99))
    assert norm(0.0) == 0.5 and extend == "max"
    assert _common.symmetric_norm(-values)[1] == "min" and _common.symmetric_norm(np.zeros(3))[0].vmax == 1.0
    assert _common.symmetric_norm(np.linspace(-1, 1, 5), q=100)[1] == "neither"


def test_r2_colour_scale_ends_at_its_99th_percentile():
    ds = regression_store()
    ds["r2"] = 0.1 * ds["r2"]  # a weak fit: a fixed 0..1 scale would draw it uniformly dark
    ds["r2"][0, 0] = 0.9  # one outlier cell beyond the percentile
    mesh = map_meshes(figures.regression_maps(ds, n_maps=1))[1]
    assert mesh.norm.vmin == 0.0
    assert mesh.norm.vmax == pytest.approx(np.nanpercentile(ds["r2"].values, 99), rel=1e-12)
    assert mesh.norm.vmax < 0.2 and mesh.colorbar.extend == "max"


def test_regression_title_for_ols():
    ds = regression_store()
    ds["alpha"] = 0.0
    ds.attrs["method"] = "ols"
    assert "OLS" in fits.regression_title(ds) and "no penalty" in fits.regression_title(ds)


def test_distribution_map_best_family_and_aic_margin():
    ds = distributions_store()
    fig = figures.distribution_map(ds)
    best_mesh, delta_mesh = map_meshes(fig)
    best = ds["best_family"].values
    np.testing.assert_array_equal(plotted(best_mesh), np.where(best < 0, np.nan, best))
    cbar = best_mesh.colorbar
    labels = [t.get_text() for t in cbar.ax.get_yticklabels() + cbar.ax.get_xticklabels() if t.get_text()]
    assert [lab.split()[0] for lab in labels] == ["normal", "gumbel_r", "gumbel_l"]
    aic = ds["aic"].values
    two_lowest = np.partition(aic, 1, axis=0)[:2]
    np.testing.assert_allclose(plotted(delta_mesh), two_lowest[1] - two_lowest[0], rtol=1e-12)
    assert np.all(np.isnan(plotted(delta_mesh)[best < 0]))
    assert np.all(plotted(delta_mesh)[best >= 0] >= 0)


def test_distribution_map_single_family_shows_ks():
    ds = distributions_store(("normal",))
    fig = figures.distribution_map(ds)
    _, ks_mesh = map_meshes(fig)
    np.testing.assert_array_equal(plotted(ks_mesh), ds["ks"].values[0])
    assert "KS" in panel_axes(fig)[1].get_title()
    assert (ks_mesh.norm.vmin, ks_mesh.norm.vmax) == (0.0, np.nanmax(ds["ks"].values))


def test_posterior_map_centred_at_half_with_stippling():
    ds = posterior_store()
    fig = figures.posterior_map(ds, n_maps=3)
    meshes = map_meshes(fig)
    assert len(meshes) == 3 and len(colorbars(fig)) == 1  # one shared 0..1 scale
    lat, lon = np.meshgrid(ds["lat"].values, ds["lon"].values, indexing="ij")
    for k, (ax, mesh) in enumerate(zip(panel_axes(fig), meshes)):
        np.testing.assert_array_equal(plotted(mesh), ds["p_positive"].values[k])
        assert mesh.norm.vcenter == 0.5 and (mesh.norm.vmin, mesh.norm.vmax) == (0.0, 1.0)
        assert mesh.norm(0.5) == pytest.approx(0.5)
        dots = [a for a in ax.collections if isinstance(a, PathCollection)][0].get_offsets()
        excl = (ds["ci_lower"].values[k] > 0) | (ds["ci_upper"].values[k] < 0)
        assert 0 < excl.sum() < excl.size
        np.testing.assert_array_equal(np.asarray(dots), np.column_stack([lon[excl], lat[excl]]))
    assert "90% credible interval" in fig.legends[0].get_texts()[0].get_text()


def test_posterior_sd_one_sequential_scale_to_the_99th_percentile():
    ds = posterior_store()
    fig = figures.posterior_sd(ds, n_maps=2)
    meshes = map_meshes(fig)
    assert len(meshes) == 2 and len(geo_axes(fig)) == 2
    p99 = np.nanpercentile(ds["sd"].values[:2], 99)
    for k, mesh in enumerate(meshes):
        np.testing.assert_array_equal(plotted(mesh), ds["sd"].values[k])
        assert (mesh.norm.vmin, mesh.norm.vmax) == (0.0, pytest.approx(p99, rel=1e-12))
        assert mesh.get_cmap().name.startswith("viridis")
    (cbar,) = colorbars(fig)
    assert cbar.get_xlabel() == "posterior standard deviation (m K⁻¹)"
    assert "1000 draws; 90% interval 3.29 sd wide" in fig.get_suptitle()  # 2 z_0.95


# ---------------------------------------------------------------- maps on every kind of domain
@pytest.mark.parametrize("domain", list(DOMAINS))
@pytest.mark.parametrize("kind", list(figures.KINDS))
def test_every_family_on_every_domain(kind, domain):
    ds = store_for(kind, domain)
    fig = build(kind, ds, n_maps=3)
    expected = DOMAINS[domain][2]
    for ax in geo_axes(fig):
        assert type(ax.projection) is expected, (kind, domain)
        coast = [a for a in ax.collections if isinstance(a, FeatureArtist)]
        assert [a.get_gid() for a in coast] == ["coastline"]
        assert any(t.get_gid() == "grid_label" for t in ax.texts)
        assert any(c.get_gid() == "graticule" for c in ax.collections)
    for ax in panel_axes(fig):  # no empty panel: each has a mesh with values, or lines
        meshes = [m for m in ax.collections if isinstance(m, QuadMesh)]
        assert ax.lines or any(np.isfinite(plotted(m)).any() for m in meshes), (kind, domain)
    if kind in MAP_KINDS:
        n_expected = {"summary": 1, "distribution_map": 2, "regression_maps": 4, "return_level_maps": 2,
                      "gev_shape": 1, "conditional_maps": 4, "conditional_mean_maps": 6,
                      "bayes_maps": 4, "pit_histogram": 1}.get(kind, 3)
        assert len(geo_axes(fig)) == n_expected
        assert fig.get_figheight() <= maps.MAX_FIG_H + 0.01 and fig.get_figwidth() <= _common.FIG_WIDTH + 0.01


@pytest.mark.parametrize("lon", [np.arange(122.5, 250.0, 5.0),  # one increasing run, as the stores hold it
                                 np.r_[np.arange(170.0, 180.0, 2.5), np.arange(-180.0, -165.0, 2.5)]],  # wrapped
                         ids=["120E-110W", "170E-170W"])
def test_dateline_domain_is_drawn_whole(lon):
    lat = np.arange(-17.5, 60.0, 5.0)
    values = np.cos(np.deg2rad(lat))[:, None] * np.ones(lon.size)
    da = xr.DataArray(values, dims=("lat", "lon"), coords={"lat": lat, "lon": lon})
    spec = maps.map_spec(da)
    step = 5.0 if lon[0] == 122.5 else 2.5
    assert not spec.domain.full_circle and spec.domain.lon_span == pytest.approx(lon.size * step)
    middle = 0.5 * (lon[0] + lon[0] + (lon.size - 1) * step)
    assert spec.domain.centre == pytest.approx(np.mod(middle + 180, 360) - 180)  # central longitude in the middle
    fig, (ax,), _ = maps.map_panels(spec, 1)
    mesh = maps.draw_field(ax, spec, da, _common.colormap("viridis"), _common.upper_norm(values)[0])
    assert [type(a).__name__ for a in ax.collections].count("PolyQuadMesh") == 0  # no cell split at an edge
    np.testing.assert_array_equal(plotted(mesh), values)
    x0, x1, _, _ = spec.limits
    assert x1 - x0 == pytest.approx(lon.size * step)  # the whole domain, not two pieces


@pytest.mark.parametrize(
    ("lat", "lon", "name", "expected"),
    [((20, 80), (-90, 40), "auto", "lambert_conformal"),
     ((-60, -20), (100, 180), "auto", "lambert_conformal"),
     ((-30, 30), (0, 360), "auto", "robinson"),
     ((-90, 90), (-180, 180), "auto", "robinson"),
     ((-10, 70), (0, 360), "auto", "robinson"),  # all longitudes but reaching the tropics: not a cap
     ((60, 90), (0, 360), "auto", "north_polar_stereo"),
     ((-90, -55), (0, 360), "auto", "south_polar_stereo"),
     ((55, 85), (-60, 60), "auto", "north_polar_stereo"),  # a sector poleward of 50°
     ((-20, 60), (120, 250), "auto", "plate_carree"),
     ((20, 60), (0, 240), "auto", "plate_carree"),  # wider than 180°
     ((-60, -20), (100, 180), "polar_stereo", "south_polar_stereo"),
     ((20, 80), (-90, 40), "robinson", "robinson")],
)
def test_projection_rule(lat, lon, name, expected):
    lat_c = np.arange(lat[0] + 1.25, lat[1], 2.5)
    lon_c = np.arange(lon[0] + 1.25, lon[1], 2.5)
    assert maps.choose_projection(maps.domain(lat_c, lon_c), name) == expected


def test_unknown_projection_is_refused(tmp_path):
    with pytest.raises(ValueError, match="figures.projection must be one of auto, plate_carree"):
        figures.make("eof_maps", tmp_path / "eof.zarr", tmp_path / "x.png", params={"projection": "mercator"})


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("domain", ["regional", "wide"])
def test_layout_has_exactly_n_panels_last_row_centred(n, domain):
    spec = maps.map_spec(eof_store(domain))
    fig, axes, where = maps.map_panels(spec, n, "each", "title")
    assert len(geo_axes(fig)) == n and where in ("right", "bottom")
    grid = maps.panel_grid(spec, n, "each", 1)
    spans = [ax.get_subplotspec().colspan for ax in axes]
    last = [s for ax, s in zip(axes, spans) if ax.get_subplotspec().rowspan.start == grid.nrows - 1]
    used = (min(s.start for s in last), max(s.stop for s in last))
    assert used[0] == 2 * grid.ncols - used[1]  # as much room left of the last row as right of it
    if domain == "wide":
        assert grid.ncols == 1  # a 360° band is drawn full width


@pytest.mark.parametrize("domain", list(DOMAINS))
@pytest.mark.parametrize("kind", ["eof_maps", "regression_maps", "posterior_sd", "summary"])  # own, shared, mixed
def test_drawn_maps_have_degree_labels_and_nothing_overlaps(kind, domain):
    fig = build(kind, store_for(kind, domain))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "constrained_layout not applied": the layout must succeed
        labels = degree_labels(fig)
    assert labels and all(re.fullmatch(r"\d+(\.\d+)?°[EWNS]?", t) for t in labels), labels
    assert any(t[-1] in "EW" for t in labels) and any(t[-1] in "NS" for t in labels), labels
    renderer = fig.canvas.get_renderer()
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes] + [fig._suptitle.get_window_extent(renderer)]
    boxes += [legend.get_window_extent(renderer) for legend in fig.legends]
    for i, a in enumerate(boxes):  # panels (with their titles and labels), colorbars, title: inside, apart
        assert a.x0 >= -1 and a.y0 >= -1 and a.x1 <= fig.bbox.x1 + 1 and a.y1 <= fig.bbox.y1 + 1, (a, fig.bbox)
        for b in boxes[i + 1:]:
            overlap_w = min(a.x1, b.x1) - max(a.x0, b.x0)
            overlap_h = min(a.y1, b.y1) - max(a.y0, b.y0)
            assert overlap_w <= 1 or overlap_h <= 1, (a, b)


@pytest.mark.parametrize(
    ("units", "clean"),
    [("(m)/(K)", "m K⁻¹"), ("(K)^2", "K²"), ("K year-1", "K year⁻¹"), ("m K-1", "m K⁻¹"), ("K2", "K²"),
     ("((m)/(K))^2", "m² K⁻²"), ("(W m-2)/(K)", "W m⁻² K⁻¹"), ("m s**-1", "m s⁻¹"),
     ("kg m/s2", "kg m s⁻²"),
     ("1", ""), (None, ""), ("(m)/(m)", ""), ("(1)/(K)", "K⁻¹"), ("hPa", "hPa"), ("%", "%"),
     ("days since 1950-01-01", "days since 1950-01-01")],
)
def test_clean_units(units, clean):
    assert figures.clean_units(units) == clean


@pytest.mark.skipif(bool(os.environ.get("CARTOPY_DATA_DIR")), reason="the user chose cartopy's data folder")
def test_coastlines_come_from_the_repository_offline():
    assert cartopy.config["pre_existing_data_dir"] == maps.NATURAL_EARTH
    path = shapereader.natural_earth(resolution="110m", category="physical", name="coastline")
    assert os.path.realpath(path) == os.path.realpath(maps.NATURAL_EARTH / maps.COASTLINE)
    assert len(list(shapereader.Reader(path).geometries())) > 100


def test_offline_coastlines_leave_a_users_data_dir_alone(monkeypatch, tmp_path):
    monkeypatch.setitem(cartopy.config, "pre_existing_data_dir", tmp_path)
    assert not maps.use_offline_coastlines()
    assert cartopy.config["pre_existing_data_dir"] == tmp_path
    monkeypatch.setitem(cartopy.config, "pre_existing_data_dir", "")
    monkeypatch.setenv("CARTOPY_DATA_DIR", str(tmp_path))
    assert not maps.use_offline_coastlines()


# ---------------------------------------------------------------- validation and atomic save
def test_unknown_kind_names_valid_kinds(tmp_path):
    with pytest.raises(ValueError, match="eof_spectrum, eof_maps.*got 'scatter'"):
        figures.make("scatter", tmp_path / "x.zarr", tmp_path / "x.png", params=PARAMS)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [({"n_maps": 0}, ValueError, "figures.n_maps must be a positive integer"),
     ({"n_maps": 2.5}, ValueError, "figures.n_maps"),
     ({"dpi": "high"}, ValueError, "figures.dpi must be a number"),
     ([("dpi", 100)], TypeError, "params must be the 'figures' config section")],
)
def test_bad_params_are_rejected(params, error, match, tmp_path):
    with pytest.raises(error, match=match):
        figures.make("eof_maps", tmp_path / "eof.zarr", tmp_path / "x.png", params=params)


def test_missing_variable_and_wrong_type():
    with pytest.raises(ValueError, match="posterior_map figure needs the variable.*p_positive.*'z500'"):
        figures.posterior_map(posterior_store().drop_vars("p_positive"))
    with pytest.raises(TypeError, match="needs an xarray.Dataset"):
        figures.eof_spectrum(eof_store()["eigenvalue"])
    with pytest.raises(ValueError, match="n_maps must be a positive integer"):
        figures.eof_maps(eof_store(), n_maps=-1)


def test_missing_store_and_non_png_output(tmp_path):
    with pytest.raises(FileNotFoundError, match="eof store"):
        figures.make("eof_maps", tmp_path / "absent.zarr", tmp_path / "x.png", params=PARAMS)
    with pytest.raises(ValueError, match=r"must be a \.png file"):
        figures.save_png(Figure(), tmp_path / "x.pdf", 50)


def test_failed_save_leaves_old_png_and_no_temp_file(tmp_path, monkeypatch):
    out = tmp_path / "eof_spectrum.png"
    out.write_bytes(b"old")

    def half_write(self, fname, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(PNG_MAGIC)
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(Figure, "savefig", half_write)
    with pytest.raises(KeyboardInterrupt):
        figures.save_png(figures.eof_spectrum(eof_store()), out, 50)
    assert out.read_bytes() == b"old"
    assert os.listdir(tmp_path) == [out.name]
