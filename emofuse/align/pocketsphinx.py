"""Forced alignment with PocketSphinx: its bundled US-English acoustic model and CMUdict.

Two passes per utterance, as PocketSphinx prescribes: a word-level alignment of the transcript
(`set_align_text`), then a phone-level pass over it (`set_alignment`). Frames are 10 ms, relative
to the start of the 16 kHz audio, and every phone spans at least the acoustic model's 3 HMM
states (30 ms). Optional silences between words are not segments.

Words missing from CMUdict (names, numbers written as digits, fragments) are aligned as one
unsegmented spoken-noise span (`[SPEECH]`, phone `+SPN+`): the word keeps its interval in the word
tier, the phone and syllable tiers hold one `+SPN+` segment there, and the word is reported.
Letters with accents are transliterated before the lookup (`café` -> `cafe`, `naïve` -> `naive`:
Unicode NFKD, combining marks dropped; a few letters without a decomposition, `ß` `æ` `ø` …, by a
table); a word whose letters still have no ASCII form (`日本`) is such a reported span too, never
dropped.

An utterance whose alignment falls out of the default search beams (strongly emotional speech,
long vowels) is retried once with much wider beams (on RAVDESS-dev this rescues 2 of 3 such clips);
only then is it reported as unalignable.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emofuse.align.syllables import syllabify, syllable_name
from emofuse.corpus.text import normalize_text
from emofuse.corpus.utterance import Segment

FRAME_S = 0.01
OOV_WORD = "[SPEECH]"
SPOKEN_NOISE = "+SPN+"
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # letters and digits of any script, inner apostrophes
# letters NFKD leaves as they are, written as English spelling would (for the CMUdict lookup only)
_LETTERS = str.maketrans(
    {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"}
)
_ALT = re.compile(r"\(\d+\)$")


@dataclass
class AlignOutcome:
    """Tiers of one utterance, or None with the reason it could not be aligned."""

    tiers: dict[str, list[Segment]] | None
    problem: str | None = None
    oov: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)  # the transcript's words, as aligned


def transliterate(text: str) -> str:
    """``text`` with accents removed (NFKD, combining marks dropped) and ``_LETTERS`` applied."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_LETTERS)


def transcript_words(text: str) -> list[str]:
    """The words to align: tags removed, lowercased, punctuation dropped (`door.` -> `door`),
    accents transliterated (`Café` -> `cafe`); a word of letters with no ASCII form is kept."""
    words = normalize_text(text, "default").lower().replace("’", "'")
    return _WORD.findall(transliterate(words))


class PocketSphinxAligner:
    """One decoder, reused for every utterance (loading the model takes about a second)."""

    def __init__(self, model_dir: str | Path | None = None, dictionary: str | Path | None = None):
        from pocketsphinx import Decoder, get_model_path

        kwargs = {"samprate": 16000, "bestpath": False, "loglevel": "FATAL", "lm": None}
        if model_dir is not None:
            kwargs["hmm"] = str(model_dir)
        kwargs["dict"] = str(dictionary or Path(get_model_path()) / "en-us" / "cmudict-en-us.dict")
        self._kwargs = kwargs
        self.decoder = Decoder(**kwargs)
        self._wide = None  # the wide-beam decoder, made on first need
        self.model_id = (
            f"pocketsphinx:{Path(kwargs.get('hmm', get_model_path('en-us/en-us'))).name}"
        )

    def _wide_decoder(self):
        if self._wide is None:
            from pocketsphinx import Decoder

            self._wide = Decoder(**self._kwargs, beam=1e-80, wbeam=1e-60, pbeam=1e-80)
        return self._wide

    def pronunciation(self, word: str) -> str | None:
        return self.decoder.lookup_word(word)

    def align(self, wav: np.ndarray, text: str) -> AlignOutcome:
        """Align `text` to `wav` (16 kHz mono float32)."""
        words = transcript_words(text)
        if not words:
            return AlignOutcome(None, "no words to align (empty transcript)")
        oov = [w for w in words if self.decoder.lookup_word(w) is None]
        tokens = [OOV_WORD if w in oov else w for w in words]
        pcm = (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        out = self._run(self.decoder, pcm, tokens, words, oov)
        if out.tiers is None and out.problem and out.problem.startswith("no alignment path"):
            out = self._run(self._wide_decoder(), pcm, tokens, words, oov)
        return out

    def _run(self, d, pcm: bytes, tokens: list[str], words: list[str], oov: list[str]):
        try:
            d.set_align_text(" ".join(tokens))
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
            if d.hyp() is None:
                return AlignOutcome(
                    None, "no alignment path: the transcript does not fit the audio", oov, words
                )
            d.set_alignment()
            d.start_utt()
            d.process_raw(pcm, full_utt=True)
            d.end_utt()
            aligned = d.get_alignment()
        except RuntimeError as err:
            return AlignOutcome(None, f"PocketSphinx failed: {err}", oov, words)
        if aligned is None:
            return AlignOutcome(None, "no phone alignment", oov, words)
        return self._tiers(aligned, words, oov)

    def _tiers(self, aligned, words: list[str], oov: list[str]) -> AlignOutcome:
        word_tier: list[Segment] = []
        phone_tier: list[Segment] = []
        syllable_tier: list[Segment] = []
        k = 0  # index into the transcript's words
        for entry in aligned:
            name = _ALT.sub("", entry.name)
            if name.startswith("<") or name in ("[NOISE]",):
                continue  # <sil>, <s>, </s>: silence, not a segment
            if k >= len(words):
                return AlignOutcome(None, "aligner returned more words than the transcript has")
            start, end = entry.start * FRAME_S, (entry.start + entry.duration) * FRAME_S
            word_tier.append((round(start, 2), round(end, 2), words[k]))
            k += 1
            phones = [
                (round(p.start * FRAME_S, 2), round((p.start + p.duration) * FRAME_S, 2), p.name)
                for p in entry
            ]
            phone_tier += phones
            for idx in syllabify([p[2] for p in phones]):
                syllable_tier.append(
                    (
                        phones[idx[0]][0],
                        phones[idx[-1]][1],
                        syllable_name([phones[i][2] for i in idx]),
                    )
                )
        if k != len(words):
            return AlignOutcome(None, f"aligned {k} of {len(words)} words", oov, words)
        tiers = {"word": word_tier, "syllable": syllable_tier, "phone": phone_tier}
        return AlignOutcome(tiers, None, oov, words)
