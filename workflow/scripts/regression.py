"""Snakemake glue: regression of a target field on another field's PCs."""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import regression
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    regression.run(
        sm.input.target,
        sm.input.predictor_eof,
        sm.output[0],
        params=sm.params.regression,
        backend=sm.params.backend,
    )
