"""A synthetic corpus in the IEMOCAP_full_release layout: the demo corpus and the test corpus.

Why it exists: IEMOCAP cannot be shipped, yet the reader must be checked on the real layout with
every quirk, and the demo must train heads that learn something. So the generator writes
5 sessions × 2 speakers of sentence wavs, EmoEvaluation summaries (messy annotator lines included),
CRLF transcriptions (odd lines and tags included) and Sphinx ForcedAlignment files whose tiers are
exact: the generator places every phone on the 10 ms grid itself and writes frames with the
corpus's 2-frame delay, so the reader's seconds must equal the generator's sample positions.

The voice is procedural: "phones" are harmonic segments shaped by formant-like gains, fricative
noise bands, stop bursts and silences. Prosody depends on emotion AND speaker (pitch level and
range, tempo, loudness, spectral tilt and breathiness) with per-utterance jitter, and sentences
draw words from an emotion-leaning list with some probability — cues that survive random-weight
encoders (loudness, tilt, pitch) and a random-weight text model (word identity).

Profiles: `demo` (≈ 400 four-class utterances of 1–3 s) and `counts` (the real corpus's 10,039
utterances with the exact 4-class counts per session, label and speaker of iemocap.md, 0.05–0.2 s
each) so the reader is checked at full scale. Same seed → identical bytes.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from emofuse.corpus.synthetic.pronounce import PHONES
from emofuse.corpus.synthetic.sentence import WORDS, SpeechStyle, plan_sentence
from emofuse.corpus.synthetic.stats import (
    FOUR,
    N_UNTIMED,
    N_XX,
    SR,
    dialog_names,
    label_plan,
    share,
    unaligned_ids,
)
from emofuse.corpus.synthetic.voice import CODE_VOICE, SpeakerVoice, Voice, mix, synthesise
from emofuse.corpus.utterance import Segment
from emofuse.errors import EmofuseError
from emofuse.progress import progress_bar

MARKER = ".emofuse-synthetic.json"
PROFILES = ("demo", "counts")


UNTIMED = ("M: Yeah.", "M: Yeah. ", "F:Umm.", "M:", "F :Here you go.")
CATEGORY = {
    "neu": "Neutral", "hap": "Happiness", "exc": "Excited", "sad": "Sadness", "ang": "Anger",
    "fru": "Frustration", "sur": "Surprise", "fea": "Fear", "oth": "Other", "dis": "Disgust",
}  # fmt: skip


# ----------------------------------------------------------------------------------- planning
@dataclass
class SynthUtterance:
    """What the generator knows about one utterance (the ground truth the tests check against)."""

    id: str
    code: str  # the corpus label code (exc, xxx, fru … included)
    speaker: str
    text: str  # raw transcript line text (tags included)
    duration: float
    tiers: dict[str, list[Segment]] | None  # exact, from sample positions; None = no files written
    dialog: str = ""
    start: float = 0.0


@dataclass
class SyntheticCorpus:
    root: Path
    utterances: dict[str, SynthUtterance] = field(default_factory=dict)
    odd_lines: int = 0
    twins: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ writing
def _sphinx(rows: list[tuple[int, int, str]], column: str, width: int, rng) -> str:
    """A Sphinx-3 segmentation file: header, one row per segment, a Total score trailer."""
    lines = [f"\t{'SFrm':>{width}} {'EFrm':>{width}} {'SegAScr':>10} {column}"]
    scores = (-rng.integers(1_000, 300_000, size=len(rows))).tolist()
    for (s, e, sym), score in zip(rows, scores, strict=True):
        lines.append(f"\t{s:>{width}} {e:>{width}} {score:>10} {sym}")
    lines.append(f" Total score: {sum(scores):>12}")
    return "\n".join(lines) + "\n"


def _appledouble(name: str) -> bytes:
    """Bytes of a macOS AppleDouble companion (`._name`): magic 00 05 16 07, version 2."""
    header = bytes.fromhex("00051607") + bytes.fromhex("00020000") + b"Mac OS X        "
    entries = (2).to_bytes(2, "big") + bytes.fromhex("00000009 00000032 00000ee2".replace(" ", ""))
    entries += bytes.fromhex("00000002 00000f14 0000002c".replace(" ", ""))
    return (header + entries).ljust(4096, b"\0") + name.encode()


ANNOTATORS = ("E1", "E2", "E3", "E4", "F1", "M1", "M5")


def _annotations(rng, code: str) -> tuple[list[str], tuple[float, float, float]]:
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


def _prepare(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise EmofuseError(
                f"{out} is not empty and not a synthetic corpus: choose a new --out or empty it"
            )
        shutil.rmtree(out)  # our own earlier output: rewrite it from scratch
    out.mkdir(parents=True, exist_ok=True)
    # written first, so that an interrupted run can be overwritten by the next one
    (out / MARKER).write_text(json.dumps({"complete": False}) + "\n")


DOC_TIMEINFO = """Synthetic IEMOCAP-layout corpus written by emofuse (not the real IEMOCAP).
ForcedAlignment frames are 10 ms and relative to the sentence wav. As in the real corpus, frame
times carry a delay of 2 frames: seconds = (frame + 2) / 100. EFrm is inclusive.
"""


def write_synthetic_corpus(
    out_dir: str | Path,
    profile: str = "demo",
    seed: int = 0,
    utterances_per_speaker: int | None = None,
    others_per_speaker: int | None = None,
    duration: tuple[float, float] | None = None,
    lexical_p: float = 0.5,
    progress: bool = True,
) -> SyntheticCorpus:
    """Write a synthetic corpus in the IEMOCAP_full_release layout under `out_dir` (its root).

    demo: `utterances_per_speaker` four-class utterances (default 40, balanced, hap ≈ 50 % exc)
    plus `others_per_speaker` (default 8: xxx, fru, sur, fea, oth, dis) per speaker, `duration`
    (default 1–3 s). counts: the real corpus's label counts (iemocap.md), `duration` default
    0.05–0.2 s. `lexical_p`: chance that a word comes from the emotion-leaning list.
    """
    if profile not in PROFILES:
        raise EmofuseError(f"unknown --profile {profile!r}: choose one of {', '.join(PROFILES)}")
    counts = profile == "counts"
    lo, hi = duration or ((0.05, 0.2) if counts else (1.0, 3.0))
    if not 0.05 <= lo <= hi:
        raise EmofuseError(f"bad duration range {lo}–{hi} s: need 0.05 <= min <= max")
    per_speaker = 40 if utterances_per_speaker is None else utterances_per_speaker
    others = 8 if others_per_speaker is None else others_per_speaker
    if not counts and per_speaker < 4:
        raise EmofuseError("--utterances-per-speaker must be at least 4 (one per class)")
    out = Path(out_dir).expanduser()
    _prepare(out)
    rng = np.random.default_rng(seed)
    corpus = SyntheticCorpus(root=out)
    plan = label_plan(profile, rng, per_speaker, others)
    voices = {(s, g): SpeakerVoice.draw(rng, g) for s in range(1, 6) for g in "FM"}
    style = SpeechStyle.for_durations(lo, hi, lexical_p)
    n_untimed = N_UNTIMED if counts else 10
    n_xx = N_XX if counts else 4
    total = sum(len(v) for v in plan.values())
    bar = progress_bar(total=total, desc=f"synth {profile}", enabled=progress)
    for s in range(1, 6):
        sdir = out / f"Session{s}"
        dialogs = dialog_names(s)
        # deal each speaker's utterances over the session's dialogs, then order them in time
        slots: dict[str, list[tuple[str, str]]] = {d: [] for d in dialogs}
        for g in "FM":
            order = rng.permutation(len(dialogs))
            for i, code in enumerate(plan[(s, g)]):
                slots[dialogs[order[i % len(dialogs)]]].append((g, code))
        items = {d: [slots[d][i] for i in rng.permutation(len(slots[d]))] for d in dialogs}
        session = SessionContext(
            session=s,
            sdir=sdir,
            voices={g: voices[(s, g)] for g in "FM"},
            style=style,
            duration=(lo, hi),
            unaligned=unaligned_ids(s, items),
            rng=rng,
            corpus=corpus,
            bar=bar,
        )
        for d_idx, dialog in enumerate(dialogs):
            _write_dialog(
                session,
                dialog,
                items[dialog],
                untimed=share(n_untimed, s, d_idx, len(dialogs), range(1, 6)),
                xx=share(n_xx, s, d_idx, len(dialogs), (3, 5)),
            )
    bar.close()
    _write_extras(out, corpus, profile, seed)
    (out / MARKER).write_text(
        json.dumps(
            {
                "profile": profile,
                "seed": seed,
                "utterances": len(corpus.utterances),
                "complete": True,
            }
        )
        + "\n"
    )
    return corpus


def _truth(rows: list[tuple[str, int, int]], spans: list[tuple[int, int]]) -> list[Segment]:
    """Segments in seconds from where their samples really are (phone spans from the synthesiser)."""
    return [(round(spans[a][0] / SR, 4), round(spans[b][1] / SR, 4), sym) for sym, a, b in rows]


@dataclass
class SessionContext:
    """What every dialog of one session shares while `_write_dialog` writes it."""

    session: int  # 1..5
    sdir: Path  # <root>/Session<n>
    voices: dict[str, SpeakerVoice]  # the session's two speakers, by letter (F, M)
    style: SpeechStyle
    duration: tuple[float, float]  # seconds: each utterance's target length is drawn from it
    unaligned: set[str]  # ids written without ForcedAlignment files
    rng: np.random.Generator  # the corpus's one generator: its draws fix every byte
    corpus: SyntheticCorpus  # the ground truth, filled as the files are written
    bar: Any  # the progress bar, advanced once per utterance


def _write_dialog(
    session: SessionContext, dialog: str, items: list[tuple[str, str]], untimed: int, xx: int
) -> None:
    """One dialog: its utterances' wavs and alignment files, its transcript (with `untimed` and
    `xx` odd lines) and its EmoEvaluation summary."""
    s, sdir, rng, corpus = session.session, session.sdir, session.rng, session.corpus
    emo_dir = sdir / "dialog" / "EmoEvaluation"
    txt_dir = sdir / "dialog" / "transcriptions"
    wav_dir = sdir / "sentences" / "wav" / dialog
    fa_dir = sdir / "sentences" / "ForcedAlignment" / dialog
    for d in (emo_dir, txt_dir, wav_dir, fa_dir):
        d.mkdir(parents=True, exist_ok=True)
    counters = {"F": 0, "M": 0}
    t = float(rng.uniform(2.0, 8.0))
    transcript: list[tuple[float, str]] = []
    blocks: dict[str, list[tuple[int, str]]] = {"F": [], "M": []}
    for g, code in items:
        utt_id = f"{dialog}_{g}{counters[g]:03d}"
        idx = counters[g]
        counters[g] += 1
        mixture, words_from = CODE_VOICE[code] or (
            {str(rng.choice(FOUR)): 0.6, "neu": 0.4},
            str(rng.choice(FOUR)),
        )
        voice = Voice.draw(rng, session.voices[g], mix(mixture))
        target_units = int(rng.uniform(*session.duration) * 100)
        plan = plan_sentence(rng, code, words_from, session.style, voice.tempo, target_units)
        wav, spans = synthesise(rng, plan, voice)
        buf = io.BytesIO()  # in memory: libsndfile's flush on a real file costs ms per file
        sf.write(buf, np.clip(wav, -1, 1), SR, format="WAV", subtype="PCM_16")
        (wav_dir / f"{utt_id}.wav").write_bytes(buf.getvalue())
        duration = len(wav) / SR
        # frames of every phone, and the exact seconds from sample positions
        frames, f = [], 0
        for p in plan.phones:
            frames.append((f, f + p[2] - 1))
            f += p[2]

        phone_rows = [(p[0], k, k) for k, p in enumerate(plan.phones)]
        aligned = utt_id not in session.unaligned
        if aligned:
            for ext, rows, column, width in (
                (".wdseg", plan.words, "Word", 5),
                (".syseg", plan.sylls, "Syllable", 5),
                (".phseg", phone_rows, "Phone", 9),
            ):
                body = [(frames[a][0], frames[b][1], sym) for sym, a, b in rows]
                (fa_dir / f"{utt_id}{ext}").write_text(_sphinx(body, column, width, rng))
        start, end = t, t + duration
        t = end + float(rng.uniform(0.2, 1.5))
        transcript.append((start, f"{utt_id} [{start:08.4f}-{end:08.4f}]: {plan.text}"))
        ann, vad = _annotations(rng, code)
        summary = f"[{start:.4f} - {end:.4f}]\t{utt_id}\t{code}\t[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]"
        blocks[g].append((idx, "\n".join([summary, *ann])))
        corpus.utterances[utt_id] = SynthUtterance(
            id=utt_id,
            code=code,
            speaker=f"Ses{s:02d}_{g}",
            text=plan.text,
            duration=duration,
            tiers={
                "word": _truth(plan.words, spans),
                "syllable": _truth(plan.sylls, spans),
                "phone": _truth(phone_rows, spans),
            }
            if aligned
            else None,
            dialog=dialog,
            start=start,
        )
        session.bar.update()
    # odd transcript lines: untimed ones between regular lines, XX ids with times but no wav/label
    lines = [line for _, line in sorted(transcript)]
    for k in range(untimed):
        lines.insert(int(rng.integers(len(lines) + 1)), UNTIMED[k % len(UNTIMED)])
    for k in range(xx):
        g = "FM"[k % 2]
        a = float(rng.uniform(1, 900))
        lines.insert(
            int(rng.integers(len(lines) + 1)),
            f"{dialog}_{g}XX{k % 10} [{a:08.4f}-{a + 0.6:08.4f}]: Mmm, Hmm.",
        )
    corpus.odd_lines += untimed + xx
    (txt_dir / f"{dialog}.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    ordered = [b for g in "FM" for _, b in sorted(blocks[g])]
    header = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"
    (emo_dir / f"{dialog}.txt").write_text(
        header + "\n\n" + "\n\n".join(ordered) + "\n\n", newline="\n"
    )


def _write_extras(out: Path, corpus: SyntheticCorpus, profile: str, seed: int) -> None:
    """README, Documentation/, per-annotator folders and macOS twins in several folders."""
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
    first = sorted(corpus.utterances)[0]
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
        path.write_bytes(_appledouble(path.name[2:]))
        corpus.twins.append(str(path.relative_to(out)))


__all__ = [
    "PROFILES",
    "WORDS",
    "SynthUtterance",
    "SyntheticCorpus",
    "dialog_names",
    "write_synthetic_corpus",
]
