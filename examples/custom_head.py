"""A complete user-defined head: train it with `emofuse train --head examples/custom_head.py:GatedMeanHead`.

It follows the interface in the docstring of ``emofuse.heads.base.Head``:
a config dataclass (fields settable with ``--set key=value``), presets, the cache streams it reads,
a constructor that sizes its layers from ``InputDims``, and ``embed`` (the pre-classifier vector);
``forward`` comes from the base class (``classifier(embed(batch))``).

The model: speech frames and text tokens are each reduced over their cached layers
(``LayerMix.from_config`` honours the ``layer_mix``, ``mix_index`` and ``layer_norm`` options),
projected, mean-pooled over real rows only (so padding never matters), and mixed by a learned
per-feature gate between the two modalities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from emofuse.heads.base import Head, HeadConfig, InputDims, LayerMix, masked_mean, pick


@dataclass
class GatedMeanConfig(HeadConfig):
    hidden: int = 128


class GatedMeanHead(Head):
    """Mean-pooled speech and text, fused by a sigmoid gate per feature."""

    name = "gated-mean"
    Config = GatedMeanConfig
    presets = {"small": {"hidden": 32}, "paper": {"hidden": 256}}

    @classmethod
    def required_streams(cls, cfg: GatedMeanConfig) -> set[str]:
        return {"speech", "text"}

    def __init__(self, cfg: GatedMeanConfig, dims: InputDims, n_classes: int) -> None:
        super().__init__(cfg, dims, n_classes)
        (s_layers, s_dim), (t_layers, t_dim) = dims.get("speech"), dims.get("text")
        self.speech_mix = LayerMix.from_config(s_layers, cfg)  # layer_mix, mix_index, layer_norm
        self.text_mix = LayerMix.from_config(t_layers, cfg)
        self.speech_proj = nn.Linear(self.speech_mix.out_dim(s_dim), cfg.hidden)  # concat: L*D
        self.text_proj = nn.Linear(self.text_mix.out_dim(t_dim), cfg.hidden)
        self.gate = nn.Linear(2 * cfg.hidden, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.hidden, n_classes)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        speech, speech_mask = pick(batch, "speech")  # (B, T, L, D), (B, T)
        text, text_mask = pick(batch, "text")  # (B, N, L_t, D_t), (B, N)
        s = masked_mean(
            torch.tanh(self.speech_proj(self.speech_mix(speech))), speech_mask
        )  # (B, H)
        t = masked_mean(torch.tanh(self.text_proj(self.text_mix(text))), text_mask)  # (B, H)
        g = torch.sigmoid(self.gate(torch.cat([s, t], dim=-1)))  # (B, H)
        return self.drop(g * s + (1 - g) * t)  # (B, H)
