"""The run summary: its numbers are the stores', its page shows them, and the report opens on it.

A small run is built here with the stages' own ``run`` functions (which write
through ``io.write_store``) on planted synthetic fields, each inside
``logs.logged`` as the rule scripts do: ``x`` (planted modes with land cells:
moments and EOFs), ``y`` (a planted regression on x's PCs, one cell with a
missing step: regression and posterior) and ``d`` (Gumbel draws:
distributions). One workflow test runs Snakemake on config/synthetic.yaml for
the summary alone and builds the report from it.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr
import pytest
import yaml

from pipeline import __version__, distributions, eof, io, moments, posterior, regression, stream, summary, synthetic
from pipeline.logs import logged

ROOT = Path(__file__).resolve().parents[1]
REG_PARAMS = {"target": "y", "predictor": "x", "n_predictors": 3, "method": "ridge", "lag": 0,
              "alphas": [0.001, 0.01, 0.1, 1.0, 10.0], "cv_folds": 5, "max_iter": 2000, "tol": 1e-8}
POST_PARAMS = {"n_draws": 500, "credible_level": 0.9, "prior_a0": 0.01, "prior_b0": 0.01, "seed": 4, "chunk_cells": 64}
CONFIG = {"run": "r", "backend": "numpy", "fields": {"x": {"source": "synthetic"}}, "eof": {"n_modes": 3}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """results/r/ with the stores of fields x, y, d and the logs of their jobs."""
    root = tmp_path_factory.mktemp("summary") / "results" / "r"

    def store(stage, name):
        return root / stage / f"{name}.zarr"

    def logged_as(stage, name):
        return logged(root / "logs" / stage / f"{name}.log")

    x = synthetic.planted_modes(n_time=30, n_lat=6, n_lon=8, variances=(9.0, 4.0, 1.0), noise_std=0.05,
                                land_fraction=0.2, seed=1).assign_attrs(field_name="x")
    y = synthetic.planted_regression(x["true_pc"].values, [2.0, -1.0, 0.5], intercept=10.0, noise_std=0.5,
                                     n_lat=4, n_lon=5, seed=2, time=x["time"].values).assign_attrs(field_name="y")
    field = y["field"].values.copy()
    field[7, 1, 2] = np.nan  # one cell with a missing step
    y["field"] = y["field"].copy(data=field)
    d = synthetic.planted_distribution("gumbel_r", loc=50.0, scale=4.0, n_time=60, n_lat=3, n_lon=4,
                                       seed=3).assign_attrs(field_name="d")
    for name, ds in (("x", x), ("y", y), ("d", d)):
        with logged_as("ingest", name):
            io.write_store(ds, store("fields", name), stage="ingest", params={"source": "synthetic"})
    with logged_as("moments", "x"):
        moments.run(store("fields", "x"), store("moments", "x"), params={"covariance": "time"}, backend="numpy")
    with logged_as("eof", "x"):
        eof.run(store("fields", "x"), store("moments", "x"), store("eof", "x"),
                params={"n_modes": 3, "method": "gram"}, backend="numpy")
    with logged_as("regression", "y"):
        regression.run(store("fields", "y"), store("eof", "x"), store("regression", "y"), params=REG_PARAMS,
                       backend="numpy")
    with logged_as("posterior", "y"):
        posterior.run(store("fields", "y"), store("eof", "x"), store("regression", "y"), store("posterior", "y"),
                      params=POST_PARAMS, regression_params=REG_PARAMS, backend="numpy")
    with logged_as("distributions", "d"):
        distributions.run(store("fields", "d"), store("distributions", "d"), params={}, backend="numpy")
    return root


def _stores(root: Path) -> dict[str, list[Path]]:
    return {stage: sorted((root / stage).glob("*.zarr")) for stage in summary.STORE_STAGES if (root / stage).is_dir()}


@pytest.fixture(scope="module")
def collected(run_dir):
    return summary.collect(_stores(run_dir), config=CONFIG, logs=run_dir / "logs")


def test_field_counts_and_periods_are_the_stores(run_dir, collected):
    for name in ("x", "y", "d"):
        ds = io.open_store(run_dir / "fields" / f"{name}.zarr")
        field = ds["field"].values
        first, last = (str(np.datetime_as_string(t, unit="D")) for t in ds["time"].values[[0, -1]])
        assert collected.value(name, "Field", "period") == (first, last), name
        assert collected.value(name, "Field", "time steps") == field.shape[0] == ds.sizes["time"]
        assert collected.value(name, "Field", "cells") == field.shape[1] * field.shape[2]
        assert collected.value(name, "Field", "missing cells") == int(np.isnan(field).any(axis=0).sum()), name
    x = io.open_store(run_dir / "fields" / "x.zarr")
    assert collected.value("x", "Field", "missing cells") == int(x["land"].values.sum()) > 0  # from the moments store
    assert collected.value("y", "Field", "missing cells") == 1  # read from the field itself (no moments store)
    assert collected.value("x", "Field", "grid") == (6, 8) and collected.value("x", "Field", "units") == "K"


def test_missing_cells_from_moments_equal_a_read_of_the_field(run_dir):
    source = stream.ZarrSource(run_dir / "fields" / "x.zarr")
    assert summary.missing_from_moments(run_dir / "moments" / "x.zarr") == summary.count_missing(source, 0.001)


def test_eof_numbers_are_the_stores(run_dir, collected):
    ds = io.open_store(run_dir / "eof" / "x.zarr")
    fractions = collected.value("x", "EOF", "variance fractions")
    assert fractions == tuple(float(v) for v in ds["variance_fraction"].values) and len(fractions) == 3
    assert collected.value("x", "EOF", "leading modes together") == pytest.approx(float(ds["variance_fraction"].sum()))
    assert collected.value("x", "EOF", "method") == ds.attrs["method"] == "gram"
    assert collected.value("x", "EOF", "backend") == ds.attrs["array_backend"] == "numpy"
    assert collected.value("x", "EOF", "modes") == 3
    assert collected.value("x", "EOF", "overlapping North error bars") == ()  # variances 9, 4, 1 over 30 steps


def test_overlapping_north_error_bars_are_named():
    lam, err = np.array([9.0, 4.0, 3.5, 1.0]), np.array([0.5, 0.4, 0.3, 0.1])
    assert summary.overlapping_modes(lam, err) == ((2, 3),)


def test_regression_and_posterior_numbers_are_the_stores(run_dir, collected):
    reg = io.open_store(run_dir / "regression" / "y.zarr")
    assert collected.value("y", "Regression", "alpha") == float(reg["alpha"].values)
    assert float(reg["alpha"].values) in REG_PARAMS["alphas"]
    assert collected.value("y", "Regression", "method") == reg.attrs["method"] == "ridge"
    assert collected.value("y", "Regression", "period") == reg.attrs["period"] == "1950 .. 1979"
    assert collected.value("y", "Regression", "lag") == reg.attrs["lag"] == 0
    assert collected.value("y", "Regression", "paired time steps") == reg.attrs["n_samples"] == 30
    assert collected.value("y", "Regression", "predictors") == ("x_pc1", "x_pc2", "x_pc3")
    r2 = reg["r2"].values[np.isfinite(reg["r2"].values)]
    assert collected.value("y", "Regression", "R² across cells") == (np.median(r2), np.percentile(r2, 99))

    post = io.open_store(run_dir / "posterior" / "y.zarr")
    assert collected.value("y", "Posterior", "draws") == post.attrs["n_draws"] == 500
    assert collected.value("y", "Posterior", "credible level") == post.attrs["credible_level"]
    assert collected.value("y", "Posterior", "alpha") == post.attrs["alpha"] == float(reg["alpha"].values)
    excludes = collected.value("y", "Posterior", "cells whose interval excludes 0")
    low, high = post["ci_lower"].values, post["ci_upper"].values
    for k, p in enumerate(post["predictor"].values):
        fitted = np.isfinite(low[k])
        assert fitted.sum() == 19  # 4 x 5 cells, one with a missing step
        assert excludes[str(p)] == np.mean(((low[k] > 0) | (high[k] < 0))[fitted])


def test_distribution_numbers_are_the_stores(run_dir, collected):
    ds = io.open_store(run_dir / "distributions" / "d.zarr")
    best = ds["best_family"].values.ravel()
    shares = collected.value("d", "Distributions", "best family (lowest AIC)")
    assert shares == {str(f): np.mean(best == i) for i, f in enumerate(ds["family"].values)}
    assert math.isclose(sum(shares.values()), 1.0)
    assert collected.value("d", "Distributions", "fitted cells") == 12


def test_run_times_are_the_job_logs(run_dir, collected):
    for name, stages in (("x", ("ingest", "moments", "eof")), ("y", ("ingest", "regression", "posterior")),
                         ("d", ("ingest", "distributions"))):
        table = dict(collected.table(name).sections)["Run time"]
        assert [e.label for e in table] == [*stages, "total"]
        for e in table[:-1]:
            log_text = (run_dir / "logs" / e.label / f"{name}.log").read_text()
            last = log_text.rstrip().splitlines()[-1]
            assert last.endswith(f"INFO pipeline: done in {e.value:.2f} s"), last
        assert table[-1].value == pytest.approx(sum(e.value for e in table[:-1]))


def test_tile_jobs_add_up_and_a_log_without_its_last_line_is_not_logged(tmp_path):
    folder = tmp_path / "moments"
    folder.mkdir()
    for name, seconds in (("z.1-of-2", 1.5), ("z.2-of-2", 2.25), ("z", 0.5)):
        (folder / f"{name}.log").write_text(f"2026-01-01 00:00:00 INFO pipeline.moments: moments of z\n"
                                            f"2026-01-01 00:00:02 INFO pipeline: done in {seconds} s\n")
    (folder / "w.log").write_text("2026-01-01 00:00:00 ERROR pipeline: ValueError: no.\n")
    assert summary.stage_seconds(tmp_path, "moments", "z") == (4.25, 3)
    assert summary.stage_seconds(tmp_path, "moments", "w") == (None, 0)
    assert summary.stage_seconds(tmp_path, "fields", "nope") == (None, 0)
    entries = summary.time_entries(tmp_path, "w", ["moments"])
    assert entries[0].text == "not logged" and entries[-1].value == 0.0


def test_the_run_table_records_the_provenance(collected):
    assert collected.value("run", "Run", "run") == "r"
    assert collected.value("run", "Run", "array backend") == ("numpy",)
    assert collected.value("run", "Run", "pipeline version") == (__version__,)


def test_the_page_shows_every_number_and_the_config(collected):
    page = summary.render_html(collected)
    for table in collected.tables:
        for _, entries in table.sections:
            for e in entries:
                assert f"<th scope=\"row\">{html.escape(e.label)}</th><td>{html.escape(e.text)}</td>" in page, e
    fractions = collected.value("x", "EOF", "variance fractions")
    assert ", ".join(f"EOF{m} {100 * f:.1f} %" for m, f in enumerate(fractions, 1)) in page
    alpha = collected.value("y", "Regression", "alpha")
    assert f"<td>{alpha:.4g} (for standardized predictors" in page
    config = re.search(r'<pre class="config">(.*?)</pre>', page, re.S).group(1)
    assert yaml.safe_load(html.unescape(config)) == CONFIG
    assert page.startswith("<!DOCTYPE html>") and page.count("<table") == 4


def test_a_store_folder_it_does_not_know_is_refused(run_dir):
    with pytest.raises(ValueError, match="Unknown store folders"):
        summary.collect({"figures": []}, config=CONFIG)


def test_run_writes_the_page(run_dir, tmp_path):
    out = tmp_path / "deep" / "summary.html"
    summary.run(_stores(run_dir), out, config=CONFIG, logs=run_dir / "logs")
    assert out.read_text(encoding="utf-8") == summary.render_html(
        summary.collect(_stores(run_dir), config=CONFIG, logs=run_dir / "logs"))
    assert [p.name for p in out.parent.iterdir()] == ["summary.html"]


# ---------------------------------------------------------------- the workflow


def _snakemake(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.workflow
def test_the_report_opens_on_the_summary_with_the_stores_numbers(tmp_path):
    """One run of the synthetic config for the summary (and the stores it reads), then the report."""
    shutil.copy(ROOT / "config" / "synthetic.yaml", tmp_path / "synthetic.yaml")
    target = "results/synthetic/summary.html"
    result = _snakemake([target, "--cores", "2", "--configfile", "synthetic.yaml"], cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    result = _snakemake([target, "--cores", "1", "--configfile", "synthetic.yaml", "--report", "report.html"],
                        cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]

    report = (tmp_path / "report.html").read_text()
    landing = json.loads(re.search(r"var workflow_desc = (.*?);\n", report, re.S).group(1))
    results = tmp_path / "results" / "synthetic"
    ds = io.open_store(results / "eof" / "x.zarr")
    fractions = ", ".join(f"EOF{m} {100 * f:.1f} %" for m, f in enumerate(ds["variance_fraction"].values, 1))
    reg = io.open_store(results / "regression" / "y.zarr")
    page = (results / "summary.html").read_text()
    for needle in ("Run summary: synthetic", fractions, f"{float(reg['alpha']):.4g} (for standardized predictors",
                   html.escape(reg.attrs["period"]), "<th scope=\"row\">eof</th><td>", "n_draws: 1000"):
        assert needle in page and needle in landing, needle
    categories = json.loads(re.search(r"var categories = (.*?);\n", report).group(1))
    assert categories["0 Summary"] == {"Other": [target]}  # its own category, sorted first in the menu
    config = yaml.safe_load((tmp_path / "synthetic.yaml").read_text())
    shown = yaml.safe_load(html.unescape(re.search(r'<pre class="config">(.*?)</pre>', page, re.S).group(1)))
    assert shown["fields"]["x"]["options"] == config["fields"]["x"]["options"] and shown["eof"]["n_modes"] == 3


def test_sbc_entries_are_the_stores_p_values_and_power():
    ds = xr.Dataset(
        {"p_value": ("test", [0.4, 0.003, 0.7, 0.2]), "power": ("alternative", [0.99, 1.0])},
        coords={"sampler": ("test", ["hmc", "hmc", "rwm", "rwm"]), "param": ("test", ["mu", "log_sigma"] * 2),
                "alternative": ["mean off by 0.25 sd", "sd 20 % too small"], "cell": np.arange(50)},
        attrs={"level": 0.01, "n_ranks": 99})
    entries = {e.label: e for e in summary.sbc_entries(ds)}
    assert entries["hmc: rank-test p-values"].value == {"mu": 0.4, "log_sigma": 0.003}
    assert entries["hmc: rank-test p-values"].text.startswith("FAILED")
    assert entries["rwm: rank-test p-values"].text.startswith("passed")
    assert entries["power against a sampler with"].value == {"mean off by 0.25 sd": 0.99, "sd 20 % too small": 1.0}


def test_bayes_entries_show_the_fallback_and_the_held_out_scores():
    lat, lon = [0.0, 1.0], [0.0, 1.0, 2.0]
    ds = xr.Dataset(
        {"return_level_median": (("return_period", "lat", "lon"), np.full((1, 2, 3), 40.0), {"units": "mm"}),
         "rhat": (("param", "lat", "lon"), np.ones((3, 2, 3))),
         "crps_skill": (("lat", "lon"), np.array([[0.1, 0.2, 0.3], [0.4, -0.5, 0.6]])),
         "pit": (("heldout", "lat", "lon"), np.full((4, 2, 3), 0.5))},
        coords={"return_period": [100.0], "lat": lat, "lon": lon, "heldout": np.arange(4)},
        attrs={"sampler": "vi", "chains": 4, "draws": 100, "n_failed": 1, "n_fallback": 2, "pit_chi2_pvalue": 0.3})
    entries = {e.label: e for e in summary.bayes_entries(ds)}
    assert entries["cells re-sampled by HMC (envelope or k-hat failed)"].text == "2 of 6"
    skill = entries["held-out last 4 values: median CRPS skill against climatology"]
    assert skill.value == pytest.approx(np.median([0.1, 0.2, 0.3, 0.4, -0.5, 0.6]))
    assert entries["PIT uniformity (pooled χ², optimistic)"].value == 0.3


def test_sbc_stores_get_tables_of_their_own_beside_a_field_of_the_same_name(tmp_path):
    ds = xr.Dataset(
        {"rank": (("test", "cell"), np.zeros((2, 30), dtype=np.int32)), "p_value": ("test", [0.5, 0.2]),
         "power": ("alternative", [0.9])},
        coords={"sampler": ("test", ["hmc", "hmc"]), "param": ("test", ["mu", "log_sigma"]),
                "alternative": ["mean off by 0.25 sd"], "cell": np.arange(30)},
        attrs={"level": 0.01, "n_ranks": 99, "case": "normal"})
    store = io.write_store(ds, tmp_path / "sbc" / "normal.zarr", stage="sbc")
    logs = tmp_path / "logs" / "sbc"
    logs.mkdir(parents=True)
    (logs / "normal.log").write_text("2026-12-04 00:00:00 INFO pipeline.logs: done in 4.50 s\n")
    got = summary.collect({"sbc": [store]}, config={"run": "r"}, logs=tmp_path / "logs")
    assert [t.name for t in got.tables] == ["run", "SBC: normal"]
    assert got.value("SBC: normal", "Simulation-based calibration", "hmc: rank-test p-values") == {
        "mu": 0.5, "log_sigma": 0.2}
    assert got.value("SBC: normal", "Run time", "sbc") == pytest.approx(4.5)
