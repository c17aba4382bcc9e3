"""Snakemake glue: merge the tile jobs' partial moments of a field.

Inputs and output are store markers (``{store}.done``); the marker is written
once the store is complete and in place.
"""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import io, moments
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    partials = [io.marked_store(p, "partial moments store") for p in sm.input.partials]
    moments.run_reduce(partials, io.store_path(sm.output[0]), params=sm.params.moments, output_options=sm.params.output)
    io.write_marker(sm.output[0])
