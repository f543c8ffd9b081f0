"""HDF5 backend (h5py): one ``NAME.h5`` file.

Uncompressed arrays are stored contiguous: the store is then exactly the raw bytes plus a few KiB of
headers, and a layer of a layer-major array is one contiguous byte range (one read), which
``mapped`` can also hand out as a zero-copy memory map. Compressed arrays are chunked (one layer x
~8 MiB of rows per chunk) with byte shuffle.
"""

from __future__ import annotations

import errno
import functools
import json
import mmap
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np

from emofuse.cache.backends import (
    ArrayStore,
    damaged_cache_error,
    missing_array_error,
    short_reason,
)
from emofuse.errors import EmofuseError, os_reason

F = TypeVar("F", bound=Callable[..., Any])

# what h5py raises for a file whose headers, heaps or chunks are damaged (and json for the meta)
H5_FAILURES = (RuntimeError, OSError, ValueError)


def _failure(path: Path, err: Exception) -> EmofuseError:
    """An OS-level failure (h5py sets errno: permission, a folder) names that; anything else in
    h5py means the file's content is damaged."""
    code = getattr(err, "errno", None)
    if code in (errno.EAGAIN, errno.EWOULDBLOCK) or "unable to lock file" in str(err):
        return EmofuseError(  # HDF5's file lock: another program has it open for writing
            f"{path}: another program has it open for writing (HDF5's file lock: "
            f"{os_reason(err)}); close that program, or to read it meanwhile set "
            "HDF5_USE_FILE_LOCKING=FALSE"
        )
    if isinstance(code, int) and code > 0:
        return EmofuseError(f"{path}: cannot read it as an HDF5 cache ({os_reason(err)})")
    reason = short_reason(err)
    # HDF5's "truncated file: eof = 524366, sblock->base_addr = 0, stored_eof = 528462"
    if found := re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", reason):
        reason = (
            f"the file is truncated: {found.group(1)} bytes of the {found.group(2)} it was "
            "written with"
        )
    return damaged_cache_error(path, reason)


