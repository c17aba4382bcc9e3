"""Snakemake glue: posterior sampling of the Bayesian regression."""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import posterior
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    posterior.run(
        sm.input.target,
        sm.input.predictor_eof,
        sm.input.regression,
        sm.output[0],
        params=sm.params.posterior,
        regression_params=sm.params.regression,
        backend=sm.params.backend,
    )
