"""Reader for IEMOCAP_full_release, quirks included (docs/architecture.md §7).

The corpus is read from three sources that must agree on the utterance set: the per-dialog
EmoEvaluation summary files (labels), the per-dialog CRLF transcriptions (text) and the sentence
wavs. Sphinx forced alignments add word/syllable/phone tiers where they exist. Everything the
reader leaves out is reported in `CorpusReadResult.skipped` (reason -> ids / file names) so that
a run says exactly which utterances it used — peers silently lose some.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from pathlib import Path

import soundfile as sf

from emofuse.audio import RATE_RANGE, rate_problem
from emofuse.corpus.text import normalize_text
from emofuse.corpus.utterance import ALIGN_SLACK_S, CorpusReadResult, Segment, Utterance
from emofuse.errors import LOOPS, RERUN, EmofuseError, cannot_read
from emofuse.progress import progress_bar

SESSIONS = tuple(f"Session{i}" for i in range(1, 6))

# consensus label line of an EmoEvaluation summary file (tab separated), verbatim from the doc
SUMMARY_RE = re.compile(
    r"^\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(\S+)\t([a-z]{3})\t\[(\d\.\d{4}), (\d\.\d{4}), (\d\.\d{4})\]$"
)
# regular transcript line; untimed lines ("M: Yeah.") and XX ids ("..._MXX0") do not match
TRANSCRIPT_RE = re.compile(r"^(Ses\d\d[FM]_\S+_[FM]\d{3}) \[(\d{3}\.\d{4})-(\d{3}\.\d{4})\]: (.*)$")

# label set name -> {corpus code: label}; codes outside the mapping are skipped (and reported)
LABEL_SETS: dict[str, dict[str, str] | None] = {
    "4": {"ang": "ang", "hap": "hap", "exc": "hap", "sad": "sad", "neu": "neu"},
    "5": {"ang": "ang", "hap": "hap", "exc": "exc", "sad": "sad", "neu": "neu"},
    "6": {"ang": "ang", "hap": "hap", "exc": "exc", "sad": "sad", "neu": "neu", "fru": "fru"},
    "all": None,  # every code as is, xxx (no agreement) included
}

ALIGNMENT_EXT = {"word": ".wdseg", "syllable": ".syseg", "phone": ".phseg"}
FRAME_DELAY = 2  # Documentation/timeinfo.txt: frame times carry a 2-frame (20 ms) delay
FRAME_S = 0.01

SKIP_TWIN = "macOS ._ twin (not corpus data)"
SKIP_ODD_LINE = "odd transcript line (untimed or XX id; no wav, no label)"
SKIP_NO_WAV = "no sentence wav"
SKIP_NO_TEXT = "no transcript line"
SKIP_NO_LABEL = "no label block in EmoEvaluation (wav or transcript line present)"
SKIP_BAD_WAV = "sentence wav unreadable by soundfile (not audio, empty or damaged)"
SKIP_BAD_RATE = f"sentence wav sample rate outside {RATE_RANGE} (damaged header)"
SKIP_BAD_SUMMARY = "label line not in the summary format"
SKIP_NOT_IMPRO = "scripted dialog (--improvised-only)"
SKIP_ALIGN_PAST = (
    "its alignment ends past its audio (another recording's?): kept, unaligned, so its word, "
    "syllable and phone segments are left out"
)


def _tiers_end(tiers: dict) -> float:
    return max((float(seg[1]) for segs in tiers.values() for seg in segs), default=0.0)


def skip_label_reason(code: str, classes: str) -> str:
    return f"label {code} not in label set {classes}"


def is_twin(name: str) -> bool:
    """macOS AppleDouble companions (`._X`) sit beside real files in some copies."""
    return name.startswith("._")


def speaker_of(utt_id: str) -> tuple[str, str, str]:
    """(session, speaker, gender) from an utterance id.

    The speaker is the letter of the LAST field (`Ses01F_impro01_M000` is spoken by Ses01_M);
    the letter after the session number only says who wore the markers.
    """
    session = utt_id[:5]
    gender = utt_id.rsplit("_", 1)[1][0]
    return session, f"{session}_{gender}", gender


def dialog_of(utt_id: str) -> str:
    return utt_id.rsplit("_", 1)[0]


def is_improvised(dialog: str) -> bool:
    return "_impro" in dialog


def frames_to_seconds(sfrm: int, efrm: int) -> tuple[float, float]:
    """Sphinx frames [SFrm, EFrm] (EFrm inclusive) -> seconds [start, end) with the 2-frame delay."""
    start = round((sfrm + FRAME_DELAY) * FRAME_S, 2)
    end = round((efrm + 1 + FRAME_DELAY) * FRAME_S, 2)
    return start, end


def read_corpus_text(path: Path) -> str:
    """A corpus text file (summary, transcript, alignment) as UTF-8 (a BOM is not a character):
    one it may not read or that is not UTF-8 is one line naming it, never a traceback or a text
    with its odd bytes silently replaced (what the text model would embed)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise cannot_read(path, err) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise EmofuseError(
            f"{path}: line {line} is not UTF-8 text (byte 0x{raw[err.start]:02X}); save the file as "
            f"UTF-8 (e.g. `iconv -f latin1 -t utf-8`), {RERUN}"
        ) from None


