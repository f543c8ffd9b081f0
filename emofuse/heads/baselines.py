"""Single-modality and late-concatenation probes: the baselines a fusion head must beat.

``audio`` is the SUPERB / EmoBox downstream probe: layer mix -> Linear(D, hidden) -> ReLU -> masked
mean over frames -> Linear(hidden, C). ``text`` is the same over text tokens. ``concat`` pools both
modalities that way, concatenates the two (B, hidden) vectors and classifies them with an MLP.
``hidden`` is 256 in ``paper`` (SUPERB's probe width). ``pool=meanstd`` pools each sequence into
[masked mean, masked std] of the projected rows (statistics pooling, as in x-vector / ECAPA and the
mean+std linear probes emotion papers compare with), so the probe sees how the frames vary, not only
their average; the embedding is then 2 ``hidden`` wide. The defaults (``meanstd``, ``frame_pool`` 4,
time/feature masks 0.1, dropout 0.2, and the ``_RECIPE`` loop) were chosen on validation UA on real
speech; ``paper`` is the published probe (mean pooling of every frame, dropout 0.1, the papers' loop).

``audio``'s ``speech_stream`` picks what it reads: the frames (``speech``), log-mel frames
(``fbank``), or a segment tier of the multi-level fusion paper (``phone`` / ``syllable`` / ``word``:
segment means of the frames over a forced alignment; an unaligned utterance reads its frames
there, ``emofuse.heads.granularity``). Several joined by ``+`` (``speech+phone+syllable+word``, the
multi-granularity speech model) get one probe each; their pooled vectors are concatenated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from emofuse.errors import EmofuseError
from emofuse.heads.base import Head, HeadConfig, InputDims, LayerMix, masked_mean, pick
from emofuse.heads.granularity import tier_rows, with_frame_fallback
from emofuse.streams import SEGMENT_TIERS

SPEECH_INPUTS = ("speech", "fbank", *SEGMENT_TIERS)  # what `speech_stream` may name


@dataclass
class ProbeConfig(HeadConfig):
    hidden: int = 256
    # speech | fbank (a non-pretrained front end) | phone | syllable | word; audio: several with +
    speech_stream: str = "speech"
    pool: str = "meanstd"  # mean (SUPERB) | meanstd (statistics pooling: mean and std over rows)
    # defaults chosen on validation UA (RAVDESS lopo, Whisper-base; bench/RESULTS.md): statistics
    # pooling over frames averaged 4 by 4, SpecAugment-style masks, dropout 0.2
    frame_pool: int = 4
    time_mask: float = 0.1
    feature_mask: float = 0.1
    dropout: float = 0.2

    def validate(self) -> None:
        super().validate()
        if self.hidden < 1:
            raise EmofuseError(f"--set hidden={self.hidden}: use a positive width")
        names = self.speech_streams
        if not names or any(n not in SPEECH_INPUTS for n in names) or len(set(names)) < len(names):
            raise EmofuseError(
                f"--set speech_stream={self.speech_stream}: choose {', '.join(SPEECH_INPUTS)} "
                "(the audio head: several joined by +, each once, e.g. speech+phone+word)"
            )
        if self.pool not in ("mean", "meanstd"):
            raise EmofuseError(f"--set pool={self.pool}: choose mean or meanstd")

    @property
    def speech_streams(self) -> list[str]:
        """``speech_stream`` split at +: the streams the audio head reads, in the given order."""
        return [n.strip() for n in self.speech_stream.split("+")]


class SequenceProbe(nn.Module):
    """(B, T, L, D) + mask -> (B, out): layer mix, Linear + ReLU per row, masked mean (and std)."""

    def __init__(self, layers: int, width: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.mix = LayerMix.from_config(layers, cfg)
        self.proj = nn.Sequential(
            nn.Linear(self.mix.out_dim(width), cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout)
        )
        self.std = cfg.pool == "meanstd"
        self.out = cfg.hidden * (2 if self.std else 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        rows = self.proj(self.mix(x))  # (B, T, hidden)
        mean = masked_mean(rows, mask)  # (B, hidden)
        if not self.std:
            return mean
        var = masked_mean((rows - mean[:, None]) ** 2, mask)  # (B, hidden), padding masked out
        return torch.cat([mean, (var + 1e-6).sqrt()], dim=-1)  # (B, 2 hidden)


# `paper` = the SUPERB / EmoBox probe as published: mean pooling of every frame, no masking
_PRESETS = {
    "small": {"hidden": 64},
    "paper": {"hidden": 256, "pool": "mean", "frame_pool": 1, "time_mask": 0.0,
              "feature_mask": 0.0, "dropout": 0.1, "layer_mix": "weighted"},
}  # fmt: skip
# the loop that reached the best validation UA for these probes (bench/RESULTS.md, 2026-12-01);
# `paper` keeps the papers' protocol (LoopConfig's defaults)
_RECIPE = {"lr": 1e-3, "batch_size": 32, "epochs": 30, "patience": 6, "schedule": "cosine",
           "warmup_epochs": 2, "grad_clip": 1.0, "select": "loss"}  # fmt: skip
_RECIPES = {None: _RECIPE, "small": _RECIPE}


class AudioProbe(Head):
    """Speech-only probe (SUPERB/EmoBox): weighted layers -> Linear -> ReLU -> mean -> Linear;
    one probe per stream of ``speech_stream``, their pooled vectors concatenated."""

    name = "audio"
    Config = ProbeConfig
    presets = _PRESETS
    recipes = _RECIPES

    @classmethod
    def required_streams(cls, cfg: ProbeConfig) -> set[str]:
        names = set(cfg.speech_streams)
        return names | ({"speech"} if names & set(SEGMENT_TIERS) else set())  # frames: fallback

    def __init__(self, cfg: ProbeConfig, dims: InputDims, n_classes: int) -> None:
        super().__init__(cfg, dims, n_classes)
        for name in cfg.speech_streams:
            if name in SEGMENT_TIERS and dims.get(name) != dims.get("speech"):
                raise EmofuseError(
                    f"the '{name}' stream has (layers, dim) {dims.get(name)} but speech has "
                    f"{dims.get('speech')}: load both with the same speech_layers"
                )
        self.probes = nn.ModuleDict(
            {name: SequenceProbe(*dims.get(name), cfg) for name in cfg.speech_streams}
        )
        width = sum(p.out for p in self.probes.values())
        self.classifier = nn.Linear(width, n_classes)
        self._register_load_state_dict_pre_hook(self._single_probe_keys)

    def _single_probe_keys(self, state_dict: dict, prefix: str, *_args) -> None:
        """Checkpoints of the one-stream probe (before ``+``) name it ``probe.``: read them."""
        if len(self.probes) == 1:
            (name,) = self.probes
            for key in [k for k in state_dict if k.startswith(prefix + "probe.")]:
                rest = key[len(prefix + "probe.") :]
                state_dict[f"{prefix}probes.{name}.{rest}"] = state_dict.pop(key)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        pooled = []
        for name, probe in self.probes.items():
            if name in SEGMENT_TIERS:  # unaligned utterances read their frames there
                segs, s_mask, use_frames = tier_rows(batch, name)  # (B, S, L, D), (B, S), (B,)
                rows = with_frame_fallback(*pick(batch, "speech"), segs, s_mask, use_frames)
            else:
                rows = pick(batch, name)  # (B, T, L, D), (B, T)
            pooled.append(probe(*rows))  # (B, hidden) or (B, 2 hidden)
        return torch.cat(pooled, dim=-1)  # (B, width)


class TextProbe(Head):
    """Text-only probe: the same as ``audio`` over the text-token states."""

    name = "text"
    Config = ProbeConfig
    presets = _PRESETS
    recipes = _RECIPES

    @classmethod
    def required_streams(cls, cfg: ProbeConfig) -> set[str]:
        return {"text"}

    def __init__(self, cfg: ProbeConfig, dims: InputDims, n_classes: int) -> None:
        super().__init__(cfg, dims, n_classes)
        self.probe = SequenceProbe(*dims.get("text"), cfg)
        self.classifier = nn.Linear(self.probe.out, n_classes)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.probe(*pick(batch, "text"))  # (B, hidden)


@dataclass
class ConcatConfig(ProbeConfig):
    # two modalities overfit sooner than one (one of them may carry no label information at all:
    # RAVDESS's two fixed sentences): validation UA 0.742 with these vs 0.702 with the audio
    # probe's (bench/RESULTS.md); mixup 0.4 is in its recipe
    dropout: float = 0.3
    time_mask: float = 0.2
    feature_mask: float = 0.2
    # every layer into each modality's Linear: validation UA 0.794 vs 0.744 with the weighted mix
    layer_mix: str = "concat"

    def validate(self) -> None:
        super().validate()
        if self.speech_stream not in ("speech", "fbank"):
            raise EmofuseError(
                f"--set speech_stream={self.speech_stream}: the concat head reads speech or fbank"
            )


# weight decay 0.05: validation UA 0.794 vs 0.785 with AdamW's 0.01 (and 0.781 with hidden 128)
_CONCAT_RECIPE = {**_RECIPE, "mixup": 0.4, "weight_decay": 0.05}


class ConcatProbe(Head):
    """Both probes' pooled vectors concatenated, then an MLP: the simplest fusion."""

    name = "concat"
    Config = ConcatConfig
    presets = _PRESETS
    recipes = {None: _CONCAT_RECIPE, "small": _CONCAT_RECIPE}

    @classmethod
    def required_streams(cls, cfg: ConcatConfig) -> set[str]:
        return {cfg.speech_stream, "text"}

    def __init__(self, cfg: ConcatConfig, dims: InputDims, n_classes: int) -> None:
        super().__init__(cfg, dims, n_classes)
        self.speech = SequenceProbe(*dims.get(cfg.speech_stream), cfg)
        self.text = SequenceProbe(*dims.get("text"), cfg)
        self.mlp = nn.Sequential(
            nn.Linear(self.speech.out + self.text.out, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
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
