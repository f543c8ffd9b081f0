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
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from emofuse.corpus.utterance import Segment
from emofuse.errors import EmofuseError
from emofuse.progress import progress_bar

SR = 16_000
UNIT = SR // 100  # samples per 10 ms Sphinx frame
DELAY = 2  # frames: seconds = (frame + 2) / 100
MARKER = ".emofuse-synthetic.json"
PROFILES = ("demo", "counts")
FOUR = ("neu", "hap", "sad", "ang")

# ---------------------------------------------------------------- real-corpus numbers (iemocap.md)
# session -> (ang, hap+exc, sad, neu); speaker -> 4-class total
COUNTS_4 = {
    1: (229, 278, 194, 384),
    2: (137, 327, 197, 362),
    3: (240, 286, 305, 320),
    4: (327, 303, 143, 258),
    5: (170, 442, 245, 384),
}
SPEAKER_4 = {
    (1, "F"): 528, (1, "M"): 557, (2, "F"): 481, (2, "M"): 542, (3, "F"): 522,
    (3, "M"): 629, (4, "F"): 528, (4, "M"): 503, (5, "F"): 590, (5, "M"): 651,
}  # fmt: skip
HAP_TOTAL = 595  # of the 1,636 hap+exc, the rest are exc
OTHER_CODES = {"xxx": 2507, "fru": 1849, "sur": 107, "fea": 40, "oth": 3, "dis": 2}
GENDER_TOTAL = {"F": 4800, "M": 5239}
N_UNTIMED, N_XX = 152, 48  # the 200 odd transcript lines
UNALIGNED = ("Ses03M_impro03_M001", "Ses03F_impro07_M030")  # no ForcedAlignment files

