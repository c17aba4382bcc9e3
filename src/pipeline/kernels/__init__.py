"""Pure array kernels, one module per stage.

Every function takes arrays, finds their namespace with
``array_api_compat.array_namespace`` and computes with it, so the same code runs
on NumPy, CuPy and array-api-strict. Nothing here imports xarray, zarr or
Snakemake, and nothing here does I/O. Matrices use fixed axis meanings:
``(sample, feature)`` for data, ``(feature, mode)`` for patterns,
``(sample, mode)`` for scores.
"""
