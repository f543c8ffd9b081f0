"""Reader for a user's own corpus: a CSV or JSONL manifest beside (or above) the audio files.

Columns: id, audio, text, label, speaker (required); session, gender, split, alignment (optional);
any other column is kept in `Utterance.extra`. Audio paths are relative to the manifest's folder
(absolute ones are used as is) and may be in any format and sample rate soundfile reads.
`alignment` is a Praat TextGrid (ours from `emofuse align`, or the Montreal Forced Aligner's), also
relative to the manifest; an empty cell means the utterance is not aligned (kept, flagged).
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from emofuse.audio import RATE_RANGE, rate_problem
from emofuse.corpus.text import normalize_text
from emofuse.corpus.utterance import ALIGN_SLACK_S, CorpusReadResult, Utterance
from emofuse.errors import MAKE_READABLE, EmofuseError, readable_file
from emofuse.progress import progress_bar

REQUIRED = ("id", "audio", "text", "label", "speaker")
OPTIONAL = ("session", "gender", "split", "alignment")
SPLITS = ("train", "val", "test")
GENDERS = {"f": "F", "female": "F", "m": "M", "male": "M"}

SKIP_MISSING = "audio file missing (--skip-missing)"
SKIP_UNREADABLE = (
    "audio unreadable: not an audio file (a folder, a pipe, empty or undecodable; --skip-missing)"
)
SKIP_NO_PERMISSION = "audio file this user may not read (--skip-missing; `chmod u+r` keeps it)"
SKIP_LABEL = "label not in --classes"
SKIP_RATE = f"sample rate outside {RATE_RANGE} (--skip-missing)"
AUDIO_SKIPS = (
    SKIP_MISSING,
    SKIP_UNREADABLE,
    SKIP_RATE,
)  # rows lost to bad audio: the cache lists them


def _load_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, rows) of a CSV or JSONL manifest; every value as a string."""
    try:
        return _read_rows(path)
    except UnicodeDecodeError:
        raise EmofuseError(
            f'manifest {path} is not UTF-8 text: save it as UTF-8 ("CSV UTF-8" in a spreadsheet)'
        ) from None


class Row(dict):
    """One manifest row (column -> value). ``line``: the file line it starts on, set only where
    that is not the row's number plus the header (blank lines skipped before it)."""

    line: int | None = None


def _row(values: dict[str, str], lineno: int, rowno: int, header: int) -> Row:
    row = Row(values)
    if lineno != rowno + header:
        row.line = lineno
    return row


def row_where(path: Path, rowno: int, row: dict[str, str]) -> str:
    """``manifest PATH row N`` (and the file line, where blank lines make the two differ)."""
    line = getattr(row, "line", None)
    return f"manifest {path} row {rowno}" + (f" (line {line} of the file)" if line else "")


