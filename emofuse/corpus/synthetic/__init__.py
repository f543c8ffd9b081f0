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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from emofuse.corpus.synthetic.pronounce import (
    FORMANTS,
    PHONES,
    STOPS,
    VOICED_NOISE,
    VOWELS,
)
from emofuse.corpus.synthetic.sentence import WORDS, Plan, SpeechStyle, plan_sentence
from emofuse.corpus.synthetic.stats import (
    DELAY,
    FOUR,
    N_UNTIMED,
    N_XX,
    SR,
    UNIT,
    dialog_names,
    label_plan,
    share,
    unaligned_ids,
)
from emofuse.corpus.utterance import Segment
from emofuse.errors import EmofuseError
from emofuse.progress import progress_bar

MARKER = ".emofuse-synthetic.json"
PROFILES = ("demo", "counts")


# ------------------------------------------------------------------------------------- voices
@dataclass(frozen=True)
class Prosody:
    """An emotion's (or a mixture's) voice settings: factors on the speaker's, tilt added to it."""

    pitch: float  # pitch factor
    pitch_range: float  # pitch range (semitones)
    tempo: float
    loud: float  # loudness
    tilt: float  # spectral tilt
    breath: float  # breathiness


VOICES = {
    "neu": Prosody(pitch=1.0, pitch_range=2.0, tempo=1.0, loud=1.0, tilt=1.1, breath=0.08),
    "hap": Prosody(pitch=1.3, pitch_range=6.5, tempo=1.12, loud=1.35, tilt=0.85, breath=0.10),
    "sad": Prosody(pitch=0.87, pitch_range=1.2, tempo=0.72, loud=0.5, tilt=1.55, breath=0.35),
    "ang": Prosody(pitch=1.18, pitch_range=4.0, tempo=1.22, loud=1.9, tilt=0.55, breath=0.03),
}
CODE_VOICE = {  # corpus code -> (voice mixture, word list); None = any of the four at random
    "neu": ({"neu": 1.0}, "neu"),
    "hap": ({"hap": 1.0}, "hap"),
    "exc": ({"hap": 1.0}, "hap"),
    "sad": ({"sad": 1.0}, "sad"),
    "ang": ({"ang": 1.0}, "ang"),
    "fru": ({"ang": 0.5, "neu": 0.5}, "ang"),
    "sur": ({"hap": 0.7, "neu": 0.3}, "hap"),
    "fea": ({"sad": 0.6, "hap": 0.4}, "sad"),
    "xxx": None,
    "oth": ({"neu": 1.0}, "neu"),
    "dis": ({"ang": 0.5, "sad": 0.5}, "ang"),
}
UNTIMED = ("M: Yeah.", "M: Yeah. ", "F:Umm.", "M:", "F :Here you go.")
CATEGORY = {
    "neu": "Neutral", "hap": "Happiness", "exc": "Excited", "sad": "Sadness", "ang": "Anger",
    "fru": "Frustration", "sur": "Surprise", "fea": "Fear", "oth": "Other", "dis": "Disgust",
}  # fmt: skip

# noise bands (Hz); few distinct bands keep the generator fast (one inverse FFT per band used)
HISS, BROAD, BREATH = (2500.0, 7500.0), (500.0, 7000.0), (300.0, 6000.0)
NOISE_BAND = {"S": HISS, "Z": HISS, "SH": HISS, "ZH": HISS, "CH": HISS, "JH": HISS,
              "F": BROAD, "V": BROAD, "TH": BROAD, "DH": BROAD, "HH": BROAD}  # fmt: skip


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


@dataclass(frozen=True)
class SpeakerVoice:
    """One speaker's traits, drawn once per corpus: factors on every emotion's prosody (tilt and
    formant scale aside)."""

    f0: float  # base pitch (Hz)
    formant: float  # formant scale (vocal tract length)
    tempo: float
    loud: float
    tilt: float  # added to the emotion's spectral tilt
    breath: float
    pitch_range: float

    @classmethod
    def draw(cls, rng: np.random.Generator, gender: str) -> SpeakerVoice:
        # keyword arguments are evaluated in the order written: this is the order of the draws
        return cls(
            f0=rng.uniform(180, 235) if gender == "F" else rng.uniform(98, 135),
            formant=rng.uniform(1.08, 1.2) if gender == "F" else rng.uniform(0.92, 1.02),
            tempo=rng.uniform(0.9, 1.1),
            loud=rng.uniform(0.8, 1.25),
            tilt=rng.uniform(-0.15, 0.15),
            breath=rng.uniform(0.8, 1.3),
            pitch_range=rng.uniform(0.8, 1.25),
        )


