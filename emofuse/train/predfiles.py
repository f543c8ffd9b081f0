"""A fold's prediction files (predictions.csv, val_predictions.csv): written at full precision,
read back with every check that holds within one file.

The checks here need nothing but the file: the header, one field per column, probabilities that
are a distribution per row (in [0, 1], summing to 1), a ``predicted`` column that is the argmax of
its own probabilities, and labels that have their columns. What a file must agree with outside it
(the fold's utterances, the digest its metrics.json records) is checked by the run folder's reader
(emofuse.train.rundir.read_fold_predictions).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.fileio import atomic_open

HEADER = ["id", "fold", "true", "predicted"]
SUM_TOLERANCE = 1e-4  # float32 softmax rows sum to 1 within ~1e-6; a weighted mean of them too


def write_predictions(
    path: Path, fold: int, ids: Sequence[str], true: Sequence[str], probs: np.ndarray, labels
) -> None:
    """CSV with id, fold, true, predicted, one probability column per class (full precision)."""
    with atomic_open(path, newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*HEADER, *[f"p_{lab}" for lab in labels]])
        pred = np.asarray(labels)[probs.argmax(1)]
        for i, t, p, row in zip(ids, true, pred, probs, strict=True):
            w.writerow([i, fold, t, p, *[repr(float(x)) for x in row]])


def parse_predictions(path: Path) -> dict[str, Any]:
    """``{"ids", "fold", "true", "predicted", "labels", "probs" (N, C), "sha256"}`` (the digest
    of the bytes parsed, read once); ValueError (or csv.Error, UnicodeDecodeError) with the first
    problem found when the file is not a whole, self-consistent predictions file."""
    raw = path.read_bytes()
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    if not rows:
        raise ValueError("empty file")
    header, body = rows[0], rows[1:]
    if header[:4] != HEADER or len(header) < 6:
        raise ValueError("not the header id,fold,true,predicted,p_<label>…")
    labels = [h[2:] for h in header[4:]]
    if len(set(labels)) != len(labels) or not all(labels):
        raise ValueError("a p_<label> column twice, or one without a label")
    if any(len(r) != len(header) for r in body):
        raise ValueError(f"a row without {len(header)} fields")
    probs = np.array([[float(x) for x in r[4:]] for r in body], dtype=np.float64).reshape(
        len(body), len(labels)
    )
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1 + 1e-6).any():
        raise ValueError("a probability outside [0, 1]")
    sums = probs.sum(1)
    if len(body) and (bad := np.flatnonzero(np.abs(sums - 1) > SUM_TOLERANCE)).size:
        raise ValueError(
            f"the probabilities of {body[bad[0]][0]!r} sum to {sums[bad[0]]:.4g}, not 1 "
            f"({bad.size} rows)"
        )
    part = {
        "ids": [r[0] for r in body],
        "fold": [int(r[1]) for r in body],
        "true": [r[2] for r in body],
        "predicted": [r[3] for r in body],
        "labels": labels,
        "probs": probs,
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    if not set(part["true"]) | set(part["predicted"]) <= set(labels):
        raise ValueError("a label without its p_<label> column")
    if len(body):
        argmax = np.asarray(labels)[probs.argmax(1)]
        if (wrong := np.flatnonzero(argmax != np.asarray(part["predicted"]))).size:
            i = wrong[0]
            raise ValueError(
                f"{part['ids'][i]!r} is 'predicted' {part['predicted'][i]!r} but its highest "
                f"probability is p_{argmax[i]} ({wrong.size} rows)"
            )
    return part


def file_sha256(path: Path) -> str:
    """sha256 of a file (a fold's metrics.json records its prediction files' digests)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
