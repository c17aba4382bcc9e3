"""Tests of pipeline.figures.bayes on stores written by the bayes stage: the VI and rejection variants of
``bayes_maps`` and the ``pit_histogram`` of held-out calibration.

The stores come from :func:`pipeline.bayes.compute` on a small planted GEV
field (a few seconds); expected numbers are recomputed here from the store's
variables (PIT counts, scipy's binomial band, the CRPS skill).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from cartopy.mpl.feature_artist import FeatureArtist
from cartopy.mpl.geoaxes import GeoAxes
from matplotlib.collections import PathCollection, QuadMesh
from matplotlib.patches import Rectangle
from scipy import stats

from pipeline import bayes, figures
from pipeline.backend import resolve
from pipeline.figures import bayes as fb

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = {"warmup": 100, "draws": 100, "seed": 2, "keep_draws": 20, "holdout": 10, "ess_min": 100.0, "rhat_max": 1.05}


def planted(nlat: int = 4, nlon: int = 5, n: int = 35) -> xr.Dataset:
    """A distributions-store stand-in over western Europe: GEV(30, 5, xi) block maxima."""
    rng = np.random.default_rng(4)
    xi = rng.uniform(-0.1, 0.25, size=(nlat, nlon))
    x = stats.genextreme.rvs(-xi, loc=30.0, scale=5.0, size=(n, nlat, nlon), random_state=rng)
    return xr.Dataset({"series": (("sample", "lat", "lon"), x, {"units": "mm day-1"})},
                      coords={"sample": np.arange(n), "lat": np.linspace(40.0, 55.0, nlat),
                              "lon": np.linspace(-10.0, 15.0, nlon), "return_period": [10.0, 100.0]},
                      attrs={"field_name": "rain", "field_units": "mm day-1", "series": "block_maxima",
                             "series_description": "annual maxima"})


@pytest.fixture(scope="module")
def stores() -> dict[str, xr.Dataset]:
    return {s: bayes.compute(planted(), params={**FAST, "sampler": s, "vi_iter": 400}, backend=resolve("numpy"))
            for s in ("vi", "rejection")}


def panels(fig) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_pit_histogram_shows_the_pooled_counts_the_band_and_the_skill_map(stores, tmp_path):
    ds = stores["vi"]
    fig = fb.pit_histogram(ds)
    hist, = [ax for ax in panels(fig) if not isinstance(ax, GeoAxes)]
    geo, = [ax for ax in panels(fig) if isinstance(ax, GeoAxes)]
    pit = ds["pit"].values.ravel()
    n = pit.size
    counts = np.histogram(pit, bins=np.linspace(0.0, 1.0, 11))[0]
    bars = [p for p in hist.patches if isinstance(p, Rectangle) and p.get_width() == pytest.approx(0.1)]
    np.testing.assert_array_equal([b.get_height() for b in bars], counts)
    expected, = [line for line in hist.lines if line.get_linestyle() == "--"]
    np.testing.assert_allclose(expected.get_ydata(), n / 10)
    lo, hi = stats.binom.ppf([0.005, 0.995], n, 0.1)
    band = [p for p in hist.patches if p.get_facecolor()[:3] == pytest.approx((0.85, 0.85, 0.85))]
    assert len(band) == 1
    ys = band[0].get_path().transformed(band[0].get_patch_transform()).vertices[:, 1]
    assert min(ys) == pytest.approx(lo) and max(ys) == pytest.approx(hi)
    assert hist.get_xlabel() and hist.get_ylabel() == "count"
    assert f"{ds.sizes['heldout']} held-out values" in hist.get_title()
    assert any(f"p = {ds.attrs['pit_chi2_pvalue']:.2g}" in t.get_text() for t in hist.texts)
    # the skill map: the store's values, diverging and centred on 0, with coastlines
    mesh, = [m for m in geo.collections if isinstance(m, QuadMesh)]
    np.testing.assert_allclose(np.ma.filled(mesh.get_array(), np.nan).reshape(4, 5), ds["crps_skill"].values)
    assert mesh.norm.vmin == pytest.approx(-mesh.norm.vmax)
    assert [a.get_gid() for a in geo.collections if isinstance(a, FeatureArtist)] == ["coastline"]
    assert "CRPS skill" in geo.get_title() and "calibration of rain" in fig.get_suptitle()
    out = figures.save_png(fig, tmp_path / "pit_histogram_rain.png", 60)
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 5_000


def test_bayes_maps_with_vi_shows_khat_and_the_cells_hmc_redid(stores, tmp_path):
    ds = stores["vi"]
    fig = fb.bayes_maps(ds)
    geo = [ax for ax in panels(fig) if isinstance(ax, GeoAxes)]
    assert len(geo) == 4 and "fullrank VI" in fig.get_suptitle()
    assert "VI fit" in geo[2].get_title() and "0.7" in geo[2].get_title()
    mesh, = [m for m in geo[2].collections if isinstance(m, QuadMesh)]
    np.testing.assert_allclose(np.ma.filled(mesh.get_array(), np.nan).reshape(4, 5), ds["khat"].values)
    redone = int((ds["method"] == 0).sum())
    crosses = [c for c in geo[2].collections if isinstance(c, PathCollection)]
    assert redone > 0 and len(crosses) == 1 and len(crosses[0].get_offsets()) == redone
    assert any("re-sampled by HMC" in t.get_text() for leg in fig.legends for t in leg.get_texts())
    bar = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"][2]
    assert any(np.allclose(line.get_xdata() if len(set(line.get_xdata())) == 1 else line.get_ydata(), 0.7)
               for line in bar.lines)  # the threshold on the colorbar
    assert "R-hat" in geo[3].get_title()
    out = figures.save_png(fig, tmp_path / "bayes_maps_rain.png", 60)
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_bayes_maps_with_rejection_shows_the_acceptance_rate(stores):
    ds = stores["rejection"]
    fig = fb.bayes_maps(ds)
    geo = [ax for ax in panels(fig) if isinstance(ax, GeoAxes)]
    assert "acceptance rate" in geo[2].get_title() and "exact rejection" in fig.get_suptitle()
    mesh, = [m for m in geo[2].collections if isinstance(m, QuadMesh)]
    np.testing.assert_allclose(np.ma.filled(mesh.get_array(), np.nan).reshape(4, 5),
                               ds["rejection_acceptance"].values)


def test_refusals(stores):
    plain = stores["vi"].drop_vars(["pit", "crps_skill"])
    with pytest.raises(ValueError, match=r"pit_histogram figure needs the variable\(s\) pit, crps_skill"):
        fb.pit_histogram(plain)
    with pytest.raises(ValueError, match=r"bayes_maps \(vi\) figure needs the variable\(s\) khat"):
        fb.bayes_maps(stores["vi"].drop_vars("khat"))
    empty = stores["vi"].assign(pit=stores["vi"]["pit"] * np.nan)
    with pytest.raises(ValueError, match="needs finite PIT values"):
        fb.pit_histogram(empty)
