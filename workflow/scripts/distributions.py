"""Snakemake glue: per-cell distribution fits of one field.

Inputs and output are store markers (``{store}.done``); the marker is written
once the store is complete and in place.
"""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import distributions, io
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    distributions.run(
        io.marked_store(sm.input.field, "fields store"),
        io.store_path(sm.output[0]),
        params=sm.params.distributions,
        backend=sm.params.backend,
        output_options=sm.params.output,
        covariate_store=(
            io.marked_store(sm.input.covariate[0], "covariate EOF store") if sm.input.covariate else None
        ),
    )
    io.write_marker(sm.output[0])
