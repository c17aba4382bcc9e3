"""Snakemake glue: one tile group's share of the moments of a field."""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import moments
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
index, total = (int(v) for v in sm.wildcards.scatteritem.split("-of-"))
with logged(sm.log[0]):
    moments.run(
        sm.input.field,
        sm.output[0],
        params=sm.params.moments,
        backend=sm.params.backend,
        part=(index - 1, total),
    )
