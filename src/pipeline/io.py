"""Zarr stores in and out: atomic writes that keep the last good store, manifests, markers, provenance.

Writing. Every stage writes its Dataset through :func:`write_store` (a large
field block by block through :func:`streamed_field_store`); both go through
:func:`atomic_directory`, which writes into a hidden sibling
``.{name}.tmp-<id>``, records the store's manifest, renames the previous store
aside (``.{name}.old-<id>``), renames the new one into place and only then
deletes the old one. A failed, killed or full-disk write therefore never
destroys the last complete store, and the leftovers of a killed one are
cleared (or, when it was killed between the two renames, the old store put
back) by the next write of that store.

Reading. The manifest (root attribute :data:`MANIFEST`) lists, per array, the
chunk files of the complete store and a CRC-32 of each. :func:`open_store`
checks every listed chunk file and its checksum before loading;
:class:`pipeline.stream.ZarrSource` checks that they are present when it
opens a store and each checksum as it reads (:func:`checked_zarr_store`). A
missing or damaged chunk is a :class:`CorruptStoreError` naming the store and
the chunk, never NaN. Stores without a manifest (written by other tools) are
read as they are.

Markers. In the workflow each store has a small marker file beside it,
``{store}.done`` (:func:`write_marker`), written once the store is complete and
in place; the rules declare the markers as their outputs and inputs, never the
store directories, so Snakemake never deletes a store before rerunning a job.

Labels. Every store is CF-labelled on the way out (:func:`cf_labelled`):
``Conventions``, ``axis``/``standard_name``/``units`` on ``time``, ``lat`` and
``lon``, their bounds linked, and its metadata consolidated, so that
``xr.open_zarr(store)`` reads it without a warning. The ``output`` config
section (:func:`output_options`) chooses the Zarr format (3 or 2) and a netCDF
copy ``{store}.nc`` beside the store.

Provenance. Every store carries the attributes of :func:`provenance`; the
same config run twice gives byte-identical stores, ``history`` (the only
timestamp) aside.
"""

from __future__ import annotations

import errno
import functools
import glob
import hashlib
import json
import logging
import os
import shutil
import subprocess
import uuid
import warnings
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pipeline import __version__, timeaxis

log = logging.getLogger(__name__)

MANIFEST = "pipeline_manifest"
"""Root attribute of a complete store: ``{"checksum": "crc32", "arrays": {array: {chunk key: crc}}}``."""
MARKER_SUFFIX = ".done"
"""A store's marker is the store's path with this suffix (``eof/x.zarr.done``)."""
MAIN_VARIABLE = {"ingest": "field", "synthetic": "field", "moments": "mean", "moments_tile": "mean", "eof": "eof",
                 "regression": "coef", "distributions": "loc", "joint": "rho", "bayes": "loc", "sbc": "rank",
                 "posterior": "mean"}
"""The variable whose dtype :func:`write_store` records as ``pipeline_dtype``, per stage."""
PROVENANCE_KEYS = ("pipeline_stage", "pipeline_version", "pipeline_git_commit", "pipeline_config", "array_backend",
                   "pipeline_dtype", "pipeline_source_sha256", "software", "history")
"""The attributes :func:`provenance` may write (an input's are dropped before a store's own are added)."""
_METADATA_FILES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
CONVENTIONS = "CF-1.10"
"""The ``Conventions`` attribute of every store."""
OUTPUT_DEFAULTS: dict[str, Any] = {"zarr_format": 3, "netcdf": False}
"""The ``output`` config section's defaults: Zarr format 3, no netCDF copy."""
ZARR_FORMATS = (2, 3)
AXES = {"time": ("T", "time", None), "lat": ("Y", "latitude", "degrees_north"),
        "lon": ("X", "longitude", "degrees_east")}
"""CF ``axis``, ``standard_name`` and ``units`` of each grid coordinate (time's units live in its encoding)."""
BOUNDS = {"time": "time_bnds", "lat": "lat_bnds", "lon": "lon_bnds"}
"""The bounds variable of each grid coordinate, ``(axis, bnds)``: lower and upper edge of each cell or step."""
BOUNDS_DIM = "bnds"
NETCDF_SUFFIX = ".nc"
"""A store's netCDF copy is the store's path with this suffix (``eof/x.zarr.nc``)."""
NETCDF_BLOCK_BYTES = 64 * 2**20
"""Variables larger than this are copied into the netCDF file block by block (never whole in memory)."""
_KEPT_ENCODING = ("chunks", "dtype", "_FillValue", "missing_value", "scale_factor", "add_offset", "units", "calendar")
"""Encoding keys a written variable keeps (the rest are an input store's codecs, tied to its Zarr format)."""
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