def _csv_rows(path: Path, reader: csv.DictReader) -> tuple[list[str], list[dict[str, str]]]:
    columns = list(reader.fieldnames or [])
    rows: list[dict[str, str]] = []
    end = 1  # the line the previous row ended on (the header's)
    for row in reader:
        # where this row starts: after the previous one, past the empty lines csv skips unseen
        # (a value open at the end of the file holds a line break no line follows)
        breaks = sum(v.count("\n") for v in row.values() if isinstance(v, str))
        lineno, end = max(end + 1, reader.line_num - breaks), reader.line_num
        if not any(isinstance(v, str) and v.strip() for v in row.values()) and None not in row:
            continue  # a line of blanks or bare commas holds no row, as an empty line does not
        if None in row:
            raise EmofuseError(
                f"manifest {path} line {lineno} has more fields than the header — "
                "quote values that contain commas"
            )
        spread = next((k for k, v in row.items() if v and ("\n" in v or "\r" in v)), None)
        if spread is not None:  # a line break inside a value: most often an unclosed quote
            raise EmofuseError(
                f"manifest {path} line {lineno}: its {spread} value runs "
                + (f"over lines {lineno}-{end}" if end > lineno else "past its line")
                + f" ({row[spread][:40]!r}…): a value must be on one line, so put it on one, "
                'or close the quote " opened there (a quote inside a value is written "")'
            )
        rows.append(_row({k: (v or "") for k, v in row.items()}, lineno, len(rows) + 1, 1))
    return columns, rows


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            try:
                columns, rows = _csv_rows(path, reader)
            except csv.Error as err:  # a value past the csv module's limit (128 KiB) ...
                raise EmofuseError(  # line_num counts the lines before the failing row
                    f"manifest {path} line {reader.line_num + 1}: {err}; no transcript is that long: "
                    'close a quote " opened near there (a quote inside a value is written "") '
                    "or shorten the value"
                ) from None
        if not columns:
            raise EmofuseError(f"manifest {path} is empty: it needs a header {','.join(REQUIRED)}")
        if len(set(columns)) != len(columns) or any(not c.strip() for c in columns):
            raise EmofuseError(
                f"manifest {path}: header {','.join(columns)} has an empty or repeated column name"
            )
        return columns, rows
    if suffix in (".jsonl", ".ndjson"):
        columns: list[str] = []
        rows = []
        # utf-8-sig: a byte-order mark (as spreadsheets and Windows editors write) is not data
        for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line, object_pairs_hook=_pairs)
            except json.JSONDecodeError as err:
                raise EmofuseError(
                    f"manifest {path} line {lineno} is not JSON: {err.msg}"
                ) from None
            except _RepeatedKey as err:  # the last would win silently (a hand-edit slip)
                raise EmofuseError(
                    f"manifest {path} line {lineno}: key {err.args[0]!r} is given twice in one "
                    "object; keep one"
                ) from None
            if not isinstance(obj, dict):
                raise EmofuseError(f"manifest {path} line {lineno} is not a JSON object")
            if "text" in obj and obj["text"] is None:  # "" is no text; null is a broken export
                raise EmofuseError(
                    f"manifest {path} line {lineno}: 'text' is null; write \"\" for an utterance "
                    "without a transcript, or fill the text in"
                )
            odd = next((k for k, v in obj.items() if isinstance(v, list | dict | bool)), None)
            if odd is not None:  # a list, an object or true would be stored as Python text
                raise EmofuseError(
                    f"manifest {path} line {lineno}: {odd!r} is {json.dumps(obj[odd])[:40]}, not "
                    "a string or a number; write it as a string"
                )
            columns += [k for k in obj if k not in columns]
            values = {k: "" if v is None else str(v) for k, v in obj.items()}
            rows.append(_row(values, lineno, len(rows) + 1, 0))
        return columns, rows
    raise EmofuseError(f"manifest {path}: unknown format {suffix!r}; use a .csv or .jsonl file")


# extra fields of a stored row that extract computes, never copied from a manifest column
RESERVED = {"alignment_sha1": "the SHA-1 of the utterance's alignment, checked on resume"}


class _RepeatedKey(ValueError):
    """A JSON object of a manifest line holds a key twice (:func:`_pairs`)."""


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise _RepeatedKey(key)
        seen[key] = value
    return seen


def _check_columns(path: Path, columns: list[str]) -> list[str]:
    """Missing required columns and misspelt known ones are errors; returns the extra columns."""
    known = REQUIRED + OPTIONAL
    extras = [c for c in columns if c not in known]
    missing = [c for c in REQUIRED if c not in columns]
    for col in extras:
        if col in RESERVED:  # emofuse writes this field itself: the user's values would be lost
            raise EmofuseError(
                f"manifest {path}: column {col!r} is a name emofuse uses for its own record "
                f"({RESERVED[col]}), so its values would be replaced; rename the column"
            )
        # a column that looks like a known one (Label, labels, speaker_id …) is a typo, not data
        guess = difflib.get_close_matches(
            col.lower(), [k for k in known if k not in columns], 1, 0.75
        )
        if guess or col.lower() in known:
            raise EmofuseError(
                f"manifest {path}: unknown column {col!r}; did you mean {(guess or [col.lower()])[0]!r}? "
                f"(columns: {','.join(REQUIRED)} and optional {','.join(OPTIONAL)})"
            )
    if missing:
        sep = next((c for c in (";", "\t", "|") if any(c in col for col in columns)), None)
        if sep is not None and len(columns) == 1:  # a spreadsheet's other separator
            shown = "a tab" if sep == "\t" else repr(sep)
            raise EmofuseError(
                f"manifest {path}: its header is one column {columns[0][:60]!r}: values are "
                f"separated by {shown}, not commas; save it as CSV with commas (or as .jsonl)"
            )
        raise EmofuseError(
            f"manifest {path}: missing column(s) {','.join(missing)} "
            f"(needs {','.join(REQUIRED)}; optional {','.join(OPTIONAL)})"
        )
    return extras


def _audio_problem(audio: Path) -> str | None:
    """What is wrong with an audio path that exists but cannot be audio (None: nothing seen)."""
    if audio.is_dir():
        return "is a folder, not an audio file"
    if audio.is_file() and audio.stat().st_size == 0:
        return "is empty (0 bytes): the export or copy failed"
    return None


