"""SLURM: the profiles ask for what they say, and a placeholder partition stops a run before submission."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cluster import check_partitions, placeholder_partitions

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "workflow" / "profiles"
GPU_RULES = {"moments", "moments_tile", "eof", "regression", "distributions", "posterior"}


def _profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def _rules() -> set[str]:
    text = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    return set(re.findall(r"^\s*rule (\w+):", text, flags=re.M))


def test_placeholders_are_found_quoted_or_not():
    partitions = {"default-resources": "'CHANGE_ME'", "eof": "CHANGE_ME_GPU", "ingest": "cpu", "figures": None,
                  "posterior": lambda wildcards: "gpu"}
    assert placeholder_partitions(partitions) == ["default-resources", "eof"]


def test_a_slurm_run_with_a_placeholder_stops_with_one_sentence_naming_where():
    with pytest.raises(ValueError) as info:
        check_partitions("slurm", {"default-resources": "CHANGE_ME", "eof": '"CHANGE_ME_GPU"', "ingest": "cpu"})
    sentence = str(info.value)
    assert sentence.startswith("The SLURM partitions CHANGE_ME, CHANGE_ME_GPU (for default-resources, eof) are ")
    assert "nothing was submitted" in sentence and "sinfo -s" in sentence
    assert "\n" not in sentence and sentence.endswith(".")


@pytest.mark.parametrize(("executor", "partitions"), [
    ("local", {"default-resources": "CHANGE_ME"}),  # the profile's resources, but not submitted
    (None, {"default-resources": "CHANGE_ME"}),
    ("slurm", {"default-resources": "cpu", "eof": "gpu"}),
    ("slurm", {"default-resources": None}),
])
def test_other_executors_and_real_partitions_pass(executor, partitions):
    check_partitions(executor, partitions)


def test_the_cpu_profile_asks_for_no_gpu_and_has_a_placeholder_partition():
    profile = _profile("slurm")
    assert profile["executor"] == "slurm"
    assert not any(key in ("gpu", "gpu_model", "gres") for res in (profile.get("set-resources") or {}).values()
                   for key in res)
    assert not {"gpu", "gpu_model", "gres"} & set(profile["default-resources"])
    assert placeholder_partitions({"default-resources": profile["default-resources"]["slurm_partition"]})


def test_the_gpu_profile_gives_a_gpu_to_exactly_the_rules_that_use_one():
    profile, cpu = _profile("slurm-gpu"), _profile("slurm")
    per_rule = profile["set-resources"]
    assert set(per_rule) == GPU_RULES and GPU_RULES <= _rules()
    assert all(res["gpu"] == 1 for res in per_rule.values())
    assert all(placeholder_partitions({rule: res["slurm_partition"]}) for rule, res in per_rule.items())
    assert {k: v for k, v in profile.items() if k != "set-resources"} == cpu  # otherwise the CPU profile


@pytest.mark.workflow
@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
def test_the_unedited_gpu_profile_stops_before_any_job_is_submitted(tmp_path):
    shutil.copy(ROOT / "config" / "synthetic.yaml", tmp_path / "synthetic.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile"), "--profile",
         str(PROFILES / "slurm-gpu"), "--configfile", "synthetic.yaml"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("The SLURM partitions CHANGE_ME, CHANGE_ME_GPU (for default-resources, moments, eof, ")
    assert "sbatch" not in result.stdout + result.stderr and not (tmp_path / "results").exists()