class CorruptStoreError(ValueError):
    """A store's chunk file is missing or does not match the store's manifest."""


class StoreWriteError(OSError):
    """Writing a store failed in the file system (disk full, permission denied, ...); ``errno`` is the cause's."""

    def __init__(self, message: str, cause: OSError) -> None:
        super().__init__(message)
        self.errno, self.strerror = cause.errno, cause.strerror

    def __str__(self) -> str:
        return str(self.args[0])


# ---------------------------------------------------------------- reading


def open_store(path: str | os.PathLike, what: str = "store") -> xr.Dataset:
    """Open a Zarr store written by this pipeline, checked against its manifest and loaded into memory.

    Reads Zarr format 3 and 2, with consolidated metadata or without.

    Parameters
    ----------
    path : path-like
        The store directory.
    what : str
        A short description used in the error message (e.g. ``"moments store"``).

    Raises
    ------
    FileNotFoundError
        If there is no store at ``path``.
    CorruptStoreError
        If a chunk file the manifest lists is missing or fails its checksum.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"The {what} {path} does not exist; run the stage that writes it first.")
    check_store(path, what)
    with warnings.catch_warnings():  # stores of older versions hold Snakemake's .snakemake_timestamp file
        warnings.filterwarnings("ignore", message="Object at .snakemake_timestamp is not recognized")
        with xr.open_zarr(path, consolidated=is_consolidated(path), chunks=None) as ds:
            ds = ds.load()
    ds.attrs.pop(MANIFEST, None)  # about the files, not the data: a Dataset written elsewhere gets its own
    return ds


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a Zarr group of format 3 (``zarr.json``) or 2 (``.zgroup``)."""
    path = Path(path)
    return (path / "zarr.json").is_file() or (path / ".zgroup").is_file()


def is_consolidated(path: str | os.PathLike) -> bool:
    """Whether the Zarr store at ``path`` has consolidated metadata (format 3 inline, or format 2 ``.zmetadata``)."""
    path = Path(path)
    if (path / ".zmetadata").is_file():
        return True
    try:
        return json.loads((path / "zarr.json").read_text()).get("consolidated_metadata") is not None
    except (OSError, ValueError, AttributeError):
        return False


def _root_attributes(path: Path) -> dict[str, Any] | None:
    """The root attributes of the store at ``path`` (``zarr.json`` or ``.zattrs``), or None if it has no metadata."""
    meta = path / "zarr.json"
    if not meta.is_file():
        meta = path / ".zattrs"
        if not (path / ".zgroup").is_file():
            return None
        if not meta.is_file():
            return {}
    try:
        content = json.loads(meta.read_text())
    except (OSError, ValueError) as err:
        raise CorruptStoreError(f"The metadata file {meta} of the store {path} cannot be read ({err}); rewrite the "
                                "store.") from err
    if meta.name == ".zattrs":
        return content if isinstance(content, dict) else {}
    return (content.get("attributes") if isinstance(content, dict) else None) or {}


def read_manifest(path: str | os.PathLike) -> dict[str, dict[str, int]] | None:
    """The manifest of the store at ``path`` (format 3 or 2) as ``{array: {chunk key: crc32}}``, or None if it has none."""
    attrs = _root_attributes(Path(path))
    manifest = None if attrs is None else attrs.get(MANIFEST)
    if manifest is None:
        return None
    arrays = manifest.get("arrays") if isinstance(manifest, dict) else None
    ok = isinstance(arrays, dict) and all(
        isinstance(chunks, dict) and all(isinstance(c, int) for c in chunks.values()) for chunks in arrays.values())
    if not ok or manifest.get("checksum") != "crc32":
        raise CorruptStoreError(f"The attribute {MANIFEST} of the store {path} is not a manifest this pipeline "
                                "wrote; rewrite the store.")
    return arrays


def check_store(path: str | os.PathLike, what: str = "store", *, checksums: bool = True) -> bool:
    """Check that every chunk file the manifest of ``path`` lists is present (and, with ``checksums``, intact).

    Returns whether the store has a manifest (a store without one is not checked).

    Raises
    ------
    CorruptStoreError
        Naming the store and the first missing or damaged chunk.
    """
    path = Path(path)
    arrays = read_manifest(path)
    if arrays is None:
        return False
    for array, chunks in arrays.items():
        for key, crc in chunks.items():
            file = path / array / key
            try:
                data = file.read_bytes() if checksums else file.stat()
            except FileNotFoundError:
                raise CorruptStoreError(_missing(path, what, array, key)) from None
            except OSError as err:
                raise CorruptStoreError(f"The chunk file {array}/{key} of the {what} {path} cannot be read "
                                        f"({err.strerror}); {rewrite_hint(path)}.") from err
            if checksums and zlib.crc32(data) != crc:
                raise CorruptStoreError(_damaged(path, what, array, key))
    return True