# ------------------------------------------------------------------------------------- voices
VOICES = {  # pitch factor, range (semitones), tempo, loudness, spectral tilt, breathiness
    "neu": dict(pitch=1.0, range=2.0, tempo=1.0, loud=1.0, tilt=1.1, breath=0.08),
    "hap": dict(pitch=1.3, range=6.5, tempo=1.12, loud=1.35, tilt=0.85, breath=0.10),
    "sad": dict(pitch=0.87, range=1.2, tempo=0.72, loud=0.5, tilt=1.55, breath=0.35),
    "ang": dict(pitch=1.18, range=4.0, tempo=1.22, loud=1.9, tilt=0.55, breath=0.03),
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
WORDS = {
    "neu": (
        "the a we you it is was to and of that this there they have just so well okay what time "
        "some day going think know said table paper street window number morning later maybe "
        "right now here then about car office meeting letter"
    ).split(),
    "hap": (
        "great love wonderful amazing happy fun yeah excited awesome perfect beautiful lucky "
        "congratulations laugh fantastic party"
    ).split(),
    "sad": (
        "sorry miss lost alone cry tired hurt sad died gone empty lonely goodbye funeral tears "
        "nobody"
    ).split(),
    "ang": (
        "hate stupid damn never shut enough ridiculous sick furious liar idiot stop fault angry "
        "unfair get"
    ).split(),
}
TAGS = {  # transcript tag -> alignment filler (word tier) and phone symbol
    "[LAUGHTER]": ("++LAUGHTER++", "+LAUGHTER+"),
    "[BREATHING]": ("++BREATHING++", "+BREATHING+"),
    "[GARBAGE]": ("++GARBAGE++", "+GARBAGE+"),
    "[garbage]": ("++GARBAGE++", "+GARBAGE+"),
    "[LIPSMACK]": ("++LIPSMACK++", "+LIPSMACK+"),
}
UNTIMED = ("M: Yeah.", "M: Yeah. ", "F:Umm.", "M:", "F :Here you go.")
CATEGORY = {
    "neu": "Neutral", "hap": "Happiness", "exc": "Excited", "sad": "Sadness", "ang": "Anger",
    "fru": "Frustration", "sur": "Surprise", "fea": "Fear", "oth": "Other", "dis": "Disgust",
}  # fmt: skip
PHONES = (
    "AA AE AH AO AW AX AXR AY B CH D DD DX DH EH ER EY F G HH IH IX IY JH K KD L M N NG OW OY "
    "P R S SH T TD TH TS UH UW V W Y Z ZH"
).split()

# ----------------------------------------------------------------------------- pronunciations
_DIGRAPHS = {"sh": "SH", "ch": "CH", "th": "TH", "ng": "NG", "ee": "IY", "oo": "UW", "ou": "AW",
             "ai": "EY", "ay": "EY", "oa": "OW", "ea": "IY", "ck": "K"}  # fmt: skip
_LETTERS = dict(zip("abcdefghijklmnopqrstuvwxyz", (
    "AE B K D EH F G HH IH JH K L M N AO P K R S T AH V W K IY Z").split(), strict=True))  # fmt: skip
VOWELS = {"AA", "AE", "AH", "AO", "AW", "AX", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "UW"}
FORMANTS = {  # vowel / sonorant -> (F1, F2) in Hz
    "IY": (270, 2290), "IH": (390, 1990), "EH": (530, 1840), "AE": (660, 1720),
    "AH": (520, 1190), "AA": (730, 1090), "AO": (570, 840), "UW": (300, 870),
    "ER": (490, 1350), "AW": (700, 1100), "EY": (450, 2000), "OW": (500, 900),
    "M": (250, 1000), "N": (250, 1400), "NG": (250, 1200), "L": (360, 1300),
    "R": (420, 1300), "W": (300, 700), "Y": (280, 2200),
}  # fmt: skip
# noise bands (Hz); few distinct bands keep the generator fast (one inverse FFT per band used)
HISS, BROAD, BREATH = (2500.0, 7500.0), (500.0, 7000.0), (300.0, 6000.0)
NOISE_BAND = {"S": HISS, "Z": HISS, "SH": HISS, "ZH": HISS, "CH": HISS, "JH": HISS,
              "F": BROAD, "V": BROAD, "TH": BROAD, "DH": BROAD, "HH": BROAD}  # fmt: skip
STOPS = {"B", "D", "G", "P", "T", "K"}
VOICED_NOISE = {"Z", "ZH", "JH", "V", "DH"}


def pronounce(word: str) -> list[str]:
    """A toy letter-to-phone rule: enough to give every word its own stable phone string."""
    w = "".join(c for c in word.lower() if c.isalpha())
    if len(w) > 3 and w.endswith("e") and w[-2] not in "aeiou":
        w = w[:-1]  # silent final e
    phones: list[str] = []
    i = 0
    while i < len(w):
        if w[i : i + 2] in _DIGRAPHS:
            ph, i = _DIGRAPHS[w[i : i + 2]], i + 2
        else:
            ph, i = _LETTERS[w[i]], i + 1
        if not phones or phones[-1] != ph:
            phones.append(ph)
    return phones


def syllabify(phones: list[str]) -> list[list[str]]:
    """Onset consonants + vowel per syllable; trailing consonants join the last syllable."""
    sylls: list[list[str]] = [[]]
    for ph in phones:
        sylls[-1].append(ph)
        if ph in VOWELS:
            sylls.append([])
    if not sylls[-1]:
        sylls.pop()
    elif len(sylls) > 1 and not any(p in VOWELS for p in sylls[-1]):
        sylls[-2].extend(sylls.pop())
    return sylls


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


def dialog_names(session: int) -> list[str]:
    """The session's dialogs: 28/30/32/30/31, irregular names included (iemocap.md)."""
    names = []
    for letter in "FM":
        base = f"Ses{session:02d}{letter}"
        impros = [f"impro{i:02d}" for i in range(1, 9)]
        if session == 1:
            impros.remove("impro08")
        if session == 3 and letter == "M":
            impros = [i for i in impros if i not in ("impro05", "impro08")]
            impros += ["impro05a", "impro05b", "impro08a", "impro08b"]
        scripts = ["script01_1", "script01_2", "script01_3", "script02_1", "script02_2"]
        scripts += ["script03_1", "script03_2"]
        if session == 5 and letter == "M":
            scripts.append("script01_1b")
        names += [f"{base}_{n}" for n in sorted(impros) + scripts]
    return names


def _split(total: int, weights: list[float]) -> list[int]:
    """Integers proportional to `weights` that sum exactly to `total` (largest remainders)."""
    w = np.asarray(weights, dtype=float)
    raw = total * w / w.sum()
    out = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - out), kind="stable")[: total - out.sum()]:
        out[i] += 1
    return out.tolist()


