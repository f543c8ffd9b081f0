"""Segment-level speech (phone / syllable / word rows) with the frames as the fallback.

A segment stream's rows are means of the cached frames over a forced alignment's spans. An
utterance that has no alignment (``aligned`` False) or no segment at a tier (an all-False mask)
reads its frames in that tier's place, so a segment branch or probe always sees real rows while the
aligned utterances of the same batch keep their segments (docs/heads.md, "Multi-level fusion").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from emofuse.heads.base import pick


def _pad_rows(x: Tensor, length: int) -> Tensor:
    """(B, M, ...) -> (B, length, ...), zeros after the M rows."""
    return F.pad(x, (0, 0) * (x.dim() - 2) + (0, length - x.shape[1]))


def with_frame_fallback(
    frames: Tensor, f_mask: Tensor, segs: Tensor, s_mask: Tensor, use_frames: Tensor
) -> tuple[Tensor, Tensor]:
    """Per utterance: its segments, or its frames where ``use_frames`` (B,) is True.

    ``frames`` (B, T, ...) and ``segs`` (B, S, ...) share their trailing dims; returns (B, M, ...)
    and its (B, M) mask, M = max(T, S)."""
    length = max(frames.shape[1], segs.shape[1])
    frames, segs = _pad_rows(frames, length), _pad_rows(segs, length)
    f_mask, s_mask = _pad_rows(f_mask, length), _pad_rows(s_mask, length)
    pick_frames = use_frames.view(-1, *[1] * (frames.dim() - 1))
    seq = torch.where(pick_frames, frames, segs)  # (B, M, ...)
    mask = torch.where(use_frames[:, None], f_mask, s_mask)  # (B, M)
    return seq, mask


def tier_rows(batch: dict[str, Tensor], tier: str) -> tuple[Tensor, Tensor, Tensor]:
    """A tier's rows (B, S, ...), their mask without the fallback utterances, and ``use_frames``
    (B,): True where the utterance has no segment at ``tier`` or no alignment at all."""
    segs, s_mask = pick(batch, tier)  # (B, S, L, D), (B, S)
    use_frames = ~s_mask.any(1)  # (B,) no segments at this tier
    aligned = batch.get("aligned")
    if aligned is not None:
        use_frames = use_frames | ~aligned.bool()
    return segs, s_mask & ~use_frames[:, None], use_frames
