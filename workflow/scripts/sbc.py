"""Snakemake glue: simulation-based calibration of the samplers on one model (``{case}``).

The output is the store's marker (``{store}.done``), written once the store is
complete and in place.
"""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import io, sbc
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    sbc.run(
        sm.wildcards.case,
        io.store_path(sm.output[0]),
        params=sm.params.sbc,
        backend=sm.params.backend,
        output_options=sm.params.output,
    )
    io.write_marker(sm.output[0])