def _tiers(base: Path, value: str, where: str, utt_id: str, duration: float):
    """The alignment tiers of one row's TextGrid; None for an empty cell (not aligned).

    A TextGrid that ends well past the audio belongs to another file or another time scale: its
    spans would all be clamped onto the last frames, so it is refused."""
    if not value.strip():
        return None
    from emofuse.align.textgrid import read_textgrid

    path = Path(value.strip()).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        what = "is missing"
        if path.is_dir():
            what = "is a folder, not a TextGrid file"
        elif path.is_symlink():
            what = "is a symbolic link whose target is missing or loops back"
        raise EmofuseError(
            f"{where}: alignment {path} for {utt_id} {what} — fix the path (relative to the "
            "manifest) or empty the cell to keep the utterance unaligned"
        )
    tiers = read_textgrid(path)
    end = max((seg[1] for segs in (tiers or {}).values() for seg in segs), default=0.0)
    if end > duration + ALIGN_SLACK_S:
        raise EmofuseError(
            f"{where}: alignment {path} for {utt_id} ends at {end:.2f} s but its audio lasts "
            f"{duration:.2f} s — it belongs to another recording or time scale; re-align it "
            "(emofuse align) or empty the cell"
        )
    return tiers


def _check_classes(path: Path, labels: list[str], rows: list[dict]) -> None:
    """A --classes label that no row has is a typo, not a filter: refused in one line listing the
    manifest's labels (it dropped silently, and a class went missing from the run)."""
    present = sorted({str(row.get("label") or "").strip() for row in rows} - {""})
    unknown = [label for label in labels if label not in present]
    if unknown:
        raise EmofuseError(
            f"--classes {','.join(labels)}: {unknown[0]!r} is not a label of manifest {path} "
            f"(its labels: {', '.join(present) or 'none'}); check the spelling"
        )


def _check_label_spellings(path: Path, utts: list[Utterance]) -> None:
    """Labels that differ only in case ('Hap', 'hap') would be two classes: refused."""
    first: dict[str, Utterance] = {}
    for u in utts:
        seen = first.setdefault(u.label.casefold(), u)
        if seen.label != u.label:
            raise EmofuseError(
                f"manifest {path}: labels {seen.label!r} ({seen.id}) and {u.label!r} ({u.id}) "
                "differ only in case and would be two classes — spell them one way"
            )


def _check_shared_audio(path: Path, utts: list[Utterance]) -> None:
    """Two rows on one audio file: a copy-paste slip that also leaks a recording across folds."""
    owner: dict[Path, Utterance] = {}
    for u in utts:
        key = Path(u.audio).resolve()
        other = owner.setdefault(key, u)
        if other is not u:
            labels = (
                f" with different labels ({other.label!r}, {u.label!r})"
                if other.label != u.label
                else ""
            )
            raise EmofuseError(
                f"manifest {path}: {other.id} and {u.id} point at the same audio file "
                f"{u.audio}{labels} — give each row its own recording, or remove the duplicate"
            )


