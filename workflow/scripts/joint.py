"""Snakemake glue: joint, marginal and conditional distributions of one field against an index.

Inputs and output are store markers (``{store}.done``); the marker is written
once the store is complete and in place.
"""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import io, joint
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    joint.run(
        io.marked_store(sm.input.field, "fields store"),
        io.marked_store(sm.input.index, "index store"),
        io.store_path(sm.output[0]),
        params=sm.params.joint,
        backend=sm.params.backend,
        output_options=sm.params.output,
    )
    io.write_marker(sm.output[0])
