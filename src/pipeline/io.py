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

from pipeline import __version__

log = logging.getLogger(__name__)

MANIFEST = "pipeline_manifest"
"""Root attribute of a complete store: ``{"checksum": "crc32", "arrays": {array: {chunk key: crc}}}``."""
MARKER_SUFFIX = ".done"
"""A store's marker is the store's path with this suffix (``eof/x.zarr.done``)."""
MAIN_VARIABLE = {"ingest": "field", "synthetic": "field", "moments": "mean", "moments_tile": "mean", "eof": "eof",
                 "regression": "coef", "distributions": "loc", "posterior": "mean"}
"""The variable whose dtype :func:`write_store` records as ``pipeline_dtype``, per stage."""
PROVENANCE_KEYS = ("pipeline_stage", "pipeline_version", "pipeline_git_commit", "pipeline_config", "array_backend",
                   "pipeline_dtype", "pipeline_source_sha256", "software", "history")
"""The attributes :func:`provenance` may write (an input's are dropped before a store's own are added)."""
_METADATA_FILES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
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
        with xr.open_zarr(path, consolidated=False) as ds:
            ds = ds.load()
    ds.attrs.pop(MANIFEST, None)  # about the files, not the data: a Dataset written elsewhere gets its own
    return ds


def read_manifest(path: str | os.PathLike) -> dict[str, dict[str, int]] | None:
    """The manifest of the store at ``path`` as ``{array: {chunk key: crc32}}``, or None if it has none."""
    path = Path(path)
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except FileNotFoundError:
        return None  # a Zarr format 2 store, or no store: never written by this pipeline
    except (OSError, ValueError) as err:
        raise CorruptStoreError(f"The metadata file {path / 'zarr.json'} of the store {path} cannot be read "
                                f"({err}); rewrite the store.") from err
    manifest = (meta.get("attributes") or {}).get(MANIFEST)
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
        stage = json.loads((path / "zarr.json").read_text())["attributes"]["pipeline_stage"]
    except (OSError, ValueError, KeyError, TypeError):
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


# ---------------------------------------------------------------- writing


@contextmanager
def atomic_directory(path: str | os.PathLike, *, what: str = "store") -> Iterator[Path]:
    """A temporary sibling of ``path`` to write into, swapped into place on success.

    Before the block, the leftovers of earlier writes of ``path`` are cleared:
    when ``path`` is missing but an ``.{name}.old-<id>`` is there (a write
    killed between its two renames), that old store is put back; every other
    ``.{name}.tmp-*`` and ``.{name}.old-*`` is removed. The block writes into
    ``.{name}.tmp-<id>``. When it finishes without error, a Zarr store there
    (a root ``zarr.json``) gets its manifest (:func:`seal_store`); then the
    existing ``path`` is renamed to ``.{name}.old-<id>``, the new directory to
    ``path``, and the old one deleted. On any error the temporary directory is
    removed and ``path`` is left as it was; a file-system error (disk full,
    permission denied) becomes a :class:`StoreWriteError` naming ``path``.
    """
    path = Path(path)
    token = uuid.uuid4().hex[:8]
    tmp = path.with_name(f".{path.name}.tmp-{token}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear_leftovers(path)
        yield tmp
        if (tmp / "zarr.json").is_file():
            seal_store(tmp)
        _swap(tmp, path, path.with_name(f".{path.name}.old-{token}"))
    except OSError as err:
        if isinstance(err, StoreWriteError) or not _is_write_error(err, path):
            raise
        raise StoreWriteError(_write_failure(err, path, what), err) from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _clear_leftovers(path: Path) -> None:
    """Put back a store a killed swap left aside, and remove stale temporary and old copies of ``path``."""
    stem = glob.escape(f".{path.name}")
    olds = sorted(path.parent.glob(f"{stem}.old-*"), key=lambda p: p.stat().st_mtime_ns)
    if olds and not path.exists():
        os.replace(olds[-1], path)
        log.warning("put back %s: a write of it was interrupted after it had been renamed to %s", path, olds[-1].name)
        olds = olds[:-1]
    for stale in [*path.parent.glob(f"{stem}.tmp-*"), *olds]:
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
    """The manifest of the Zarr store at ``path`` as it is now: per array, its chunk files and their CRC-32."""
    path = Path(path)
    arrays: dict[str, dict[str, int]] = {}
    for meta in sorted(path.rglob("zarr.json")):
        node = meta.parent
        if node == path or json.loads(meta.read_text()).get("node_type") != "array":
            continue
        files = sorted(p for p in node.rglob("*") if p.is_file() and p.name not in _METADATA_FILES)
        arrays[node.relative_to(path).as_posix()] = {
            f.relative_to(node).as_posix(): zlib.crc32(f.read_bytes()) for f in files}
    return {"checksum": "crc32", "arrays": arrays}


def seal_store(path: str | os.PathLike) -> None:
    """Record the :func:`manifest` of the complete Zarr store at ``path`` in its root attributes."""
    import zarr

    group = zarr.open_group(Path(path), mode="r+")
    group.attrs.update({MANIFEST: manifest(path)})


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
) -> Iterator[dict[str, Any]]:
    """A fields store written block by block, atomically (:func:`atomic_directory`), with its manifest.

    ``template`` holds the coordinates (``time``, ``lat``, ``lon``, and those
    of any ``extra`` array), small variables and the dataset attributes; they
    are written first, then the ``field(time, lat, lon)`` Zarr array and each
    ``extra`` array (``name: (dims, shape, chunks, attrs)``, float64) are
    created empty and yielded by name for the caller to fill region by region
    (``arrays["field"][:, i0:i1, :] = block``). The store is sealed and swapped
    into place only when the block exits without error. ``sources``: the source
    files, checksummed into the provenance.
    """
    import zarr

    out = template.copy(deep=False)
    out.attrs = {**_own_attrs(template.attrs), **provenance(stage, params, dtype=dtype, sources=sources)}
    with atomic_directory(path, what="fields store") as tmp:
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
    sources: Iterable[str | os.PathLike] | None = None,
) -> Path:
    """Write ``ds`` to a Zarr store at ``path`` atomically, with provenance attributes and a manifest.

    The data are written to a temporary directory beside ``path``, sealed with
    their manifest and swapped into place (:func:`atomic_directory`); an
    existing store at ``path`` is replaced only then. ``sources``: the source
    files of an ingest, checksummed into the provenance. The Dataset passed in
    is not modified.
    """
    main = MAIN_VARIABLE.get(stage)
    main = main if main in ds.data_vars else next(iter(ds.data_vars), None)
    out = ds.copy(deep=False)
    out.attrs = {**_own_attrs(ds.attrs), **provenance(stage, params, backend, sources=sources,
                                                      dtype=ds[main].dtype if main is not None else None)}
    for name, var in out.variables.items():
        if var.dtype.kind == "U":  # fixed-width unicode has no stable Zarr v3 spec
            out[name] = var.astype(object)
    with atomic_directory(path, what=f"{stage} store") as tmp:
        out.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
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
    if not (store / "zarr.json").is_file():
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
    if not (store / "zarr.json").is_file():
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
