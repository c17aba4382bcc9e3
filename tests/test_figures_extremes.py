"""Tests of pipeline.figures.extremes: each figure renders from a store laid out as docs/stores.md
says, draws the store's numbers (or ones recomputed here in closed form) and labels them.

:func:`extremes_store` and :func:`joint_store` build small ``distributions`` and
``joint`` stores with planted parameters (GEV/Gumbel/GPD), series drawn from
them and return levels from scipy.stats; some cells are not fitted (NaN).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from cartopy.mpl.geoaxes import GeoAxes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection, QuadMesh
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from scipy import stats

from pipeline.figures import _common, extremes, fits, joint, save_png

LAT = np.arange(32.5, 62.5, 5.0)  # 6 rows: a North Atlantic sector, drawn in a Lambert cone
LON = np.arange(-17.5, 22.5, 5.0)  # 8 columns
PERIODS = np.array([10.0, 50.0, 100.0])
MISSING = ((0, 0), (3, 5))  # cells not fitted (all NaN)
NO_PROFILE = ((1, 1), (4, 2))  # gev cells whose profile interval failed: the delta method stands in
N_SERIES, RATE, Z95 = 40, 3.0, 1.959963984540054


def _gev_return_level(mu, sigma, xi, p):
    """Closed form: the level exceeded with probability ``p`` per block, ``F(z) = 1 - p``."""
    y = -np.log1p(-p)
    return mu + sigma / xi * (y ** (-xi) - 1.0)


def extremes_store(series: str = "block_maxima", families: tuple[str, ...] = ("gumbel_r", "gev"),
                   seed: int = 0, lat: np.ndarray = LAT, lon: np.ndarray = LON) -> xr.Dataset:
    """A ``distributions/{field}.zarr`` store in the contract's layout, with planted parameters.

    Any grid of at least 5 x 6 cells (``lat``, ``lon``); the planted fields vary by cell index.
    """
    rng = np.random.default_rng(seed)
    nf, ny, nx = len(families), lat.size, lon.size
    mu = 30.0 + np.arange(ny)[:, None] + 0.0 * np.arange(nx)[None, :]
    sigma = 2.0 + 2.0 * np.arange(nx)[None, :] / nx + 0.0 * np.arange(ny)[:, None]
    xi = np.linspace(-0.3, 0.3, nx)[None, :] + 0.02 * np.arange(ny)[:, None]
    loc, scale, shape = (np.full((nf, ny, nx), np.nan) for _ in range(3))
    dists = {}
    for f, name in enumerate(families):
        if name == "gev":
            loc[f], scale[f], shape[f] = mu, sigma, xi
        elif name in ("gumbel_r", "gumbel_l"):
            loc[f], scale[f] = mu + 0.3, 1.1 * sigma
        elif name == "gpd":
            loc[f], scale[f], shape[f] = mu, sigma, xi
        elif name == "normal":
            loc[f], scale[f] = mu, sigma
        dists[name] = extremes.SCIPY[name](loc[f], scale[f], shape[f])
    truth = families[-1]
    x = dists[truth].rvs(size=(N_SERIES, ny, nx), random_state=rng)
    if series == "block_minima":
        x = 2 * mu - x  # a left tail drawn from the mirrored law; figures only need numbers
    x[N_SERIES - 7:, 2, 2] = np.nan  # NaN padding of a shorter series
    p = 1.0 / ((RATE if series == "exceedances" else 1.0) * PERIODS)
    rl = np.full((nf, PERIODS.size, ny, nx), np.nan)
    for f, name in enumerate(families):
        for t, pt in enumerate(p):
            rl[f, t] = dists[name].ppf(pt) if series == "block_minima" else dists[name].isf(pt)
    half = Z95 * 0.1 * scale[:, None] * np.log(PERIODS)[None, :, None, None]
    prof_lo, prof_hi = rl - 0.9 * half, rl + 1.3 * half  # asymmetric, as profile intervals are
    has_shape = np.array([n in ("gev", "gpd") for n in families])
    prof_lo[~has_shape], prof_hi[~has_shape] = np.nan, np.nan
    for i, j in NO_PROFILE:
        prof_lo[..., i, j] = np.nan
    se = np.where(np.isfinite(shape), 0.08 + 0.0 * shape, np.nan)
    loglik = -100.0 + rng.normal(size=(nf, ny, nx))
    k = np.array([2 + h for h in has_shape])[:, None, None]
    aic = 2 * k - 2 * loglik
    for i, j in MISSING:
        for arr in (loc, scale, shape, rl, prof_lo, prof_hi, half, se, loglik, aic):
            arr[..., i, j] = np.nan
        x[:, i, j] = np.nan
    best = np.argmin(np.where(np.isnan(aic), np.inf, aic), axis=0).astype(np.int8)
    for i, j in MISSING:
        best[i, j] = -1
    lr_p = rng.uniform(0, 0.2, (ny, nx))
    fam_var = lambda a, u="1", n="": (("family", "lat", "lon"), a, {"units": u, "long_name": n})  # noqa: E731
    rl_var = lambda a, n: (("family", "return_period", "lat", "lon"), a, {"units": "K", "long_name": n})  # noqa: E731
    cov = np.full((nf, 3, 3, ny, nx), np.nan)
    cov[:, 0, 0], cov[:, 1, 1] = 0.01, 0.02
    data = {
        "series": (("sample", "lat", "lon"), x, {"units": "K", "long_name": "fitted series"}),
        "loc": fam_var(loc, "K", "location"), "scale": fam_var(scale, "K", "scale"), "shape": fam_var(shape),
        "loc_se": fam_var(0.1 * scale, "K"), "scale_se": fam_var(0.05 * scale, "K"), "shape_se": fam_var(se),
        "cov": (("family", "param", "param_", "lat", "lon"), cov),
        "loglik": fam_var(loglik), "aic": fam_var(aic), "bic": fam_var(aic + 1.0),
        "ks": fam_var(np.where(np.isnan(aic), np.nan, 0.08)), "ad": fam_var(np.where(np.isnan(aic), np.nan, 0.5)),
        "ks_pvalue": fam_var(np.where(np.isnan(aic), np.nan, 0.42)),
        "ad_pvalue": fam_var(np.where(np.isnan(aic), np.nan, 0.3)),
        "converged": fam_var(np.isfinite(aic).astype(np.int8)), "n_iter": fam_var(np.full((nf, ny, nx), 5)),
        "best_family": (("lat", "lon"), best, {"flag_values": list(range(-1, nf)),
                                               "flag_meanings": "not_fitted " + " ".join(families)}),
        "return_level": rl_var(rl, "return level"),
        "return_level_lower": rl_var(rl - half, "lower bound (delta)"),
        "return_level_upper": rl_var(rl + half, "upper bound (delta)"),
        "return_level_profile_lower": rl_var(prof_lo, "lower bound (profile)"),
        "return_level_profile_upper": rl_var(prof_hi, "upper bound (profile)"),
    }
    if "gev" in families and "gumbel_r" in families:
        data["lr_statistic"] = (("lat", "lon"), stats.chi2.isf(lr_p, 1))
        data["lr_pvalue"] = (("lat", "lon"), np.where(np.isnan(aic[0]), np.nan, lr_p))
    block = {"exceedances": "", "field": ""}.get(series, "annual")
    return xr.Dataset(
        data,
        coords={"family": np.array(families, dtype=object), "param": ["loc", "scale", "shape"],
                "param_": ["loc", "scale", "shape"], "return_period": ("return_period", PERIODS, {"units": "year"}),
                "sample": np.arange(N_SERIES),
                "lat": ("lat", lat, {"units": "degrees_north"}), "lon": ("lon", lon, {"units": "degrees_east"})},
        attrs={"field_name": "tasmax", "field_units": "K", "series": series, "block": block,
               "interval_level": 0.95, "n_samples": N_SERIES},
    )


def joint_store(qx: float = 0.9, qy: float = 0.9, lat: np.ndarray = LAT, lon: np.ndarray = LON) -> xr.Dataset:
    """A ``joint/{field}.zarr`` store: planted ρ, its bivariate normal exceedance probabilities."""
    rng = np.random.default_rng(4)
    rho = np.stack([np.tanh(np.linspace(-0.8, 0.6, lon.size))[None, :] + 0.01 * np.arange(lat.size)[:, None]] * 2)
    rho[1] *= 0.95
    zx, zy = stats.norm.ppf(qx), stats.norm.ppf(qy)

    def given(r):  # P(Y > y_q | X > x_q) under a bivariate normal of correlation r
        both = np.array([1 - qx - qy + stats.multivariate_normal([0, 0], [[1, v], [v, 1]]).cdf([zx, zy])
                         for v in r.ravel()])
        return (both / (1 - qx)).reshape(r.shape)

    p_given = np.stack([given(rho[0]), given(rho[1])])
    empirical = np.clip(p_given[1] + rng.normal(0, 0.03, p_given[1].shape), 0, 1)
    x_value = np.linspace(-2.0, 2.0, 5)
    mean_y, sd_y = np.full((lat.size, lon.size), 290.0), np.full((lat.size, lon.size), 3.0)
    for i, j in MISSING:
        for arr in (rho, p_given):
            arr[..., i, j] = np.nan
        empirical[i, j] = mean_y[i, j] = sd_y[i, j] = np.nan
    cond_mean = mean_y + rho[0] * sd_y * x_value[:, None, None]
    ll = ("lat", "lon")
    return xr.Dataset(
        {"rho": (("model", *ll), rho), "mean_y": (ll, mean_y, {"units": "K"}), "sd_y": (ll, sd_y, {"units": "K"}),
         "conditional_mean": (("x_value", *ll), cond_mean, {"units": "K"}),
         "conditional_sd": (("x_value", *ll), np.broadcast_to(sd_y * np.sqrt(1 - rho[0] ** 2), cond_mean.shape),
                            {"units": "K"}),
         "p_exceed": (ll, np.where(np.isnan(mean_y), np.nan, 1 - qy)),
         "p_exceed_given": (("model", *ll), p_given), "p_exceed_given_empirical": (ll, empirical)},
        coords={"model": ["normal", "copula"], "x_value": ("x_value", x_value, {"units": "1"}),
                "lat": ("lat", lat, {"units": "degrees_north"}), "lon": ("lon", lon, {"units": "degrees_east"})},
        attrs={"field_name": "tasmax", "field_units": "K", "index_name": "nino34", "index_units": "1",
               "index_mean": 0.0, "index_sd": 1.0, "q_x": qx, "q_y": qy},
    )


# ---------------------------------------------------------------- helpers
def meshes(fig: Figure) -> list[QuadMesh]:
    return [a for ax in fig.axes if isinstance(ax, GeoAxes) for a in ax.collections if isinstance(a, QuadMesh)]


def plotted(mesh: QuadMesh) -> np.ndarray:
    return np.ma.filled(np.ma.asarray(mesh.get_array(), dtype=float), np.nan)


def colorbars(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def panels(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def cbar_label(mesh: QuadMesh) -> str:
    return mesh.colorbar.ax.get_xlabel() + mesh.colorbar.ax.get_ylabel()


CELLS = [{"lat": 44.0, "lon": 343.0}, {"lat": 31.0, "lon": -18.0}]  # 342.5 east = 17.5 W; a missing cell


# ---------------------------------------------------------------- every figure renders
BUILDERS = {
    "return_level_maps": lambda: extremes.return_level_maps(extremes_store()),
    "shape_map": lambda: extremes.shape_map(extremes_store()),
    "best_family_map": lambda: extremes.best_family_map(extremes_store()),
    "qq_plots": lambda: extremes.qq_plots(extremes_store(), CELLS),
    "return_level_plot": lambda: extremes.return_level_plot(extremes_store(), CELLS),
    "conditional_maps": lambda: joint.conditional_maps(joint_store()),
    "conditional_mean_maps": lambda: joint.conditional_mean_maps(joint_store()),
    "distribution_fits": lambda: extremes.distribution_fits(extremes_store(), CELLS),
}
#: (panels, colorbars) of each figure.
COUNTS = {"return_level_maps": (2, 2), "shape_map": (1, 1), "best_family_map": (2, 2), "qq_plots": (2, 0),
          "return_level_plot": (2, 0), "conditional_maps": (4, 4), "conditional_mean_maps": (6, 6), "distribution_fits": (4, 0)}


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_each_figure_renders_labelled(kind, tmp_path):
    fig = BUILDERS[kind]()
    out = save_png(fig, tmp_path / f"{kind}.png", 40)
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 3_000
    assert (len(panels(fig)), len(colorbars(fig))) == COUNTS[kind]
    assert "tasmax" in fig.get_suptitle()
    for ax in panels(fig):
        assert ax.get_title()
        if not isinstance(ax, GeoAxes):
            assert ax.get_xlabel() and ax.get_ylabel() and "(K)" in ax.get_ylabel()
    for ax in colorbars(fig):
        assert ax.get_xlabel() or ax.get_ylabel()


# ---------------------------------------------------------------- maps
def test_return_level_maps_draw_the_level_and_the_profile_width():
    ds = extremes_store()
    fig = extremes.return_level_maps(ds, "gev", 50)
    level, width = meshes(fig)
    np.testing.assert_array_equal(plotted(level), ds["return_level"].sel(family="gev", return_period=50).values)
    sel = ds.sel(family="gev", return_period=50)
    delta = (sel["return_level_upper"] - sel["return_level_lower"]).values
    profile = (sel["return_level_profile_upper"] - sel["return_level_profile_lower"]).values
    np.testing.assert_allclose(plotted(width), np.where(np.isfinite(profile), profile, delta), rtol=1e-12)
    for i, j in MISSING:
        assert np.isnan(plotted(level)[i, j]) and np.isnan(plotted(width)[i, j])
    title = fig.get_suptitle()
    assert all(w in title for w in ("50-year return level", "tasmax", "gev", "95%", "annual maxima"))
    expected = f"95% interval width, profile likelihood\n(delta method in {len(NO_PROFILE)} cells)"
    assert panels(fig)[1].get_title() == expected
    finite = plotted(level)[np.isfinite(plotted(level))]
    assert (level.norm.vmin, level.norm.vmax) == pytest.approx(tuple(np.percentile(finite, [1, 99])))
    assert cbar_label(level) == "return level (K)" and cbar_label(width) == "upper − lower (K)"
    assert width.norm.vmin == 0.0


def test_return_level_maps_fall_back_to_the_delta_method_and_check_the_period():
    ds = extremes_store()
    fig = extremes.return_level_maps(ds, "gumbel_r", None)  # no profile for gumbel_r; the longest period
    assert "100-year" in fig.get_suptitle() and panels(fig)[1].get_title() == "95% interval width, delta method"
    no_profile = extremes.return_level_maps(ds.drop_vars(["return_level_profile_lower", "return_level_profile_upper"]))
    assert panels(no_profile)[1].get_title().endswith("delta method")
    with pytest.raises(ValueError, match="return_period must be one of the stored 10, 50, 100 years; got 20"):
        extremes.return_level_maps(ds, "gev", 20)
    with pytest.raises(ValueError, match="family must be one of the fitted gumbel_r, gev; got 'gpd'"):
        extremes.return_level_maps(ds, "gpd")
    with pytest.raises(ValueError, match="needs the variable.*return_level"):
        extremes.return_level_maps(ds.drop_vars("return_level"))


def test_shape_map_is_centred_on_zero_and_states_the_sign_convention():
    ds = extremes_store()
    fig = extremes.shape_map(ds)
    (mesh,) = meshes(fig)
    np.testing.assert_array_equal(plotted(mesh), ds["shape"].sel(family="gev").values)
    assert mesh.norm.vmin == -mesh.norm.vmax and mesh.norm(0.0) == 0.5
    assert mesh.get_cmap().name.startswith("RdBu_r")
    assert "ξ > 0: heavy tail" in fig.get_suptitle() and "scipy genextreme c = −ξ" in fig.get_suptitle()
    assert "ξ" in cbar_label(mesh)
    dots = [a for a in panels(fig)[0].collections if isinstance(a, PathCollection)][0].get_offsets()
    lat, lon = np.meshgrid(LAT, LON, indexing="ij")
    rejected = ds["lr_pvalue"].values < 0.05  # NaN cells compare False
    assert 0 < rejected.sum() < rejected.size
    np.testing.assert_array_equal(np.asarray(dots), np.column_stack([lon[rejected], lat[rejected]]))
    assert "likelihood ratio" in fig.legends[0].get_texts()[0].get_text()


def test_shape_map_of_gpd_uses_the_wald_interval_and_refuses_two_parameter_families():
    ds = extremes_store("exceedances", ("gpd",))
    fig = extremes.shape_map(ds, None)  # the default family of a peaks-over-threshold store is gpd
    assert "genpareto c = ξ" in fig.get_suptitle() and "peaks over threshold" in fig.get_suptitle()
    dots = [a for a in panels(fig)[0].collections if isinstance(a, PathCollection)][0].get_offsets()
    xi = ds["shape"].values[0]
    assert len(dots) == int(np.sum(np.abs(xi) > Z95 * 0.08)) > 0  # |ξ| > z·se
    assert "Wald" in fig.legends[0].get_texts()[0].get_text()
    with pytest.raises(ValueError, match="draws the ξ of gev or gpd; got 'gumbel_r'"):
        extremes.shape_map(extremes_store(), "gumbel_r")
    with pytest.raises(ValueError, match="needs a gev or gpd fit"):
        extremes.shape_map(extremes_store(families=("normal", "gumbel_r")), None)


def test_best_family_map_is_the_distribution_map_on_the_contract_layout():
    ds = extremes_store()
    fig = extremes.best_family_map(ds)
    best_mesh, _ = meshes(fig)
    best = ds["best_family"].values  # int8, -1 where not fitted
    np.testing.assert_array_equal(plotted(best_mesh), np.where(best < 0, np.nan, best))
    assert [m.get_array().tolist() for m in meshes(fits.distribution_map(ds))] == \
        [m.get_array().tolist() for m in meshes(fig)]


def test_conditional_maps_share_a_probability_scale_and_centre_rho():
    ds = joint_store()
    fig = joint.conditional_maps(ds, "copula")
    rho, marginal, given, empirical = meshes(fig)
    np.testing.assert_array_equal(plotted(rho), ds["rho"].sel(model="copula").values)
    np.testing.assert_array_equal(plotted(given), ds["p_exceed_given"].sel(model="copula").values)
    np.testing.assert_array_equal(plotted(marginal), ds["p_exceed"].values)
    np.testing.assert_array_equal(plotted(empirical), ds["p_exceed_given_empirical"].values)
    assert rho.norm.vmin == -rho.norm.vmax and rho.norm(0.0) == 0.5 and rho.get_cmap().name.startswith("RdBu_r")
    assert rho.norm.vmax <= 1.0
    for mesh in (marginal, given, empirical):  # one scale, 0..1, stretched at the small probabilities
        assert mesh.norm is marginal.norm and cbar_label(mesh) == "probability"
        assert (mesh.norm.vmin, mesh.norm.vmax) == (0.0, 1.0) and mesh.norm(0.25) == pytest.approx(0.5)
    titles = [ax.get_title() for ax in panels(fig)]
    assert titles[1] == "P(Y > y₉₀), marginal"
    assert titles[2] == "P(Y > y₉₀ | X > x₉₀), Gaussian copula" and titles[3].endswith("empirical")
    assert "nino34" in fig.get_suptitle()
    assert "y₉₀: 90th percentile of Y's fitted margin; x₉₀: 90th percentile of X" in fig.get_suptitle()
    for i, j in MISSING:
        assert all(np.isnan(plotted(m)[i, j]) for m in (rho, given, empirical))
    assert "bivariate normal" in panels(joint.conditional_maps(ds, "normal"))[0].get_title()
    with pytest.raises(ValueError, match="model must be one of normal, copula; got 't'"):
        joint.conditional_maps(ds, "t")


# ---------------------------------------------------------------- plots at cells
def test_qq_plots_sorted_series_against_fitted_quantiles_at_the_nearest_cell():
    ds = extremes_store()
    fig = extremes.qq_plots(ds, CELLS, family="gev")
    ax, ax_missing = panels(fig)
    points, one_to_one = ax.lines
    x = np.sort(ds["series"].values[:, 2, 0])  # 44°N, 343°E -> 42.5°N, 17.5°W (row 2, column 0)
    p = (np.arange(1, x.size + 1) - 0.44) / (x.size + 0.12)
    cell = ds.sel(family="gev").isel(lat=2, lon=0)
    expected = _gev_return_level(float(cell["loc"]), float(cell["scale"]), float(cell["shape"]), 1 - p)
    np.testing.assert_allclose(points.get_xdata(), expected, rtol=1e-10)
    np.testing.assert_array_equal(points.get_ydata(), x)
    lo, hi = min(x.min(), expected.min()), max(x.max(), expected.max())
    np.testing.assert_allclose(one_to_one.get_xdata(), [lo, hi])
    np.testing.assert_allclose(one_to_one.get_ydata(), [lo, hi])
    assert ax.get_title() == "42.5°N, 17.5°W, gev\nnearest to 44°N, 17°W"
    assert ax.get_xlabel() == "Fitted quantile (K)" and ax.get_ylabel() == "Empirical quantile (K)"
    assert ax.get_xlim() == ax.get_ylim()
    assert any(t.get_text() == "KS p = 0.42" for t in ax.texts)
    assert not ax_missing.lines and ax_missing.texts[0].get_text() == "no fit in this cell"  # NaN cell
    assert sum(np.isfinite(ds["series"].values[:, 2, 2])) == N_SERIES - 7  # padding is dropped:
    (pad_points, _) = panels(extremes.qq_plots(ds, [{"lat": 42.5, "lon": -7.5}]))[0].lines
    assert pad_points.get_ydata().size == N_SERIES - 7


def test_qq_plots_take_the_best_family_and_default_to_the_middle_cell():
    ds = extremes_store()
    fig = extremes.qq_plots(ds)
    (ax,) = panels(fig)
    assert "no cell configured: grid middle" in ax.get_title() and "best family per cell" in fig.get_suptitle()
    best = ds["best_family"].values[2, 3]  # the first of the four middle cells of a 6 x 8 grid
    assert ax.get_title().startswith(f"42.5°N, 2.5°W, {['gumbel_r', 'gev'][best]}")


@pytest.mark.parametrize("cells", [[{"lat": 95.0, "lon": 0.0}], [{"lat": "north", "lon": 0.0}], [{"lon": 1.0}],
                                   {"lat": 40.0, "lon": 0.0}, [{"lat": 40.0, "lon": 0.0}] * 13])
def test_bad_cells_are_refused(cells):
    with pytest.raises(ValueError, match="cell"):
        extremes.qq_plots(extremes_store(), cells)


def test_return_level_plot_curve_intervals_and_gringorten_points():
    ds = extremes_store()
    fig = extremes.return_level_plot(ds, CELLS[:1])
    (ax,) = panels(fig)
    curve, empirical = ax.lines[0], ax.lines[-1]
    cell = ds.sel(family="gev").isel(lat=2, lon=0)
    periods = curve.get_xdata()
    assert periods[0] == pytest.approx(1.1) and periods[-1] == pytest.approx(1000.0)
    np.testing.assert_allclose(curve.get_ydata(), _gev_return_level(
        float(cell["loc"]), float(cell["scale"]), float(cell["shape"]), 1 / periods), rtol=1e-10)
    x = np.sort(ds["series"].values[:, 2, 0])
    rank = np.arange(1, x.size + 1)  # T = 1 / (1 - F), F = (i - 0.44) / (n + 0.12)
    np.testing.assert_allclose(empirical.get_xdata(), (x.size + 0.12) / (x.size + 0.12 - rank + 0.44))
    np.testing.assert_array_equal(empirical.get_ydata(), x)
    delta, profile = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    np.testing.assert_array_equal(delta.lines[0].get_xdata(), PERIODS)
    np.testing.assert_allclose(delta.lines[0].get_ydata(), cell["return_level"].values, rtol=1e-12)
    bar = delta.lines[2][0].get_segments()[0]
    assert (bar[0, 1], bar[1, 1]) == pytest.approx((float(cell["return_level_lower"][0]),
                                                    float(cell["return_level_upper"][0])))
    bar = profile.lines[2][0].get_segments()[2]
    assert (bar[0, 1], bar[1, 1]) == pytest.approx((float(cell["return_level_profile_lower"][2]),
                                                    float(cell["return_level_profile_upper"][2])))
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "Return period (years)"
    assert ax.get_ylabel() == "Return level (K)"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["fitted gev", "95% interval, delta method", "95% interval, profile likelihood",
                      "annual maxima (Gringorten positions)"]  # in the order drawn


def test_return_level_plot_of_minima_and_of_peaks_over_threshold():
    ds = extremes_store("block_minima", ("gumbel_l", "gev"))
    (ax,) = panels(extremes.return_level_plot(ds, [{"lat": 47.5, "lon": 12.5}], family="gumbel_l"))
    cell = ds.sel(family="gumbel_l").isel(lat=3, lon=6)
    curve = ax.lines[0]
    loc, scale = float(cell["loc"]), float(cell["scale"])
    np.testing.assert_allclose(curve.get_ydata(), loc + scale * np.log(-np.log1p(-1 / curve.get_xdata())),
                               rtol=1e-10)  # gumbel_l: F(z) = 1/T
    assert np.all(np.diff(curve.get_ydata()) < 0)  # rarer minima are lower
    ds = extremes_store("exceedances", ("gpd",))
    cell = ds.isel(lat=2, lon=6)
    dist = extremes.cell_distribution(cell, "gpd")
    assert extremes.exceedance_rate(ds, cell, "gpd", dist) == pytest.approx(RATE, rel=1e-9)  # from the levels
    (ax,) = panels(extremes.return_level_plot(ds, [{"lat": 42.5, "lon": 12.5}], family=None))
    curve, empirical = ax.lines[0], ax.lines[-1]
    u, s, xi = (float(cell[k].sel(family="gpd")) for k in ("loc", "scale", "shape"))
    periods = curve.get_xdata()  # below a year too: λ = 3 peaks a year, z_T defined for λT > 1
    assert periods[0] == pytest.approx(1.1 / RATE) and periods[-1] == pytest.approx(1000.0)
    np.testing.assert_allclose(curve.get_ydata(), u + s / xi * ((RATE * periods) ** xi - 1), rtol=1e-9)
    assert ax.get_xlim()[0] < 1 / RATE  # the most frequent peaks are in view
    n = empirical.get_xdata().size
    np.testing.assert_allclose(empirical.get_xdata(), 1 / (RATE * (1 - (np.arange(1, n + 1) - 0.44) / (n + 0.12))))
    assert "peaks over threshold (Gringorten positions)" in [t.get_text() for t in ax.figure.legends[0].get_texts()]
    stored = ds.drop_vars("return_level")  # no return levels: the rate cannot be solved for
    assert np.isnan(extremes.exceedance_rate(stored, stored.isel(lat=2, lon=6), "gpd", dist))
    with_rate = ds.assign(exceedance_rate=(("lat", "lon"), np.full((LAT.size, LON.size), 2.0)))
    assert extremes.exceedance_rate(with_rate, with_rate.isel(lat=2, lon=6), "gpd", dist) == 2.0


def test_distribution_fits_pair_a_qq_plot_with_return_levels_per_cell():
    ds = extremes_store()
    fig = extremes.distribution_fits(ds, CELLS, family="gev")
    qq, rl, qq_missing, rl_missing = panels(fig)
    assert qq.get_ylabel() == "Empirical quantile (K)" and rl.get_xscale() == "log"
    assert qq.get_title() == rl.get_title() == "42.5°N, 17.5°W, gev\nnearest to 44°N, 17°W"
    assert qq.get_subplotspec().rowspan == rl.get_subplotspec().rowspan == range(0, 1)  # one row a cell
    np.testing.assert_array_equal(qq.lines[0].get_ydata(), np.sort(ds["series"].values[:, 2, 0]))
    assert not qq_missing.lines and not rl_missing.lines
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0].startswith("annual maxima (Gringorten") and "fitted gev" in labels
    field = extremes_store("field").drop_vars([v for v in ds.data_vars if v.startswith("return_level")])
    only_qq = extremes.distribution_fits(field, CELLS)  # no return levels: the quantile-quantile plots
    assert len(panels(only_qq)) == 2 and "Quantile-quantile plots of tasmax (values)" in only_qq.get_suptitle()


# ---------------------------------------------------------------- small pieces
def test_range_norm_and_labels():
    values = np.r_[-3.0, np.linspace(0, 1, 101), 50.0]
    norm, extend = extremes.range_norm(np.r_[values, np.nan])
    assert (norm.vmin, norm.vmax) == pytest.approx(tuple(np.percentile(values, [1, 99])), rel=1e-12)
    assert 0 < norm.vmin and norm.vmax < 1 and extend == "both"
    assert extremes.range_norm(np.full(4, 300.0))[0].vmin == pytest.approx(285.0)
    assert extremes.range_norm(np.full(3, np.nan))[1] == "neither"
    assert extremes.lat_lon_label(-12.5, 350.0) == "12.5°S, 10°W"
    assert [joint._ordinal(q) for q in (0.9, 0.975, 0.01, 0.92, 0.11)] == ["90th", "97.5th", "1st", "92nd", "11th"]
    assert extremes.series_label(extremes_store("block_minima")) == "annual minima"
    assert _common.clean_units(extremes.units(extremes_store())) == "K"


def _overlaps(fig: Figure) -> list:
    """Boxes (panels with their labels, colorbars, title, legends) outside the figure or overlapping."""
    fig.draw_without_rendering()  # as save_png does: the layout settles in two passes
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes] + [fig._suptitle.get_window_extent(renderer)]
    boxes += [legend.get_window_extent(renderer) for legend in fig.legends]
    bad = [("outside", a) for a in boxes if a.x0 < -1 or a.y0 < -1 or a.x1 > fig.bbox.x1 + 1 or a.y1 > fig.bbox.y1 + 1]
    for i, a in enumerate(boxes):
        bad += [("overlap", a, b) for b in boxes[i + 1:]
                if min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1]
    return bad


@pytest.mark.parametrize("kind", ["return_level_maps", "qq_plots", "return_level_plot"])
def test_layout_keeps_everything_inside_and_apart(kind):
    polar = extremes_store(lat=np.linspace(62.5, 87.5, 6), lon=np.arange(0.0, 360.0, 45.0))  # a round polar cap
    cells = [{"lat": 62.0, "lon": 0.0}, {"lat": 70.0, "lon": 90.0}, {"lat": 80.0, "lon": 200.0}]
    fig = {"return_level_maps": lambda: extremes.return_level_maps(polar),
           "qq_plots": lambda: extremes.qq_plots(polar, cells),
           "return_level_plot": lambda: extremes.return_level_plot(polar, cells)}[kind]()
    assert not _overlaps(fig)


def test_conditional_mean_maps_shift_and_remaining_sd():
    ds = joint_store()
    fig = joint.conditional_mean_maps(ds)
    meshes = [m for ax in fig.axes if isinstance(ax, GeoAxes) for m in ax.collections if isinstance(m, QuadMesh)]
    k = float(ds["x_value"].values[-1])
    shift = (ds["conditional_mean"] - ds["mean_y"]).sel(x_value=k).values
    norm = meshes[len(ds["x_value"]) - 1].norm
    assert norm.vmin == -norm.vmax  # centred
    ratio = meshes[-1].get_array().compressed()
    expected = (ds["conditional_sd"].isel(x_value=0) / ds["sd_y"]).values
    finite = expected[np.isfinite(expected)]
    np.testing.assert_allclose([ratio.min(), ratio.max()], [finite.min(), finite.max()], rtol=1e-12)
    assert meshes[-1].norm.vmin == 0.0 and meshes[-1].norm.vmax == 1.0
    assert "E[Y | X = mean + " in " ".join(ax.get_title() for ax in fig.axes)
    assert np.isfinite(shift).any()
