"""The one record every corpus reader produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One alignment segment: (start_s, end_s, symbol). Times in seconds relative to the utterance wav;
# end_s is exclusive (IEMOCAP's inclusive EFrm is converted by the reader: end = (EFrm + 1 + 2) / 100).
Segment = tuple[float, float, str]

TIERS = ("word", "syllable", "phone")


@dataclass
class Utterance:
    id: str
    audio: Path
    text: str  # raw transcript exactly as the corpus has it (tags and all)
    label: str  # after label-set mapping (e.g. "hap" for IEMOCAP "exc" in the 4-class set)
    speaker: str  # IEMOCAP: "Ses01_M" (session + letter of the LAST id field)
    session: str | None = None  # IEMOCAP: "Ses01"
    gender: str | None = None  # "F" | "M" | None
    duration: float | None = None  # seconds, from the audio header when known
    # alignment tiers: name ("word" | "syllable" | "phone") -> segments; None = utterance not aligned
    tiers: dict[str, list[Segment]] | None = None
    split: str | None = None  # "train" | "val" | "test" for predefined splits
    extra: dict[str, Any] = field(default_factory=dict)  # extra manifest columns, corpus info
    # what the text model should see: the reader's normalisation of `text` (emofuse.corpus.text);
    # None = the reader was asked for no normalisation, use `text` as is
    text_norm: str | None = None

    @property
    def aligned(self) -> bool:
        return self.tiers is not None

    @property
    def model_text(self) -> str:
        """The text to feed a text model: the normalised text when there is one, else the raw."""
        return self.text if self.text_norm is None else self.text_norm


ALIGN_SLACK_S = 0.5  # an alignment may end this far past the audio (rounding, a trailing pause)


@dataclass
class CorpusReadResult:
    """What a reader kept, and what it left out and why (reason -> ids or file names)."""

    utterances: list[Utterance]
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, item: str) -> None:
        self.skipped.setdefault(reason, []).append(item)

    def __len__(self) -> int:
        return len(self.utterances)