def _label_plan(profile: str, rng: np.random.Generator, per_speaker: int, others: int) -> dict:
    """(session, letter) -> shuffled list of corpus codes for that speaker."""
    plan: dict[tuple[int, str], list[str]] = {}
    if profile == "demo":
        other_cycle = ["xxx", "fru", "xxx", "sur", "fru", "xxx", "fea", "oth", "xxx", "dis"]
        k = 0
        for s in range(1, 6):
            for g in "FM":
                codes = [FOUR[i % 4] for i in range(per_speaker)]
                # ~40 % of the happy class is "exc", as in the real corpus (hap 595 / exc 1,041)
                happy = [i for i, c in enumerate(codes) if c == "hap"]
                for i in happy[::2]:
                    codes[i] = "exc"
                for _ in range(others):
                    codes.append(other_cycle[k % len(other_cycle)])
                    k += 1
                plan[(s, g)] = [str(c) for c in rng.permutation(codes)]
        return plan
    # counts: exact 4-class table per session and label, split over the two speakers
    hap_by_session = _split(HAP_TOTAL, [COUNTS_4[s][1] for s in range(1, 6)])
    others_by = {
        g: _split(GENDER_TOTAL[g] - sum(SPEAKER_4[(s, g)] for s in range(1, 6)), [1] * 5)
        for g in "FM"
    }
    pool = [c for c, n in OTHER_CODES.items() for _ in range(n)]
    pool = [str(c) for c in rng.permutation(pool)]
    for s in range(1, 6):
        ang, hapexc, sad, neu = COUNTS_4[s]
        f_share = SPEAKER_4[(s, "F")]
        per_label = {}
        for lab, n in (("ang", ang), ("hapexc", hapexc), ("sad", sad), ("neu", neu)):
            per_label[lab] = _split(n, [f_share, sum(COUNTS_4[s]) - f_share])
        # fix the per-speaker totals exactly: move the rounding difference through "neu"
        diff = f_share - sum(v[0] for v in per_label.values())
        per_label["neu"] = [per_label["neu"][0] + diff, per_label["neu"][1] - diff]
        hap_split = _split(hap_by_session[s - 1], per_label["hapexc"])
        for gi, g in enumerate("FM"):
            n_hap = hap_split[gi]
            codes = ["ang"] * per_label["ang"][gi] + ["sad"] * per_label["sad"][gi]
            codes += ["neu"] * per_label["neu"][gi] + ["hap"] * n_hap
            codes += ["exc"] * (per_label["hapexc"][gi] - n_hap)
            n_other = others_by[g][s - 1]
            codes += pool[:n_other]
            pool = pool[n_other:]
            plan[(s, g)] = [str(c) for c in rng.permutation(codes)]
    return plan


def _speaker_voice(rng: np.random.Generator, gender: str) -> dict:
    return {
        "f0": rng.uniform(180, 235) if gender == "F" else rng.uniform(98, 135),
        "formant": rng.uniform(1.08, 1.2) if gender == "F" else rng.uniform(0.92, 1.02),
        "tempo": rng.uniform(0.9, 1.1),
        "loud": rng.uniform(0.8, 1.25),
        "tilt": rng.uniform(-0.15, 0.15),
        "breath": rng.uniform(0.8, 1.3),
        "range": rng.uniform(0.8, 1.25),
    }


def _mix(weights: dict[str, float]) -> dict[str, float]:
    keys = VOICES["neu"].keys()
    return {k: sum(w * VOICES[v][k] for v, w in weights.items()) for k in keys}


# ------------------------------------------------------------------------------------ content
@dataclass
class _Plan:
    text: str
    # flat phones: (phone symbol for the tier, base phone, units, kind) ; kind: word|sil|filler
    phones: list[tuple[str, str, int, str]]
    words: list[tuple[str, int, int]]  # (symbol, first phone, last phone)
    sylls: list[tuple[str, int, int]]
    accents: list[tuple[int, int, float]]  # (first phone, last phone, height 0..1) per real word


