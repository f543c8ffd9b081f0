"""Manifest helpers shared by the ASR and alignment tests."""

from __future__ import annotations

import csv
from pathlib import Path


def write_manifest(path: Path, utts, text=lambda u: u.text) -> Path:
    """A manifest of `utts` (absolute audio paths) with text chosen by `text`."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "audio", "text", "label", "speaker"])
        for u in utts:
            w.writerow([u.id, str(u.audio), text(u), u.label, u.speaker])
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
