"""Committed parts of an unfinished store: the crash-safe journal of the writer.

``NAME.h5.parts/`` holds ``manifest.json`` (fingerprint, settings, stream specs) and one folder per
committed batch, ``rank{r:03d}-{k:06d}/``: ``index.json`` (ids, table rows, row counts, strings,
skips, and ``files``: the byte size and CRC-32 of every ``.npy`` as written) plus one ``.npy`` per
numeric array. A part is written under a temporary name, every file is
fsynced, then the folder is renamed into place (atomic on POSIX) and the parent fsynced: after a
SIGKILL or a power loss a part is either fully there or absent, never torn. A committed part can still be damaged later (a truncated copy, a bad disk): ``part_damage``
re-reads its files against the recorded sizes and CRCs, on resume (before anything is encoded) and
again when consolidating. Parts are memory-mapped when consolidated, so a 64 GB cache never has to
fit in memory.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import zlib
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from emofuse import faults
from emofuse.cache.schema import canonical_json, little_endian
from emofuse.errors import LOOPS, RERUN, EmofuseError, os_reason
from emofuse.fileio import atomic_open, fsync_path

PART_RE = re.compile(r"^rank(\d{3,})-(\d{6,})$")
MANIFEST = "manifest.json"
READ_BYTES = 16 << 20  # one read step when checking a part file's CRC
INDEX_CRC = "index_crc32"  # index.json's CRC-32 of its own canonical JSON without this field


class _CrcWriter:
    """A file wrapper that counts and CRC-32s what ``np.save`` writes (header and data), so a
    part records the checksum of its files without reading them back."""

    def __init__(self, fh) -> None:
        self.fh, self.crc, self.size = fh, 0, 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.crc = zlib.crc32(view, self.crc)
        self.size += len(view)
        return self.fh.write(view)


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


def row_crcs(rows: np.ndarray, counts: list[int], layered: bool) -> list:
    """CRC-32 of each utterance's rows (per layer for (L, rows, D)): the values the final store's
    checksums hold, so consolidation checks each piece as it copies it instead of re-reading the
    part first. ``rows`` is C-contiguous."""
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    pieces = rows[None] if not layered else rows  # (L, rows, ...)
    table = [
        [
            zlib.crc32(little_endian(layer[a:b]))
            for a, b in zip(starts[:-1], starts[1:], strict=True)
        ]
        for layer in pieces
    ]
    return table if layered else table[0]


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
        files = {}
        for key, value in arrays.items():
            with open(tmp / f"{key}.npy", "wb") as fh:
                out = _CrcWriter(fh)
                np.save(out, np.ascontiguousarray(value), allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            files[f"{key}.npy"] = {"bytes": out.size, "crc32": out.crc}
        index["files"] = files
        index.pop(INDEX_CRC, None)
        index[INDEX_CRC] = zlib.crc32(canonical_json(index))  # the index's own bytes, last
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


def part_damage(path: Path, index: dict, keys: list[str], read: bool = True) -> str | None:
    """What is wrong with the array files ``keys`` (``stream.array``) of the committed part at
    ``path``, or None. Checked against the size and CRC-32 recorded in ``index["files"]`` at commit
    (every byte is read; ``read=False``: the sizes only); a part written before those were recorded
    gets a structural check (its ``.npy`` header against the file size). A missing file is the
    caller's to report."""
    if INDEX_CRC in index:  # the table rows, row counts and strings come from the index
        rest = {k: v for k, v in index.items() if k != INDEX_CRC}
        try:
            if zlib.crc32(canonical_json(rest)) != int(index[INDEX_CRC]):
                return "index.json: its content changed since it was written (CRC-32 mismatch)"
        except (TypeError, ValueError):
            return "index.json: its recorded checksum is unreadable"
    recorded = index.get("files")
    for key in keys:
        name = f"{key}.npy"
        file = path / name
        if not file.is_file():
            continue
        want = recorded.get(name) if isinstance(recorded, dict) else None
        try:
            if want is None:
                problem = _npy_size_problem(file)
            else:
                problem = _crc_problem(file, int(want["bytes"]), int(want["crc32"]), read)
        except OSError as err:
            problem = f"unreadable ({err.strerror or type(err).__name__})"
        except (KeyError, TypeError, ValueError):
            problem = "its recorded checksum is unreadable"
        if problem:
            return f"{name}: {problem}"
    return None


def _crc_problem(file: Path, size: int, crc: int, read: bool = True) -> str | None:
    got = file.stat().st_size
    if got != size:
        return f"{got} bytes, {size} were written ({'truncated' if got < size else 'grown'})"
    if not read:
        return None
    value = 0
    with open(file, "rb") as fh:
        while block := fh.read(READ_BYTES):
            value = zlib.crc32(block, value)
    if value != crc:
        return f"CRC-32 {value:08x} != {crc:08x} recorded when it was written (content changed)"
    return None


