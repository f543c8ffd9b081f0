"""Committed parts of an unfinished store: the crash-safe journal of the writer.

``NAME.h5.parts/`` holds ``manifest.json`` (fingerprint, settings, stream specs) and one folder per
committed batch, ``rank{r:03d}-{k:06d}/``: ``index.json`` (ids, table rows, row counts, strings,
skips) plus one ``.npy`` per numeric array. A part is written under a temporary name, every file is
fsynced, then the folder is renamed into place (atomic on POSIX) and the parent fsynced: after a
SIGKILL or a power loss a part is either fully there or absent, never torn. Parts are memory-mapped
when consolidated, so a 64 GB cache never has to fit in memory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from functools import cached_property
from pathlib import Path

import numpy as np

from emofuse import faults
from emofuse.cache.schema import canonical_json
from emofuse.fileio import atomic_open, fsync_path

PART_RE = re.compile(r"^rank(\d{3,})-(\d{6,})$")
MANIFEST = "manifest.json"


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under root (a finished Zarr folder before its final rename)."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def write_file_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_json_atomically(path: Path, obj: dict, tmp_tag: str) -> None:
    """Canonical JSON through a temp name, fsynced and renamed over ``path`` (emofuse.fileio)."""
    with atomic_open(path, "wb", tmp_tag=tmp_tag) as fh:
        fh.write(canonical_json(obj))


def part_name(rank: int, seq: int) -> str:
    return f"rank{rank:03d}-{seq:06d}"


def list_parts(folder: Path) -> list[Path]:
    """Committed parts in (rank, seq) order; temp folders of in-flight writes are ignored."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        m = PART_RE.match(entry.name)
        if m and entry.is_dir():
            found.append((int(m.group(1)), int(m.group(2)), entry))
    return [p for _r, _s, p in sorted(found)]


def remove_stale_temps(folder: Path, rank: int) -> None:
    """Drop this rank's half-written parts left by a kill (other ranks may be writing theirs)."""
    if not folder.is_dir():
        return
    prefix = f".tmp-{part_name(rank, 0)[:7]}"
    for entry in folder.iterdir():
        if entry.name.startswith(prefix):
            shutil.rmtree(entry, ignore_errors=True)


def commit_part(
    folder: Path, rank: int, seq: int, index: dict, arrays: dict[str, np.ndarray]
) -> Path:
    """Write one part atomically (temp folder -> fsync -> rename) and return its final path."""
    final = folder / part_name(rank, seq)
    tmp = folder / f".tmp-{part_name(rank, seq)}-{os.getpid()}"
    try:
        faults.reach("part-write")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for key, value in arrays.items():
            with open(tmp / f"{key}.npy", "wb") as fh:
                np.save(fh, np.ascontiguousarray(value), allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
        write_file_durably(tmp / "index.json", canonical_json(index))
        fsync_path(tmp)
    except OSError:  # disk full, read-only ...: no half-written part is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    faults.reach("part-unrenamed")
    os.rename(tmp, final)
    fsync_path(folder)
    faults.reach("part-committed")
    return final


class Part:
    """A committed part, read lazily: index first, arrays memory-mapped on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._arrays: dict[str, np.ndarray] = {}

    @cached_property
    def index(self) -> dict:
        return json.loads((self.path / "index.json").read_text(encoding="utf-8"))

    @property
    def ids(self) -> list[str]:
        return self.index["ids"]

    def array(self, key: str) -> np.ndarray:
        if key not in self._arrays:
            file = self.path / f"{key}.npy"
            try:
                self._arrays[key] = np.load(file, mmap_mode="r", allow_pickle=False)
            except ValueError:  # zero-size arrays cannot be memory-mapped
                self._arrays[key] = np.load(file, allow_pickle=False)
        return self._arrays[key]

    def release(self) -> None:
        self._arrays.clear()
