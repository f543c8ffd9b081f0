"""Alignment tiers → frame spans → pooled segment embeddings.

A corpus gives alignment tiers in seconds (``(start_s, end_s, symbol)``, end exclusive; IEMOCAP's
2-frame Sphinx delay is already applied by the reader). A speech model gives frames at its own rate
(50 Hz for the HuBERT / wav2vec 2.0 / Whisper families). This module maps one onto the other and
pools each segment as the mean of its frames, for every stored layer at once.

The mapping generalises the one IEMOCAP users know: at 50 Hz a 10 ms segment [s, e] (inclusive,
after the delay) covers frames [s // 2, e // 2]. With ``end_s = (e + 1) / 100`` that is
``[floor(start_s * rate), ceil(end_s * rate))``, which holds for any frame rate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

# Sphinx silences and non-speech tokens: not words, so dropped from pooling by default.
_SILENCES = frozenset({"<s>", "</s>", "<sil>", "SIL"})
_ALT_PRON_RE = re.compile(r"\(\d+\)$")  # WHAT(2) -> WHAT
_EPS = 1e-6  # float tolerance so 0.76 s * 50 Hz (= 38.000000004) does not round up a frame


def is_filler(symbol: str) -> bool:
    """True for silences and fillers (``<s>``, ``</s>``, ``<sil>``, ``SIL``, ``++…++``, ``+…+``)."""
    # phones in context carry "(left,right) position": "SIL(B,E) s" and "SIL b" are still SIL
    bare = symbol.split("(", 1)[0].split(" ", 1)[0].strip()
    # ++LAUGHTER++ (word tier), +BREATHING+ (phone tier)
    return bare in _SILENCES or (len(bare) > 1 and bare.startswith("+") and bare.endswith("+"))


def clean_symbol(symbol: str) -> str:
    """The symbol a head sees: alternate-pronunciation markers removed (``WORD(2)`` → ``WORD``)."""
    return _ALT_PRON_RE.sub("", symbol.strip())


@dataclass
class SegmentSpans:
    """One utterance's segments at the model frame rate: ``spans`` (S, 2) int32 [start, end)."""

    spans: np.ndarray
    symbols: list[str]


def tier_to_spans(
    segments: Sequence[tuple[float, float, str]],
    frame_rate: float,
    n_frames: int,
    keep_fillers: bool = False,
) -> SegmentSpans:
    """Map one alignment tier onto model frames.

    Spans are clipped to the true frame count and never empty (at least one frame), so every kept
    segment gets an embedding even when the model's length formula drops the last partial frame.
    """
    kept = [(s, e, sym) for s, e, sym in segments if keep_fillers or not is_filler(sym)]
    if not kept or n_frames <= 0:
        return SegmentSpans(np.zeros((0, 2), np.int32), [])
    times = np.asarray([(s, e) for s, e, _ in kept], dtype=np.float64) * frame_rate  # (S, 2)
    start = np.floor(times[:, 0] + _EPS).astype(np.int64)
    end = np.ceil(times[:, 1] - _EPS).astype(np.int64)
    start = np.clip(start, 0, n_frames - 1)
    end = np.clip(end, start + 1, n_frames)  # never empty, never past the last real frame
    spans = np.stack([start, end], axis=1).astype(np.int32)  # (S, 2)
    return SegmentSpans(spans, [clean_symbol(sym) for _, _, sym in kept])


def pool_spans(frames: torch.Tensor, spans: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Mean of ``frames`` over each span, all spans in one vectorised call.

    frames: (T, L, D); spans: (S, 2) [start, end) with end > start. Returns (S, L, D).
    Spans may overlap (neighbouring segments can share a 20 ms frame), so each frame is gathered
    once per span it belongs to and summed with ``index_add_`` — exact sums, no cumsum cancellation.
    Several utterances can be pooled together by concatenating their frames and offsetting spans.
    """
    spans_t = torch.as_tensor(np.asarray(spans), dtype=torch.long, device=frames.device)
    n_seg = spans_t.shape[0]
    out = frames.new_zeros((n_seg, *frames.shape[1:]))  # (S, L, D)
    if n_seg == 0:
        return out
    lengths = spans_t[:, 1] - spans_t[:, 0]  # (S,)
    seg_of_row = torch.repeat_interleave(torch.arange(n_seg, device=frames.device), lengths)
    # frame index of each gathered row: span start + position inside the span
    first_row = torch.cumsum(lengths, 0) - lengths  # (S,)
    pos = torch.arange(seg_of_row.numel(), device=frames.device) - first_row[seg_of_row]
    rows = frames[spans_t[seg_of_row, 0] + pos]  # (sum lengths, L, D)
    out.index_add_(0, seg_of_row, rows)
    return out / lengths.to(frames.dtype).view(-1, *([1] * (frames.dim() - 1)))


def pool_utterances(
    frames: Sequence[torch.Tensor], spans: Sequence[np.ndarray]
) -> list[torch.Tensor]:
    """Pool several utterances' segments in one call: frames[i] (T_i, L, D), spans[i] (S_i, 2)."""
    if not frames:
        return []
    spans = [np.asarray(s, np.int64).reshape(-1, 2) for s in spans]
    # only utterances with segments are gathered (an unaligned batch copies no frames at all)
    used = [i for i, s in enumerate(spans) if len(s)]
    out = [f.new_zeros((0, *f.shape[1:])) for f in frames]
    if not used:
        return out
    offsets = np.cumsum([0] + [frames[i].shape[0] for i in used[:-1]])
    all_spans = np.concatenate([spans[i] + o for i, o in zip(used, offsets, strict=True)])
    together = frames[used[0]] if len(used) == 1 else torch.cat([frames[i] for i in used], 0)
    if together.dtype == torch.float16:  # stored frames: sum in float32, not in float16
        together = together.float()
    pooled = pool_spans(together, all_spans)  # (sum S_i, L, D)
    for i, p in zip(used, torch.split(pooled, [len(spans[i]) for i in used], 0), strict=True):
        out[i] = p
    return out