def parse_alignment(path: Path) -> list[Segment]:
    """Parse a Sphinx-3 .wdseg/.syseg/.phseg file by whitespace columns.

    Rows are `SFrm EFrm SegAScr SYMBOL...`; the symbol may contain a space (`AH(HH,L) b`), so it is
    the rest of the row. The header (`SFrm EFrm ...`) and the `Total score` trailer are skipped; a
    file without the trailer is cut short (a copy interrupted midway) and refused.
    """
    segments: list[Segment] = []
    text = read_corpus_text(path)
    lines = text.splitlines()
    if not any(line.strip().startswith("Total score") for line in lines[-3:]):
        raise EmofuseError(  # its rows would be taken for the whole alignment
            f"{path} is cut short (no 'Total score' line ends it, as Sphinx writes every "
            "alignment file); copy it again from the IEMOCAP release, or remove it to keep the "
            "utterance unaligned"
        )
    for lineno, line in enumerate(lines, 1):
        cols = line.split()
        if not cols or cols[0] == "SFrm" or line.strip().startswith("Total score"):
            continue
        try:
            sfrm, efrm = int(cols[0]), int(cols[1])
            int(cols[2])
            symbol = " ".join(cols[3:])
        except (ValueError, IndexError):
            raise EmofuseError(
                f"{path}:{lineno}: not a Sphinx alignment row ({line.strip()!r}); "
                "expected 'SFrm EFrm SegAScr SYMBOL' — repair or remove the file"
            ) from None
        if not symbol or efrm < sfrm:
            raise EmofuseError(
                f"{path}:{lineno}: bad alignment row {line.strip()!r} — repair or remove the file"
            )
        start, end = frames_to_seconds(sfrm, efrm)
        segments.append((start, end, symbol))
    return segments


def read_tiers(align_dir: Path, utt_id: str) -> dict[str, list[Segment]] | None:
    """The tiers whose files exist for `utt_id`, or None when the utterance has no alignment."""
    tiers = {}
    for tier, ext in ALIGNMENT_EXT.items():
        path = align_dir / f"{utt_id}{ext}"
        if path.is_file():
            tiers[tier] = parse_alignment(path)
    return tiers or None


_COMMENT = re.compile(r"\([^()]*\)\s*$")


