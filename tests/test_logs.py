"""A failing stage: the traceback goes to its log file, the sentence is the last thing it prints.

In process (:func:`pipeline.logs.logged` exits with status 1), in a Python
process of its own (as Snakemake runs a ``script:``), and in a real failing
Snakemake job.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.logs import logged

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "ValueError: n_modes=8 exceeds the rank (3) of the x anomalies; ask for at most 3 modes."


def test_a_failure_is_logged_with_its_traceback_and_ends_in_one_line_on_stderr(tmp_path, capsys):
    log_path = tmp_path / "logs" / "stage.log"
    with pytest.raises(SystemExit) as info:
        with logged(log_path) as log:
            log.info("reading the field")
            try:
                {}["field"]
            except KeyError as err:
                raise ValueError("The field x has no time axis; name it time.") from err
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "ValueError: The field x has no time axis; name it time."
    assert "reading the field" in err and "Traceback" not in err
    text = log_path.read_text()
    assert "INFO pipeline: reading the field" in text
    assert "ERROR pipeline: ValueError: The field x has no time axis; name it time." in text
    assert "Traceback (most recent call last)" in text and "KeyError: 'field'" in text  # the cause too
    assert text.rstrip().endswith("ValueError: The field x has no time axis; name it time.")
    assert not logging.getLogger("pipeline").handlers  # the block's handlers are gone


def test_a_block_that_succeeds_logs_and_returns(tmp_path):
    with logged(tmp_path / "ok.log") as log:
        log.info("done")
    assert "INFO pipeline: done" in (tmp_path / "ok.log").read_text()
    assert not logging.getLogger("pipeline").handlers


def test_a_failing_script_prints_the_sentence_last_and_no_traceback(tmp_path):
    """As Snakemake runs a rule's script: a Python process of its own."""
    script = tmp_path / "stage.py"
    script.write_text(
        "import logging\n"
        "from pipeline.logs import logged\n"
        f"with logged({str(tmp_path / 'stage.log')!r}):\n"
        "    logging.getLogger('pipeline.eof').info('eof of x')\n"
        "    raise FileNotFoundError('The fields store results/x.zarr does not exist; run the ingest stage first.')\n"
    )
    result = subprocess.run([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    sentence = "FileNotFoundError: The fields store results/x.zarr does not exist; run the ingest stage first."
    assert result.stderr.splitlines()[-1] == sentence
    assert "Traceback" not in result.stderr + result.stdout
    assert "Traceback (most recent call last)" in (tmp_path / "stage.log").read_text()


@pytest.mark.workflow
def test_a_failing_snakemake_job_prints_the_sentence_last_and_logs_the_traceback(tmp_path):
    """eof.n_modes above the rank of a tiny planted field (3 modes): the eof job fails."""
    config = {
        "run": "rank", "backend": "numpy",
        "fields": {"x": {"source": "synthetic", "kind": "modes", "options": {"n_time": 6, "n_lat": 4, "n_lon": 5}}},
        "eof": {"fields": ["x"], "n_modes": 8, "method": "gram"},
    }
    (tmp_path / "rank.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile"), "--cores", "1",
         "--configfile", "rank.yaml"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert SENTENCE in out.splitlines(), out[-3000:]
    assert "Traceback" not in out
    after = out.split(SENTENCE, 1)[1]
    assert '  File "' not in after  # nothing of a Python traceback follows the sentence
    log_path = tmp_path / re.search(r"log: (\S+) \(check log file", out).group(1)
    text = log_path.read_text()
    assert "Traceback (most recent call last)" in text
    assert text.rstrip().endswith(SENTENCE)