def _npy_size_problem(file: Path) -> str | None:
    """A part without recorded checksums: the header must parse and match the file size."""
    with open(file, "rb") as fh:
        try:
            major, _minor = np.lib.format.read_magic(fh)
            read = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape, _fortran, dtype = read(fh)
        except ValueError as err:
            return f"unreadable header ({err})"
        want = fh.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = file.stat().st_size
    if got != want:
        return f"{got} bytes, its header needs {want} ({'truncated' if got < want else 'grown'})"
    return None


def set_aside(path: Path) -> Path | None:
    """Move a damaged part out of the journal (kept beside it as ``.damaged-NAME``, removed with
    the parts folder after consolidation); None if another rank moved it first."""
    target = path.with_name(f".damaged-{path.name}")
    k = 0
    while target.exists():
        k += 1
        target = path.with_name(f".damaged-{path.name}.{k}")
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    fsync_path(path.parent)
    return target


class Part:
    """A committed part, read lazily: index first, arrays memory-mapped on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._arrays: dict[str, np.ndarray] = {}

    @cached_property
    def index(self) -> dict:
        """The part's index.json; torn, lost or lacking its fields: one line naming the part."""
        redo = f"delete the folder {self.path} (its utterances are extracted again) and rerun"
        index = read_journal_json(self.path / "index.json", redo)
        if not isinstance(index.get("ids"), list) or not isinstance(index.get("skipped"), list):
            raise EmofuseError(f"{self.path / 'index.json'} is damaged (fields missing); {redo}")
        return index

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


def read_journal_json(path: Path, fix: str) -> dict:
    """A journal file (manifest.json, index.json); a torn or unreadable one is one line: ``fix``."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise EmofuseError(f"cannot read {path} ({os_reason(err)}); {fix}") from None
    except UnicodeDecodeError:
        raise EmofuseError(
            f"{path} is damaged (not UTF-8 text: torn or overwritten); {fix}"
        ) from None
    except json.JSONDecodeError as err:
        raise EmofuseError(
            f"{path} is damaged (not valid JSON: {err.msg}, character {err.pos}: torn or "
            f"edited); {fix}"
        ) from None
    if not isinstance(value, dict):
        raise EmofuseError(f"{path} is damaged (not a JSON object); {fix}")
    return value


def is_journal(folder: Path) -> bool:
    """Does ``folder`` hold only what a parts journal holds (its manifest, committed parts, their
    temporary and set-aside copies)? Never a user's files to delete with it."""
    return foreign_entries(folder) == []


def check_journal_place(folder: Path, store: Path) -> None:
    """``folder`` (where extract keeps the journal for ``store``) is absent or holds only what a
    journal holds; else one line naming what is in the way, never a user's file deleted."""
    where = f"{folder} (where extract keeps its journal for {store})"
    if folder.is_symlink() and not folder.exists():  # mkdir would say "File exists"
        try:
            os.stat(folder)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise EmofuseError(f"{where} {LOOPS}, then rerun") from None
        raise EmofuseError(
            f"{where} is a symbolic link to {os.readlink(folder)!r}, which does not exist; "
            f"remove the link (`rm {folder}`), then rerun"
        )
    if not folder.exists() or is_journal(folder):
        return
    stray = foreign_entries(folder)
    if stray is None and folder.is_dir():  # a folder this process may not list
        try:
            next(folder.iterdir(), None)
        except OSError as err:
            raise EmofuseError(
                f"{where} cannot be read ({os_reason(err)}); make it readable (`chmod u+rwx "
                f"{folder}`, or ask its owner), {RERUN}"
            ) from err
    if stray is None:
        raise EmofuseError(f"{where} is not a folder; move it away, or choose another --out")
    shown = ", ".join(stray[:3]) + (f" and {len(stray) - 3} more" if len(stray) > 3 else "")
    raise EmofuseError(
        f"{where} holds files that are not emofuse's ({shown}); move them out of it (the "
        "journal's parts are kept) and rerun, or choose another --out"
    )


def foreign_entries(folder: Path) -> list[str] | None:
    """The names in ``folder`` that a parts journal never holds (sorted), or None when it is not
    a readable folder (a file, say)."""
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return None
    ours = (MANIFEST, "rank", ".tmp-", ".damaged-", f".{MANIFEST}.")  # and manifest temps
    return sorted(n for n in names if not n.startswith(ours))


def to_numpy(value: Any) -> np.ndarray:
    """numpy or torch (any device, bf16 included) -> numpy, without importing torch."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)