def _sentence(rng, code: str, words_from: str, cfg: dict) -> tuple[list[str], list[str | None]]:
    """Words of one sentence and the tag (or None) that precedes each slot (len = words + 1)."""
    lean = cfg["lexical_p"]
    words: list[str] = []
    budget = cfg["target_units"]
    used = DELAY + 6
    vocab_neu = [w for w in WORDS["neu"] if len(w) <= cfg["max_word_len"]]
    vocab_emo = [w for w in WORDS[words_from] if len(w) <= cfg["max_word_len"]]
    while True:
        pool = vocab_emo if (words_from != "neu" and rng.random() < lean) else vocab_neu
        word = str(pool[rng.integers(len(pool))])
        cost = int(len(pronounce(word)) * 7 * cfg["unit_scale"] / cfg["tempo"]) + 1
        if words and used + cost > budget:
            break
        words.append(word)
        used += cost
    tags: list[str | None] = [None] * (len(words) + 1)
    p_tag = cfg["p_tag"] * (3.0 if code in ("hap", "exc") else 1.0)
    if rng.random() < p_tag:
        tag = "[LAUGHTER]" if code in ("hap", "exc") else str(rng.choice(list(TAGS)))
        tags[int(rng.integers(len(tags)))] = tag
    return words, tags


def _fit(phones: list[tuple[str, str, int, str]], cfg: dict) -> None:
    """Hold the utterance inside the duration range: shorten the longest segments (never below
    min_units) or lengthen the closing silence. Works in whole 10 ms units, before any frame
    is computed, so the tiers stay exact."""
    lo, hi = cfg["units_range"]
    total = sum(p[2] for p in phones)
    while total > hi:
        k = max(range(len(phones)), key=lambda i: phones[i][2])
        if phones[k][2] <= cfg["min_units"]:
            break
        phones[k] = (*phones[k][:2], phones[k][2] - 1, phones[k][3])
        total -= 1
    if total < lo:
        phones[-1] = (*phones[-1][:2], phones[-1][2] + lo - total, phones[-1][3])


