"""The procedural voice: speakers, emotions and the synthesiser that renders a sentence plan.

"Phones" are harmonic segments shaped by formant-like gains, fricative noise bands, stop bursts
and silences. Prosody depends on emotion AND speaker (pitch level and range, tempo, loudness,
spectral tilt and breathiness) with per-utterance jitter: cues that survive random-weight speech
encoders (loudness, tilt, pitch).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from emofuse.corpus.synthetic.pronounce import FORMANTS, STOPS, VOICED_NOISE, VOWELS
from emofuse.corpus.synthetic.sentence import Plan
from emofuse.corpus.synthetic.stats import DELAY, SR, UNIT


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


def mix(weights: dict[str, float]) -> Prosody:
    """The weighted sum of the emotions' prosodies."""
    return Prosody(
        **{
            f.name: sum(w * getattr(VOICES[v], f.name) for v, w in weights.items())
            for f in fields(Prosody)
        }
    )


# ----------------------------------------------------------------------------------- synthesis
# noise bands (Hz); few distinct bands keep the generator fast (one inverse FFT per band used)
HISS, BROAD, BREATH = (2500.0, 7500.0), (500.0, 7000.0), (300.0, 6000.0)
NOISE_BAND = {"S": HISS, "Z": HISS, "SH": HISS, "ZH": HISS, "CH": HISS, "JH": HISS,
              "F": BROAD, "V": BROAD, "TH": BROAD, "DH": BROAD, "HH": BROAD}  # fmt: skip
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


def synthesise(rng, plan: Plan, voice: Voice) -> tuple[np.ndarray, list[tuple[int, int]]]:
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
