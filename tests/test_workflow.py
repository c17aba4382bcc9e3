"""The Snakemake workflow end to end: config validation, dry run, and a small real run.

The real run uses config/synthetic.yaml, whose fields carry planted truth, and
checks that the stores it writes recover that truth, that a second run of it is
byte for byte the same, and that a failed or killed rerun keeps the last
complete store (small configs of their own).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from conftest import files_without_history
from pipeline import io
from pipeline.io import open_store

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE)]


def _snakemake(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_dry_run_of_the_default_config_lists_every_job():
    result = _snakemake(["-n", "--forceall", "--cores", "1"], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M))
    expected = {
        "ingest": 3, "moments": 2, "eof": 2, "regression": 1, "distributions": 2, "joint": 1, "posterior": 1,
        "figure_eof_spectrum": 2, "figure_eof_maps": 2, "figure_pc_timeseries": 2,
        "figure_regression_maps": 1, "figure_distribution_map": 2, "figure_posterior_map": 1, "all": 1,
        "figure_distribution_fits": 2, "figure_gev_shape": 2, "figure_return_level_maps": 1,
        "figure_conditional_maps": 1, "figure_conditional_mean_maps": 1, "bayes": 1, "figure_bayes_maps": 1,
        "figure_pit_histogram": 1, "sbc": 3, "figure_sbc_ranks": 3,
        "figure_eof_correlation": 2, "figure_summary": 2, "figure_posterior_sd": 1, "summary": 1,
    }
    assert {k: int(counts.get(k, 0)) for k in expected} == expected


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"eof": {"fields": ["x"], "n_modes": 0}}, "n_modes"),
        ({"regression": {"target": "y", "predictor": "x", "method": "elasticnet"}}, "method"),
        ({"moments": {"weights": "area"}}, "weights"),
        ({"eof": {"fields": ["nope"]}}, "eof.fields names field 'nope'"),
    ],
)
def test_a_bad_config_fails_before_any_job_naming_the_key(tmp_path, override, needle):
    config = yaml.safe_load((ROOT / "config" / "synthetic.yaml").read_text())
    config.update(override)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake(["-n", "--cores", "1", "--configfile", str(tmp_path / "bad.yaml")], cwd=tmp_path)
    assert result.returncode != 0
    assert needle in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def _jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """The job counts of a dry run's summary table (rule name -> jobs)."""
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M) if k != "total"}


