"""Tests of pipeline.figures: each family renders, shows the store's numbers, saves atomically.

Inputs are small Datasets laid out exactly as docs/stores.md describes, built
from the planted fields of :mod:`pipeline.synthetic` (with a land mask, so
NaN cells occur). Expected numbers are recomputed here with NumPy.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr
from scipy import stats
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection, QuadMesh
from matplotlib.figure import Figure
from matplotlib.image import imread
from PIL import Image

from pipeline import figures, io, synthetic
from pipeline.figures import fits

N_TIME, N_LAT, N_LON = 24, 10, 20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- contract-following stores
def _planted() -> xr.Dataset:
    return synthetic.planted_modes(n_time=N_TIME, n_lat=N_LAT, n_lon=N_LON, variances=(9.0, 4.0, 1.0, 0.5),
                                   land_fraction=0.15, seed=3)


def eof_store() -> xr.Dataset:
    src = _planted()
    eig = src["true_variance"].values
    w = np.sqrt(np.cos(np.deg2rad(src["lat"].values)))[None, :, None]
    eof = src["true_eof"].values
    cov = eof * np.sqrt(eig)[:, None, None] / w
    coords = {"time": src["time"], "lat": src["lat"], "lon": src["lon"], "mode": src["mode"]}
    return xr.Dataset(
        {
            "eof": (("mode", "lat", "lon"), eof, {"units": "1", "long_name": "empirical orthogonal function"}),
            "pc": (("time", "mode"), src["true_pc"].values, {"units": "K", "long_name": "principal component"}),
            "eigenvalue": (("mode",), eig, {"units": "K2", "long_name": "eigenvalue"}),
            "variance_fraction": (("mode",), 0.9 * eig / eig.sum(), {"units": "1", "long_name": "variance fraction"}),
            "north_error": (("mode",), eig * np.sqrt(2.0 / N_TIME), {"units": "K2", "long_name": "North error"}),
            "eof_correlation": (("mode", "lat", "lon"), np.tanh(cov), {"units": "1", "long_name": "correlation"}),
            "eof_covariance": (("mode", "lat", "lon"), cov, {"units": "K", "long_name": "covariance with unit PC"}),
        },
        coords=coords,
        attrs={"field_name": "sst", "field_units": "K", "method": "time", "weighting": "sqrt_coslat",
               "n_samples": N_TIME, "rank": 4},
    )


def _land() -> np.ndarray:
    """The planted land mask (True where no value), shared by all stores."""
    return np.isnan(_planted()["field"].values[0])


def regression_store() -> xr.Dataset:
    rng = np.random.default_rng(5)
    land = _land()
    names = np.array(["sst_pc1", "sst_pc2", "sst_pc3", "sst_pc4"], dtype=object)
    coef = rng.normal(size=(4, N_LAT, N_LON)) * np.array([3.0, 1.0, 0.5, 0.2])[:, None, None]
    coef[:, land] = np.nan
    r2 = rng.uniform(0, 1, (N_LAT, N_LON))
    r2[land] = np.nan
    alphas = np.array([0.1, 1.0, 10.0])
    src = eof_store()
    return xr.Dataset(
        {
            "coef": (("predictor", "lat", "lon"), coef, {"units": "m K-1", "long_name": "regression coefficient"}),
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


def distributions_store(families: tuple[str, ...] = ("normal", "gumbel_r", "gumbel_l")) -> xr.Dataset:
    rng = np.random.default_rng(7)
    land = _land()
    src = eof_store()
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


def posterior_store() -> xr.Dataset:
    rng = np.random.default_rng(11)
    land = _land()
    src = eof_store()
    names = np.array(["sst_pc1", "sst_pc2", "sst_pc3"], dtype=object)
    mean = rng.normal(size=(3, N_LAT, N_LON)) * 2.0
    sd = rng.uniform(0.5, 1.5, (3, N_LAT, N_LON))
    mean[:, land] = np.nan
    z = 1.6448536269514722
    p = stats.norm.cdf(mean / sd)
    var = lambda a, u, n: (("predictor", "lat", "lon"), a, {"units": u, "long_name": n})  # noqa: E731
    return xr.Dataset(
        {
            "mean": var(mean, "m K-1", "posterior mean"),
            "sd": var(np.where(land, np.nan, sd), "m K-1", "posterior sd"),
            "ci_lower": var(mean - z * sd, "m K-1", "lower credible bound"),
            "ci_upper": var(mean + z * sd, "m K-1", "upper credible bound"),
            "p_positive": var(p, "1", "posterior probability of a positive coefficient"),
            "sigma": (("lat", "lon"), np.where(land, np.nan, 30.0), {"units": "m", "long_name": "noise sd"}),
        },
        coords={"predictor": names, "lat": src["lat"], "lon": src["lon"]},
        attrs={"field_name": "z500", "field_units": "m", "n_draws": 1000, "seed": 1, "credible_level": 0.9,
               "alpha": 10.0, "prior_a0": 0.01, "prior_b0": 0.01},
    )


STORES = {"eof": eof_store, "regression": regression_store, "distributions": distributions_store,
          "posterior": posterior_store}
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


def build(kind: str, ds: xr.Dataset, n_maps: int = 3) -> Figure:
    return figures.KINDS[kind][1](ds, n_maps)


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
    fig = build(kind, STORES[figures.KINDS[kind][0]]())
    assert fig.get_layout_engine() is not None
    for ax in panel_axes(fig):
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), kind
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            assert ax.get_ylabel() or ax.get_xlabel(), kind


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
    assert right.get_ylabel() == "Eigenvalue (K2)"
    FigureCanvasAgg(fig).draw()
    total = eig.sum() / 0.9
    np.testing.assert_allclose(right.get_ylim(), np.array(ax.get_ylim()) * total / 100.0, rtol=1e-12)


def test_eof_maps_plot_covariance_with_symmetric_limits():
    ds = eof_store()
    fig = figures.eof_maps(ds, n_maps=3)
    meshes = map_meshes(fig)
    assert len(meshes) == 3
    for k, mesh in enumerate(meshes):
        values = ds["eof_covariance"].values[k]
        np.testing.assert_array_equal(plotted(mesh), values)  # NaN exactly on land
        vmax = np.nanmax(np.abs(values))
        assert mesh.norm.vmin == -mesh.norm.vmax == pytest.approx(-vmax, rel=1e-12)
        assert mesh.get_cmap().name.startswith("RdBu_r")
    titles = [ax.get_title() for ax in panel_axes(fig)]
    pct = 100 * ds["variance_fraction"].values
    assert titles[0] == f"EOF 1 ({pct[0]:.1f}% of variance)"
    assert panel_axes(fig)[0].get_xlabel() == "Longitude (°E)"
    assert meshes[0].colorbar.ax.get_ylabel() == "sst anomaly per σ of PC (K)"


def test_eof_maps_fall_back_to_eof_and_cap_n_maps():
    ds = eof_store().drop_vars("eof_covariance")
    fig = figures.eof_maps(ds, n_maps=10)
    meshes = map_meshes(fig)
    assert len(meshes) == 4  # capped at the number of modes
    np.testing.assert_array_equal(plotted(meshes[3]), ds["eof"].values[3])


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
        assert "standardized" in ax.get_ylabel() and ax.get_xlabel() == "Year"


# ---------------------------------------------------------------- fitted-map figures
def test_regression_maps_coefficients_and_r2():
    ds = regression_store()
    fig = figures.regression_maps(ds, n_maps=3)
    meshes = map_meshes(fig)
    assert len(meshes) == 4  # 3 coefficients + R²
    for k in range(3):
        values = ds["coef"].values[k]
        np.testing.assert_array_equal(plotted(meshes[k]), values)
        assert meshes[k].norm.vmax == -meshes[k].norm.vmin == pytest.approx(np.nanmax(np.abs(values)), rel=1e-12)
    np.testing.assert_array_equal(plotted(meshes[3]), ds["r2"].values)
    assert (meshes[3].norm.vmin, meshes[3].norm.vmax) == (0.0, 1.0)
    title = fig.get_suptitle()
    assert "Ridge" in title and "α = 10" in title and "z500" in title and "1950 .. 1973" in title
    assert "m K-1" in " ".join(ax.get_ylabel() for ax in fig.axes)


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
    labels = [t.get_text() for t in cbar.ax.get_yticklabels()]
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
    assert len(meshes) == 3
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