def checked_zarr_store(path: str | os.PathLike, what: str = "store") -> Any:
    """A read-only Zarr store for ``path`` that checks each chunk it reads against the manifest.

    A listed chunk that is missing or fails its checksum raises
    :class:`CorruptStoreError`. Without a manifest it is a plain
    :class:`zarr.storage.LocalStore`.
    """
    from zarr.storage import LocalStore, WrapperStore

    path = Path(path)
    local = LocalStore(path, read_only=True)
    arrays = read_manifest(path)
    if arrays is None:
        return local
    expected = {f"{array}/{key}": crc for array, chunks in arrays.items() for key, crc in chunks.items()}

    class _Checked(WrapperStore):
        def _with_store(self, store: Any) -> Any:
            return _Checked(store)

        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            buf = await self._store.get(key, prototype, byte_range)
            crc = expected.get(key)
            if crc is None:
                return buf
            array, _, chunk = key.partition("/")
            if buf is None:
                raise CorruptStoreError(_missing(path, what, array, chunk))
            if byte_range is None and zlib.crc32(buf.as_numpy_array()) != crc:
                raise CorruptStoreError(_damaged(path, what, array, chunk))
            return buf

    return _Checked(local)


def _rerun(path: Path) -> str:
    """The Snakemake rule that rewrites ``path``, from its ``pipeline_stage`` attribute."""
    try:
        stage = (_root_attributes(path) or {})["pipeline_stage"]
    except (CorruptStoreError, KeyError):
        return ""
    return {"synthetic": "ingest"}.get(stage, stage)


def rewrite_hint(path: Path) -> str:
    """What to do about a damaged store: the rule rewriting it (from its provenance), or to restore it."""
    rule = _rerun(path)
    return f"rewrite it (snakemake --forcerun {rule})" if rule else "rewrite or restore it"


def _missing(path: Path, what: str, array: str, chunk: str) -> str:
    return (f"The {what} {path} is incomplete: chunk file {array}/{chunk} of variable {array!r} listed in its "
            f"manifest is missing; {rewrite_hint(path)}.")


def _damaged(path: Path, what: str, array: str, chunk: str) -> str:
    return (f"The {what} {path} is corrupt: chunk file {array}/{chunk} of variable {array!r} does not match the "
            f"checksum in its manifest; {rewrite_hint(path)}.")


# ---------------------------------------------------------------- provenance


@functools.cache
def git_commit(where: str | os.PathLike | None = None) -> str | None:
    """The commit checked out in the git repository holding ``where`` (default: this package).

    ``where`` is a file; the commit is returned only when that file is tracked
    by the repository (a copy installed elsewhere has none), with ``-dirty``
    appended when tracked files have uncommitted changes. None when git is
    missing or ``where`` is not in a repository.
    """
    where = Path(where if where is not None else __file__).resolve()

    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", "-C", str(where.parent), *args], capture_output=True, text=True,
                                  timeout=20, check=False)
        except (OSError, subprocess.SubprocessError):
            return None

    tracked = git("ls-files", "--error-unmatch", "--", where.name)
    head = git("rev-parse", "--verify", "HEAD") if tracked is not None and tracked.returncode == 0 else None
    if head is None or head.returncode != 0:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = status is None or status.returncode != 0 or bool(status.stdout.strip())
    return head.stdout.strip() + ("-dirty" if dirty else "")


def source_checksums(sources: Iterable[str | os.PathLike]) -> dict[str, str]:
    """SHA-256 of each source, keyed by the path as given.

    A directory (a Zarr store) is hashed over all its files in sorted order of
    their relative paths, each path followed by the file's bytes.
    """
    out = {}
    for source in sources:
        path = Path(source)
        digest = hashlib.sha256()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if path.is_dir():
                digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            with open(file, "rb") as f:
                for block in iter(functools.partial(f.read, 2**22), b""):
                    digest.update(block)
        out[os.fspath(source)] = digest.hexdigest()
    return out


