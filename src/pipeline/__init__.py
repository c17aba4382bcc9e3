"""Reproducible EOF / regression / distribution / posterior pipeline for gridded data.

Layers, one direction only:

* :mod:`pipeline.kernels` -- pure array functions per stage, written against the
  Python array API (NumPy, CuPy, array-api-strict); no xarray, no I/O.
* :mod:`pipeline.ingest`, :mod:`pipeline.moments`, :mod:`pipeline.eof`,
  :mod:`pipeline.regression`, :mod:`pipeline.distributions`,
  :mod:`pipeline.posterior`, :mod:`pipeline.figures` -- the labelled layer: xarray
  Datasets in and out, Zarr stores on disk, one module per stage.
* ``workflow/`` -- thin Snakemake rules that call one ``run`` function per stage.
"""

__version__ = "0.1.0"
