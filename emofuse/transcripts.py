"""``predict --transcripts FILE``: a CSV of ``audio,text`` rows, one per audio file, and the row
each AUDIO file given to predict takes."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from emofuse.errors import EmofuseError


def read_transcripts(path: str | Path) -> dict[str, str]:
    """A CSV with columns ``audio,text`` (audio as given on the command line, or its file name)."""
    path = Path(path)
    if not path.is_file():
        raise EmofuseError(f"--transcripts {path} not found: give a CSV with columns audio,text")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # Excel's "CSV UTF-8" has a BOM
            reader = csv.DictReader(fh)
            missing = {"audio", "text"} - set(reader.fieldnames or [])
            if missing:
                raise EmofuseError(
                    f"--transcripts {path} lacks column(s) {', '.join(sorted(missing))}: "
                    "it needs a header line audio,text"
                )
            out: dict[str, str] = {}
            first: dict[str, int] = {}
            for row in reader:
                key, lineno = row["audio"], reader.line_num
                if key in first:
                    raise EmofuseError(
                        f"--transcripts {path} line {lineno}: a second row for audio {key!r} "
                        f"(first on line {first[key]}); keep one row per audio file"
                    )
                first[key] = lineno
                out[key] = row["text"] or ""
            return out
    except UnicodeDecodeError:
        raise EmofuseError(f"--transcripts {path} is not UTF-8 text: save it as UTF-8") from None
    except csv.Error as err:  # a value past the csv module's 128 KiB: an unclosed quote
        raise EmofuseError(
            f'--transcripts {path}: {err}; close a quote " left open (a quote inside a value is '
            'written "") or shorten the value'
        ) from None


def texts_for(audio: Sequence[str], transcripts: dict[str, str] | None) -> list[str | None]:
    """Each AUDIO's row of ``--transcripts``: the row naming the same file (as given, or the same
    absolute path), else the row whose path is the longest tail of the file's path (``b/x.wav``
    for ``w/b/x.wav`` before ``x.wav``). A row that is the best match of two different files is
    refused: it cannot say which recording it transcribes (a bare name matched both)."""
    if transcripts is None:
        return [None] * len(audio)
    here = {key: Path(os.path.abspath(key)) for key in transcripts}
    parts = {key: Path(key).parts for key in transcripts}  # each row's path, once
    chosen = []
    for given in audio:
        path = Path(os.path.abspath(given))
        exact = [k for k in transcripts if k == given or here[k] == path]
        tails = [k for k, p in parts.items() if p and path.parts[-len(p) :] == p]
        best = exact or sorted(tails, key=lambda k: -len(parts[k]))
        if not best:
            raise EmofuseError(f"--transcripts has no row for {given}: add a line '{given},<text>'")
        chosen.append(best[0])
    files: dict[str, dict[Path, str]] = {}
    for given, key in zip(audio, chosen, strict=True):
        files.setdefault(key, {})[Path(given).resolve()] = given
    for key, matched in files.items():
        if len(matched) > 1:
            a, b = list(matched.values())[:2]
            raise EmofuseError(
                f"--transcripts row {key!r} matches {len(matched)} different AUDIO files ({a}, "
                f"{b}, …): give each file its own row, with its path as on the command line"
            )
    return [transcripts[key] for key in chosen]
