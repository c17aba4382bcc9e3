"""Snakemake glue: ingest one field.

The output is the store's marker (``{store}.done``), written once the store is
complete and in place.
"""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import ingest, io
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    ingest.run(
        sm.wildcards.field,
        io.store_path(sm.output[0]),
        params=sm.params.spec,
        output_options=sm.params.output,
    )
    io.write_marker(sm.output[0])
