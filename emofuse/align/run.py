"""`emofuse align`: one TextGrid per manifest row and an `alignment` column pointing at it.

Every row stays in the output manifest. A row that cannot be aligned (no transcript, unreadable
audio, a transcript that does not fit the audio) gets an empty `alignment` and the reason in
`alignment_error`, so the corpus reader keeps it as an unaligned utterance (frame features only,
flagged in the cache). Words aligned as unsegmented spans (not in CMUdict) are listed in
`alignment_oov`. One process writes an output at a time: a second `emofuse align` on the same --out
is refused while the first holds `OUT.lock` (emofuse.locks).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from emofuse.audio import AudioProblem, duration_of, load_audio
from emofuse.corpus.rows import (
    check_manifest_name,
    check_own_output,
    read_rows,
    rebase,
    relative_to,
    resolve,
    write_rows,
)
from emofuse.errors import EmofuseError, cannot_write, check_out_file, check_out_path
from emofuse.fileio import remove_temporaries, write_json
from emofuse.locks import output_lock
from emofuse.progress import progress_bar

ALIGN_COLUMNS = ("alignment", "alignment_error", "alignment_oov")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class AlignConfig:
    manifest: Path
    out: Path
    align_dir: Path | None = None  # default: OUT's folder / <OUT stem>_textgrids
    progress: bool = True


@dataclass
class AlignSummary:
    out: Path
    align_dir: Path
    rows: int = 0
    aligned: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)  # [{"id", "reason"}]
    oov: Counter = field(default_factory=Counter)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0


MAX_STEM = 120  # file names are at most 255 bytes on common file systems


def textgrid_name(utt_id: str) -> str:
    """The TextGrid's file name for an utterance id (a very long id is shortened with a hash of
    the whole id, so it stays unique and within the file system's limit)."""
    stem = _UNSAFE.sub("_", utt_id)
    if len(stem) > MAX_STEM:
        stem = f"{stem[: MAX_STEM - 13]}-{hashlib.sha1(utt_id.encode()).hexdigest()[:12]}"
    return stem + ".TextGrid"


def run_align(cfg: AlignConfig, echo: Callable[[str], None] = print) -> AlignSummary:
    manifest, out = Path(cfg.manifest).expanduser(), Path(cfg.out).expanduser()
    if manifest.resolve() == out.resolve():
        raise EmofuseError(f"--out {out} is the input manifest: write to a new file")
    check_out_file(out)
    check_manifest_name(out)  # before the TextGrid folder (named after OUT) or any alignment
    check_own_output(out, "align", "alignment")  # never another file
    columns, rows = read_rows(manifest)
    if "text" not in columns:
        raise EmofuseError(
            f"manifest {manifest} has no text column: run `emofuse transcribe` first"
        )
    align_dir = Path(cfg.align_dir or out.parent / f"{out.stem}_textgrids").expanduser()
    if align_dir.exists() and not align_dir.is_dir():
        raise EmofuseError(f"--align-dir {align_dir} is a regular file; give a folder")
    check_out_path(align_dir, "--align-dir")
    names = Counter(textgrid_name(r["id"]) for r in rows)
    clash = [n for n, c in names.items() if c > 1]
    if clash:
        ids = [(i, r["id"]) for i, r in enumerate(rows, 1) if textgrid_name(r["id"]) == clash[0]]
        raise EmofuseError(
            f"manifest {manifest}: ids {ids[0][1]!r} (row {ids[0][0]}) and {ids[1][1]!r} (row "
            f"{ids[1][0]}) map to the same TextGrid name {clash[0]}: make the ids differ in "
            "ASCII letters or digits"
        )
    with output_lock(out, "align"):  # one writer of OUT (and its TextGrids) at a time
        try:
            ledger = _claim_textgrids(align_dir, [textgrid_name(r["id"]) for r in rows])
            summary = _align(cfg, manifest, out, columns, rows, align_dir, echo)
            _seal_ledger(align_dir, ledger)
            return summary
        except OSError as err:
            remove_temporaries(align_dir, ".*.TextGrid.tmp")  # a TextGrid cut off mid-write
            raise cannot_write(err, out, "then rerun the same command") from None


