"""``predict --transcripts FILE``: a CSV of ``audio,text`` rows, one per audio file."""

from __future__ import annotations

import csv
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
