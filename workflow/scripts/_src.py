"""Make ``src/`` importable for the rule scripts, installed package or not.

Snakemake puts this directory on ``sys.path`` for every script it runs; each
script imports this module before ``pipeline``.
"""

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[2] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
