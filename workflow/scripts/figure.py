"""Snakemake glue: one figure from one store (its input is the store's marker, ``{store}.done``)."""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import figures, io
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    figures.make(sm.params.kind, io.marked_store(sm.input[0]), sm.output[0], params=sm.params.figures)
