"""Manifest rows as plain tables, for the commands that rewrite a manifest (transcribe, align).

Those commands keep every column and row of their input and add their own columns, so they work on
rows, not on Utterance records (the input may still lack `text` or `label`). Paths in the output are
rewritten relative to the output's folder, so the new manifest works wherever it is written.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from emofuse.corpus.manifest import _load_rows, row_where
from emofuse.errors import EmofuseError


def read_rows(path: str | Path, need: tuple[str, ...] = ("id", "audio")) -> tuple[list, list]:
    """(columns, rows) of a CSV/JSONL manifest; one-line errors for a missing file or column."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EmofuseError(f"manifest {path} does not exist: pass --manifest FILE (.csv or .jsonl)")
    columns, rows = _load_rows(path)
    missing = [c for c in need if c not in columns]
    if missing:
        raise EmofuseError(f"manifest {path}: missing column(s) {','.join(missing)}")
    seen: set[str] = set()
    for n, row in enumerate(rows, 1):
        utt = row.get("id", "").strip()
        if not utt or not row.get("audio", "").strip():
            raise EmofuseError(f"{row_where(path, n, row)}: empty id or audio — fill it in")
        if utt in seen:
            raise EmofuseError(f"{row_where(path, n, row)}: duplicate id {utt!r}")
        seen.add(utt)
    if not rows:
        raise EmofuseError(f"manifest {path} has no rows")
    return columns, rows


def columns_of(path: str | Path) -> list[str] | None:
    """The columns of an existing manifest (None: not readable as one)."""
    try:
        return read_rows(path)[0]
    except (EmofuseError, OSError, ValueError):
        return None


def check_own_output(out: Path, command: str, column: str) -> None:
    """An existing ``out`` is replaced only when it is ``command``'s earlier output (it has the
    ``column`` that command adds): another corpus's manifest or any other file is never lost."""
    if out.is_file() and column not in (columns_of(out) or []):
        raise EmofuseError(
            f"--out {out} exists and is not an earlier output of emofuse {command} (no {column} "
            "column); give a new file name (it is never overwritten)"
        )


def resolve(base: Path, value: str) -> Path:
    """A manifest path value (relative to the manifest's folder, or absolute) as a path."""
    p = Path(value.strip()).expanduser()
    return p if p.is_absolute() else base / p


def relative_to(target: Path, folder: Path) -> str:
    """`target` as written in a manifest that lives in `folder` (relative when possible)."""
    try:
        return Path(os.path.relpath(Path(target).resolve(), Path(folder).resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return str(Path(target).resolve())


def rebase(rows: list[dict[str, str]], columns: tuple[str, ...], src: Path, dst: Path) -> None:
    """Rewrite relative path columns of `rows` from manifest folder `src` to folder `dst`.

    Absolute paths stay as they are."""
    if Path(src).resolve() == Path(dst).resolve():
        return
    for row in rows:
        for col in columns:
            value = row.get(col, "").strip()
            if value and not Path(value).expanduser().is_absolute():
                row[col] = relative_to(resolve(src, value), dst)


MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")


def check_manifest_name(path: str | os.PathLike, option: str = "--out") -> None:
    """One-line error unless ``path`` names a manifest `write_rows` can write (.csv or .jsonl).

    Commands call it before any work, so a bad --out never costs a run (nor leaves its side files)."""
    if Path(path).suffix.lower() not in MANIFEST_SUFFIXES:
        raise EmofuseError(f"{option} {path}: use a .csv or .jsonl file name")


def write_rows(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Write a CSV (or .jsonl) manifest atomically: a kill leaves the old file or the new one."""
    path = Path(path)
    check_manifest_name(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        body = "".join(json.dumps({c: r.get(c, "") for c in columns}) + "\n" for r in rows)
    elif path.suffix.lower() == ".csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows({c: r.get(c, "") for c in columns} for r in rows)
        body = buf.getvalue()
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
