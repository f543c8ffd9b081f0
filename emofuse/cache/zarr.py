"""Zarr v3 backend: one ``NAME.zarr`` folder (zarr 3.x).

Chunks are one layer x ~8 MiB of rows, so reading a layer reads only that layer's chunk files and a
whole-stream read is a few hundred large files. Compression is an optional Zstd/Gzip codec.
"""

from __future__ import annotations

import errno
import functools
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr
from zarr.errors import ZarrUserWarning

from emofuse.cache.backends import ArrayStore, damaged_cache_error, missing_array_error
from emofuse.errors import EmofuseError, cannot_read, os_reason

F = TypeVar("F", bound=Callable[..., Any])

# zarr warns (two lines each) about any file in a store folder it does not know (.DS_Store, a
# stray folder); emofuse judges a store by its own checks, so these never reach the user
warnings.filterwarnings(
    "ignore", category=ZarrUserWarning, message=".*not recognized as a component"
)
METADATA = "zarr.json"
ARRAY_KEYS = {"shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs"}


def broken_metadata(root: Path) -> str | None:
    """What is wrong with the first ``zarr.json`` under ``root`` that is not a JSON object of a
    Zarr v3 node (truncated, overwritten), naming the file relative to ``root``; None if all are.
    One this process may not read raises the one-line chmod advice instead."""
    for file in sorted(root.rglob(METADATA)):
        name = file.relative_to(root.parent)
        try:
            doc = json.loads(file.read_bytes())
        except PermissionError as err:  # its mode, not damage: never "delete and re-extract"
            raise cannot_read(file, err) from None
        except (OSError, ValueError) as err:  # ValueError: bad JSON or bad UTF-8
            return f"{name} is unreadable: {' '.join(str(err).split())}"
        if not isinstance(doc, dict) or doc.get("zarr_format") != 3:
            return f"{name} is not Zarr v3 metadata"
        need = ARRAY_KEYS if doc.get("node_type") == "array" else set()
        if doc.get("node_type") not in ("array", "group") or need - set(doc):
            return f"{name} is not Zarr v3 metadata (fields missing)"
    return None


def _failure(path: Path, err: Exception) -> EmofuseError:
    """An OS-level failure (permission) names that; anything else zarr raises while reading
    means a metadata document is damaged: name the broken one."""
    if isinstance(err, OSError) and isinstance(err.errno, int) and err.errno > 0:
        if err.filename and err.errno in (errno.EACCES, errno.EPERM):  # one file's mode: name it
            return cannot_read(err.filename, err)
        return EmofuseError(f"{path}: cannot read it as a Zarr cache ({os_reason(err)})")
    reason = broken_metadata(path) or f"{type(err).__name__}: {' '.join(str(err).split())}"
    return damaged_cache_error(path, reason)