def read_manifest(
    manifest: str | Path,
    skip_missing: bool = False,
    labels: Sequence[str] | None = None,
    text_norm: str = "default",
    progress: bool = True,
) -> CorpusReadResult:
    """Read a CSV/JSONL manifest into Utterance records (see the module docstring for columns).

    skip_missing: skip rows whose audio file is missing or unreadable (reported in `skipped`)
    instead of failing. labels: keep only these labels (others reported in `skipped`).
    """
    path = Path(manifest).expanduser()
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".csv", ".jsonl"))
        hint = f" (it holds {inside[0]}: --manifest {path / inside[0]})" if inside else ""
        raise EmofuseError(
            f"manifest {path} is a folder, not a CSV or JSONL file: pass --manifest FILE{hint}"
        )
    if not path.is_file():
        raise EmofuseError(f"manifest {path} does not exist: pass --manifest FILE (.csv or .jsonl)")
    normalize_text("", text_norm)
    columns, rows = _load_rows(path)
    extras = _check_columns(path, columns)
    base = path.parent
    result = CorpusReadResult(utterances=[])
    seen: dict[str, int] = {}
    keep = set(labels) if labels else None
    if keep is not None and rows:
        _check_classes(path, list(labels or []), rows)
    for rowno, row in enumerate(
        progress_bar(rows, desc="manifest", enabled=progress, leave=False), 1
    ):
        where = row_where(path, rowno, row)
        for col in ("id", "audio", "label", "speaker"):
            if not row.get(col, "").strip():
                raise EmofuseError(f"{where}: empty {col!r} — fill it in or remove the row")
        utt_id = row["id"].strip()
        if utt_id in seen:
            raise EmofuseError(
                f"{where}: duplicate id {utt_id!r} (also row {seen[utt_id]}) — ids must be unique"
            )
        seen[utt_id] = rowno
        split = row.get("split", "").strip().lower() or None
        if split is not None and split not in SPLITS:
            raise EmofuseError(
                f"{where}: bad split {row['split']!r} for {utt_id}; use train, val, test or leave empty"
            )
        gender_raw = row.get("gender", "").strip()
        gender = GENDERS.get(gender_raw.lower()) if gender_raw else None
        if gender_raw and gender is None:
            raise EmofuseError(
                f"{where}: bad gender {gender_raw!r} for {utt_id}; use F, M or leave empty"
            )
        label = row["label"].strip()
        if keep is not None and label not in keep:
            result.skip(SKIP_LABEL, utt_id)
            continue
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]+://", row["audio"].strip()):  # not a path here
            raise EmofuseError(
                f"{where}: audio {row['audio'].strip()!r} for {utt_id} is a URL; emofuse reads "
                "local files only: download the audio and give its path"
            )
        if os.name != "nt" and re.match(r"[a-zA-Z]:[\\/]", row["audio"].strip()):
            raise EmofuseError(
                f"{where}: audio {row['audio'].strip()!r} for {utt_id} is a Windows path; give "
                "the file's path on this machine (relative to the manifest, or absolute)"
            )
        audio = Path(row["audio"].strip()).expanduser()
        audio = audio if audio.is_absolute() else base / audio
        problem = _audio_problem(audio)
        if problem is not None:
            if skip_missing and problem != "missing":
                result.skip(SKIP_UNREADABLE, utt_id)
                continue
            if problem != "missing":
                raise EmofuseError(
                    f"{where}: audio file {audio} for {utt_id} {problem} — fix the path or the "
                    "file, or pass --skip-missing"
                )
        if not audio.is_file():
            if skip_missing:  # a pipe or a device is there, only not readable as audio
                result.skip(SKIP_UNREADABLE if audio.exists() else SKIP_MISSING, utt_id)
                continue
            if audio.exists():
                what = "is not a regular file (a pipe or a device) — give the path of an audio file"
            elif audio.is_symlink():
                what = (
                    "is a symbolic link whose target is missing or loops back — fix the link or "
                    "the path"
                )
            else:
                what = "is missing — fix the path (relative to the manifest)"
            raise EmofuseError(
                f"{where}: audio file {audio} for {utt_id} {what} or pass --skip-missing"
            )
        try:
            info = sf.info(str(audio))
        except RuntimeError:  # soundfile's LibsndfileError
            if not readable_file(audio):  # a good file it may not open: not "convert it"
                if skip_missing:  # --skip-missing: "missing or unreadable"
                    result.skip(SKIP_NO_PERMISSION, utt_id)
                    continue
                raise EmofuseError(
                    f"{where}: audio file {audio} for {utt_id} cannot be read (Permission "
                    f"denied): {MAKE_READABLE}"
                ) from None
            if skip_missing:
                result.skip(SKIP_UNREADABLE, utt_id)
                continue
            raise EmofuseError(
                f"{where}: soundfile cannot read {audio} for {utt_id} — convert it to wav/flac "
                "or pass --skip-missing"
            ) from None
        if rate_problem(audio, info.samplerate):
            if skip_missing:
                result.skip(SKIP_RATE, utt_id)
                continue
            raise EmofuseError(
                f"{where}: {audio} for {utt_id} has a sample rate of {info.samplerate} Hz, outside "
                f"{RATE_RANGE} (a damaged header?) — re-export it at 16 kHz or pass --skip-missing"
            )
        duration = info.duration
        text = row.get("text", "")
        tiers = _tiers(base, row.get("alignment", ""), where, utt_id, duration)
        result.utterances.append(
            Utterance(
                id=utt_id,
                audio=audio,
                text=text,
                label=label,
                speaker=row["speaker"].strip(),
                session=row.get("session", "").strip() or None,
                gender=gender,
                duration=duration,
                tiers=tiers,
                split=split,
                extra={c: row.get(c, "") for c in extras},
                text_norm=None if text_norm == "raw" else normalize_text(text, text_norm),
            )
        )
    if not rows:
        raise EmofuseError(f"manifest {path} has no rows: empty label set — add utterances")
    _check_label_spellings(path, result.utterances)
    _check_shared_audio(path, result.utterances)
    if not result.utterances:
        why = f"none has a label in {sorted(keep)}" if keep else "no row has a readable audio file"
        raise EmofuseError(f"manifest {path}: empty label set ({len(rows)} rows, {why}) — check it")
    return result
