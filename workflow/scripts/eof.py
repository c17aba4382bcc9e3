"""Snakemake glue: EOFs of one field.

Inputs and output are store markers (``{store}.done``); the marker is written
once the store is complete and in place.
"""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import eof, io
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    eof.run(
        io.marked_store(sm.input.field, "fields store"),
        io.marked_store(sm.input.moments, "moments store"),
        io.store_path(sm.output[0]),
        params=sm.params.eof,
        backend=sm.params.backend,
        output_options=sm.params.output,
    )
    io.write_marker(sm.output[0])