def _plan(rng, code: str, words_from: str, voice: dict, cfg: dict) -> _Plan:
    words, tags = _sentence(rng, code, words_from, cfg)
    scale = cfg["unit_scale"] / voice["tempo"]

    def units(base: float) -> int:
        return max(cfg["min_units"], int(round(base * scale * rng.uniform(0.8, 1.25))))

    phones: list[tuple[str, str, int, str]] = []
    wrows: list[tuple[str, int, int]] = []
    srows: list[tuple[str, int, int]] = []
    accents: list[tuple[int, int, float]] = []
    text_parts: list[str] = []

    def silence(sym: str, n: int) -> None:
        phones.append(("SIL", "SIL", n, "sil"))
        wrows.append((sym, len(phones) - 1, len(phones) - 1))
        srows.append(("SIL", len(phones) - 1, len(phones) - 1))

    silence("<s>", max(cfg["min_units"], units(cfg["edge_units"][0])))
    for i in range(len(words) + 1):
        tag = tags[i]
        if tag is not None:
            filler, phone = TAGS[tag]
            n = units(30)
            phones.append((phone, phone, n, "filler"))
            wrows.append((filler, len(phones) - 1, len(phones) - 1))
            srows.append((phone, len(phones) - 1, len(phones) - 1))
            text_parts.append(tag)
        if i == len(words):
            break
        word = words[i]
        pron = pronounce(word)
        symbol = word.upper()
        if rng.random() < 0.1 and len(pron) > 1:  # an alternate pronunciation: WORD(2)
            symbol += "(2)"
            pron = pron[:-1] + ["AH"] if pron[-1] in VOWELS else pron + ["AH"]
        first = len(phones)
        for j, ph in enumerate(pron):
            base = 9 if ph in VOWELS else (6 if ph in STOPS else 7)
            n = units(base)
            wpos = (
                "s" if len(pron) == 1 else ("b" if j == 0 else ("e" if j == len(pron) - 1 else "i"))
            )
            phones.append((ph, ph, n, "word:" + wpos))
        a = first
        for syl in syllabify(pron):
            srows.append(("_".join(syl), a, a + len(syl) - 1))
            a += len(syl)
        wrows.append((symbol, first, len(phones) - 1))
        accents.append((first, len(phones) - 1, float(rng.uniform(0.3, 1.0))))
        text_parts.append(word)
        if i < len(words) - 1 and rng.random() < cfg["p_pause"]:
            silence("<sil>", units(15))
    silence("</s>", max(cfg["min_units"], units(cfg["edge_units"][1])))
    _fit(phones, cfg)
    # context-dependent phone symbols as Sphinx writes them: AH(HH,L) b
    named = []
    for k, (ph, base, n, kind) in enumerate(phones):
        if kind.startswith("word:"):
            left = phones[k - 1][1] if phones[k - 1][3].startswith("word") else "SIL"
            right = phones[k + 1][1] if phones[k + 1][3].startswith("word") else "SIL"
            ph = f"{base}({left},{right}) {kind[5:]}"
        named.append((ph, base, n, kind))
    # the transcript: sentence case, end punctuation by emotion, occasional double space
    sentence_words = [p for p in text_parts]
    for k, p in enumerate(sentence_words):
        if not p.startswith("["):
            sentence_words[k] = p.capitalize() if p != "i" else "I"
            break
    end = "!" if code in ("ang", "hap", "exc") and rng.random() < 0.6 else "."
    text = ""
    for k, p in enumerate(sentence_words):
        sep = "" if k == 0 else ("  " if rng.random() < 0.05 else " ")
        if p.startswith("[") and k > 0 and rng.random() < 0.5:
            sep = ""  # "…husband.[LAUGHTER]" style
        text += sep + p
        if k == max(i for i, w in enumerate(sentence_words) if not w.startswith("[")):
            text += end
    return _Plan(text=text, phones=named, words=wrows, sylls=srows, accents=accents)


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


def _synthesise(rng, plan: _Plan, voice: dict) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Render the plan; returns the waveform and each phone's [start, end) sample positions."""
    total_units = sum(p[2] for p in plan.phones)
    n = (total_units + DELAY) * UNIT
    # pitch contour in semitones: declination + one accent hump per word
    st = np.arange(total_units + DELAY) * (-0.3 * voice["range"] / (total_units + DELAY))
    starts = np.cumsum([0] + [p[2] for p in plan.phones]) + DELAY  # unit where each phone starts
    for first, last, h in plan.accents:
        a, b = int(starts[first]), int(starts[last + 1])
        st[a:b] += h * voice["range"] * np.sin(np.pi * (np.arange(b - a) + 0.5) / (b - a))
    centres = (np.arange(len(st)) + 0.5) * UNIT
    f0 = voice["f0"] * 2 ** (np.interp(np.arange(n), centres, st) / 12)  # (n,)
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
                gains = k ** (-voice["tilt"]) * _formant_gain(k * fm, f1, f2, voice["formant"])
                harm = _harmonics(phase[seg], gains)  # (m,)
                harm /= np.sqrt(np.sum(gains**2) / 2) + 1e-9
                amp = 1.0 if base in VOWELS else (0.35 if base in FORMANTS else 0.2)
                breath = noise.band(*BREATH, seg)
                y = amp * (harm + voice["breath"] * breath)
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
            y *= 0.05 * voice["loud"]
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
    (default 1–3 s). counts: the real corpus's label counts (iemocap.md), `duration` default
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
    _prepare(out)
    rng = np.random.default_rng(seed)
    corpus = SyntheticCorpus(root=out)
    plan = _label_plan(profile, rng, per_speaker, others)
    voices = {(s, g): _speaker_voice(rng, g) for s in range(1, 6) for g in "FM"}
    short = hi <= 0.3
    base_cfg = {
        "lexical_p": lexical_p,
        "max_word_len": 4 if short else 99,
        "unit_scale": 0.35 if short else 1.0,
        "min_units": 2 if short else 3,
        "p_tag": 0.0 if short else 0.05,
        "edge_units": (3, 2) if short else (25, 20),
        "units_range": (round(lo * 100) - DELAY, round(hi * 100) - DELAY),
        "p_pause": 0.0 if short else 0.15,
    }
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
        unaligned = _unaligned(s, items)
        for d_idx, dialog in enumerate(dialogs):
            _write_dialog(
                sdir, dialog, items[dialog], unaligned, s, voices, base_cfg, (lo, hi), rng, corpus, bar,
                untimed=_share(n_untimed, s, d_idx, len(dialogs), range(1, 6)),
                xx=_share(n_xx, s, d_idx, len(dialogs), (3, 5)),
            )  # fmt: skip
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


