"""Word error rate against gold transcripts (jiwer), with the normalisation stated.

Both sides get the same normalisation before scoring: non-speech tags (`[LAUGHTER]`) removed,
lowercased, every character other than a letter, a digit or a word-internal apostrophe replaced by a
space, whitespace collapsed. Numbers are not verbalised ("2" and "two" differ). WER is corpus-level:
(substitutions + deletions + insertions) / reference words, over every row that has gold text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from emofuse.corpus.text import normalize_text

NORMALISATION = "tags removed, lowercase, punctuation removed (word-internal apostrophes kept), spaces collapsed"
_NOT_WORD = re.compile(r"[^\w']+")
_EDGE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")


def normalise_for_wer(text: str) -> str:
    text = normalize_text(text, "default").lower().replace("_", " ")
    text = _EDGE_APOSTROPHE.sub(" ", _NOT_WORD.sub(" ", text))
    return " ".join(text.split())


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> tuple[float, int]:
    """(WER as a fraction, reference words) over pairs whose normalised reference is not empty."""
    import jiwer

    pairs = [(normalise_for_wer(r), normalise_for_wer(h)) for r, h in zip(refs, hyps, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return float("nan"), 0
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    n_ref = sum(len(r.split()) for r, _ in pairs)
    errors = out.substitutions + out.deletions + out.insertions
    return errors / n_ref, n_ref
