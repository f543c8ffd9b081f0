"""Zarr v3 backend: one ``NAME.zarr`` folder (zarr 3.x).

Chunks are one layer x ~8 MiB of rows, so reading a layer reads only that layer's chunk files and a
whole-stream read is a few hundred large files. Compression is an optional Zstd/Gzip codec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from emofuse.cache.backends import ArrayStore, missing_array_error
from emofuse.errors import EmofuseError


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


class ZarrStore(ArrayStore):
    """Zarr v3 through zarr-python (see ``ArrayStore`` for the interface)."""

    kind = "zarr"

    def __init__(self, path: Path, mode: str = "r") -> None:
        self.path = Path(path)
        try:
            self.g = zarr.open_group(str(self.path), mode=mode, zarr_format=3)
        except Exception as err:  # zarr raises several types for "not a group"
            raise EmofuseError(f"{self.path}: cannot open as a Zarr v3 cache ({err})") from err
        self._whole: set[str] = set()  # arrays whose chunk files were all found
        self._created: dict[str, Any] = {}

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

    def _array(self, name: str) -> Any:
        """Array ``name``; a missing one, or one missing chunk files, is a damaged cache.

        Zarr reads a missing chunk file as the fill value (zeros) without a word, so the chunk
        files are counted once per array before its first read.
        """
        try:
            array = self.g[name]
        except KeyError:
            raise missing_array_error(self.path, name) from None
        if name not in self._whole:
            if problem := _missing_chunks(name, array):
                raise EmofuseError(f"{self.path}: {problem}; the cache is damaged: extract again")
            self._whole.add(name)
        return array

    def missing_chunks(self) -> list[str]:
        """One line per array that lacks chunk files (what `emofuse info` reports as damage)."""
        return [
            problem
            for name, obj in sorted(self.g.members(max_depth=None))
            if isinstance(obj, zarr.Array) and (problem := _missing_chunks(name, obj))
        ]

    def _damaged(self, name: str, err: Exception) -> EmofuseError:
        return EmofuseError(
            f"{self.path}: array {name} has a chunk that cannot be decoded ({type(err).__name__}); "
            "the cache is damaged: extract again"
        )

    def write(self, name: str, index: Any, value: np.ndarray) -> None:
        # through the created array: its write_empty_chunks config is not stored in the metadata
        array = self._created.get(name)
        if array is None:
            array = self.g[name]
        array[index] = value

    def read(self, name: str, index: Any = ()) -> np.ndarray:
        array = self._array(name)
        try:
            return np.asarray(array[index])
        except (ValueError, RuntimeError) as err:  # codec errors of a garbage chunk file
            raise self._damaged(name, err) from None

    def read_into(self, name: str, index: tuple, out: np.ndarray) -> None:
        """Decode chunks straight into a C-contiguous destination (no temporary array)."""
        from zarr.core.buffer import default_buffer_prototype  # noqa: PLC0415

        array = self._array(name)
        target = default_buffer_prototype().nd_buffer.from_numpy_array(out)
        try:
            array.get_basic_selection(index, out=target)
        except (ValueError, RuntimeError) as err:
            raise self._damaged(name, err) from None

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._array(name).shape)

    def has(self, name: str) -> bool:
        return name in self.g

    def flush(self) -> None:
        pass  # every chunk write is a finished file

    def close(self) -> None:
        pass
