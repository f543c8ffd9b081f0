"""The IEMOCAP_full_release files: what each one holds and how the real corpus writes it.

Sentence wavs (16-bit PCM), Sphinx-3 ForcedAlignment files (.wdseg, .syseg, .phseg) whose tiers
are exact: the generator places every phone on the 10 ms grid itself and writes frames with the
corpus's 2-frame delay, so the reader's seconds must equal the generator's sample positions.
CRLF transcriptions (odd lines and tags included), EmoEvaluation summaries (messy annotator lines
included), the README and Documentation/, per-annotator folders and macOS AppleDouble twins
(`._name`) that a reader must skip.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from emofuse.corpus.synthetic.pronounce import PHONES
from emofuse.corpus.synthetic.sentence import Plan
from emofuse.corpus.synthetic.stats import SR, dialog_names
from emofuse.errors import EmofuseError

MARKER = ".emofuse-synthetic.json"
DOC_TIMEINFO = """Synthetic IEMOCAP-layout corpus written by emofuse (not the real IEMOCAP).
ForcedAlignment frames are 10 ms and relative to the sentence wav. As in the real corpus, frame
times carry a delay of 2 frames: seconds = (frame + 2) / 100. EFrm is inclusive.
"""
SUMMARY_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
UNTIMED = ("M: Yeah.", "M: Yeah. ", "F:Umm.", "M:", "F :Here you go.")
CATEGORY = {
    "neu": "Neutral", "hap": "Happiness", "exc": "Excited", "sad": "Sadness", "ang": "Anger",
    "fru": "Frustration", "sur": "Surprise", "fea": "Fear", "oth": "Other", "dis": "Disgust",
}  # fmt: skip
ANNOTATORS = ("E1", "E2", "E3", "E4", "F1", "M1", "M5")


def _ours(name: str) -> bool:
    """A top-level name that a synthetic corpus holds (its marker, README, docs, sessions)."""
    return name in (MARKER, "README.txt", "._README.txt", "Documentation") or bool(
        re.fullmatch(r"Session\d+", name)
    )


def prepare(out: Path) -> None:
    """Make `out` ready: new or empty, or our own earlier output (removed); never anything else."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise EmofuseError(
                f"{out} is not empty and not a synthetic corpus: choose a new --out or empty it"
            )
        foreign = sorted(p.name for p in out.iterdir() if not _ours(p.name))
        if foreign:  # the user's files beside ours: never deleted with our output
            raise EmofuseError(
                f"{out} is a synthetic corpus but also holds files it did not write "
                f"({', '.join(foreign[:3])}{', …' if len(foreign) > 3 else ''}); move them out, or "
                "choose a new --out"
            )
        try:  # our own earlier output: rewrite it from scratch, saying so
            old = json.loads((out / MARKER).read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("complete"):
            print(
                f"note: replacing the synthetic corpus in {out} ({old.get('utterances')} "
                f"utterances, profile {old.get('profile')}, seed {old.get('seed')}); caches "
                "extracted from it no longer match its audio",
                file=sys.stderr,
                flush=True,
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    # written first, so that an interrupted run can be overwritten by the next one
    (out / MARKER).write_text(json.dumps({"complete": False}) + "\n")


def mark_complete(out: Path, profile: str, seed: int, utterances: int) -> None:
    """Rewrite the marker once every file is written."""
    (out / MARKER).write_text(
        json.dumps(
            {
                "profile": profile,
                "seed": seed,
                "utterances": utterances,
                "complete": True,
            }
        )
        + "\n"
    )


# ------------------------------------------------------------------------------ one dialog's files
@dataclass(frozen=True)
class DialogPaths:
    """The four folders one dialog writes into."""

    emo: Path  # Session<n>/dialog/EmoEvaluation: the dialog's summary
    txt: Path  # Session<n>/dialog/transcriptions: the dialog's transcript
    wav: Path  # Session<n>/sentences/wav/<dialog>: one wav per utterance
    fa: Path  # Session<n>/sentences/ForcedAlignment/<dialog>: the Sphinx files

    @classmethod
    def create(cls, sdir: Path, dialog: str) -> DialogPaths:
        paths = cls(
            emo=sdir / "dialog" / "EmoEvaluation",
            txt=sdir / "dialog" / "transcriptions",
            wav=sdir / "sentences" / "wav" / dialog,
            fa=sdir / "sentences" / "ForcedAlignment" / dialog,
        )
        for d in (paths.emo, paths.txt, paths.wav, paths.fa):
            d.mkdir(parents=True, exist_ok=True)
        return paths


def write_wav(path: Path, wav: np.ndarray) -> None:
    """A 16 kHz 16-bit PCM wav, clipped to [-1, 1]."""
    buf = io.BytesIO()  # in memory: libsndfile's flush on a real file costs ms per file
    sf.write(buf, np.clip(wav, -1, 1), SR, format="WAV", subtype="PCM_16")
    path.write_bytes(buf.getvalue())


def sphinx(rows: list[tuple[int, int, str]], column: str, width: int, rng) -> str:
    """A Sphinx-3 segmentation file: header, one row per segment, a Total score trailer."""
    lines = [f"\t{'SFrm':>{width}} {'EFrm':>{width}} {'SegAScr':>10} {column}"]
    scores = (-rng.integers(1_000, 300_000, size=len(rows))).tolist()
    for (s, e, sym), score in zip(rows, scores, strict=True):
        lines.append(f"\t{s:>{width}} {e:>{width}} {score:>10} {sym}")
    lines.append(f" Total score: {sum(scores):>12}")
    return "\n".join(lines) + "\n"


def write_alignment(fa_dir: Path, utt_id: str, plan: Plan, rng) -> None:
    """The utterance's .wdseg, .syseg and .phseg files: frames (inclusive EFrm) of every row."""
    frames, f = [], 0
    for p in plan.phones:
        frames.append((f, f + p[2] - 1))
        f += p[2]
    for ext, rows, column, width in (
        (".wdseg", plan.words, "Word", 5),
        (".syseg", plan.sylls, "Syllable", 5),
        (".phseg", plan.phone_rows, "Phone", 9),
    ):
        body = [(frames[a][0], frames[b][1], sym) for sym, a, b in rows]
        (fa_dir / f"{utt_id}{ext}").write_text(sphinx(body, column, width, rng))


def annotations(rng, code: str) -> tuple[list[str], tuple[float, float, float]]:
    """Messy annotator lines (as in the real files) and the V/A/D averages they imply."""
    who = [ANNOTATORS[i] for i in rng.permutation(len(ANNOTATORS))[:3]]
    draw = rng.random(6).tolist()
    vad = rng.integers(1, 6, size=(3, 3)).tolist()
    name = CATEGORY.get(code, "Other")
    lines = []
    for w, r in zip(who, draw[:3], strict=True):
        if r < 0.05:
            lines.append(f"C-{w}:\t;\t()")  # an empty choice
        elif r < 0.09:
            lines.append(f"C-{w}:\tOther; ;\t(unclear)")  # stray separators
        elif r < 0.2:
            lines.append(f"C-{w}:\t{name}; Disgust;\t()")  # several labels
        else:
            lines.append(f"C-{w}:\t{name};\t()")
    doms = []
    for w, (v, a, d), r in zip(who, vad, draw[3:], strict=True):
        empty = r < 0.05  # an empty dominance; otherwise two spaces after "dom", as in the corpus
        lines.append(f"A-{w}:\tval {v}; act {a}; dom{' ;' if empty else f'  {d};'}\t()")
        doms += [] if empty else [d]
    mean = lambda xs: sum(xs) / len(xs) if xs else 3.0  # noqa: E731
    return lines, (mean([x[0] for x in vad]), mean([x[1] for x in vad]), mean(doms))


def transcript_line(utt_id: str, start: float, end: float, text: str) -> str:
    """One regular transcript line: `ID [START-END]: TEXT`, times as 000.0000."""
    return f"{utt_id} [{start:08.4f}-{end:08.4f}]: {text}"


def summary_block(rng, utt_id: str, code: str, start: float, end: float) -> str:
    """The utterance's block of the EmoEvaluation summary: its line, then the annotators'."""
    ann, vad = annotations(rng, code)
    summary = (
        f"[{start:.4f} - {end:.4f}]\t{utt_id}\t{code}\t[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]"
    )
    return "\n".join([summary, *ann])


def write_transcript(
    path: Path, dialog: str, turns: list[tuple[float, str]], untimed: int, xx: int, rng
) -> None:
    """The dialog's CRLF transcript: its (start, line) turns in time order, plus odd lines:
    `untimed` ones between regular lines, `xx` XX ids with times but no wav or label."""
    lines = [line for _, line in sorted(turns)]
    for k in range(untimed):
        lines.insert(int(rng.integers(len(lines) + 1)), UNTIMED[k % len(UNTIMED)])
    for k in range(xx):
        g = "FM"[k % 2]
        a = float(rng.uniform(1, 900))
        lines.insert(
            int(rng.integers(len(lines) + 1)),
            f"{dialog}_{g}XX{k % 10} [{a:08.4f}-{a + 0.6:08.4f}]: Mmm, Hmm.",
        )
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


def write_summary(path: Path, blocks: list[str]) -> None:
    """The dialog's EmoEvaluation summary: a header, then one block per utterance."""
    path.write_text(SUMMARY_HEADER + "\n\n" + "\n\n".join(blocks) + "\n\n", newline="\n")


# ------------------------------------------------------------------- the corpus's other files
def appledouble(name: str) -> bytes:
    """Bytes of a macOS AppleDouble companion (`._name`): magic 00 05 16 07, version 2."""
    header = bytes.fromhex("00051607") + bytes.fromhex("00020000") + b"Mac OS X        "
    entries = (2).to_bytes(2, "big") + bytes.fromhex("00000009 00000032 00000ee2".replace(" ", ""))
    entries += bytes.fromhex("00000002 00000f14 0000002c".replace(" ", ""))
    return (header + entries).ljust(4096, b"\0") + name.encode()


def write_extras(out: Path, first: str, profile: str, seed: int) -> list[str]:
    """README, Documentation/, per-annotator folders and macOS twins in several folders (beside
    utterance `first`'s files among others); returns the twins' paths relative to `out`."""
    (out / "README.txt").write_text(
        f"Synthetic corpus in the IEMOCAP_full_release layout (emofuse, profile {profile}, "
        f"seed {seed}). Not IEMOCAP: procedural voices, for demos and tests.\n"
    )
    doc = out / "Documentation"
    doc.mkdir(exist_ok=True)
    (doc / "timeinfo.txt").write_text(DOC_TIMEINFO)
    (doc / "phonemes.txt").write_text(
        "\n".join(PHONES + ["SIL", "+LAUGHTER+", "+LIPSMACK+", "+GARBAGE+", "+BREATHING+"]) + "\n"
    )
    for s in range(1, 6):
        emo = out / f"Session{s}" / "dialog" / "EmoEvaluation"
        dialog = dialog_names(s)[0]
        for sub, suffix in (("Categorical", "_e1_cat"), ("Attribute", "_e1_atr")):
            (emo / sub).mkdir(exist_ok=True)
            (emo / sub / f"{dialog}{suffix}.txt").write_text(f"{dialog}_F000 :Neutral; ()\n")
        (emo / "Self-evaluation").mkdir(exist_ok=True)
        (emo / "Self-evaluation" / f"{dialog}.txt").write_text("% self evaluation\n")
    ses1 = out / "Session1"
    dialog = dialog_names(1)[0]
    twins = [
        ses1 / "dialog" / "EmoEvaluation" / f"._{dialog}.txt",
        ses1 / "dialog" / "transcriptions" / f"._{dialog}.txt",
        ses1 / "sentences" / "wav" / f"._{dialog}",
        ses1 / "sentences" / "wav" / dialog / f"._{first}.wav",
        ses1 / "sentences" / "ForcedAlignment" / dialog / f"._{first}.wdseg",
        out / f"._{'README.txt'}",
    ]
    for path in twins:
        path.write_bytes(appledouble(path.name[2:]))
    return [str(path.relative_to(out)) for path in twins]