def _dry_run(config: dict, workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    (workdir / "user.yaml").write_text(yaml.safe_dump(config))
    return _snakemake(["-n", "--forceall", "--cores", "1", "--configfile", "user.yaml", *extra], cwd=workdir)


def test_a_configfile_is_the_whole_run_and_the_demo_is_not_merged(tmp_path):
    config = {
        "fields": {"sea": {"source": "netcdf", "path": str(ROOT / "resources" / "sst_ndjfm_anom.nc"),
                           "variable": "sst"}},
        "eof": {"fields": ["sea"]},
    }
    result = _dry_run(config, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _jobs(result) == {"ingest": 1, "moments": 1, "eof": 1, "figure_eof_spectrum": 1, "figure_eof_maps": 1,
                             "figure_pc_timeseries": 1, "figure_eof_correlation": 1, "figure_summary": 1,
                             "summary": 1, "all": 1}
    assert "z500" not in result.stdout and "/sst.zarr" not in result.stdout


def test_a_nested_config_override_keeps_its_type(tmp_path):
    shutil.copy(ROOT / "config" / "synthetic.yaml", tmp_path / "synthetic.yaml")
    result = _snakemake(["-n", "--forceall", "--cores", "1", "--configfile", "synthetic.yaml",
                         "--config", "moments={n_tiles: 3}", "regression={tol: 1e-6}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _jobs(result)["moments_tile"] == 3


def test_a_glob_path_is_every_file_it_matches_and_an_unmatched_one_fails(tmp_path):
    (tmp_path / "data").mkdir()
    for decade in ("1990", "1980"):
        (tmp_path / "data" / f"tos_{decade}s.nc").touch()  # dry run: never opened
    config = {"fields": {"tos": {"source": "netcdf", "path": "data/tos_*.nc"}}, "eof": {"fields": ["tos"]}}
    result = _dry_run(config, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"rule ingest:\n\s+input: data/tos_1980s.nc, data/tos_1990s.nc\n", result.stdout), result.stdout

    config["fields"]["tos"]["path"] = "data/thetao_*.nc"
    result = _dry_run(config, tmp_path)
    assert result.returncode != 0
    assert "Field 'tos': path pattern 'data/thetao_*.nc' matches no file." in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ({"mode": 1, "lat": 0.0, "lon": 200.0, "field": "nope"}, "eof.sign names field 'nope'"),
        ({"mode": 1, "lat": 0.0, "lon": 200.0, "field": "y"}, "eof.sign has a rule for field 'y'"),
        ({"mode": 1, "lat": 0.0, "lon": 200.0, "series": "nino34.csv"}, "is valid under each of"),
        ({"mode": 1, "lat": 0.0}, "'lon' is a dependency of 'lat'"),
    ],
)
def test_a_bad_sign_rule_fails_before_any_job(tmp_path, rule, needle):
    config = yaml.safe_load((ROOT / "config" / "synthetic.yaml").read_text())
    config["eof"]["sign"] = [rule]
    result = _dry_run(config, tmp_path)
    assert result.returncode != 0
    assert needle in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_a_sign_rule_series_is_an_input_of_the_eofs_of_its_fields(tmp_path):
    (tmp_path / "nino34.csv").write_text("date,value\n")
    config = yaml.safe_load((ROOT / "config" / "synthetic.yaml").read_text())
    config["eof"]["sign"] = [{"mode": 1, "series": "nino34.csv", "field": "x"}, {"mode": 2, "lat": 0.0, "lon": 10.0}]
    result = _dry_run(config, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"rule eof:\n\s+input: \S+/fields/x.zarr.done, \S+/moments/x.zarr.done, nino34.csv\n", result.stdout)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """Run the whole workflow on config/synthetic.yaml in a scratch directory."""
    workdir = tmp_path_factory.mktemp("workflow")
    shutil.copy(ROOT / "config" / "synthetic.yaml", workdir / "synthetic.yaml")
    result = _snakemake(["--cores", "2", "--configfile", "synthetic.yaml"], cwd=workdir)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return workdir / "results" / "synthetic"


@pytest.mark.workflow
def test_every_store_and_figure_is_written(synthetic_run):
    for stage, name in [("fields", "x"), ("fields", "y"), ("fields", "d"), ("moments", "x"), ("eof", "x"),
                        ("regression", "y"), ("distributions", "d"), ("posterior", "y"), ("fields", "rain"),
                        ("distributions", "rain"), ("joint", "y"), ("bayes", "rain"), ("sbc", "normal")]:
        store = synthetic_run / stage / f"{name}.zarr"
        assert (store / "zarr.json").is_file(), (stage, name)
        assert io.marked_store(io.marker_path(store)) == store  # its marker, written after it, matches it
        assert io.check_store(store), (stage, name)  # with a manifest, every chunk intact
    pngs = sorted(p.name for p in (synthetic_run / "figures").glob("*.png"))
    assert pngs == sorted([
        "eof_spectrum_x.png", "eof_maps_x.png", "pc_timeseries_x.png", "regression_maps_y.png",
        "posterior_map_y.png", "distribution_map_d.png", "eof_correlation_x.png", "summary_x.png", "posterior_sd_y.png",
        "distribution_fits_d.png", "gev_shape_d.png", "distribution_map_rain.png", "distribution_fits_rain.png",
        "gev_shape_rain.png", "return_level_maps_rain.png", "conditional_maps_y.png",
        "conditional_mean_maps_y.png", "bayes_maps_rain.png", "pit_histogram_rain.png", "sbc_ranks_normal.png",
    ])
    assert all((synthetic_run / "figures" / p).stat().st_size > 10_000 for p in pngs)
    assert not list(synthetic_run.rglob(".*.tmp-*")) and not list(synthetic_run.rglob(".*.old-*"))


@pytest.mark.workflow
def test_the_run_recovers_the_planted_truth(synthetic_run):
    fields_x = open_store(synthetic_run / "fields" / "x.zarr")
    eof = open_store(synthetic_run / "eof" / "x.zarr")
    # EOFs: planted patterns recovered (noise 0.05 against mode variances 9, 4, 1).
    for m in (1, 2, 3):
        true = fields_x["true_eof"].sel(mode=m).values.ravel()
        got = eof["eof"].sel(mode=m).values.ravel()
        ok = ~np.isnan(true)
        assert np.isnan(got[~ok]).all()
        assert abs(np.dot(true[ok], got[ok])) > 0.99
    np.testing.assert_allclose(eof["eigenvalue"].values, [9.0, 4.0, 1.0], rtol=0.05)

    # Regression: planted coefficients (2, -1, 0.5) on the planted PCs, up to each PC's sign.
    sign = np.sign(np.sum(fields_x["true_pc"].values * eof["pc"].values, axis=0))
    reg = open_store(synthetic_run / "regression" / "y.zarr")
    coef = reg["coef"].values.reshape(3, -1) * sign[:, None]
    np.testing.assert_allclose(np.median(coef, axis=1), [2.0, -1.0, 0.5], atol=0.05)
    np.testing.assert_allclose(np.median(reg["intercept"].values), 100.0, atol=0.3)

    # Posterior: the 90 % intervals cover the planted coefficients about 90 % of the time.
    post = open_store(synthetic_run / "posterior" / "y.zarr")
    low = post["ci_lower"].values.reshape(3, -1) * sign[:, None]
    high = post["ci_upper"].values.reshape(3, -1) * sign[:, None]
    low, high = np.minimum(low, high), np.maximum(low, high)
    truth = np.array([2.0, -1.0, 0.5])[:, None]
    coverage = np.mean((low <= truth) & (truth <= high))
    assert 0.75 <= coverage <= 1.0

    # Distributions: the planted Gumbel (maxima) is the best family almost everywhere.
    dist = open_store(synthetic_run / "distributions" / "d.zarr")
    families = list(dist["family"].values)
    best = dist["best_family"].values.ravel()
    assert np.mean(best == families.index("gumbel_r")) >= 0.8
    loc = dist["loc"].sel(family="gumbel_r").values
    np.testing.assert_allclose(np.median(loc), 5000.0, atol=8.0)

    # Extremes: the annual maxima of the daily gamma draws have the law F**365; their 10-year level
    rain = open_store(synthetic_run / "fields" / "rain.zarr")
    truth = stats.gamma.ppf(0.9 ** (1 / 365), rain["true_shape"].values, scale=rain["true_scale"].values)
    ext = open_store(synthetic_run / "distributions" / "rain.zarr")
    lo, hi = (ext[f"return_level_profile_{b}"].sel(family="gev", return_period=10.0).values for b in ("lower", "upper"))
    assert np.mean((lo <= truth) & (truth <= hi)) >= 0.8
    # Joint: y is a linear function of the planted PCs, so it correlates with the x PC 1 index in every cell
    joint = open_store(synthetic_run / "joint" / "y.zarr")
    assert joint.attrs["index_name"] == "x PC 1" and np.all(np.isfinite(joint["rho"].values))


@pytest.mark.workflow
def test_a_second_run_has_nothing_to_do_and_a_param_change_reruns_only_downstream(synthetic_run):
    workdir = synthetic_run.parents[1]
    result = _snakemake(["-n", "--cores", "1", "--configfile", "synthetic.yaml"], cwd=workdir)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr
    config = yaml.safe_load((workdir / "synthetic.yaml").read_text())
    config["posterior"]["n_draws"] = 200
    (workdir / "changed.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake(["-n", "--cores", "1", "--configfile", "changed.yaml"], cwd=workdir)
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M))
    # the summary page shows every stage's numbers and the config, so it is redone too
    assert set(jobs) - {"total"} == {"posterior", "figure_posterior_map", "figure_posterior_sd", "summary", "all"}, \
        result.stdout



@pytest.mark.workflow
def test_stores_carry_their_provenance(synthetic_run):
    stages = {"fields/x": "ingest", "fields/d": "ingest", "moments/x": "moments", "eof/x": "eof",
              "regression/y": "regression", "distributions/d": "distributions", "posterior/y": "posterior",
              "joint/y": "joint", "bayes/rain": "bayes"}
    commit = io.git_commit()
    for name, stage in stages.items():
        attrs = open_store(synthetic_run / f"{name}.zarr").attrs
        assert attrs["pipeline_stage"] == stage and attrs["pipeline_version"] and attrs["software"], name
        assert attrs.get("pipeline_git_commit") == commit, name  # absent outside a git checkout
        assert attrs["pipeline_dtype"] == "float64", name
        assert attrs["history"].endswith(f"written by pipeline.{stage}"), name


@pytest.mark.workflow
def test_the_report_is_built(synthetic_run):
    workdir = synthetic_run.parents[1]
    result = _snakemake(["--cores", "1", "--configfile", "synthetic.yaml", "--report", "report.html"], cwd=workdir)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert (workdir / "report.html").stat().st_size > 10_000


@pytest.mark.workflow
def test_one_config_run_twice_gives_byte_identical_stores_and_figures(synthetic_run, tmp_path):
    shutil.copy(ROOT / "config" / "synthetic.yaml", tmp_path / "synthetic.yaml")
    result = _snakemake(["--cores", "2", "--configfile", "synthetic.yaml"], cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    first = files_without_history(synthetic_run, skip=("logs", "summary.html"))  # the page holds job run times
    second = files_without_history(tmp_path / "results" / "synthetic", skip=("logs", "summary.html"))
    assert sorted(first) == sorted(second)
    assert any(k.endswith(".png") for k in first) and any(k.endswith(".zarr.done") for k in first)
    assert [k for k in first if first[k] != second[k]] == []


SMALL = {
    "run": "small",
    "backend": "numpy",
    "fields": {"x": {"source": "synthetic", "kind": "modes", "units": "K",
                     "options": {"n_time": 20, "n_lat": 6, "n_lon": 8, "noise_std": 0.05, "seed": 1}}},
    "eof": {"fields": ["x"], "n_modes": 3},
}


def _store_bytes(store: Path) -> dict[str, bytes]:
    return {f.relative_to(store).as_posix(): f.read_bytes() for f in sorted(store.rglob("*")) if f.is_file()}


@pytest.mark.workflow
def test_a_failed_rerun_keeps_the_previous_store(tmp_path):
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(SMALL))
    target = "results/small/eof/x.zarr.done"
    result = _snakemake([target, "--cores", "1", "--configfile", "small.yaml"], cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    store = tmp_path / "results" / "small" / "eof" / "x.zarr"
    before = _store_bytes(store)

    (tmp_path / "more.yaml").write_text(yaml.safe_dump({**SMALL, "eof": {"fields": ["x"], "n_modes": 25}}))
    result = _snakemake([target, "--cores", "1", "--configfile", "more.yaml"], cwd=tmp_path)
    assert result.returncode != 0
    assert "n_modes=25 exceeds the rank" in result.stdout + result.stderr
    assert _store_bytes(store) == before  # the last good store, untouched
    assert not (tmp_path / target).exists()  # ... and its marker gone, so the next run retries the stage
    assert [p.name for p in store.parent.iterdir()] == ["x.zarr"]


KILL = {
    "run": "kill",
    "backend": "numpy",
    "fields": {"big": {"source": "synthetic", "stream": True, "units": "K",
                       "options": {"n_time": 100, "n_lat": 180, "n_lon": 360, "chunks": [100, 4, 360],
                                   "dtype": "float32", "noise_std": 0.1, "seed": 7}}},
    "eof": {"fields": ["big"]},
}


@pytest.mark.workflow
def test_a_job_killed_mid_write_keeps_the_previous_store_and_the_rerun_equals_a_clean_run(tmp_path):
    target = "results/kill/fields/big.zarr.done"
    store = tmp_path / "results" / "kill" / "fields" / "big.zarr"
    changed = {**KILL, "fields": {"big": {**KILL["fields"]["big"],
                                          "options": {**KILL["fields"]["big"]["options"], "seed": 8}}}}
    (tmp_path / "first.yaml").write_text(yaml.safe_dump(KILL))
    (tmp_path / "second.yaml").write_text(yaml.safe_dump(changed))
    result = _snakemake([target, "--cores", "1", "--configfile", "first.yaml"], cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    before = _store_bytes(store)

    # The second config rewrites the store; kill Snakemake and its job once chunks are being written.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    job = subprocess.Popen([*SNAKEMAKE, target, "--cores", "1", "--configfile", "second.yaml"], cwd=tmp_path,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and job.poll() is None:
            if any(list(tmp.glob("field/c/*/*/*")) for tmp in store.parent.glob(".big.zarr.tmp-*")):
                os.killpg(job.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert job.returncode == -signal.SIGKILL, "the job finished before a chunk was seen being written"
    assert list(store.parent.glob(".big.zarr.tmp-*"))  # the killed write's leftovers ...
    assert _store_bytes(store) == before  # ... and the previous complete store, intact
    assert io.check_store(store)

    result = _snakemake(["--unlock", "--configfile", "second.yaml"], cwd=tmp_path)  # Snakemake's own lock
    assert result.returncode == 0, result.stderr[-2000:]
    result = _snakemake([target, "--cores", "1", "--configfile", "second.yaml"], cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert sorted(p.name for p in store.parent.iterdir()) == ["big.zarr", "big.zarr.done"]

    clean = tmp_path / "clean"
    clean.mkdir()
    shutil.copy(tmp_path / "second.yaml", clean / "second.yaml")
    result = _snakemake([target, "--cores", "1", "--configfile", "second.yaml"], cwd=clean)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert files_without_history(store.parent) == files_without_history(clean / "results" / "kill" / "fields")

TILED = {
    "run": "tiled",
    "backend": "numpy",
    "fields": {
        "big": {
            "source": "synthetic",
            "stream": True,
            "units": "K",
            "options": {"n_time": 30, "n_lat": 12, "n_lon": 20, "chunks": [30, 3, 20], "dtype": "float64",
                        "noise_std": 0.1, "land_fraction": 0.1, "seed": 7},
        }
    },
    "moments": {"n_tiles": 3, "store_anomaly_mb": 0},
    "eof": {"fields": ["big"], "n_modes": 3, "method": "gram"},
}


@pytest.mark.workflow
def test_tiled_scatter_gather_run_equals_the_single_job_result(tmp_path):
    from pipeline import eof, moments
    from pipeline.backend import resolve

    (tmp_path / "tiled.yaml").write_text(yaml.safe_dump(TILED))
    result = _snakemake(["--cores", "2", "--configfile", "tiled.yaml"], cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    out = tmp_path / "results" / "tiled"
    partials = sorted((out / "moments" / "big.tiles").glob("*.zarr"))
    assert len(partials) == 3
    shares = [int((open_store(p)["count"].values > 0).sum()) for p in partials]
    assert all(n > 0 for n in shares)  # every job did a share
    logs = [p.read_text() for p in (out / "logs" / "moments").glob("big.*-of-3.log")]
    assert len(logs) == 3 and all("time covariance" in text for text in logs)
    field = out / "fields" / "big.zarr"
    single = moments.compute(field, params={"store_anomaly_mb": 0}, backend=resolve("numpy"))
    tiled = open_store(out / "moments" / "big.zarr")
    assert sum(shares) == int((single["count"].values > 0).sum())  # ... and the shares are disjoint
    for name in ("mean", "std", "count", "valid", "covariance"):
        np.testing.assert_allclose(tiled[name].values, single[name].values, rtol=1e-12, atol=1e-12, equal_nan=True)
    expected = eof.compute(field, single, params={"n_modes": 3, "method": "gram"}, backend=resolve("numpy"))
    got = open_store(out / "eof" / "big.zarr")
    for name in ("eof", "pc", "eigenvalue", "eof_correlation"):
        np.testing.assert_allclose(got[name].values, expected[name].values, rtol=1e-10, atol=1e-12, equal_nan=True)


@pytest.mark.workflow
def test_a_users_monthly_decade_files_run_end_to_end(tmp_path):
    """Monthly noleap decade files with a seasonal cycle, a glob, a climatology and a monthly regression."""
    import cftime
    import xarray as xr

    from pipeline.synthetic import planted_modes

    n = 12 * 30
    truth = planted_modes(n_time=n, n_lat=8, n_lon=12, variances=(9.0, 4.0, 1.0), noise_std=0.01, seed=11)
    months = np.arange(n)
    days = np.array([cftime.date2num(cftime.datetime(1960 + m // 12, m % 12 + 1, 15, calendar="noleap"),
                                     "days since 1850-01-01", "noleap") for m in months])
    cycle = 6.0 * np.cos(2 * np.pi * (months % 12) / 12)[:, None, None]
    rng = np.random.default_rng(0)
    target = 280.0 + cycle + 2.0 * truth["true_pc"].values[:, 0, None, None] + 0.2 * rng.normal(size=(n, 4, 5))
    time_attrs = {"units": "days since 1850-01-01", "calendar": "noleap"}
    for k in range(3):
        part = slice(120 * k, 120 * (k + 1))
        for name, values, lat, lon in (("tos", truth["field"].values + 290.0 + cycle, truth["lat"], truth["lon"]),
                                       ("tas", target, np.linspace(40, 60, 4), np.linspace(0, 20, 5))):
            xr.Dataset({name: (("time", "lat", "lon"), values[part], {"units": "K"})},
                       coords={"time": ("time", days[part], time_attrs), "lat": np.asarray(lat), "lon": np.asarray(lon)},
                       ).to_netcdf(tmp_path / f"{name}_Amon_{1960 + 10 * k}01-{1969 + 10 * k}12.nc")
    config = {
        "run": "monthly", "backend": "numpy",
        "fields": {"tos": {"source": "netcdf", "path": "tos_Amon_*.nc", "climatology": "monthly"},
                   "tas": {"source": "netcdf", "path": "tas_Amon_*.nc", "climatology": "monthly"}},
        "eof": {"fields": ["tos"], "n_modes": 3},
        "regression": {"target": "tas", "predictor": "tos", "n_predictors": 2, "method": "ols"},
        "posterior": {"n_draws": 200},
    }
    (tmp_path / "monthly.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake(["--cores", "2", "--configfile", "monthly.yaml"], cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    out = tmp_path / "results" / "monthly"
    eof = open_store(out / "eof" / "tos.zarr")
    assert eof.sizes["time"] == n
    np.testing.assert_allclose(eof["variance_fraction"].values[:3], np.array([9, 4, 1]) / 14, atol=0.02)
    reg = open_store(out / "regression" / "tas.zarr")
    assert reg.attrs["alignment"] == "monthly" and reg.attrs["n_samples"] == n
    sign = np.sign(np.dot(eof["pc"].values[:, 0], truth["true_pc"].values[:, 0]))
    np.testing.assert_allclose(sign * reg["coef"].values[0], 2.0, atol=0.05)
    assert float(reg["r2"].min()) > 0.95
