"""Multi-level co-attention fusion (Zhao, Wang & Wang, Interspeech 2022: wav2vec 2.0 + BERT).

Only the abstract is public, so this docstring is the reference reading:
- Speech at up to four granularities: ``frame`` (the cached frames) and ``phone`` / ``syllable`` /
  ``word`` (segment means pooled from the frames over forced-alignment spans); text = BERT tokens.
- One branch per selected granularity (``granularities``, any non-empty subset). A branch is a
  co-attention block: speech rows attend to text tokens and text tokens attend to speech rows, each a
  post-norm cross-attention layer with residual, LayerNorm and a GELU feed-forward (``AttentionLayer``,
  the same layer TDFNet uses for eq. 7). Both outputs are AVG-MAX pooled (masked mean and max):
  a branch gives 4 d values.
- The branch vectors are concatenated -> MLP (Linear, GELU, dropout = ``embed``) -> Linear classifier.

Settled choices:
- One speech ``LayerMix`` and one Linear to ``d_model`` serve the frames and every segment stream
  (segments are means of the same cached layers, so one layer weighting fits all; this needs the
  segment streams loaded with the same layers as ``speech``). Text has its own mix and Linear.
- Unaligned utterances (``aligned`` False, or a granularity with no segments: an all-False
  ``g_mask``) fall back to their frames in that segment branch, so every branch always sees real
  rows; aligned utterances in the same batch keep their segments.
- Sizes are not in the abstract: ``paper`` uses the encoder width 768 with 12 heads and a 3072
  feed-forward (BERT-base's), an MLP of 256; ``small`` trains on 2 CPU cores in minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emofuse.errors import EmofuseError
from emofuse.heads.base import (
    AttentionLayer,
    Head,
    HeadConfig,
    InputDims,
    LayerMix,
    avg_max_pool,
    pick,
    truncate,
)
from emofuse.heads.recipes import SMALL_RECIPE, SMALL_REGULARISATION
from emofuse.streams import GRANULARITIES


@dataclass
class CoAttentionConfig(HeadConfig):
    granularities: list[str] = field(default_factory=lambda: list(GRANULARITIES))
    d_model: int = 768
    heads: int = 12
    ffn: int = 3072
    hidden: int = 256  # MLP width (= embedding size)
    max_speech_len: int | None = None  # frames kept per utterance (None = all)
    max_text_len: int | None = None

    def validate(self) -> None:
        super().validate()
        bad = [g for g in self.granularities if g not in GRANULARITIES]
        if bad or not self.granularities or len(set(self.granularities)) < len(self.granularities):
            raise EmofuseError(
                f"--set granularities={','.join(self.granularities)}: give a non-empty subset of "
                f"{','.join(GRANULARITIES)} without repeats"
            )
        if self.d_model % self.heads:
            raise EmofuseError(
                f"--set d_model={self.d_model}: must be divisible by heads={self.heads}"
            )


class CoAttentionBlock(nn.Module):
    """Speech -> text and text -> speech cross-attention; pooled to (B, 4d)."""

    def __init__(self, cfg: CoAttentionConfig) -> None:
        super().__init__()
        self.speech_to_text = AttentionLayer(cfg.d_model, cfg.heads, cfg.ffn, cfg.dropout)
        self.text_to_speech = AttentionLayer(cfg.d_model, cfg.heads, cfg.ffn, cfg.dropout)

    def forward(self, s: Tensor, s_mask: Tensor, t: Tensor, t_mask: Tensor) -> Tensor:
        s_out = self.speech_to_text(s, s_mask, t, t_mask)  # (B, S, d): speech queries text
        t_out = self.text_to_speech(t, t_mask, s, s_mask)  # (B, N, d): text queries speech
        return torch.cat([avg_max_pool(s_out, s_mask), avg_max_pool(t_out, t_mask)], dim=-1)


def with_frame_fallback(
    frames: Tensor, f_mask: Tensor, segs: Tensor, s_mask: Tensor, use_frames: Tensor
) -> tuple[Tensor, Tensor]:
    """Per utterance: its segments, or its frames where ``use_frames`` (B,) is True."""
    length = max(frames.shape[1], segs.shape[1])
    frames = F.pad(frames, (0, 0, 0, length - frames.shape[1]))  # (B, M, d)
    segs = F.pad(segs, (0, 0, 0, length - segs.shape[1]))  # (B, M, d)
    f_mask = F.pad(f_mask, (0, length - f_mask.shape[1]))  # (B, M)
    s_mask = F.pad(s_mask, (0, length - s_mask.shape[1]))  # (B, M)
    seq = torch.where(use_frames[:, None, None], frames, segs)  # (B, M, d)
    mask = torch.where(use_frames[:, None], f_mask, s_mask)  # (B, M)
    return seq, mask


class CoAttention(Head):
    """Multi-granularity co-attention fusion of speech (frames/phones/syllables/words) and text."""

    name = "coattention"
    Config = CoAttentionConfig
    presets = {
        "paper": {},
        # layer_mix=concat: the input Linear reads every layer (validation UA 0.768 vs 0.682 with
        # the weighted mix, frame branch, RAVDESS lopo; bench/RESULTS.md)
        "small": {
            "d_model": 64,
            "heads": 4,
            "ffn": 128,
            "hidden": 64,
            "layer_mix": "concat",
            **SMALL_REGULARISATION,
        },
    }

    recipes = {"small": SMALL_RECIPE}  # `paper` and no preset: the papers' loop

    @classmethod
    def fit_to_cache(
        cls, cfg: CoAttentionConfig, table: dict[str, Any], given: set[str]
    ) -> dict[str, str]:
        """No aligned utterance in the cache: every segment branch would read the frames (the
        fallback), so the default granularities become the frame branch alone (~1/4 the cost)."""
        segments = [g for g in cfg.granularities if g != "frame"]
        aligned = table.get("aligned")
        if "granularities" in given or not segments or aligned is None or any(aligned):
            return {}
        cfg.granularities = ["frame"]
        return {
            "granularities": "frame only: no utterance of the cache has a forced alignment, so "
            f"the {'/'.join(segments)} branches would all read the frames (extract from an "
            "aligned manifest for them, or --set granularities=... to keep them)"
        }

    @classmethod
    def required_streams(cls, cfg: CoAttentionConfig) -> set[str]:
        # Frames are always needed: they are the fallback for unaligned utterances.
        return {"speech", "text"} | {g for g in cfg.granularities if g != "frame"}

    def __init__(self, cfg: CoAttentionConfig, dims: InputDims, n_classes: int) -> None:
        super().__init__(cfg, dims, n_classes)
        speech_dims = dims.get("speech")
        for g in cfg.granularities:
            if g != "frame" and dims.get(g) != speech_dims:
                raise EmofuseError(
                    f"the '{g}' stream has (layers, dim) {dims.get(g)} but speech has "
                    f"{speech_dims}: load both with the same speech_layers"
                )
        t_layers, t_width = dims.get("text")
        self.speech_mix = LayerMix.from_config(speech_dims[0], cfg)
        self.text_mix = LayerMix.from_config(t_layers, cfg)
        self.speech_proj = nn.Linear(self.speech_mix.out_dim(speech_dims[1]), cfg.d_model)
        self.text_proj = nn.Linear(self.text_mix.out_dim(t_width), cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.branches = nn.ModuleDict({g: CoAttentionBlock(cfg) for g in cfg.granularities})
        self.mlp = nn.Sequential(
            nn.Linear(4 * cfg.d_model * len(cfg.granularities), cfg.hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
        )
        self.classifier = nn.Linear(cfg.hidden, n_classes)

    @classmethod
    def max_lengths(cls, cfg: CoAttentionConfig) -> dict[str, int]:
        limits = {"speech": cfg.max_speech_len, "text": cfg.max_text_len}
        return {k: v for k, v in limits.items() if v is not None}

    def _speech(self, x: Tensor) -> Tensor:
        return self.drop(self.speech_proj(self.speech_mix(x)))  # (B, T, L, D) -> (B, T, d)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        frames, f_mask = truncate(*pick(batch, "speech"), self.cfg.max_speech_len)
        text, t_mask = truncate(*pick(batch, "text"), self.cfg.max_text_len)
        frames = self._speech(frames)  # (B, T, d)
        text = self.drop(self.text_proj(self.text_mix(text)))  # (B, N, d)
        aligned = batch.get("aligned")
        pooled = []
        for g, branch in self.branches.items():
            if g == "frame":
                seq, mask = frames, f_mask
            else:
                segs, s_mask = pick(batch, g)  # (B, S, L, D), (B, S)
                use_frames = ~s_mask.any(1)  # (B,) no segments at this granularity
                if aligned is not None:
                    use_frames = use_frames | ~aligned.bool()
                s_mask = s_mask & ~use_frames[:, None]
                seq, mask = with_frame_fallback(
                    frames, f_mask, self._speech(segs), s_mask, use_frames
                )
            pooled.append(branch(seq, mask, text, t_mask))  # (B, 4d)
        return self.mlp(torch.cat(pooled, dim=-1))  # (B, hidden)
