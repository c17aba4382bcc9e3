"""Snakemake glue: the run summary (the report's first page) from every store of the run.

Inputs are store markers (``{store}.done``), named by the folder of their
stores; the job logs of the run give the seconds of each stage.
"""

import _src  # noqa: F401 -- puts src/ on sys.path
from pipeline import io, summary
from pipeline.logs import logged

sm = snakemake  # noqa: F821 -- injected by Snakemake
with logged(sm.log[0]):
    stores = {
        stage: [io.marked_store(m, f"{stage} store") for m in ([markers] if isinstance(markers, str) else markers)]
        for stage, markers in sm.input.items()
    }
    summary.run(stores, sm.output[0], config=sm.params.config, logs=sm.params.logs)
