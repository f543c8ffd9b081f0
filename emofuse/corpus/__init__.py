"""Corpus readers: IEMOCAP, a user's manifest (CSV/JSONL), and the synthetic demo/test corpus."""

from emofuse.corpus.utterance import TIERS, Segment, Utterance

__all__ = ["TIERS", "Segment", "Utterance"]