def provenance(stage: str, params: dict[str, Any] | None = None, backend: str | None = None, *,
               dtype: Any = None, sources: Iterable[str | os.PathLike] | None = None) -> dict[str, str]:
    """Attributes recording how a store was made.

    ``pipeline_stage``, ``pipeline_version``, ``pipeline_git_commit`` (when the
    package is in a git repository), ``pipeline_config`` (``params`` as sorted
    JSON), ``array_backend`` (with ``backend``), ``pipeline_dtype`` (with
    ``dtype``: the main variable's), ``pipeline_source_sha256`` (with
    ``sources``: JSON of :func:`source_checksums`), ``software`` and
    ``history``, the only timestamp.
    """
    import zarr

    attrs = {"pipeline_stage": stage, "pipeline_version": __version__}
    commit = git_commit()
    if commit is not None:
        attrs["pipeline_git_commit"] = commit
    attrs["pipeline_config"] = json.dumps(params or {}, sort_keys=True, default=str)
    if backend is not None:
        attrs["array_backend"] = backend
    if dtype is not None:
        attrs["pipeline_dtype"] = str(np.dtype(dtype))
    if sources is not None:
        attrs["pipeline_source_sha256"] = json.dumps(source_checksums(sources), sort_keys=True)
    attrs["software"] = f"numpy {np.__version__}, xarray {xr.__version__}, zarr {zarr.__version__}"
    attrs["history"] = f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} written by pipeline.{stage}"
    return attrs


