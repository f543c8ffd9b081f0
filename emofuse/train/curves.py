"""A trained fold's curves.jsonl (one row per epoch that train ran), read and checked: a cut,
appended or edited row is one line naming the file, the line and the fold to retrain."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from emofuse.errors import EmofuseError, cannot_read
from emofuse.train.command import train_command


def _redo(path: Path) -> str:
    return (
        f"delete {path.parent} and rerun {train_command(path.parent.parent)} (it retrains that "
        "fold only)"
    )


def read_curves(path: Path) -> list[dict[str, Any]]:
    """One fold's curves.jsonl; a damaged line is a one-line error naming the file and line."""
    rows = []
    try:
        text = path.read_text(errors="replace")
    except OSError as err:  # its mode (a file that is there): never a traceback
        raise cannot_read(path, err) from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            problem = "not valid JSON: cut off or overwritten"
        else:
            problem = _curve_problem(row, len(rows) + 1)
        if problem:
            raise EmofuseError(f"{path} line {n} is damaged ({problem}); {_redo(path)}")
        rows.append(row)
    return rows


def _curve_problem(row: Any, epoch: int) -> str | None:
    """Why a curves.jsonl row is not the ``epoch``-th one train writes (None: it is)."""
    if not isinstance(row, dict):
        return "not a JSON object"
    if row.get("epoch") != epoch or isinstance(row.get("epoch"), bool):
        return f"epoch {row.get('epoch')!r} where epoch {epoch} was due"
    for key in ("train_loss", "val_loss"):
        if not (_is_number(row.get(key)) and math.isfinite(row[key])):
            return f"{key} {row.get(key)!r} is not a finite number"
    for key in ("val_UA", "val_WA"):
        if (key in row or key == "val_UA") and not _is_fraction(row.get(key)):
            return f"{key} {row.get(key)!r} is not between 0 and 1"
    return None


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _is_fraction(x: Any) -> bool:
    return _is_number(x) and 0.0 <= x <= 1.0
