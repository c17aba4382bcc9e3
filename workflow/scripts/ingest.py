"""Snakemake glue: ingest one field."""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import ingest
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    ingest.run(sm.wildcards.field, sm.output[0], params=sm.params.spec)
