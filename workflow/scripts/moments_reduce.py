"""Snakemake glue: merge the tile jobs' partial moments of a field."""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import moments
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    moments.run_reduce(sm.input.partials, sm.output[0], params=sm.params.moments)
