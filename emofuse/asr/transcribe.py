"""`emofuse transcribe`: Whisper transcripts for a manifest's rows, resumable after a kill.

Rows with empty `text` get the ASR transcript as their text (`--all`: every row is transcribed);
gold text is never overwritten, the ASR output always goes beside it in `asr_text` (with
`asr_language`), and rows whose audio cannot be read keep their place with the reason in
`asr_error`. WER is reported against every row that has gold text (emofuse.asr.wer).

Crash safety: finished batches are appended to a journal (`OUT.partial.jsonl`, fsynced per batch,
its first line the model and decoding settings, each row with the SHA-1 of the audio bytes it was
made from). A rerun of the same command reads it back and transcribes only the rows it lacks or
whose audio changed since (other bytes under the row's path now; a row of an older journal, which
has no hash, is redone too); a torn last line (kill mid-write) is ignored. The output
manifest is written atomically at the end; the journal then becomes the finished run's record
(`OUT.transcribe.jsonl`, the same lines for this manifest's rows), so a rerun of a finished command
reuses every row whose audio is unchanged and transcribes only new or changed rows (delete the record
to transcribe everything again; other settings than the record's transcribe everything again by
themselves). One process writes an output at a time: a second one on the same --out is refused while
the first holds `OUT.lock` (emofuse.locks).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emofuse import faults
from emofuse.audio import AudioProblem, audio_sha1, duration_of, load_audio
from emofuse.corpus.rows import (
    check_manifest_name,
    check_own_output,
    read_rows,
    rebase,
    resolve,
    write_rows,
)
from emofuse.errors import EmofuseError, cannot_write, check_out_file
from emofuse.locks import output_lock
from emofuse.progress import progress_bar

ASR_COLUMNS = ("asr_text", "asr_language", "asr_error")
PATH_COLUMNS = ("audio", "alignment")


@dataclass
class TranscribeConfig:
    manifest: Path
    out: Path
    asr_model: str
    all_rows: bool = False  # re-transcribe rows that have text too
    device: str = "auto"
    compute_type: str = "default"
    batch_size: int = 8
    beam_size: int = 5
    language: str | None = None  # None: detected per clip (multilingual models)
    threads: int = 0  # CPU threads for CTranslate2 (0: one per core)
    progress: bool = True


@dataclass
class TranscribeSummary:
    out: Path
    rows: int = 0
    transcribed: int = 0  # by this run, with a transcript (rows whose audio failed: `failed`)
    resumed: int = 0  # transcribed by an earlier run (the journal of an interrupted one, the record
    # of a finished one)
    filled: int = 0  # rows whose empty text now holds the ASR transcript
    gold: int = 0  # rows with gold text
    wer: float | None = None
    wer_words: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0  # transcribed by this run
    asr_seconds: float = 0.0  # wall time of this run's ASR (decode + model)


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def record_path(out: Path) -> Path:
    """The finished run's journal: what a rerun of the same command reuses."""
    return out.with_name(out.name + ".transcribe.jsonl")


def _settings(cfg: TranscribeConfig, model) -> dict:
    return {
        "asr_model": model.model_id,
        "revision": model.revision,
        "beam_size": cfg.beam_size,
        "language": cfg.language,
    }


def _read_lines(path: Path) -> tuple[dict | None, dict[str, dict]]:
    """(settings line, id -> record) of a journal or record; (None, {}) when there is none."""
    if not path.is_file():
        return None, {}
    lines = path.read_text(encoding="utf-8").splitlines()
    done: dict[str, dict] = {}
    try:
        head = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        head = None
    if not isinstance(head, dict):
        return None, {}  # killed before the header was durable: nothing was done
    for line in lines[1:]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break  # torn last line of a killed run: that batch is redone
        if isinstance(rec, dict) and isinstance(rec.get("id"), str):
            done[rec["id"]] = rec
    return head, done


def _read_journal(path: Path, settings: dict) -> dict[str, dict]:
    """Rows already done (id -> record); refuses a journal made with other settings."""
    head, done = _read_lines(path)
    if head is not None and head != settings:
        raise EmofuseError(
            f"{path} holds a transcription started with other settings ({head}); rerun with the "
            "same --asr-model/--beam-size/--language, or delete it to start over"
        )
    return done