def parse_annotations(lines: Iterable[str]) -> dict[str, dict]:
    """Annotator lines of one block -> {"categorical": {who: [labels]}, "dimensional": {who: {...}}}.

    The lines are messy (empty choices `C-M5:\\t;\\t()`, stray separators `Other; ;`, several labels,
    an empty `dom ;`, double spaces), so every field is split and stripped, empties dropped, and a
    missing rating becomes None instead of an error.
    """
    categorical: dict[str, list[str]] = {}
    dimensional: dict[str, dict[str, float | None]] = {}
    for line in lines:
        head, _, rest = line.partition(":")
        who = head.strip()
        # drop the trailing "(comment)"; what is left holds the choices / ratings
        body = _COMMENT.sub("", rest.strip())
        if who.startswith("C-"):
            categorical[who] = [c.strip() for c in body.split(";") if c.strip()]
        elif who.startswith("A-"):
            ratings: dict[str, float | None] = {"val": None, "act": None, "dom": None}
            for part in body.split(";"):
                m = re.match(r"^\s*(val|act|dom)\s*([0-9]+(?:\.[0-9]+)?)?\s*$", part)
                if m:
                    ratings[m.group(1)] = float(m.group(2)) if m.group(2) else None
            dimensional[who] = ratings
    return {"categorical": categorical, "dimensional": dimensional}


def parse_summary(path: Path, result: CorpusReadResult) -> list[dict]:
    """One record per summary line of an EmoEvaluation/<dialog>.txt file (annotators attached)."""
    records: list[dict] = []
    first_line: dict[str, int] = {}
    text = read_corpus_text(path)
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.rstrip("\r")
        if line.startswith("["):
            m = SUMMARY_RE.match(line)
            if not m:
                result.skip(SKIP_BAD_SUMMARY, f"{path.name}:{lineno}")
                continue
            start, end, utt_id, code, v, a, d = m.groups()
            if utt_id in first_line:  # counted twice by stats, refused later by extract
                raise EmofuseError(
                    f"{path}:{lineno}: utterance {utt_id} is listed a second time (first at line "
                    f"{first_line[utt_id]}); remove one of the two blocks, {RERUN}"
                )
            first_line[utt_id] = lineno
            records.append(
                {
                    "id": utt_id,
                    "code": code,
                    "start": float(start),
                    "end": float(end),
                    "vad": [float(v), float(a), float(d)],
                    "annotator_lines": [],
                }
            )
        elif records and (line.startswith("C-") or line.startswith("A-")):
            records[-1]["annotator_lines"].append(line)
    for rec in records:
        rec["annotations"] = parse_annotations(rec.pop("annotator_lines"))
    return records


def parse_transcript(path: Path, result: CorpusReadResult) -> dict[str, tuple[float, float, str]]:
    """id -> (start, end, raw text) from a CRLF transcription file; odd lines are reported."""
    out: dict[str, tuple[float, float, str]] = {}
    # utf-8-sig: a BOM (what Notepad writes when a transcript is fixed by hand) made the first
    # line "odd" and dropped its utterance
    text = read_corpus_text(path)
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line:
            continue
        m = TRANSCRIPT_RE.match(line)
        if not m:
            result.skip(SKIP_ODD_LINE, f"{path.name}:{lineno}")
            continue
        utt_id, start, end, raw = m.groups()
        out[utt_id] = (float(start), float(end), raw)
    return out


