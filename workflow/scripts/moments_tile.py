"""Snakemake glue: one tile group's share of the moments of a field.

Input and output are store markers (``{store}.done``); the marker is written
once the partial store is complete and in place.
"""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import io, moments
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
index, total = (int(v) for v in sm.wildcards.scatteritem.split("-of-"))
with logged(sm.log[0]):
    moments.run(
        io.marked_store(sm.input.field, "fields store"),
        io.store_path(sm.output[0]),
        params=sm.params.moments,
        backend=sm.params.backend,
        output_options=sm.params.output,
        part=(index - 1, total),
    )
    io.write_marker(sm.output[0])
