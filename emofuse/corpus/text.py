"""Transcript normalisation: what reaches the text model (the raw text is always kept).

IEMOCAP transcripts carry non-speech tags (``[LAUGHTER]``, ``[BREATHING]``, ``[garbage]`` …) and
double spaces. A text model has never seen those tags, so by default they are removed and spaces
collapsed; ``raw`` keeps the transcript untouched and ``lower`` additionally lowercases (for
uncased tokenisers that are fed cased text it changes nothing, for cased ones it does).
"""

from __future__ import annotations

import re

from emofuse.errors import EmofuseError

TEXT_NORMS = ("default", "raw", "lower", "tags")

# a bracketed tag without nested brackets, any case: [LAUGHTER], [garbage], [BREATHING] ...
_TAG = re.compile(r"\[[^\[\]]*\]")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str, mode: str = "default") -> str:
    """Return `text` as the text model should see it under normalisation `mode`.

    default: tags removed, whitespace collapsed and stripped; raw: unchanged;
    lower: default + lowercase; tags: tags kept, whitespace collapsed.
    """
    if mode == "raw":
        return text
    if mode not in TEXT_NORMS:
        raise EmofuseError(
            f"unknown text normalisation {mode!r}: choose one of {', '.join(TEXT_NORMS)}"
        )
    if mode != "tags":
        text = _TAG.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    if mode == "lower":
        text = text.lower()
    return text


def find_tags(text: str) -> list[str]:
    """The non-speech tags in a transcript, in order (e.g. ["[LAUGHTER]"])."""
    return _TAG.findall(text)
