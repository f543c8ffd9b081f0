"""A trivial head for the train tests: masked means of speech and text + speaker → MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from emofuse.heads.base import Head, HeadConfig, InputDims, LayerMix, masked_mean


@dataclass
class TinyConfig(HeadConfig):
    hidden: int = 16
    use_text: bool = True


class TinyHead(Head):
    name = "tiny-test"
    Config = TinyConfig
    presets = {"small": {"hidden": 8}}
    recipes = {
        "small": {"lr": 3e-3, "epochs": 3, "batch_size": 16, "patience": 2, "schedule": "cosine",
                  "warmup_epochs": 1, "select": "ua"},
    }  # fmt: skip

    @classmethod
    def required_streams(cls, cfg: TinyConfig) -> set[str]:
        return {"speech", "speaker"} | ({"text"} if cfg.use_text else set())

    def __init__(self, cfg: TinyConfig, dims: InputDims, n_classes: int) -> None:
        super().__init__(cfg, dims, n_classes)
        (ls, ds), (_, f) = dims.get("speech"), dims.get("speaker")
        self.mix_a = LayerMix(ls, cfg.layer_mix)
        width = ds + f
        if cfg.use_text:
            lt, dt = dims.get("text")
            self.mix_t = LayerMix(lt, cfg.layer_mix)
            width += dt
        self.mlp = nn.Sequential(nn.Linear(width, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.classifier = nn.Linear(cfg.hidden, n_classes)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        parts = [masked_mean(self.mix_a(batch["speech"]), batch["speech_mask"]), batch["speaker"]]
        if self.cfg.use_text:
            parts.append(masked_mean(self.mix_t(batch["text"]), batch["text_mask"]))
        return self.mlp(torch.cat(parts, dim=-1))  # (B, hidden)
