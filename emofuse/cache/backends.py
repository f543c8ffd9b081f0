"""Cache backends: the array-store interface and a registry keyed by the cache name's suffix.

A backend is one module with an ``ArrayStore`` subclass, registered here with a ``Backend`` entry
(``BACKENDS``), or from outside the package with ``register_backend``. The writer, reader and
verifier only use the interface below; the schema (what arrays a cache holds, docs/architecture.md §2)
is the same in every backend, so the same content has the same digest in each.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.errors import EmofuseError, os_reason


class DamagedCacheError(EmofuseError):
    """A cache that is there but cannot be read (its metadata or arrays are damaged).

    Other commands exit 2 with the one line; ``emofuse verify`` reports it as damage (exit 1).
    """


def damaged_cache_error(path: Path, reason: str) -> DamagedCacheError:
    """The one line for a store whose metadata or arrays cannot be read."""
    err = DamagedCacheError(
        f"{path} is damaged ({reason}); re-extract it "
        "(delete it and rerun the same emofuse extract)"
    )
    err.reason = reason  # what verify lists as the problem
    return err


def short_reason(err: BaseException) -> str:
    """A library error's short reason in one line: HDF5's text ends in its reason in parentheses
    ("Unable to synchronously check link existence (bad local heap signature)")."""
    if isinstance(err, KeyError) and err.args:  # str() of a KeyError quotes its text
        text = " ".join(str(err.args[0]).split())
    else:
        text = os_reason(err)
    found = re.search(r"\(([^()]+)\)$", text)
    return found.group(1) if found else text


def missing_array_error(path: Path, name: str) -> EmofuseError:
    """The one line for an array the cache's metadata lists but the store lacks (a stream group
    deleted with h5py, a removed Zarr folder): the cache is damaged, not the user's command."""
    return EmofuseError(
        f"cache {path} lacks array {name} (deleted or damaged after extraction); run "
        f"`emofuse verify {path}` to list the damage, then extract the cache again"
    )


class ArrayStore:
    """Named n-d arrays plus one JSON metadata document, at one path (a file or a folder).

    Names are slash paths (``speech/data``). ``mode`` is "r" (read an existing store) or "w"
    (create a new one; the writer only ever creates under a temporary name and renames it).
    """

    kind: str  # the backend's registry name
    path: Path

    def read_meta(self) -> dict | None:
        """The metadata document, or None when the store holds none (not an emofuse cache)."""
        raise NotImplementedError

    def write_meta(self, meta: dict) -> None:
        raise NotImplementedError

    def create(
        self, name: str, shape: tuple, dtype: str, chunks: tuple, compression: str | None
    ) -> None:
        raise NotImplementedError

    def write(self, name: str, index: Any, value: np.ndarray) -> None:
        raise NotImplementedError

    def read(self, name: str, index: Any = ()) -> np.ndarray:
        """A copy of ``array[index]``; a missing or damaged array raises EmofuseError."""
        raise NotImplementedError

    def read_into(self, name: str, index: tuple, out: np.ndarray) -> None:
        """``out[...] = array[index]`` (``out`` C-contiguous); backends may avoid the temporary."""
        out[...] = self.read(name, index)

    def shape(self, name: str) -> tuple[int, ...]:
        raise NotImplementedError

    def has(self, name: str) -> bool:
        raise NotImplementedError

    def array_header(self, name: str) -> tuple[tuple[int, ...], str | None] | None:
        """(shape, dtype name) of array ``name`` from its header alone (no data, no chunk files
        counted), None where the store lacks it; a backend that cannot tell the dtype gives None
        for it. open_store checks the metadata's stated shapes with it."""
        if not self.has(name):
            return None
        return self.shape(name), None

    def list_arrays(self, group: str) -> list[str] | None:
        """The names of every array under ``group`` (e.g. ``streams/speech/data``), from headers
        alone; None where the backend cannot list them (open_store then skips that check)."""
        return None

    def mapped(self, name: str) -> np.ndarray | None:
        """A zero-copy read-only view of a whole array where the backend can give one, else None."""
        return None

    def check_metadata(self) -> None:
        """Raise DamagedCacheError where a header or metadata document of the store is damaged;
        reads no data (open_store calls it on every finished cache)."""

    def missing_chunks(self) -> list[str]:
        """Structural damage found without reading the data, one line per array (e.g. deleted
        chunk files, which Zarr would read as zeros)."""
        return []

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Backend:
    name: str  # registry key, stored in ArrayStore.kind
    label: str  # what `emofuse info` calls it
    suffixes: tuple[str, ...]  # cache names ending in one of these (lower case) use this backend
    store: str | Callable[[Path, str], ArrayStore]  # "module:Class", imported on first use
    is_store: Callable[[Path], bool]  # does an existing path hold this backend's layout?
    folder: bool  # the store is a folder (writing inside it would add files to a cache)

    def open(self, path: Path, mode: str) -> ArrayStore:
        factory = self.store
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        return factory(path, mode)


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _is_hdf5(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        return fh.read(8) == HDF5_SIGNATURE


def _is_zarr(path: Path) -> bool:
    return (path / "zarr.json").is_file()


# each backend module is imported only when used (zarr alone takes ~1 s to import)
BACKENDS: dict[str, Backend] = {
    "hdf5": Backend(
        "hdf5", "HDF5", (".h5", ".hdf5"), "emofuse.cache.hdf5:HDF5Store", _is_hdf5, False
    ),
    "zarr": Backend("zarr", "Zarr v3", (".zarr",), "emofuse.cache.zarr:ZarrStore", _is_zarr, True),
}


def register_backend(backend: Backend) -> None:
    """Add a backend (or replace one of the same name) for caches named with its suffixes."""
    BACKENDS[backend.name] = backend


def backend_for(path: Path) -> Backend:
    """The backend a cache name selects by its suffix; anything else is a user error."""
    suffix = Path(path).suffix.lower()
    if suffix == ".parts" and (Path(path) / "manifest.json").is_file():
        raise EmofuseError(f"{path} is the unfinished work of {str(path)[: -len('.parts')]}: give "
                           "that name (rerun the same `emofuse extract` to finish it)")  # fmt: skip
    for backend in BACKENDS.values():
        if suffix in backend.suffixes:
            return backend
    names = " or ".join(
        f"{'/'.join(b.suffixes)} ({b.label})" for b in BACKENDS.values()
    )  # every suffix accepted is named
    if any(Path(path).name.lower() in b.suffixes for b in BACKENDS.values()):  # ".h5" alone
        raise EmofuseError(
            f"{path}: a cache name needs a name before its suffix, e.g. "
            f"{Path(path).with_name('NAME' + Path(path).name)}"
        )
    raise EmofuseError(f"{path}: a cache name must end in {names}")


def backend_of(path: Path) -> str:
    """The registry name of ``backend_for(path)``."""
    return backend_for(path).name


def make_store(kind: str, path: Path, mode: str) -> ArrayStore:
    return BACKENDS[kind].open(Path(path), mode)