def _reading(method: F) -> F:
    """Turn any h5py failure of a read-side method into the one-line damaged-cache error."""

    @functools.wraps(method)
    def guarded(self: HDF5Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except H5_FAILURES as err:
            raise _failure(self.path, err) from None
        except KeyError as err:  # h5py's "Unable to synchronously open object (… corruption)"
            if "Unable to" not in str(err):
                raise
            raise _failure(self.path, err) from None

    return guarded  # type: ignore[return-value]


def _writing(method: F) -> F:
    """A write HDF5 could not do (``RuntimeError``: "file write failed … errno = 28 …", as from
    a disk that filled midway) is the ``OSError`` it is, so the writer's one-line handling of a
    full disk or a size limit applies; h5py reports these only as RuntimeError."""

    @functools.wraps(method)
    def guarded(self: HDF5Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except RuntimeError as err:
            found = re.search(r"errno = (\d+)", str(err))
            if not found:
                raise
            code = int(found.group(1))
            raise OSError(code, os.strerror(code), str(self.path)) from None

    return guarded  # type: ignore[return-value]


def _filters(compression: str | None) -> dict[str, Any]:
    if compression is None:
        return {}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    if compression == "zstd":
        try:
            import hdf5plugin  # noqa: PLC0415 - optional: registers the zstd filter with HDF5
        except ImportError as err:
            raise EmofuseError(
                "compression 'zstd' in an .h5 cache needs the hdf5plugin package "
                "(pip install hdf5plugin); or use compression 'gzip', or a .zarr cache"
            ) from err
        return {**hdf5plugin.Zstd(clevel=3), "shuffle": True}
    raise EmofuseError(f"unknown compression {compression!r}: use none, gzip or zstd")


class HDF5Store(ArrayStore):
    """HDF5 through h5py (see ``ArrayStore`` for the interface)."""

    kind = "hdf5"

    def __init__(self, path: Path, mode: str = "r") -> None:
        self.path = Path(path)
        try:
            self.f = h5py.File(self.path, mode)
        except OSError as err:
            if mode != "r":  # creating a store: the writer says what to free or fix, and cleans up
                raise
            raise _failure(self.path, err) from None

    # metadata -------------------------------------------------------------------------------
    @_reading
    def read_meta(self) -> dict | None:
        if "meta" not in self.f or self.f.attrs.get("format") is None:
            return None
        return json.loads(self._dataset("meta")[()].tobytes().decode("utf-8"))

    @_writing
    def write_meta(self, meta: dict) -> None:
        raw = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
        if "meta" in self.f:
            del self.f["meta"]
        self.f.create_dataset("meta", data=raw)
        for key in ("format", "format_version", "emofuse_version", "fingerprint", "complete"):
            self.f.attrs[key] = meta[key]

    # arrays ---------------------------------------------------------------------------------
    def _dataset(self, name: str) -> h5py.Dataset:
        """Array ``name``; one the file lacks (a group deleted with h5py) is a damaged cache."""
        try:
            obj = self.f[name]
        except KeyError as err:
            if any(gone in str(err) for gone in ("doesn't exist", "component not found")):
                raise missing_array_error(self.path, name) from None
            raise damaged_cache_error(self.path, short_reason(err)) from None  # a damaged heap
        if not isinstance(obj, h5py.Dataset):  # a damaged object header reads as another kind
            raise damaged_cache_error(self.path, f"{name} is a {type(obj).__name__}, not an array")
        return obj

    @_writing
    def create(self, name: str, shape: tuple, dtype: str, chunks: tuple, compression: str | None):
        opts = _filters(compression)
        if opts:
            self.f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, **opts)
        else:  # contiguous: exact size on disk, one byte range per layer
            self.f.create_dataset(name, shape=shape, dtype=dtype)

    @_writing
    def write(self, name: str, index: Any, value: np.ndarray) -> None:
        self.f[name][index] = value

    @_reading
    def read(self, name: str, index: Any = ()) -> np.ndarray:
        ds = self._dataset(name)
        if ds.size == 0:
            return np.zeros(ds.shape, ds.dtype)[index]
        return ds[index]

    @_reading
    def read_into(self, name: str, index: tuple, out: np.ndarray) -> None:
        """Read straight into a C-contiguous destination (no temporary copy)."""
        self._dataset(name).read_direct(out, source_sel=index)

    @_reading
    def mapped(self, name: str) -> np.ndarray | None:
        """A copy-on-write memory map of a whole array, or None where HDF5 does not store it as one
        raw byte range (chunked, compressed, empty, or a user block before the HDF5 data).

        Zero-copy: pages come from the OS page cache on first touch and are shared by every process
        that maps the file; writes to the array stay private to this process (the file never
        changes). The map is made from h5py's own file descriptor, so it reads the file this store
        opened even if a consolidation has since renamed a new cache over the path, and it
        outlives ``close``. A file system that cannot map falls back to reading (None).
        """
        ds = self._dataset(name)
        if ds.chunks is not None or ds.size == 0 or ds.dtype.byteorder == ">":
            return None
        offset = ds.id.get_offset()
        if offset is None or self.f.id.get_create_plist().get_userblock() != 0:
            return None
        try:
            fd = self.f.id.get_vfd_handle()  # the POSIX (sec2) driver's descriptor
            # ACCESS_COPY: writable (torch needs that) yet private; mmap dups the descriptor
            buf = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError, TypeError, RuntimeError):  # another driver, or no mmap here
            return None
        return np.frombuffer(buf, ds.dtype, count=ds.size, offset=offset).reshape(ds.shape)

    @_reading
    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._dataset(name).shape)

    @_reading
    def has(self, name: str) -> bool:
        return name in self.f

    @_reading
    def array_header(self, name: str) -> tuple[tuple[int, ...], str | None] | None:
        obj = self.f.get(name)
        if not isinstance(obj, h5py.Dataset):
            return None
        return tuple(obj.shape), obj.dtype.name

    @_reading
    def list_arrays(self, group: str) -> list[str] | None:
        found: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                found.append(f"{group}/{name}")

        if isinstance(self.f.get(group), h5py.Group):
            self.f[group].visititems(visit)
        return found

    def check_metadata(self) -> None:
        """Visit every group and array: reads only their headers and heaps, so a damaged one (bad
        signature) is found at open, not by whichever command first touches it."""
        try:
            self.f.visititems(lambda _name, _obj: None)
        except (*H5_FAILURES, KeyError) as err:
            raise _failure(self.path, err) from None

    @_writing
    def flush(self) -> None:
        self.f.flush()

    @_writing
    def close(self) -> None:
        self.f.close()
