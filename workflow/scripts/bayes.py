"""Snakemake glue: the Bayesian GEV of one field's distributions series.

Input and output are store markers (``{store}.done``); the marker is written
once the store is complete and in place.
"""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import bayes, io
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    bayes.run(
        io.marked_store(sm.input[0], "distributions store"),
        io.store_path(sm.output[0]),
        params=sm.params.bayes,
        backend=sm.params.backend,
        output_options=sm.params.output,
    )
    io.write_marker(sm.output[0])
