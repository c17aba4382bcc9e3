"""Make ``src/`` importable for the rule scripts, installed package or not, and tune the job's allocator.

Snakemake puts this directory on ``sys.path`` for every script it runs; each
script imports this module before ``pipeline``. It also keeps freed heap mapped
(:func:`pipeline.backend.keep_freed_heap`): the iterative kernels otherwise pay
page faults on every call.
"""

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[2] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from pipeline.backend import keep_freed_heap  # noqa: E402

keep_freed_heap()