@dataclass(frozen=True)
class Voice:
    """The voice of one utterance: the speaker's traits × the emotion's prosody × jitter."""

    f0: float  # Hz
    pitch_range: float  # semitones
    tempo: float
    loud: float
    tilt: float
    breath: float
    formant: float

    @classmethod
    def draw(cls, rng: np.random.Generator, speaker: SpeakerVoice, emo: Prosody) -> Voice:
        def jitter(sd: float) -> float:
            return float(np.exp(rng.normal(0, sd)))

        # keyword arguments are evaluated in the order written: this is the order of the draws
        return cls(
            f0=speaker.f0 * emo.pitch * jitter(0.08),
            pitch_range=speaker.pitch_range * emo.pitch_range * jitter(0.3),
            tempo=speaker.tempo * emo.tempo * jitter(0.1),
            loud=speaker.loud * emo.loud * jitter(0.25),
            tilt=emo.tilt + speaker.tilt + float(rng.normal(0, 0.15)),
            breath=speaker.breath * emo.breath * jitter(0.3),
            formant=speaker.formant,
        )


def _mix(weights: dict[str, float]) -> Prosody:
    """The weighted sum of the emotions' prosodies."""
    return Prosody(
        **{
            f.name: sum(w * getattr(VOICES[v], f.name) for v, w in weights.items())
            for f in fields(Prosody)
        }
    )


# ----------------------------------------------------------------------------------- synthesis
_BANK_LEN = 1 << 19  # 32.8 s of noise per band
_BANKS: dict[tuple[float, float], np.ndarray] = {}


def _bank(lo: float, hi: float) -> np.ndarray:
    """A fixed bank of unit-RMS band-limited noise (made once per band, from a fixed seed)."""
    if (lo, hi) not in _BANKS:
        spec = np.fft.rfft(np.random.default_rng(20261123).standard_normal(_BANK_LEN))
        freqs = np.fft.rfftfreq(_BANK_LEN, 1 / SR)
        out = np.fft.irfft(np.where((freqs < lo) | (freqs > hi), 0, spec), _BANK_LEN)
        _BANKS[(lo, hi)] = out / np.sqrt(np.mean(out**2))
    return _BANKS[(lo, hi)]


class _Noise:
    """Band-limited noise for one utterance: a seeded random window into each band's bank
    (per-phone FFTs made the generator several times slower)."""

    def __init__(self, rng: np.random.Generator, n: int):
        self.rng, self.n = rng, n
        self.bands: dict[tuple[float, float], np.ndarray] = {}

    def band(self, lo: float, hi: float, seg: slice) -> np.ndarray:
        if (lo, hi) not in self.bands:
            bank = _bank(lo, hi)
            if self.n >= len(bank):
                bank = np.resize(bank, self.n + 1)
            start = int(self.rng.integers(len(bank) - self.n))
            self.bands[(lo, hi)] = bank[start : start + self.n]
        return self.bands[(lo, hi)][seg]


