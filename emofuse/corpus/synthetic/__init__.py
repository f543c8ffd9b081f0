"""A synthetic corpus in the IEMOCAP_full_release layout: the demo corpus and the test corpus.

Why it exists: IEMOCAP cannot be shipped, yet the reader must be checked on the real layout with
every quirk, and the demo must train heads that learn something. So the generator writes
5 sessions × 2 speakers of sentence wavs, EmoEvaluation summaries (messy annotator lines included),
CRLF transcriptions (odd lines and tags included) and Sphinx ForcedAlignment files whose tiers are
exact, in procedural voices whose emotion cues survive random-weight encoders (loudness, tilt,
pitch) and a random-weight text model (word identity).

Profiles: `demo` (≈ 400 four-class utterances of 1–3 s) and `counts` (the real corpus's 10,039
utterances with the exact 4-class counts per session, label and speaker of the real corpus (docs/architecture.md §7), 0.05–0.2 s
each) so the reader is checked at full scale. Same seed → identical bytes: one generator, drawn
from in a fixed order, decides everything.

The parts, each importing only the ones before it:
  stats.py      the real corpus's numbers, frame constants, the label plan and dialog names
  pronounce.py  the toy pronouncer: phones, letter rules, syllables, phone classes, formants
  sentence.py   the sentence plan: words, tags, phones in 10 ms units, tier rows, transcript text
  voice.py      the procedural voice: speakers, emotions and the synthesiser
  layout.py     the IEMOCAP files: wavs, Sphinx alignments, transcripts, summaries, extras
  __init__.py   this orchestration: `write_synthetic_corpus` and the ground truth it returns
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.corpus.synthetic.layout import (
    DialogPaths,
    mark_complete,
    prepare,
    summary_block,
    transcript_line,
    write_alignment,
    write_extras,
    write_summary,
    write_transcript,
    write_wav,
)
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

PROFILES = ("demo", "counts")


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
    """What `write_synthetic_corpus` wrote: every utterance's truth, the odd transcript lines and
    the macOS twins (paths relative to `root`)."""

    root: Path
    utterances: dict[str, SynthUtterance] = field(default_factory=dict)
    odd_lines: int = 0
    twins: list[str] = field(default_factory=list)


MIN_DURATION = 0.05  # seconds: the shortest utterance the synthesiser makes (counts profile)


def duration_problem(lo: float, hi: float) -> str | None:
    """Why (MIN, MAX) seconds is not a duration range for the synthetic corpus, or None."""
    if math.isfinite(lo) and math.isfinite(hi) and MIN_DURATION <= lo <= hi:
        return None
    return f"{lo:g} {hi:g}: give MIN MAX seconds with {MIN_DURATION} <= MIN <= MAX (both finite)"


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
    (default 1–3 s). counts: the real corpus's label counts (the real corpus), `duration` default
    0.05–0.2 s. `lexical_p`: chance that a word comes from the emotion-leaning list.
    """
    if profile not in PROFILES:
        raise EmofuseError(f"unknown --profile {profile!r}: choose one of {', '.join(PROFILES)}")
    counts = profile == "counts"
    lo, hi = duration or ((MIN_DURATION, 0.2) if counts else (1.0, 3.0))
    if problem := duration_problem(lo, hi):
        raise EmofuseError(f"--duration {problem}")
    per_speaker = 40 if utterances_per_speaker is None else utterances_per_speaker
    others = 8 if others_per_speaker is None else others_per_speaker
    if not counts and per_speaker < 4:
        raise EmofuseError("--utterances-per-speaker must be at least 4 (one per class)")
    out = Path(out_dir).expanduser()
    prepare(out)
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
    corpus.twins += write_extras(out, sorted(corpus.utterances)[0], profile, seed)
    mark_complete(out, profile, seed, len(corpus.utterances))
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
    s, rng, corpus = session.session, session.rng, session.corpus
    paths = DialogPaths.create(session.sdir, dialog)
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
        write_wav(paths.wav / f"{utt_id}.wav", wav)
        duration = len(wav) / SR
        aligned = utt_id not in session.unaligned
        if aligned:  # the Sphinx scores are drawn only for the files written
            write_alignment(paths.fa, utt_id, plan, rng)
        start, end = t, t + duration
        t = end + float(rng.uniform(0.2, 1.5))
        transcript.append((start, transcript_line(utt_id, start, end, plan.text)))
        blocks[g].append((idx, summary_block(rng, utt_id, code, start, end)))
        # the exact seconds, from the phones' sample positions
        corpus.utterances[utt_id] = SynthUtterance(
            id=utt_id,
            code=code,
            speaker=f"Ses{s:02d}_{g}",
            text=plan.text,
            duration=duration,
            tiers={
                "word": _truth(plan.words, spans),
                "syllable": _truth(plan.sylls, spans),
                "phone": _truth(plan.phone_rows, spans),
            }
            if aligned
            else None,
            dialog=dialog,
            start=start,
        )
        session.bar.update()
    write_transcript(paths.txt / f"{dialog}.txt", dialog, transcript, untimed, xx, rng)
    corpus.odd_lines += untimed + xx
    write_summary(paths.emo / f"{dialog}.txt", [b for g in "FM" for _, b in sorted(blocks[g])])


__all__ = [
    "PROFILES",
    "WORDS",
    "SynthUtterance",
    "SyntheticCorpus",
    "dialog_names",
    "write_synthetic_corpus",
]