def _share(total: int, session: int, d_idx: int, n_dialogs: int, sessions) -> int:
    """How many of `total` odd lines dialog `d_idx` of `session` gets (spread evenly)."""
    sessions = list(sessions)
    if session not in sessions:
        return 0
    per_session = _split(total, [1] * len(sessions))[sessions.index(session)]
    return _split(per_session, [1] * n_dialogs)[d_idx]


def _unaligned(session: int, items: dict[str, list[tuple[str, str]]]) -> set[str]:
    """The ids written without alignment files: the real corpus's two (a 4-class one and another)
    or, in a small corpus where those turns do not exist, turn 000 of the same dialogs. Their
    labels are made 4-class / not 4-class by swapping codes with another utterance of the same
    speaker, so every count stays exact."""
    chosen: set[str] = set()
    if session != 3:
        return chosen
    four = set(FOUR) | {"exc"}
    for utt_id, want_four in zip(UNALIGNED, (True, False), strict=True):
        dialog, last = utt_id.rsplit("_", 1)
        g, idx = last[0], int(last[1:])
        own = [i for i, (gg, _) in enumerate(items.get(dialog, [])) if gg == g]
        if not own:
            continue
        idx = idx if idx < len(own) else 0
        pos = own[idx]
        chosen.add(f"{dialog}_{g}{idx:03d}")
        if (items[dialog][pos][1] in four) == want_four:
            continue
        swaps = [
            (d, j)
            for d, lst in items.items()
            for j, (gg, code) in enumerate(lst)
            if gg == g and (code in four) == want_four and f"{d}_{g}" not in chosen
        ]
        if swaps:
            d, j = swaps[0]
            items[d][j], items[dialog][pos] = (g, items[dialog][pos][1]), (g, items[d][j][1])
    return chosen


def _truth(rows: list[tuple[str, int, int]], spans: list[tuple[int, int]]) -> list[Segment]:
    """Segments in seconds from where their samples really are (phone spans from the synthesiser)."""
    return [(round(spans[a][0] / SR, 4), round(spans[b][1] / SR, 4), sym) for sym, a, b in rows]


def _write_dialog(
    sdir, dialog, items, unaligned, s, voices, base_cfg, dur, rng, corpus, bar, untimed, xx
):
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
        spk = voices[(s, g)]
        mixture, words_from = CODE_VOICE[code] or (
            {str(rng.choice(FOUR)): 0.6, "neu": 0.4},
            str(rng.choice(FOUR)),
        )
        emo = _mix(mixture)
        jitter = lambda sd: float(np.exp(rng.normal(0, sd)))  # noqa: E731
        voice = {
            "f0": spk["f0"] * emo["pitch"] * jitter(0.08),
            "range": spk["range"] * emo["range"] * jitter(0.3),
            "tempo": spk["tempo"] * emo["tempo"] * jitter(0.1),
            "loud": spk["loud"] * emo["loud"] * jitter(0.25),
            "tilt": emo["tilt"] + spk["tilt"] + float(rng.normal(0, 0.15)),
            "breath": spk["breath"] * emo["breath"] * jitter(0.3),
            "formant": spk["formant"],
        }
        cfg = dict(base_cfg, tempo=voice["tempo"])
        cfg["target_units"] = int(rng.uniform(*dur) * 100)
        plan = _plan(rng, code, words_from, voice, cfg)
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
        aligned = utt_id not in unaligned
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
        bar.update()
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
