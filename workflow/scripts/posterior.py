"""Snakemake glue: posterior sampling of the Bayesian regression.

Inputs and output are store markers (``{store}.done``); the marker is written
once the store is complete and in place.
"""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import io, posterior
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    posterior.run(
        io.marked_store(sm.input.target, "target fields store"),
        io.marked_store(sm.input.predictor_eof, "predictor EOF store"),
        io.marked_store(sm.input.regression, "regression store"),
        io.store_path(sm.output[0]),
        params=sm.params.posterior,
        regression_params=sm.params.regression,
        backend=sm.params.backend,
        output_options=sm.params.output,
    )
    io.write_marker(sm.output[0])