def _own_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` without provenance and manifest (an input's, carried over, would be stale)."""
    return {k: v for k, v in attrs.items() if k not in PROVENANCE_KEYS and k != MANIFEST}


# ---------------------------------------------------------------- labels and options


def output_options(output: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``output`` config section with its defaults (:data:`OUTPUT_DEFAULTS`), checked.

    ``zarr_format``: 3 (default) or 2; ``netcdf``: also write ``{store}.nc``.
    """
    if output is None:
        output = {}
    if not isinstance(output, dict):
        raise TypeError(f"output must be a mapping (the 'output' config section); got {type(output).__name__}.")
    unknown = sorted(set(output) - set(OUTPUT_DEFAULTS))
    if unknown:
        raise ValueError(f"output has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(OUTPUT_DEFAULTS)}.")
    options = {**OUTPUT_DEFAULTS, **output}
    if isinstance(options["zarr_format"], bool) or options["zarr_format"] not in ZARR_FORMATS:
        raise ValueError(f"output.zarr_format must be 2 or 3; got {options['zarr_format']!r}.")
    if not isinstance(options["netcdf"], bool):
        raise ValueError(f"output.netcdf must be true or false; got {options['netcdf']!r}.")
    return options


def cf_labelled(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` labelled for CF-1.10 readers (cf-xarray, CDO, Panoply), as every store is written.

    ``Conventions`` becomes the first attribute. ``time``, ``lat`` and ``lon``,
    where present, get ``axis`` (T, Y, X), ``standard_name``, ``long_name``
    (unless they have one) and, for ``lat``/``lon``, ``units``; ``bounds``
    names their bounds variable (:data:`BOUNDS`) when ``ds`` has it. Dates
    are encoded with units xarray infers from the time steps and their bounds
    together (whole numbers of the coarsest unit that fits), shared by
    ``time`` and ``time_bnds`` as CF asks. The Dataset passed in is not modified.
    """
    out = ds.copy(deep=False)
    for axis, (letter, standard, units) in AXES.items():
        if axis not in out.variables:
            continue
        var = out.variables[axis]
        dates = axis == "time" and timeaxis.is_dates(var.values)
        drop = ("bounds", "axis", "standard_name", *(("units", "calendar") if dates or units else ()))
        attrs = {k: v for k, v in var.attrs.items() if k not in drop}
        labels = {"axis": letter, "standard_name": standard, "long_name": attrs.pop("long_name", standard)}
        if units is not None:
            labels["units"] = units
        bounds = BOUNDS[axis]
        if bounds in out.variables and out[bounds].dims == (axis, BOUNDS_DIM):
            labels["bounds"] = bounds
        var.attrs = {**labels, **attrs}
    if "time" in out.variables and timeaxis.is_dates(out["time"].values):
        _encode_dates(out)
    out.attrs = {"Conventions": CONVENTIONS, **{k: v for k, v in ds.attrs.items() if k != "Conventions"}}
    return out


def _encode_dates(ds: xr.Dataset) -> None:
    """Give ``time`` (and ``time_bnds``) one CF encoding: units inferred from all their dates, their calendar."""
    from xarray.coding.times import infer_datetime_units

    names = [n for n in ("time", BOUNDS["time"]) if n in ds.variables and (n == "time" or "bounds" in ds["time"].attrs)]
    dates = np.concatenate([np.ravel(ds[n].values) for n in names])
    encoding = {"units": infer_datetime_units(np.unique(dates)), "calendar": timeaxis.calendar_of(dates)}
    for name in names:
        ds.variables[name].encoding = {**{k: v for k, v in ds.variables[name].encoding.items() if k == "chunks"},
                                       **encoding}


def with_bounds(ds: xr.Dataset, fields: xr.Dataset | str | os.PathLike) -> xr.Dataset:
    """``ds`` with the bounds variables of a fields store (``time_bnds``, ``lat_bnds``, ``lon_bnds``) it can use.

    ``fields`` is the fields store (a path, read through its manifest) or its
    Dataset. A bounds variable is added when ``ds`` has its coordinate with
    exactly the same values as the fields store; stages whose outputs keep
    the field's grid carry the source's cell edges this way.
    """
    if isinstance(fields, xr.Dataset):
        return _add_bounds(ds, fields)
    path = Path(fields)
    with xr.open_zarr(checked_zarr_store(path, "fields store"), consolidated=is_consolidated(path),
                      chunks=None) as src:
        return _add_bounds(ds, src)


def _add_bounds(ds: xr.Dataset, src: xr.Dataset) -> xr.Dataset:
    out = ds.copy(deep=False)
    for axis, name in BOUNDS.items():
        if name not in src.variables or axis not in ds.coords or axis not in src.coords:
            continue
        if src[axis].shape == ds[axis].shape and np.array_equal(src[axis].values, ds[axis].values):
            out[name] = ((axis, BOUNDS_DIM), np.asarray(src[name].values), dict(src[name].attrs))
    return out


# ---------------------------------------------------------------- writing


@contextmanager
def atomic_directory(path: str | os.PathLike, *, what: str = "store", netcdf: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write into, swapped into place on success.

    Before the block, the leftovers of earlier writes of ``path`` are cleared:
    when ``path`` is missing but an ``.{name}.old-<id>`` is there (a write
    killed between its two renames), that old store is put back; every other
    ``.{name}.tmp-*``, ``.{name}.nc.tmp-*`` and ``.{name}.old-*`` is removed.
    The block writes into ``.{name}.tmp-<id>``. When it finishes without
    error, a Zarr store there gets its manifest and consolidated metadata
    (:func:`seal_store`) and, with ``netcdf``, its netCDF copy is written to
    ``.{name}.nc.tmp-<id>`` (:func:`write_netcdf`); then the existing ``path``
    is renamed to ``.{name}.old-<id>``, the new directory to ``path``, the old
    one deleted, and the netCDF copy renamed to ``{path}.nc`` (without
    ``netcdf``, a ``{path}.nc`` of an earlier write is removed: it would no
    longer match). On any error the temporary files are removed and ``path``
    is left as it was; a file-system error (disk full, permission denied)
    becomes a :class:`StoreWriteError` naming ``path``.
    """
    path = Path(path)
    token = uuid.uuid4().hex[:8]
    tmp = path.with_name(f".{path.name}.tmp-{token}")
    nc_tmp = path.with_name(f".{path.name}{NETCDF_SUFFIX}.tmp-{token}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear_leftovers(path)
        yield tmp
        if is_store(tmp):
            seal_store(tmp)
            if netcdf:
                write_netcdf(tmp, nc_tmp)
        _swap(tmp, path, path.with_name(f".{path.name}.old-{token}"))
        nc = netcdf_path(path)
        if nc_tmp.exists():
            os.replace(nc_tmp, nc)
        elif nc.exists():
            nc.unlink()
            log.info("removed %s: the store was rewritten without a netCDF copy (output.netcdf: false)", nc)
    except OSError as err:
        if isinstance(err, StoreWriteError) or not _is_write_error(err, path):
            raise
        raise StoreWriteError(_write_failure(err, path, what), err) from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        nc_tmp.unlink(missing_ok=True)


def netcdf_path(store: str | os.PathLike) -> Path:
    """The netCDF copy of ``store``: ``{store}.nc``."""
    return Path(f"{os.fspath(store)}{NETCDF_SUFFIX}")


def _clear_leftovers(path: Path) -> None:
    """Put back a store a killed swap left aside, and remove stale temporary and old copies of ``path``."""
    stem = glob.escape(f".{path.name}")
    olds = sorted(path.parent.glob(f"{stem}.old-*"), key=lambda p: p.stat().st_mtime_ns)
    if olds and not path.exists():
        os.replace(olds[-1], path)
        log.warning("put back %s: a write of it was interrupted after it had been renamed to %s", path, olds[-1].name)
        olds = olds[:-1]
    for stale in [*path.parent.glob(f"{stem}.tmp-*"), *path.parent.glob(f"{stem}{NETCDF_SUFFIX}.tmp-*"), *olds]:
        _remove(stale)
        log.info("removed %s, left by an interrupted write of %s", stale, path.name)


def _swap(tmp: Path, path: Path, old: Path) -> None:
    """Rename ``path`` aside to ``old``, ``tmp`` to ``path``, then delete ``old``."""
    if not tmp.is_dir():
        raise FileNotFoundError(f"Nothing was written to {tmp}; the block writing {path} must create it.")
    if path.exists():
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        _remove(old)
    else:
        os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _is_write_error(err: OSError, path: Path) -> bool:
    """Whether ``err`` came from writing at ``path`` or its siblings (not, say, from reading a source)."""
    if err.errno in _DISK_FULL:
        return True
    full = Path(os.path.abspath(path))
    for name in (err.filename, err.filename2):
        if not isinstance(name, (str, os.PathLike)):
            continue
        where = Path(os.path.abspath(name))
        if where == full or where in full.parents or full in where.parents:
            return True  # the store, a folder above it, or a file in it
        if full.parent in where.parents and where.relative_to(full.parent).parts[0].startswith(f".{path.name}."):
            return True  # its temporary or old copy
        if where == netcdf_path(full):
            return True  # its netCDF copy
    return False


def _write_failure(err: OSError, path: Path, what: str) -> str:
    reason = err.strerror or str(err)
    if err.errno in _DISK_FULL:
        todo = ("free space on that disk, or write the results to another disk (a results/ folder linked there, "
                "or snakemake --directory)")
    elif err.errno in _NOT_WRITABLE:
        todo = f"make {path.parent} writable, or write the results elsewhere (snakemake --directory)"
    else:
        todo = "fix the cause, or write the results elsewhere (snakemake --directory)"
    return f"Could not write the {what} {path} ({reason}); {todo}; the previous store, if any, is kept."


def manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the Zarr store at ``path`` as it is now: per array, its chunk files and their CRC-32.

    Arrays are found by their metadata (``zarr.json`` of an array node, or
    ``.zarray`` in format 2); metadata files are not chunks.
    """
    path = Path(path)
    nodes = [m.parent for m in path.rglob(".zarray")]
    nodes += [m.parent for m in path.rglob("zarr.json")
              if m.parent != path and json.loads(m.read_text()).get("node_type") == "array"]
    arrays: dict[str, dict[str, int]] = {}
    for node in sorted(nodes):
        files = sorted(p for p in node.rglob("*") if p.is_file() and p.name not in _METADATA_FILES)
        arrays[node.relative_to(path).as_posix()] = {
            f.relative_to(node).as_posix(): zlib.crc32(f.read_bytes()) for f in files}
    return {"checksum": "crc32", "arrays": arrays}


def seal_store(path: str | os.PathLike) -> None:
    """Record the :func:`manifest` of the complete Zarr store at ``path`` in its root attributes, then consolidate.

    The consolidated metadata (inline in the root ``zarr.json`` in format 3,
    ``.zmetadata`` in format 2) copies every node's metadata into one place,
    so readers open the store with one read and without a warning.
    """
    import zarr

    group = zarr.open_group(Path(path), mode="r+")
    group.attrs.update({MANIFEST: manifest(path)})
    with warnings.catch_warnings():  # zarr-python's inline consolidated metadata is not in the v3 spec (yet)
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(os.fspath(path))


def write_netcdf(store: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Write the Zarr store at ``store`` as one netCDF-4 file ``target`` (h5netcdf), for tools that do not read Zarr.

    Every variable, coordinate and attribute is copied but the manifest (it
    describes the Zarr files); ``xr.open_dataset(target)`` equals the store
    opened with xarray. Variables larger than :data:`NETCDF_BLOCK_BYTES` are
    copied block by block along their chunks, so a streamed field is never
    whole in memory.
    """
    import h5netcdf

    store, target = Path(store), Path(target)
    with xr.open_zarr(store, consolidated=is_consolidated(store), chunks=None) as ds:
        ds.attrs.pop(MANIFEST, None)
        big = [n for n, v in ds.data_vars.items() if v.nbytes > NETCDF_BLOCK_BYTES and v.dtype.kind == "f" and v.ndim]
        small = ds.drop_vars(big)
        for var in small.variables.values():
            var.encoding = {k: v for k, v in var.encoding.items() if k in _KEPT_ENCODING and k != "chunks"}
        small.to_netcdf(target, engine="h5netcdf")
        if big:
            with h5netcdf.File(target, "a") as nc:
                for name in big:
                    _copy_in_blocks(ds[name], nc, name)
    return target


def export_netcdf(store: str | os.PathLike) -> Path:
    """Write the netCDF copy ``{store}.nc`` of a complete store atomically (a temporary sibling, then renamed)."""
    store = Path(store)
    target = netcdf_path(store)
    tmp = store.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write_netcdf(store, tmp)
        os.replace(tmp, target)
    except OSError as err:
        if isinstance(err, StoreWriteError) or not _is_write_error(err, store):
            raise
        raise StoreWriteError(_write_failure(err, target, "netCDF copy"), err) from err
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _copy_in_blocks(var: xr.DataArray, nc: Any, name: str) -> None:
    """Copy a large float variable into an open ``h5netcdf.File``, one band of its Zarr chunks at a time."""
    chunks = tuple(var.encoding.get("chunks") or var.shape)
    for dim, size in zip(var.dims, var.shape):
        if dim not in nc.dimensions:
            nc.dimensions[dim] = size
    out = nc.create_variable(name, var.dims, dtype=var.dtype, fillvalue=var.dtype.type(np.nan), chunks=chunks)
    out.attrs.update({k: v for k, v in var.attrs.items() if k != "_FillValue"})
    axis = int(np.argmax([s / c for s, c in zip(var.shape, chunks)]))
    row = var.nbytes // max(1, var.shape[axis])
    step = max(chunks[axis], NETCDF_BLOCK_BYTES // max(1, row) // chunks[axis] * chunks[axis])
    for start in range(0, var.shape[axis], step):
        box = tuple(slice(start, start + step) if i == axis else slice(None) for i in range(var.ndim))
        out[box] = var[box].values


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
    sources: Iterable[str | os.PathLike] | None = None,
    output: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """A fields store written block by block, atomically (:func:`atomic_directory`), with its manifest.

    ``template`` holds the coordinates (``time``, ``lat``, ``lon``, and those
    of any ``extra`` array), small variables and the dataset attributes; they
    are written first (CF-labelled, :func:`cf_labelled`), then the
    ``field(time, lat, lon)`` Zarr array and each ``extra`` array (``name:
    (dims, shape, chunks, attrs)``, float64) are created empty and yielded by
    name for the caller to fill region by region (``arrays["field"][:, i0:i1,
    :] = block``). The store is sealed and swapped into place only when the
    block exits without error. ``sources``: the source files, checksummed into
    the provenance. ``output``: the ``output`` config section
    (:func:`output_options`: Zarr format, netCDF copy).
    """
    import zarr

    options = output_options(output)
    fmt = options["zarr_format"]
    out = cf_labelled(template)
    out.attrs = {**_own_attrs(out.attrs), **provenance(stage, params, dtype=dtype, sources=sources)}
    _portable_encoding(out)
    with atomic_directory(path, what="fields store", netcdf=options["netcdf"]) as tmp:
        out.to_zarr(tmp, mode="w", zarr_format=fmt, consolidated=False)
        group = zarr.open_group(tmp, mode="a", zarr_format=fmt)
        specs = {"field": (("time", "lat", "lon"), shape, chunks, field_attrs, dtype), **{
            name: (dims, extra_shape, extra_chunks, attrs, np.float64)
            for name, (dims, extra_shape, extra_chunks, attrs) in (extra or {}).items()}}
        arrays = {}
        for name, (dims, array_shape, array_chunks, attrs, array_dtype) in specs.items():
            named = {"dimension_names": dims} if fmt == 3 else {}
            attrs = attrs if fmt == 3 else {**attrs, "_ARRAY_DIMENSIONS": list(dims)}
            arrays[name] = group.create_array(name, shape=array_shape, chunks=array_chunks, dtype=array_dtype,
                                              fill_value=np.nan, attributes=attrs, **named)
        yield arrays


def _portable_encoding(ds: xr.Dataset) -> None:
    """Keep only the encoding keys that mean the same in both Zarr formats (an input store's codecs would not)."""
    for var in ds.variables.values():
        var.encoding = {k: v for k, v in var.encoding.items() if k in _KEPT_ENCODING}


def write_store(
    ds: xr.Dataset,
    path: str | os.PathLike,
    *,
    stage: str,
    params: dict[str, Any] | None = None,
    backend: str | None = None,
    sources: Iterable[str | os.PathLike] | None = None,
    output: dict[str, Any] | None = None,
) -> Path:
    """Write ``ds`` to a Zarr store at ``path`` atomically, CF-labelled, with provenance, manifest and consolidated metadata.

    The data are written to a temporary directory beside ``path``, sealed with
    their manifest and consolidated metadata and swapped into place
    (:func:`atomic_directory`); an existing store at ``path`` is replaced only
    then. ``sources``: the source files of an ingest, checksummed into the
    provenance. ``output``: the ``output`` config section
    (:func:`output_options`): ``zarr_format`` 3 (default) or 2, and
    ``netcdf`` to also write ``{path}.nc``. The Dataset passed in is not modified.
    """
    options = output_options(output)
    main = MAIN_VARIABLE.get(stage)
    main = main if main in ds.data_vars else next(iter(ds.data_vars), None)
    out = cf_labelled(ds)
    out.attrs = {**_own_attrs(out.attrs), **provenance(stage, params, backend, sources=sources,
                                                       dtype=ds[main].dtype if main is not None else None)}
    _portable_encoding(out)
    for name, var in out.variables.items():
        if var.dtype.kind == "U":  # fixed-width unicode has no stable Zarr v3 spec
            out[name] = var.astype(object)
    with atomic_directory(path, what=f"{stage} store", netcdf=options["netcdf"]) as tmp:
        out.to_zarr(tmp, mode="w", zarr_format=options["zarr_format"], consolidated=False)
    return Path(path)


# ---------------------------------------------------------------- markers


def marker_path(store: str | os.PathLike) -> Path:
    """The marker file of ``store``: ``{store}.done``."""
    return Path(f"{os.fspath(store)}{MARKER_SUFFIX}")


def store_path(marker: str | os.PathLike) -> Path:
    """The store a marker file ``{store}.done`` stands for (whether or not it exists yet)."""
    text = os.fspath(marker)
    if not text.endswith(MARKER_SUFFIX):
        raise ValueError(f"A store marker is the store's path followed by {MARKER_SUFFIX!r}; got {text!r}.")
    return Path(text[: -len(MARKER_SUFFIX)])


def _digest(arrays: dict[str, Any] | None) -> str | None:
    if arrays is None:
        return None
    return hashlib.sha256(json.dumps(arrays, sort_keys=True).encode()).hexdigest()


def write_marker(marker: str | os.PathLike) -> Path:
    """Write the marker ``{store}.done`` of a complete store, after the store is in place.

    The marker holds the store's name and the SHA-256 of its manifest (JSON),
    nothing that varies between two runs of one config.
    """
    marker, store = Path(marker), store_path(marker)
    if not is_store(store):
        raise FileNotFoundError(f"The store {store} is not there; its marker {marker} is written only after it.")
    content = json.dumps({"store": store.name, "manifest_sha256": _digest(read_manifest(store))}, indent=1) + "\n"
    for stale in marker.parent.glob(f"{glob.escape(f'.{marker.name}')}.tmp-*"):  # a killed write's
        stale.unlink(missing_ok=True)
    tmp = marker.with_name(f".{marker.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(content)
        os.replace(tmp, marker)
    except OSError as err:
        raise StoreWriteError(_write_failure(err, marker, "store marker"), err) from err
    finally:
        tmp.unlink(missing_ok=True)
    return marker


def marked_store(marker: str | os.PathLike, what: str = "store") -> Path:
    """The store behind a marker file, checked to be there and to be the store the marker was written for.

    Raises
    ------
    FileNotFoundError, CorruptStoreError
        If the store is missing or was replaced after its marker was written
        (the sentence says which rule to rerun).
    """
    marker, store = Path(marker), store_path(marker)
    stage = _rerun(store) or ("moments_tile" if store.parent.name.endswith(".tiles") else store.parent.name)
    if not is_store(store):
        raise FileNotFoundError(f"The {what} {store} is missing although its marker {marker} is there; rerun the "
                                f"stage that writes it (delete {marker}, or snakemake --forcerun {stage}).")
    try:
        recorded = json.loads(marker.read_text()).get("manifest_sha256")
    except (OSError, ValueError, AttributeError) as err:
        raise CorruptStoreError(f"The marker {marker} of the {what} {store} cannot be read ({err}); delete it and "
                                "rerun the workflow.") from err
    if recorded is not None and recorded != _digest(read_manifest(store)):
        raise CorruptStoreError(f"The {what} {store} is not the one its marker {marker} was written for (it was "
                                f"rewritten outside the workflow); rerun its stage (snakemake --forcerun {stage}).")
    return store
