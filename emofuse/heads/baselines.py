"""Single-modality and late-concatenation probes: the baselines a fusion head must beat.

``audio`` is the SUPERB / EmoBox downstream probe: layer mix -> Linear(D, hidden) -> ReLU -> masked
mean over frames -> Linear(hidden, C). ``text`` is the same over text tokens. ``concat`` pools both
modalities that way, concatenates the two (B, hidden) vectors and classifies them with an MLP.
``hidden`` is 256 in ``paper`` (SUPERB's probe width).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from emofuse.errors import EmofuseError
from emofuse.heads.base import Head, HeadConfig, InputDims, LayerMix, masked_mean, pick


@dataclass
class ProbeConfig(HeadConfig):
    hidden: int = 256
    speech_stream: str = "speech"  # speech | fbank (a non-pretrained front end)

    def validate(self) -> None:
        super().validate()
        if self.hidden < 1:
            raise EmofuseError(f"--set hidden={self.hidden}: use a positive width")
        if self.speech_stream not in ("speech", "fbank"):
            raise EmofuseError(f"--set speech_stream={self.speech_stream}: choose speech or fbank")


class SequenceProbe(nn.Module):
    """(B, T, L, D) + mask -> (B, hidden): layer mix, Linear + ReLU per row, masked mean."""

    def __init__(self, layers: int, width: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.mix = LayerMix(layers, cfg.layer_mix, cfg.mix_index)
        self.proj = nn.Sequential(nn.Linear(width, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        rows = self.proj(self.mix(x))  # (B, T, hidden)
        return masked_mean(rows, mask)  # (B, hidden)


_PRESETS = {"small": {"hidden": 64}, "paper": {"hidden": 256}}


class AudioProbe(Head):
    """Speech-only probe (SUPERB/EmoBox): weighted layers -> Linear -> ReLU -> mean -> Linear."""

    name = "audio"
    Config = ProbeConfig
    presets = _PRESETS

    @classmethod
    def required_streams(cls, cfg: ProbeConfig) -> set[str]:
        return {cfg.speech_stream}

    def __init__(self, cfg: ProbeConfig, dims: InputDims, n_classes: int) -> None:
        super().__init__(cfg, dims, n_classes)
        self.probe = SequenceProbe(*dims.get(cfg.speech_stream), cfg)
        self.classifier = nn.Linear(cfg.hidden, n_classes)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.probe(*pick(batch, self.cfg.speech_stream))  # (B, hidden)


class TextProbe(Head):
    """Text-only probe: the same as ``audio`` over the text-token states."""

    name = "text"
    Config = ProbeConfig
    presets = _PRESETS

    @classmethod
    def required_streams(cls, cfg: ProbeConfig) -> set[str]:
        return {"text"}

    def __init__(self, cfg: ProbeConfig, dims: InputDims, n_classes: int) -> None:
        super().__init__(cfg, dims, n_classes)
        self.probe = SequenceProbe(*dims.get("text"), cfg)
        self.classifier = nn.Linear(cfg.hidden, n_classes)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.probe(*pick(batch, "text"))  # (B, hidden)


class ConcatProbe(Head):
    """Both probes' pooled vectors concatenated, then an MLP: the simplest fusion."""

    name = "concat"
    Config = ProbeConfig
    presets = _PRESETS

    @classmethod
    def required_streams(cls, cfg: ProbeConfig) -> set[str]:
        return {cfg.speech_stream, "text"}

    def __init__(self, cfg: ProbeConfig, dims: InputDims, n_classes: int) -> None:
        super().__init__(cfg, dims, n_classes)
        self.speech = SequenceProbe(*dims.get(cfg.speech_stream), cfg)
        self.text = SequenceProbe(*dims.get("text"), cfg)
        self.mlp = nn.Sequential(
            nn.Linear(2 * cfg.hidden, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout)
        )
        self.classifier = nn.Linear(cfg.hidden, n_classes)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        pooled = torch.cat(
            [
                self.speech(*pick(batch, self.cfg.speech_stream)),  # (B, hidden)
                self.text(*pick(batch, "text")),  # (B, hidden)
            ],
            dim=-1,
        )  # (B, 2 hidden)
        return self.mlp(pooled)  # (B, hidden)
