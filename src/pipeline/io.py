"""Zarr stores in and out: atomic writes and provenance.

Every stage writes its Dataset through :func:`write_store`, which writes to a
temporary sibling directory and renames it into place only once complete, so a
killed job never leaves a store that looks finished. Every store carries the
same provenance attributes (stage, its config section, backend, versions).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
import os
import shutil
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pipeline import __version__


def open_store(path: str | os.PathLike, what: str = "store") -> xr.Dataset:
    """Open a Zarr store written by this pipeline, loaded into memory.

    Parameters
    ----------
    path : path-like
        The store directory.
    what : str
        A short description used in the error message (e.g. ``"moments store"``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"The {what} {path} does not exist; run the stage that writes it first.")
    with warnings.catch_warnings():  # Snakemake marks directory outputs with a .snakemake_timestamp file
        warnings.filterwarnings("ignore", message="Object at .snakemake_timestamp is not recognized")
        with xr.open_zarr(path, consolidated=False) as ds:
            return ds.load()


def provenance(stage: str, params: dict[str, Any] | None = None, backend: str | None = None) -> dict[str, str]:
    """Attributes recording how a store was made."""
    import zarr

    attrs = {
        "pipeline_stage": stage,
        "pipeline_version": __version__,
        "pipeline_config": json.dumps(params or {}, sort_keys=True, default=str),
        "software": f"numpy {np.__version__}, xarray {xr.__version__}, zarr {zarr.__version__}",
        "history": f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} written by pipeline.{stage}",
    }
    if backend is not None:
        attrs["array_backend"] = backend
    return attrs


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write into, renamed to ``path`` on success.

    An existing ``path`` is replaced only after the block has finished without
    error; on error the temporary directory is removed and ``path`` is left
    as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def streamed_field_store(
    path: str | os.PathLike,
    template: xr.Dataset,
    *,
    shape: tuple[int, int, int],
    dtype: Any,
    chunks: tuple[int, int, int],
    field_attrs: dict[str, Any],
    stage: str,
    params: dict[str, Any] | None = None,
    extra: dict[str, tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...], dict[str, Any]]] | None = None,
) -> Iterator[dict[str, Any]]:
    """A fields store written block by block, atomically.

    ``template`` holds the coordinates (``time``, ``lat``, ``lon``, and those
    of any ``extra`` array), small variables and the dataset attributes; they
    are written first, then the ``field(time, lat, lon)`` Zarr array and each
    ``extra`` array (``name: (dims, shape, chunks, attrs)``, float64) are
    created empty and yielded by name for the caller to fill region by region
    (``arrays["field"][:, i0:i1, :] = block``). The store is renamed into
    place only when the block exits without error.
    """
    import zarr

    out = template.copy(deep=False)
    out.attrs = {**template.attrs, **provenance(stage, params)}
    with atomic_directory(path) as tmp:
        out.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
        group = zarr.open_group(tmp, mode="a")
        arrays = {"field": group.create_array(
            "field", shape=shape, chunks=chunks, dtype=dtype, fill_value=np.nan,
            dimension_names=("time", "lat", "lon"), attributes=field_attrs,
        )}
        for name, (dims, extra_shape, extra_chunks, attrs) in (extra or {}).items():
            arrays[name] = group.create_array(
                name, shape=extra_shape, chunks=extra_chunks, dtype=np.float64, fill_value=np.nan,
                dimension_names=dims, attributes=attrs,
            )
        yield arrays


def write_store(
    ds: xr.Dataset,
    path: str | os.PathLike,
    *,
    stage: str,
    params: dict[str, Any] | None = None,
    backend: str | None = None,
) -> Path:
    """Write ``ds`` to a Zarr store at ``path`` atomically, with provenance attributes.

    The data are written to a temporary directory beside ``path`` and renamed
    into place after the write has finished; an existing store at ``path`` is
    replaced only then. The Dataset passed in is not modified.
    """
    out = ds.copy(deep=False)
    out.attrs = {**ds.attrs, **provenance(stage, params, backend)}
    for name, var in out.variables.items():
        if var.dtype.kind == "U":  # fixed-width unicode has no stable Zarr v3 spec
            out[name] = var.astype(object)
    with atomic_directory(path) as tmp:
        out.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
    return Path(path)