def _harmonics(phase: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """sum_k gains[k-1] * sin(k * phase) by the Chebyshev recurrence (no per-harmonic sin)."""
    two_cos = 2 * np.cos(phase)
    prev, cur = np.zeros_like(phase), np.sin(phase)
    out = gains[0] * cur
    for g in gains[1:]:
        prev, cur = cur, two_cos * cur - prev
        out += g * cur
    return out


def _formant_gain(freqs: np.ndarray, f1: float, f2: float, scale: float) -> np.ndarray:
    gain = 0.02
    for fc, bw, amp in ((f1 * scale, 90, 1.0), (f2 * scale, 120, 0.7), (2500 * scale, 200, 0.3)):
        gain = gain + amp / (1 + ((freqs - fc) / bw) ** 2)
    return gain


_RAMP = np.sin(np.linspace(0, np.pi / 2, 80)) ** 2  # 5 ms fade at phone edges


def _synthesise(rng, plan: Plan, voice: Voice) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Render the plan; returns the waveform and each phone's [start, end) sample positions."""
    total_units = sum(p[2] for p in plan.phones)
    n = (total_units + DELAY) * UNIT
    # pitch contour in semitones: declination + one accent hump per word
    st = np.arange(total_units + DELAY) * (-0.3 * voice.pitch_range / (total_units + DELAY))
    starts = np.cumsum([0] + [p[2] for p in plan.phones]) + DELAY  # unit where each phone starts
    for first, last, h in plan.accents:
        a, b = int(starts[first]), int(starts[last + 1])
        st[a:b] += h * voice.pitch_range * np.sin(np.pi * (np.arange(b - a) + 0.5) / (b - a))
    centres = (np.arange(len(st)) + 0.5) * UNIT
    f0 = voice.f0 * 2 ** (np.interp(np.arange(n), centres, st) / 12)  # (n,)
    noise = _Noise(rng, n)
    phase = 2 * np.pi * np.cumsum(f0) / SR  # (n,)
    out = np.zeros(n)
    out[: DELAY * UNIT] = 0.002 * rng.standard_normal(DELAY * UNIT)
    pos = DELAY * UNIT
    ramp = _RAMP
    spans: list[tuple[int, int]] = []
    for _sym, base, units, kind in plan.phones:
        m = units * UNIT
        seg = slice(pos, pos + m)
        if kind == "sil":
            y = 0.002 * rng.standard_normal(m)
        else:
            y = np.zeros(m)
            voiced = base in FORMANTS or base in VOICED_NOISE or base in STOPS - {"P", "T", "K"}
            if kind == "filler":
                voiced = base in ("+LAUGHTER+", "+GARBAGE+")
            if voiced:
                fm = float(f0[seg].mean())
                k = np.arange(1, max(2, int(4000 // fm)) + 1)  # (K,)
                f1, f2 = FORMANTS.get(base, (500, 1500))
                gains = k ** (-voice.tilt) * _formant_gain(k * fm, f1, f2, voice.formant)
                harm = _harmonics(phase[seg], gains)  # (m,)
                harm /= np.sqrt(np.sum(gains**2) / 2) + 1e-9
                amp = 1.0 if base in VOWELS else (0.35 if base in FORMANTS else 0.2)
                breath = noise.band(*BREATH, seg)
                y = amp * (harm + voice.breath * breath)
            if base in NOISE_BAND:
                y = y + (0.25 if base in ("F", "TH", "HH", "V", "DH") else 0.5) * noise.band(
                    *NOISE_BAND[base], seg
                )
            if base in STOPS:  # closure, then a burst
                closure = int(m * 0.6)
                y[:closure] *= 0.1
                y[closure:] += (
                    0.6
                    * noise.band(*BROAD, slice(pos + closure, pos + m))
                    * np.exp(-np.arange(m - closure) / 120)
                )
            if kind == "filler":
                if base == "+LAUGHTER+":  # "ha ha": 5 Hz bursts of breathy voice
                    y = (y + 0.6 * noise.band(*BROAD, seg)) * (
                        0.5 + 0.5 * np.sin(2 * np.pi * 5 * np.arange(m) / SR)
                    )
                else:
                    y = y + 0.15 * noise.band(*BREATH, seg)
            if m > 2 * len(ramp):
                y[: len(ramp)] *= ramp
                y[-len(ramp) :] *= ramp[::-1]
            y *= 0.05 * voice.loud
        out[seg] = y
        spans.append((pos, pos + m))
        pos += m
    return out, spans


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
        voice = Voice.draw(rng, session.voices[g], _mix(mixture))
        target_units = int(rng.uniform(*session.duration) * 100)
        plan = plan_sentence(rng, code, words_from, session.style, voice.tempo, target_units)
        wav, spans = _synthesise(rng, plan, voice)
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
