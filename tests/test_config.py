"""The config checked at the door: one sentence per problem, before any job runs.

The sentences come from :mod:`pipeline.config`: the schema (key path, value,
what is allowed), YAML syntax (file and line), field names, source paths and
the backend. The workflow raises them while it is read (dry runs here), and
``python -m pipeline.config check`` raises them for a config file before a run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import config as cfg

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
BASE = {"fields": {"x": {"source": "synthetic", "kind": "modes"}}, "eof": {"fields": ["x"]}}


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), **extra}


def _snakemake(args: list[str], cwd: Path, snakefile: Path = SNAKEFILE, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(snakefile), *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=300)


def _checker(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.config", "check", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=120)


def _with(override: dict) -> dict:
    config = yaml.safe_load(yaml.safe_dump(BASE))
    for section, values in override.items():
        if section != "fields" and isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    return config


def _sentence(override: dict) -> str:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.check_schema(_with(override))
    return str(info.value)


# --- the schema: one sentence with the key path, the value and what is allowed ------------------------------------

SCHEMA_CASES = [
    pytest.param({"eof": {"n_mode": 3}},
                 "Config key eof.n_mode is not a key of eof (did you mean n_modes?); the keys of eof are fields, "
                 "n_modes, method, memory_budget_mb, precision, power_iterations, oversample, seed, exact_max_mb, "
                 "sign.", id="unknown-key"),
    pytest.param({"eofs": {"n_modes": 3}},
                 "Config key eofs is not a top-level key (did you mean eof?); the top-level keys are run, backend, output, "
                 "fields, moments, eof, regression, distributions, joint, bayes, posterior, sbc, figures.", id="unknown-top-level-key"),
    pytest.param({"eof": {"n_modes": "3"}},
                 "Config key eof.n_modes is '3' (text), but it must be an integer; write it without quotes.",
                 id="wrong-type"),
    pytest.param({"regression": {"target": "x", "predictor": "x", "tol": "1e-8"}},
                 "Config key regression.tol is '1e-8' (text), but it must be a number; write 1.0e-8 (YAML reads "
                 "1e-8 as text).", id="exponent-read-as-text"),
    pytest.param({"eof": {"fields": None}},
                 "Config key eof.fields has no value, but it must be a list; give one or remove the key.",
                 id="key-without-value"),
    pytest.param({"eof": {"n_modes": 0}},
                 "Config key eof.n_modes is 0, out of range; it must be at least 1.", id="below-minimum"),
    pytest.param({"posterior": {"credible_level": 1.0}},
                 "Config key posterior.credible_level is 1.0, out of range; it must be greater than 0 and less "
                 "than 1.", id="open-interval"),
    pytest.param({"eof": {"sign": [{"mode": 1, "lat": 95.0, "lon": 0.0}]}},
                 "Config key eof.sign[0].lat is 95.0, out of range; it must be at least -90 and at most 90.",
                 id="latitude-out-of-range"),
    pytest.param({"moments": {"weights": "area"}},
                 "Config key moments.weights is 'area', which is not allowed; use one of none, coslat, sqrt_coslat.",
                 id="enum"),
    pytest.param({"eof": {"sign": "max"}},
                 "Config key eof.sign is 'max', which is not allowed; use max_positive.", id="enum-of-one"),
    pytest.param({"fields": {"x": {"source": "netcdf"}}},
                 "Config key fields.x.path is missing (a netcdf field needs it); add it.", id="required"),
    pytest.param({"fields": {"1x": {"source": "synthetic"}}, "eof": {"fields": []}},
                 "Config key fields.1x is not a valid name; names must match ^[A-Za-z][A-Za-z0-9_]*$ (a letter "
                 "first).", id="field-name"),
    pytest.param({"run": "my run"},
                 "Config key run is 'my run', which does not match ^[A-Za-z0-9_.-]+$; change it to match.",
                 id="pattern"),
    pytest.param({"fields": {"x": {"source": "synthetic", "years": [1979]}}},
                 "Config key fields.x.years is [1979], with 1 item(s); give exactly 2 item(s).", id="list-length"),
    pytest.param({"fields": {"x": {"source": "synthetic", "smooth_days": 30}}},
                 "Config key fields.x.smooth_days is 30, an even number; use an odd one.", id="even-window"),
    pytest.param({"distributions": {"fields": ["x"], "families": ["normal", "normal"]}},
                 "Config key distributions.families is [normal, normal], which repeats an item; list each once.",
                 id="repeated-item"),
    pytest.param({"fields": {}},
                 "Config key fields is empty; give at least 1 entry there.", id="no-field"),
    pytest.param({"eof": {"sign": [{"mode": 1, "lat": 0.0, "lon": 10.0, "series": "nino34.csv"}]}},
                 "Config key eof.sign[0] is valid under each of its forms (lat and lon; series); give only one of "
                 "them.", id="sign-rule-two-forms"),
    pytest.param({"eof": {"sign": [{"mode": 1}]}},
                 "Config key eof.sign[0] is {mode: 1}, which has none of its forms; give lat and lon, or series.",
                 id="sign-rule-no-form"),
    pytest.param({"eof": {"sign": [{"mode": 1, "lat": 0.0}]}},
                 "Config key eof.sign[0] has lat but not lon ('lon' is a dependency of 'lat'); add lon or remove "
                 "lat.", id="dependent-key"),
]


@pytest.mark.parametrize(("override", "sentence"), SCHEMA_CASES)
def test_a_schema_error_is_one_short_sentence_with_key_value_and_what_is_allowed(override, sentence):
    got = _sentence(override)
    assert got == sentence
    assert len(got) < 300 and "\n" not in got


def test_a_config_that_is_not_a_mapping_says_so():
    with pytest.raises(cfg.ConfigError, match=r"^The config is a list, but it must be a mapping\.$"):
        cfg.check_schema([1, 2])


WORKFLOW_CASES = [
    pytest.param({"eof": {"n_mode": 3}}, "Config key eof.n_mode is not a key of eof (did you mean n_modes?)",
                 id="unknown-key"),
    pytest.param({"eof": {"n_modes": "three"}},
                 "Config key eof.n_modes is 'three' (text), but it must be an integer.", id="wrong-type"),
    pytest.param({"eof": {"n_modes": 0}}, "Config key eof.n_modes is 0, out of range; it must be at least 1.",
                 id="out-of-range"),
    pytest.param({"moments": {"weights": "area"}},
                 "Config key moments.weights is 'area', which is not allowed; use one of none, coslat, sqrt_coslat.",
                 id="enum"),
]


@pytest.mark.parametrize(("override", "sentence"), WORKFLOW_CASES)
def test_the_workflow_stops_a_bad_config_with_the_sentence_and_no_schema_dump(tmp_path, override, sentence):
    config = yaml.safe_load((ROOT / "config" / "synthetic.yaml").read_text())
    for section, values in override.items():
        config.setdefault(section, {}).update(values)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake(["-n", "--cores", "1", "--configfile", "bad.yaml"], cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert sentence in out
    line = next(text for text in out.splitlines() if sentence in text)
    assert len(line) < 300
    assert "Failed validating" not in out and "description" not in out  # no schema printed
    assert len(out.strip().splitlines()) <= 4, out
    assert not (tmp_path / "results").exists()


# --- YAML syntax: the file and the line ----------------------------------------------------------------------------

BROKEN_YAML = "run: broken\nfields:\n  x: {source: synthetic, kind: modes\neof:\n  fields: [x]\n"


def test_the_checker_names_the_file_and_line_of_a_yaml_error(tmp_path):
    (tmp_path / "my.yaml").write_text(BROKEN_YAML)
    result = _checker("my.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        "my.yaml, line 4: expected ',' or '}', but got ':' at column 4 (while parsing a flow mapping from line 3); "
        "fix the YAML there."
    )


def test_a_tab_in_the_indentation_is_named_with_its_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("tab.yaml").write_text("fields:\n\tx: {source: synthetic}\n")
    with pytest.raises(cfg.ConfigError, match=r"^tab\.yaml, line 2: found character '\\t' .*spaces, not tabs\)\.$"):
        cfg.load("tab.yaml")


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    (tmp_path / "twice.yaml").write_text("fields:\n  x: {source: synthetic}\neof:\n  n_modes: 3\n  n_modes: 4\n")
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(tmp_path / "twice.yaml")
    assert str(info.value) == (f"{tmp_path / 'twice.yaml'}, line 5: the key 'n_modes' is given twice in one mapping "
                               f"(first at line 4); keep one of them.")


def test_the_workflow_refuses_a_configfile_with_a_key_given_twice(tmp_path):
    text = (ROOT / "config" / "synthetic.yaml").read_text() + "\nposterior:\n  n_draws: 10\n"
    (tmp_path / "twice.yaml").write_text(text)
    result = _snakemake(["-n", "--cores", "1", "--configfile", "twice.yaml"], cwd=tmp_path)
    assert result.returncode != 0
    line = text.count("\n", 0, text.rindex("posterior:")) + 1
    first = text.count("\n", 0, text.index("posterior:")) + 1
    assert (f"twice.yaml, line {line}: the key 'posterior' is given twice in one mapping (first at line {first}); "
            f"keep one of them.") in result.stdout + result.stderr


def test_a_yaml_error_in_the_demo_config_names_config_yaml_and_the_line(tmp_path):
    """A copy of the workflow (the real config/config.yaml is never touched) whose demo config is broken."""
    shutil.copytree(ROOT / "workflow", tmp_path / "workflow")
    (tmp_path / "src").symlink_to(ROOT / "src")
    (tmp_path / "config").mkdir()
    demo = (ROOT / "config" / "config.yaml").read_text().replace("  n_modes: 5", "  n_modes: [5")
    (tmp_path / "config" / "config.yaml").write_text(demo)
    result = _snakemake(["-n", "--cores", "1"], cwd=tmp_path, snakefile=tmp_path / "workflow" / "Snakefile")
    out = result.stdout + result.stderr
    assert result.returncode != 0
    line = demo.count("\n", 0, demo.index("  n_modes: [5")) + 2  # the problem is seen on the next line
    assert f"config/config.yaml, line {line}: " in out, out
    assert "fix the YAML there." in out
    assert not (tmp_path / "results").exists()


# --- the checker: python -m pipeline.config check ----------------------------------------------------------------


def test_the_checker_passes_the_shipped_configs(monkeypatch):
    for name in ("config.yaml", "synthetic.yaml"):
        result = _checker(f"config/{name}", cwd=ROOT)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"config OK: config/{name}: run ")
    monkeypatch.chdir(ROOT)
    assert cfg.check(["config/synthetic.yaml"]) == (
        "config OK: config/synthetic.yaml: run synthetic into results/synthetic/; fields x, y, d, rain; eof of x; "
        "distributions of d, rain; joint law with the index of y; Bayesian GEV of rain; simulation-based calibration "
        "of normal; regression of y on x; backend numpy."
    )


def test_the_checker_names_the_file_and_line_of_a_schema_error(tmp_path):
    (tmp_path / "my.yaml").write_text("fields:\n  x: {source: synthetic}\neof:\n  fields: [x]\n  n_modes: 0\n")
    result = _checker("my.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "my.yaml, line 5: Config key eof.n_modes is 0, out of range; it must be at least 1."


def test_the_checker_merges_several_files_and_names_the_one_that_sets_the_key(tmp_path):
    (tmp_path / "base.yaml").write_text("fields:\n  x: {source: synthetic}\neof:\n  fields: [x]\n")
    (tmp_path / "more.yaml").write_text("# a second file\neof:\n  method: fastest\n")
    with pytest.raises(cfg.ConfigError) as info:
        cfg.check([tmp_path / "base.yaml", tmp_path / "more.yaml"])
    assert str(info.value).startswith(f"{tmp_path / 'more.yaml'}, line 3: Config key eof.method is 'fastest', which "
                                      f"is not allowed; use one of auto, gram")


@pytest.mark.parametrize(
    ("override", "sentence"),
    [
        ({"eof": {"fields": ["nope"]}},
         "Config key eof.fields names field 'nope', which is not declared under 'fields' (declared: x)."),
        ({"fields": {"x": {"source": "synthetic"}, "y": {"source": "synthetic", "predictors_from": "z"}}},
         "Config key fields.y.predictors_from names field 'z', which is not declared under 'fields' "
         "(declared: x, y)."),
        ({"fields": {"x": {"source": "synthetic"}, "y": {"source": "synthetic"}},
          "regression": {"target": "y", "predictor": "y"}},
         "Config key regression.predictor is 'y', but its EOFs are not computed; add it to eof.fields."),
    ],
    ids=["eof-field", "predictors-from", "predictor-without-eofs"],
)
def test_the_checker_refuses_a_stage_naming_an_undeclared_field(override, sentence):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.check_field_names(_with(override))
    assert str(info.value) == sentence


def test_the_checker_refuses_source_paths_that_match_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tos_1990s.nc").touch()
    fields = {"tos": {"source": "netcdf", "path": "data/tos_*.nc"}}
    cfg.check_sources({"fields": fields})  # a pattern that matches
    fields["tos"]["path"] = "data/thetao_*.nc"
    with pytest.raises(cfg.ConfigError) as info:
        cfg.check_sources({"fields": fields})
    assert str(info.value) == (f"Config key fields.tos.path is the pattern 'data/thetao_*.nc', which matches no file "
                               f"(seen from {tmp_path}); fix it or run from the folder it is relative to.")
    fields["tos"]["path"] = ["data/tos_1990s.nc", "data/tos_2000s.nc"]
    with pytest.raises(cfg.ConfigError, match=r"^Config key fields\.tos\.path\[1\] is 'data/tos_2000s\.nc', which "
                                              r"does not exist"):
        cfg.check_sources({"fields": fields})
    fields["tos"]["path"] = "data/tos_1990s.nc"
    with pytest.raises(cfg.ConfigError, match=r"^Config key eof\.sign\[0\]\.series is 'pdo\.csv', which does not"):
        cfg.check_sources({"fields": fields, "eof": {"sign": [{"mode": 1, "series": "pdo.csv"}]}})


def test_the_checker_names_the_line_of_a_missing_source(tmp_path):
    (tmp_path / "my.yaml").write_text("fields:\n  sst:\n    source: netcdf\n    path: sst_*.nc\neof:\n  fields: [sst]\n")
    result = _checker("my.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("my.yaml, line 4: Config key fields.sst.path is the pattern 'sst_*.nc', which "
                                    "matches no file")


def test_the_checker_refuses_backend_cupy_without_a_gpu(tmp_path):
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump({**BASE, "backend": "cupy"}))
    result = _checker("gpu.yaml", cwd=tmp_path, CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 1
    assert result.stderr.startswith("backend: cupy was asked for but ")
    assert result.stderr.strip().endswith("; use backend: auto or numpy.")


def test_the_checker_refuses_a_missing_or_empty_file(tmp_path):
    result = _checker("nope.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"The config file nope.yaml does not exist (looked from {tmp_path}); check its path."
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(cfg.ConfigError, match=r"empty\.yaml is empty; give at least a 'fields' section\.$"):
        cfg.load(tmp_path / "empty.yaml")
    (tmp_path / "list.yaml").write_text("- fields\n")
    with pytest.raises(cfg.ConfigError, match=r"list\.yaml, line 1: the file holds a list, not a mapping"):
        cfg.load(tmp_path / "list.yaml")


# --- backend: cupy without a GPU stops the workflow before any job --------------------------------------------------


def test_backend_cupy_without_a_gpu_stops_the_run_before_any_job(tmp_path):
    shutil.copy(ROOT / "config" / "synthetic.yaml", tmp_path / "synthetic.yaml")
    result = _snakemake(["--cores", "1", "--configfile", "synthetic.yaml", "--config", "backend=cupy"], cwd=tmp_path,
                        CUDA_VISIBLE_DEVICES="")  # no device even on a GPU machine
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "backend: cupy was asked for but " in out and "; use backend: auto or numpy." in out
    assert "rule ingest" not in out and "Job stats" not in out
    assert not (tmp_path / "results").exists()