def find_root(root: Path) -> Path:
    """Accept IEMOCAP_full_release itself or a folder holding it; else say what is missing."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise EmofuseError(
            f"IEMOCAP root {root} is a file, not a folder: pass --root IEMOCAP_full_release "
            "(for a CSV of your own corpus: --corpus manifest --manifest FILE)"
        )
    if not root.is_dir():
        raise EmofuseError(f"IEMOCAP root {root} does not exist: pass --root IEMOCAP_full_release")
    if not (root / "Session1").is_dir() and (root / "IEMOCAP_full_release").is_dir():
        root = root / "IEMOCAP_full_release"
    for session in SESSIONS:
        for sub in ("", "/dialog/EmoEvaluation", "/dialog/transcriptions", "/sentences/wav"):
            if not (root / f"{session}{sub}").is_dir():
                broken = _broken_link(root / f"{session}{sub}")
                if broken:
                    raise EmofuseError(f"{broken[0]} {broken[1]}, then rerun")
                if sub and (root / session).is_dir():  # the right root, one session incomplete
                    raise EmofuseError(
                        f"{root / session} is incomplete: its folder {sub.lstrip('/')} is missing "
                        "(an interrupted unpack or copy?); restore it from the IEMOCAP release"
                    )
                raise EmofuseError(
                    f"{root} is not IEMOCAP_full_release: expected folder {session}{sub} is missing"
                    " — point --root at the folder that holds Session1 … Session5"
                )
    return root


def _broken_link(path: Path) -> tuple[Path, str] | None:
    """The link at or above ``path`` that leads nowhere, and why: it loops or its target is gone."""
    for link in (path, *path.parents):
        if link.is_symlink() and not link.exists():
            try:
                os.stat(link)
            except OSError as err:
                if err.errno == errno.ELOOP:
                    return link, LOOPS
            target = os.readlink(link)
            return link, f"is a symbolic link to {target!r}, which does not exist; fix or remove it"
    return None


def _scan(folder: Path, suffix: str, result: CorpusReadResult, root: Path) -> list[str]:
    """Names in `folder` ending in `suffix`, macOS twins reported and left out."""
    names = []
    if not folder.is_dir():
        return names
    with os.scandir(folder) as it:
        for entry in it:
            if is_twin(entry.name):
                result.skip(SKIP_TWIN, (folder / entry.name).relative_to(root).as_posix())
            elif entry.name.endswith(suffix) and _entry_is_file(entry):
                names.append(entry.name)
    return sorted(names)


def _entry_is_file(entry: os.DirEntry) -> bool:
    """A regular file (through links); a link that loops or leads nowhere is one line naming it
    (not ELOOP's traceback, nor the utterance skipped as having no wav, even under --strict)."""
    try:
        is_file = entry.is_file()
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise EmofuseError(f"{entry.path} {LOOPS}, then rerun") from None
        raise cannot_read(entry.path, err) from None
    if not is_file and entry.is_symlink() and (broken := _broken_link(Path(entry.path))):
        raise EmofuseError(f"{broken[0]} {broken[1]}, then rerun")  # not "no wav"
    return is_file


def _subfolders(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as it:
        return {e.name for e in it if e.is_dir() and not is_twin(e.name)}


def read_iemocap(
    root: str | Path,
    classes: str = "4",
    improvised_only: bool = False,
    text_norm: str = "default",
    progress: bool = True,
) -> CorpusReadResult:
    """Read IEMOCAP_full_release into Utterance records.

    classes: "4" (ang, hap = hap + exc, sad, neu), "5" (hap and exc apart), "6" (+ fru) or "all".
    improvised_only: keep improvised dialogs only (scripted transcripts repeat across sessions).
    text_norm: see emofuse.corpus.text.normalize_text; the raw transcript stays in `text`.
    """
    if classes not in LABEL_SETS:
        raise EmofuseError(
            f"unknown IEMOCAP label set --classes {classes}: choose one of {', '.join(LABEL_SETS)}"
        )
    normalize_text("", text_norm)  # validate the option before reading anything
    mapping = LABEL_SETS[classes]
    root = find_root(Path(root))
    result = CorpusReadResult(utterances=[])
    _scan(root, "\0", result, root)  # twins at the top (._README.txt …); nothing else is read there
    work: list[tuple[str, str]] = []  # (session, dialog) in corpus order
    for session in SESSIONS:
        sdir = root / session
        # twins are reported wherever they are; transcripts and wavs are then looked up by name
        dialogs = {
            n[: -len(".txt")]
            for n in _scan(sdir / "dialog" / "transcriptions", ".txt", result, root)
        }
        _scan(sdir / "sentences" / "wav", ".wav", result, root)
        dialogs |= _subfolders(sdir / "sentences" / "wav")
        emo_dir = sdir / "dialog" / "EmoEvaluation"
        dialogs |= {n[: -len(".txt")] for n in _scan(emo_dir, ".txt", result, root)}
        work += [(session, dialog) for dialog in sorted(dialogs)]
    for session, dialog in progress_bar(
        work, desc="IEMOCAP dialogs", enabled=progress, leave=False
    ):
        sdir = root / session
        emo_path = sdir / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        txt_dir = sdir / "dialog" / "transcriptions"
        records = parse_summary(emo_path, result) if emo_path.is_file() else []
        tpath = txt_dir / f"{dialog}.txt"
        texts = parse_transcript(tpath, result) if tpath.is_file() else {}
        wav_dir = sdir / "sentences" / "wav" / dialog
        wavs = set(_scan(wav_dir, ".wav", result, root))
        align_dir = sdir / "sentences" / "ForcedAlignment" / dialog
        _scan(align_dir, "seg", result, root)
        # a wav or transcript line whose label block (or whole summary file) is gone is reported
        labelled = {rec["id"] for rec in records}
        for utt_id in sorted((set(texts) | {w[: -len(".wav")] for w in wavs}) - labelled):
            result.skip(SKIP_NO_LABEL, utt_id)
        for rec in records:
            utt_id, code = rec["id"], rec["code"]
            if improvised_only and not is_improvised(dialog):
                result.skip(SKIP_NOT_IMPRO, utt_id)
                continue
            if mapping is not None and code not in mapping:
                result.skip(skip_label_reason(code, classes), utt_id)
                continue
            if f"{utt_id}.wav" not in wavs:
                result.skip(SKIP_NO_WAV, utt_id)
                continue
            if utt_id not in texts:
                result.skip(SKIP_NO_TEXT, utt_id)
                continue
            ses, speaker, gender = speaker_of(utt_id)
            audio = wav_dir / f"{utt_id}.wav"
            try:
                info = sf.info(str(audio))
            except RuntimeError:  # soundfile's LibsndfileError: reported, never a traceback
                try:  # an intact file it may not open is named with its mode, never "damaged"
                    audio.open("rb").close()
                except OSError as err:
                    raise cannot_read(audio, err) from None
                result.skip(SKIP_BAD_WAV, utt_id)
                continue
            if rate_problem(audio, info.samplerate):
                result.skip(SKIP_BAD_RATE, utt_id)
                continue
            duration = info.duration
            raw = texts[utt_id][2]
            tiers = read_tiers(align_dir, utt_id)
            if tiers and _tiers_end(tiers) > duration + ALIGN_SLACK_S:  # another file's, clamped
                result.skip(SKIP_ALIGN_PAST, utt_id)  # onto the last frames: left out, unaligned
                tiers = None
            result.utterances.append(
                Utterance(
                    id=utt_id,
                    audio=audio,
                    text=raw,
                    label=code if mapping is None else mapping[code],
                    speaker=speaker,
                    session=ses,
                    gender=gender,
                    duration=duration,
                    tiers=tiers,
                    extra={
                        "dialog": dialog,
                        "improvised": is_improvised(dialog),
                        "code": code,
                        "start": rec["start"],
                        "end": rec["end"],
                        "vad": rec["vad"],
                        "annotations": rec["annotations"],
                    },
                    text_norm=None if text_norm == "raw" else normalize_text(raw, text_norm),
                )
            )
    result.utterances.sort(key=lambda u: u.id)
    if not result.utterances:
        raise EmofuseError(
            f"no utterance of {root} is in label set {classes}"
            + (" among improvised dialogs" if improvised_only else "")
            + " — check --classes / --improvised-only"
        )
    return result
