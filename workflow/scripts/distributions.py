"""Snakemake glue: per-cell distribution fits of one field."""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import distributions
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    distributions.run(sm.input.field, sm.output[0], params=sm.params.distributions, backend=sm.params.backend)