LEDGER = ".emofuse-align.json"  # TextGrid name -> SHA-1 of what align wrote (None: being written)


def _sha1(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha1").hexdigest()


def _claim_textgrids(align_dir: Path, names: list[str]) -> dict[str, str | None]:
    """Refuse a TextGrid in the way that align did not write (the user's own, or one edited since
    it was written); else record the names about to be written, before any is, so a run killed
    midway leaves them claimed. Returns the ledger."""
    path = align_dir / LEDGER
    try:
        ledger = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        ledger = {}
    ledger = ledger if isinstance(ledger, dict) else {}
    for name in names:
        file = align_dir / name
        if file.exists() and (name not in ledger or ledger[name] not in (None, _sha1(file))):
            raise EmofuseError(
                f"--align-dir {align_dir} holds {name}, which emofuse align did not write (or "
                "it was edited since): move it away or give another --align-dir (a TextGrid "
                "align did not write is never overwritten)"
            )
    ledger.update(dict.fromkeys(names))
    align_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, ledger)
    return ledger


def _seal_ledger(align_dir: Path, ledger: dict[str, str | None]) -> None:
    """The SHA-1 of every TextGrid written (a name claimed but not written is let go)."""
    sealed = {}
    for name, sha in ledger.items():
        file = align_dir / name
        if file.is_file():
            sealed[name] = _sha1(file) if sha is None else sha
    write_json(align_dir / LEDGER, sealed)


def _align(
    cfg: AlignConfig,
    manifest: Path,
    out: Path,
    columns: list[str],
    rows: list[dict[str, str]],
    align_dir: Path,
    echo: Callable[[str], None],
) -> AlignSummary:
    from emofuse.align.pocketsphinx import PocketSphinxAligner
    from emofuse.align.textgrid import write_textgrid

    base = manifest.parent
    summary = AlignSummary(out, align_dir, rows=len(rows))
    start = time.perf_counter()
    aligner = PocketSphinxAligner()
    seconds = [duration_of(resolve(base, r["audio"])) for r in rows]
    echo(
        f"aligning {len(rows)} rows ({sum(seconds) / 60:.1f} min of audio) with PocketSphinx "
        f"(US English, CMUdict); TextGrids in {align_dir}"
    )
    bar = progress_bar(
        total=sum(seconds),
        unit="audio-s",
        enabled=cfg.progress,
        desc="align",
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} audio-s [{elapsed}<{remaining}, {rate_fmt}]",
    )
    try:
        for row, secs in zip(rows, seconds, strict=True):
            problem, oov = _align_row(aligner, write_textgrid, row, base, align_dir, out.parent)
            row["alignment_oov"] = " ".join(sorted(set(oov)))
            summary.oov.update(oov)
            if problem is None:
                summary.aligned += 1
                row["alignment_error"] = ""
            else:
                row["alignment"], row["alignment_error"] = "", problem
                summary.failed.append({"id": row["id"], "reason": problem})
            summary.audio_seconds += secs
            bar.update(secs)
    finally:
        bar.close()
    rebase(rows, ("audio",), base, out.parent)  # alignment is already relative to out's folder
    cols = list(columns) + [c for c in ALIGN_COLUMNS if c not in columns]
    write_rows(out, cols, rows)
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _align_row(aligner, write_textgrid, row, base: Path, align_dir: Path, out_dir: Path):
    """(problem or None, OOV words); writes the TextGrid and sets row['alignment'] on success."""
    text = row.get("text", "").strip()
    if not text:
        return "no transcript (run `emofuse transcribe` to fill text)", []
    try:
        dec = load_audio(resolve(base, row["audio"]))
    except AudioProblem as err:
        return str(err), []
    outcome = aligner.align(dec.wav, text)
    if outcome.tiers is None:
        return outcome.problem, outcome.oov
    path = align_dir / textgrid_name(row["id"])
    write_textgrid(path, outcome.tiers, len(dec.wav) / 16000)
    row["alignment"] = relative_to(path, out_dir)
    return None, outcome.oov