def _reading(method: F) -> F:
    """Turn any failure of zarr in a read-side method into the one-line damaged-cache error (zarr
    raises json's, its own validation errors, KeyError, TypeError... for damaged metadata)."""

    @functools.wraps(method)
    def guarded(self: ZarrStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except EmofuseError:
            raise
        except Exception as err:  # noqa: BLE001 - see above
            raise _failure(self.path, err) from None

    return guarded  # type: ignore[return-value]


def _compressors(compression: str | None) -> Any:
    if compression is None:
        return None
    if compression == "zstd":
        return zarr.codecs.ZstdCodec(level=3)
    if compression == "gzip":
        return zarr.codecs.GzipCodec(level=4)
    raise EmofuseError(f"unknown compression {compression!r}: use none, gzip or zstd")


def _missing_chunks(name: str, array: Any) -> str | None:
    missing = array.nchunks - array.nchunks_initialized
    if missing <= 0:
        return None
    return f"array {name} lacks {missing} of its {array.nchunks} chunk file(s) (deleted or lost)"


def _uncompressed(array: Any) -> bool:
    """Chunks stored as their raw bytes: no compressor, no filter, the plain bytes serializer."""
    return (
        not array.compressors
        and not array.filters
        and isinstance(array.serializer, zarr.codecs.BytesCodec)
    )


def _wrong_size_chunks(root: Path, name: str, array: Any) -> str | None:
    """An uncompressed chunk file holds exactly one chunk's bytes (edge chunks are stored whole in
    Zarr v3); another size is a truncated or overwritten file, which zarr may read without a word."""
    if not _uncompressed(array):
        return None
    size = int(np.prod(array.chunks)) * np.dtype(array.dtype).itemsize
    folder = root / name / "c"
    files = folder.rglob("*") if folder.is_dir() else ()
    grid = [-(-n // c) for n, c in zip(array.shape, array.chunks, strict=True)]

    def is_chunk(f: Path) -> bool:  # c/i/j/k inside the chunk grid (a stray file is not data)
        key = f.relative_to(folder).parts
        return len(key) == len(grid) and all(
            k.isdigit() and int(k) < g for k, g in zip(key, grid, strict=True)
        )

    wrong = sorted(f for f in files if f.is_file() and is_chunk(f) and f.stat().st_size != size)
    if not wrong:
        return None
    return (  # the file's path as the store was given: one the user can open from here
        f"array {name} has {len(wrong)} chunk file(s) of the wrong size ({wrong[0]}: "
        f"{wrong[0].stat().st_size} bytes, not {size}; truncated or overwritten)"
    )


def _chunk_problem(root: Path, name: str, array: Any) -> str | None:
    """Damage to an array's chunk files found without reading them: missing or of the wrong size."""
    return _missing_chunks(name, array) or _wrong_size_chunks(root, name, array)


class ZarrStore(ArrayStore):
    """Zarr v3 through zarr-python (see ``ArrayStore`` for the interface)."""

    kind = "zarr"

    def __init__(self, path: Path, mode: str = "r") -> None:
        self.path = Path(path)
        try:
            self.g = zarr.open_group(str(self.path), mode=mode, zarr_format=3)
        except Exception as err:  # zarr raises several types for "not a group"
            if mode == "r" and (self.path / METADATA).is_file():  # there, but unreadable
                raise _failure(self.path, err) from None
            raise EmofuseError(f"{self.path}: cannot open as a Zarr v3 cache ({err})") from err
        self._whole: set[str] = set()  # arrays whose chunk files were all found
        self._created: dict[str, Any] = {}

    @_reading
    def read_meta(self) -> dict | None:
        meta = self.g.attrs.get("emofuse")
        return dict(meta) if isinstance(meta, dict) else None

    def write_meta(self, meta: dict) -> None:
        self.g.attrs["emofuse"] = meta

    def create(self, name: str, shape: tuple, dtype: str, chunks: tuple, compression: str | None):
        self._created[name] = self.g.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            compressors=_compressors(compression),
            fill_value=0,
            overwrite=True,
            # every chunk is a file, all-zero ones too: a missing file is then always damage
            config={"write_empty_chunks": True},
        )

    @_reading
    def _array(self, name: str) -> Any:
        """Array ``name``; a missing one, or one missing chunk files, is a damaged cache.

        Zarr reads a missing chunk file as the fill value (zeros) without a word, so the chunk
        files are counted once per array before its first read.
        """
        try:
            array = self.g[name]
        except KeyError:
            if (self.path / name / METADATA).is_file():  # there: its metadata is damaged
                raise
            raise missing_array_error(self.path, name) from None
        if name not in self._whole:
            if problem := _chunk_problem(self.path, name, array):
                raise damaged_cache_error(self.path, problem)
            self._whole.add(name)
        return array

    @_reading
    def array_header(self, name: str) -> tuple[tuple[int, ...], str | None] | None:
        if name not in self.g:
            return None
        array = self.g[name]  # its zarr.json only: the chunk files are not counted here
        if not isinstance(array, zarr.Array):
            return None
        return tuple(array.shape), np.dtype(array.dtype).name

    @_reading
    def list_arrays(self, group: str) -> list[str] | None:
        node = self.g.get(group)
        if not isinstance(node, zarr.Group):
            return []
        return [
            f"{group}/{name}"
            for name, obj in node.members(max_depth=None)
            if isinstance(obj, zarr.Array)
        ]

    def check_metadata(self) -> None:
        """Every zarr.json parses as Zarr v3 metadata (a few small files): zarr reads a nested
        array without its groups' documents, so a damaged group would go unnoticed."""
        if problem := broken_metadata(self.path):
            raise damaged_cache_error(self.path, problem)

    @_reading
    def missing_chunks(self) -> list[str]:
        """One line per array that lacks chunk files (what `emofuse info` reports as damage)."""
        return [
            problem
            for name, obj in sorted(self.g.members(max_depth=None))
            if isinstance(obj, zarr.Array) and (problem := _chunk_problem(self.path, name, obj))
        ]

    def _damaged(self, name: str, err: Exception) -> EmofuseError:
        return damaged_cache_error(  # the codec's own words say nothing a user can act on
            self.path, f"array {name} has a chunk that cannot be decoded (corrupt data)"
        )

    def write(self, name: str, index: Any, value: np.ndarray) -> None:
        # through the created array: its write_empty_chunks config is not stored in the metadata
        array = self._created.get(name)
        if array is None:
            array = self.g[name]
        array[index] = value

    @_reading
    def read(self, name: str, index: Any = ()) -> np.ndarray:
        array = self._array(name)
        try:
            return np.asarray(array[index])
        except (ValueError, RuntimeError) as err:  # codec errors of a garbage chunk file
            raise self._damaged(name, err) from None

    @_reading
    def read_into(self, name: str, index: tuple, out: np.ndarray) -> None:
        """Decode chunks straight into a C-contiguous destination (no temporary array)."""
        from zarr.core.buffer import default_buffer_prototype  # noqa: PLC0415

        array = self._array(name)
        target = default_buffer_prototype().nd_buffer.from_numpy_array(out)
        try:
            array.get_basic_selection(index, out=target)
        except (ValueError, RuntimeError) as err:
            raise self._damaged(name, err) from None

    @_reading
    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._array(name).shape)

    @_reading
    def has(self, name: str) -> bool:
        if name in self.g:
            return True
        if (self.path / name / METADATA).is_file():  # zarr cannot parse what is there
            raise _failure(self.path, KeyError(name))
        return False

    def flush(self) -> None:
        pass  # every chunk write is a finished file

    def close(self) -> None:
        pass