def _write_record(path: Path, settings: dict, records: list[dict]) -> None:
    """The finished run's record, written atomically (a kill leaves the old one or the new one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in [settings, *records]))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _Journal:
    def __init__(self, path: Path, settings: dict, fresh: bool):
        self.path = path
        self.f = path.open("a", encoding="utf-8")
        if fresh:
            if self.f.tell():  # an unusable journal (torn header, other settings): start over
                self.f.truncate(0)
            self._write([settings])

    def _write(self, records: list[dict]) -> None:
        try:
            self.f.write("".join(json.dumps(r) + "\n" for r in records))
            self.f.flush()
            os.fsync(self.f.fileno())
        except OSError as err:  # a write error on an open file names no file: name the journal
            raise OSError(err.errno, err.strerror, str(self.path)) from err

    def add(self, records: list[dict]) -> None:
        self._write(records)
        faults.reach("transcribe-batch")

    def close(self) -> None:
        self.f.close()


def _decode(path: Path) -> tuple[np.ndarray | None, str | None, str | None]:
    """(16 kHz samples or None, why not or None, SHA-1 of the file's bytes or None: unreadable)."""
    try:
        dec = load_audio(path)
    except AudioProblem as err:
        return None, str(err), audio_sha1(path)
    return dec.wav, None, dec.sha1


def _drop_changed(done: dict[str, dict], rows: list[dict], base: Path) -> tuple[list, list]:
    """Forget the journal rows whose audio is not the audio they were transcribed from.

    The journal is keyed by id, so a file replaced under the same name (or a row pointed at another
    file) would keep the old file's transcript: each record carries the SHA-1 of the bytes it was
    made from (``audio_sha1``, as extract's resume compares), checked against the file now. A record
    without one (a journal of an older emofuse) cannot be checked and is redone too. Returns (ids
    whose audio changed, ids without a hash); both are removed from ``done``.
    """
    held = [r for r in rows if r["id"] in done]
    with ThreadPoolExecutor(4, thread_name_prefix="hash") as pool:
        now = list(pool.map(lambda r: audio_sha1(resolve(base, r["audio"])), held))
    changed, unhashed = [], []
    for row, sha in zip(held, now, strict=True):
        rec = done[row["id"]]
        if "audio_sha1" not in rec:
            unhashed.append(row["id"])
        elif rec["audio_sha1"] != sha:
            changed.append(row["id"])
        else:
            continue
        del done[row["id"]]
    return changed, unhashed


def _ids(ids: list[str]) -> str:
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def run_transcribe(cfg: TranscribeConfig, echo: Callable[[str], None] = print) -> TranscribeSummary:
    """Transcribe the manifest's rows into `cfg.out` (see the module docstring)."""
    manifest, out = Path(cfg.manifest).expanduser(), Path(cfg.out).expanduser()
    if manifest.resolve() == out.resolve():
        raise EmofuseError(f"--out {out} is the input manifest: write to a new file")
    check_out_file(out)  # before anything loads: a parent that is a file, a read-only folder
    check_manifest_name(out)  # and a name write_rows cannot write
    if cfg.batch_size < 1:
        raise EmofuseError(f"--batch-size {cfg.batch_size}: give 1 or more")
    check_own_output(out, "transcribe", "asr_text")  # never another file
    with output_lock(out, "transcribe"):  # one writer of OUT and its journal at a time
        try:
            return _transcribe(cfg, manifest, out, echo)
        except OSError as err:  # the journal's batches are durable: the rerun goes on from them
            raise cannot_write(
                err, out, f"then rerun the same command: the batches in {journal_path(out)} "
                "are kept and not transcribed again"
            ) from None  # fmt: skip


def _transcribe(
    cfg: TranscribeConfig, manifest: Path, out: Path, echo: Callable[[str], None]
) -> TranscribeSummary:
    from emofuse.asr.wer import word_error_rate
    from emofuse.asr.whisper import load_asr_model

    columns, rows = read_rows(manifest)
    base = manifest.parent
    gold = {r["id"]: r.get("text", "").strip() for r in rows}
    todo = [r for r in rows if cfg.all_rows or not gold[r["id"]]]
    model = load_asr_model(
        cfg.asr_model, cfg.device, cfg.compute_type, cfg.threads or (os.cpu_count() or 1)
    )
    settings = _settings(cfg, model)
    jpath, rpath = journal_path(out), record_path(out)
    partial = _read_journal(jpath, settings)
    head, finished = _read_lines(rpath)
    if head is not None and head != settings:
        finished = {}  # a finished run with other settings: this one transcribes anew
        echo(f"note: {rpath} holds transcripts made with other settings ({head}); not reused")
    done = {**finished, **partial}
    journaled = bool(partial)
    wanted = {r["id"] for r in todo}
    changed, unhashed = ([i for i in ids if i in wanted] for ids in _drop_changed(done, rows, base))
    already = sum(r["id"] in done for r in todo)  # failed rows included: they are not redone
    summary = TranscribeSummary(
        out,
        rows=len(rows),
        resumed=sum(not done[r["id"]].get("asr_error") for r in todo if r["id"] in done),
    )
    pending = [r for r in todo if r["id"] not in done]
    seconds = {r["id"]: duration_of(resolve(base, r["audio"])) for r in pending}
    echo(
        f"transcribing {len(pending)} of {len(rows)} rows ({sum(seconds.values()) / 60:.1f} min "
        f"of audio) with {model.model_id}"
        + (f"; resuming: {already} already done" if already and partial else "")
        + (
            f"; reusing {already} done by an earlier run (recorded in {rpath.name}; delete it to "
            "transcribe them again)"
            if already and not partial
            else ""
        )
        + (
            f"; redoing {len(changed)} whose audio changed since ({_ids(changed)})"
            if changed
            else ""
        )
        + (
            f"; redoing {len(unhashed)} from a journal of an older emofuse (no audio hash to check "
            f"them by: {_ids(unhashed)})"
            if unhashed
            else ""
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    journal = _Journal(jpath, settings, fresh=not journaled)
    bar = progress_bar(
        total=sum(seconds.values()),
        unit="audio-s",
        enabled=cfg.progress and bool(pending),  # no empty bar when every row is reused
        desc="transcribe",
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} audio-s [{elapsed}<{remaining}, {rate_fmt}]",
    )
    start = time.perf_counter()
    batches = [pending[i : i + cfg.batch_size] for i in range(0, len(pending), cfg.batch_size)]
    try:
        with ThreadPoolExecutor(2, thread_name_prefix="decode") as pool:
            ahead = [pool.map(_decode, [resolve(base, r["audio"]) for r in b]) for b in batches[:2]]
            for k, batch in enumerate(batches):
                decoded = list(ahead[k])
                if k + 2 < len(batches):
                    ahead.append(
                        pool.map(_decode, [resolve(base, r["audio"]) for r in batches[k + 2]])
                    )
                good = [i for i, (w, *_) in enumerate(decoded) if w is not None]
                texts = model.transcribe([decoded[i][0] for i in good], cfg.language, cfg.beam_size)
                records = [
                    {"id": r["id"], "asr_text": "", "asr_language": "", "asr_error": d[1],
                     "audio_sha1": d[2]}
                    for r, d in zip(batch, decoded, strict=True)
                ]  # fmt: skip
                for i, t in zip(good, texts, strict=True):
                    records[i].update(asr_text=t.text, asr_language=t.language, asr_error="")
                journal.add(records)
                done.update({r["id"]: r for r in records})
                summary.transcribed += len(good)  # a row whose audio failed is not counted
                summary.audio_seconds += sum(seconds[batch[i]["id"]] for i in good)
                bar.update(sum(seconds[r["id"]] for r in batch))
    finally:
        bar.close()
        journal.close()
    summary.asr_seconds = time.perf_counter() - start
    _finish(cfg, columns, rows, gold, done, base, out, summary)
    # a row whose audio could not be read has no transcript to score (it would count as deletions)
    scored = [
        (gold[i], done[i]["asr_text"])
        for i in gold
        if gold[i] and i in done and not done[i].get("asr_error")
    ]
    summary.gold = len(scored)
    if scored:
        summary.wer, summary.wer_words = word_error_rate(*zip(*scored, strict=True))
    _write_record(rpath, settings, [done[r["id"]] for r in rows if r["id"] in done])
    jpath.unlink(missing_ok=True)
    return summary


def _finish(cfg, columns, rows, gold, done, base: Path, out: Path, summary) -> None:
    """Merge the journal into the rows and write the output manifest."""
    cols = list(columns) + [c for c in ("text", "asr_text", "asr_language") if c not in columns]
    for row in rows:
        rec = done.get(row["id"])
        if rec is None:
            continue
        row["asr_text"], row["asr_language"] = rec["asr_text"], rec["asr_language"]
        if rec.get("asr_error"):
            row["asr_error"] = rec["asr_error"]
            summary.failed.append({"id": row["id"], "reason": rec["asr_error"]})
        if not gold[row["id"]]:
            row["text"] = rec["asr_text"]
            summary.filled += bool(rec["asr_text"])
    if summary.failed and "asr_error" not in cols:
        cols.append("asr_error")
    rebase(rows, PATH_COLUMNS, base, out.parent)
    write_rows(out, cols, rows)
