"""Multi-level co-attention fusion (Zhao, Wang & Wang, Interspeech 2022: wav2vec 2.0 + BERT).

Only the abstract is public, so this docstring is the reference reading:
- Speech at up to four granularities: ``frame`` (the cached frames) and ``phone`` / ``syllable`` /
  ``word`` (segment means pooled from the frames over forced-alignment spans); text = BERT tokens.
- One branch per selected granularity (``granularities``, any non-empty subset). A branch is a
  co-attention block: speech rows attend to text tokens and text tokens attend to speech rows, each a
  post-norm cross-attention layer with residual, LayerNorm and a GELU feed-forward (``AttentionLayer``,
  the same layer TDFNet uses for eq. 7). Both outputs are AVG-MAX pooled (masked mean and max):
  a branch gives 4 d values.
- The branch vectors are combined -> MLP (Linear, GELU, dropout = ``embed``) -> Linear classifier.
  ``branch_fusion=concat`` (default) concatenates them (4 d per branch); ``attention`` weights them
  by learned attention (docs/heads.md: "concatenated (or attention-weighted)"): a score
  w^T tanh(W v_g) per branch vector v_g, softmax over the branches, the weighted sum (4 d) — the
  MLP's input then does not grow with the number of granularities, and the weights per utterance
  show which granularity the model leans on (``branch_weights``).

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
from emofuse.heads.granularity import tier_rows, with_frame_fallback
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
    branch_fusion: str = "concat"  # concat | attention (learned weights over the branches)

    def validate(self) -> None:
        super().validate()
        bad = [g for g in self.granularities if g not in GRANULARITIES]
        if bad or not self.granularities or len(set(self.granularities)) < len(self.granularities):
            raise EmofuseError(
                f"--set granularities={','.join(self.granularities)}: give a non-empty subset of "
                f"{','.join(GRANULARITIES)} without repeats"
            )
        if self.branch_fusion not in ("concat", "attention"):
            raise EmofuseError(
                f"--set branch_fusion={self.branch_fusion}: choose concat or attention"
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
        width = 4 * cfg.d_model  # one branch's AVG-MAX pooled speech and text outputs
        if cfg.branch_fusion == "attention":
            self.branch_score = nn.Sequential(
                nn.Linear(width, cfg.hidden), nn.Tanh(), nn.Linear(cfg.hidden, 1, bias=False)
            )
        else:
            width *= len(cfg.granularities)
        self.mlp = nn.Sequential(
            nn.Linear(width, cfg.hidden),
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
        pooled = []
        for g, branch in self.branches.items():
            if g == "frame":
                seq, mask = frames, f_mask
            else:
                segs, s_mask, use_frames = tier_rows(batch, g)  # (B, S, L, D), (B, S), (B,)
                seq, mask = with_frame_fallback(
                    frames, f_mask, self._speech(segs), s_mask, use_frames
                )
            pooled.append(branch(seq, mask, text, t_mask))  # (B, 4d)
        if self.cfg.branch_fusion == "concat":
            return self.mlp(torch.cat(pooled, dim=-1))  # (B, 4d G) -> (B, hidden)
        branches = torch.stack(pooled, dim=1)  # (B, G, 4d)
        weights = self.branch_weights(branches)  # (B, G), rows sum to 1
        return self.mlp((weights[..., None] * branches).sum(1))  # (B, 4d) -> (B, hidden)

    def branch_weights(self, branches: Tensor) -> Tensor:
        """(B, G, 4d) branch vectors -> (B, G) attention weights (softmax over the branches)."""
        return torch.softmax(self.branch_score(branches).squeeze(-1), dim=-1)
