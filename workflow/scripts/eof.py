"""Snakemake glue: EOFs of one field."""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import eof
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    eof.run(sm.input.field, sm.input.moments, sm.output[0], params=sm.params.eof, backend=sm.params.backend)
