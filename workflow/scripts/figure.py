"""Snakemake glue: one figure from one store."""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import figures
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    figures.make(sm.params.kind, sm.input[0], sm.output[0], params=sm.params.figures)
