"""What every head does to its input streams before its own layers: standardise, augment.

``Head.prepare(batch)`` runs ``InputPipeline``; the training loop, evaluation and ``predict`` all call
``model(model.prepare(batch))``, so the three see the same features.

- **Standardisation** (``input_norm=standard``, the default): every (layer, dim) of every stream the
  head reads is z-scored with the mean and std of the fold's *training* rows (frames of the training
  utterances for ragged streams, the utterances for fixed ones), measured by the loop before the
  first step (``TrainData.stream_stats``) and kept as buffers, so the checkpoint carries them and
  ``predict`` applies them. Raw encoder states need it: Whisper-base's layers differ ~4x in RMS and
  a few dimensions reach |15|, so an unstandardised layer mix or Linear is dominated by them (the
  peers' StandardScaler). ``input_norm=none`` feeds the raw features (``layer_norm=true`` is the
  per-row alternative, inside ``LayerMix``).
- **Frame-rate reduction** (``frame_pool`` k >= 1) is a head setting the data layer applies once,
  when it loads the frames (``emofuse.train.data.pool_frames``: the mean of every k frames), so
  batches, statistics and the head's attention and GRU steps all see 50/k frames per second.
- **Augmentation** in training mode only (eval is untouched): ``time_mask`` (SpecAugment's time
  masking in feature space: up to two spans per utterance covering at most this fraction of its
  real frames are set to 0 = the training mean) and ``feature_mask`` (up to two bands covering at
  most this fraction of the dimensions, the same band in every layer and row of the utterance).
  ``modality_dropout`` p (heads that read text and speech): per utterance, its text (p/2) or its
  acoustic streams (p/2) are set to 0, so fusion cannot rest on one modality (a modality that
  carries no label information, such as RAVDESS's two fixed sentences, is otherwise memorised).
  Random numbers come from torch's global generator, which the loop seeds per fold.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

ACOUSTIC = ("speech", "fbank", "phone", "syllable", "word", "speech_mean", "speech_std")
N_MASKS = 2  # masks of each kind per utterance (SpecAugment's LibriSpeech policy uses 2)


def _span_mask(lengths: Tensor, size: int, fraction: float) -> Tensor:
    """(B,) real lengths -> (B, size) True where masked: N_MASKS spans, each <= fraction/N_MASKS."""
    device = lengths.device
    lengths = lengths.to(torch.float32)
    width = (torch.rand(len(lengths), N_MASKS, device=device) * fraction / N_MASKS) * lengths[
        :, None
    ]
    start = torch.rand(len(lengths), N_MASKS, device=device) * (lengths[:, None] - width).clamp(
        min=0
    )
    pos = torch.arange(size, device=device, dtype=torch.float32)[None, None, :]  # (1, 1, S)
    hit = (pos >= start.floor()[..., None]) & (pos < (start + width).floor()[..., None])
    return hit.any(1)  # (B, S)


class InputPipeline(nn.Module):
    """Standardise -> (training) mask; see the module docstring."""

    def __init__(self, dims: Any, cfg: Any) -> None:
        super().__init__()
        self.standardise = cfg.input_norm == "standard"
        self.time_mask, self.feature_mask = float(cfg.time_mask), float(cfg.feature_mask)
        self.modality_dropout = float(getattr(cfg, "modality_dropout", 0.0))
        self.streams = [s for s, _ in dims.as_dict().items()]
        if self.standardise:
            for s, (layers, width) in dims.as_dict().items():  # (1, F) for the speaker vector
                self.register_buffer(f"mean_{s}", torch.zeros(layers, width))
                self.register_buffer(f"std_{s}", torch.ones(layers, width))

    @torch.no_grad()
    def fit(self, stats: dict[str, tuple[Tensor, Tensor]]) -> None:
        """Set the statistics: ``{stream: (mean, std)}``, each of the stream's row shape."""
        if not self.standardise:
            return
        for s in self.streams:
            mean, std = stats[s]
            getattr(self, f"mean_{s}").copy_(mean.reshape(getattr(self, f"mean_{s}").shape))
            getattr(self, f"std_{s}").copy_(std.reshape(getattr(self, f"std_{s}").shape))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = dict(batch)
        for s in self.streams:
            if s not in batch:
                continue
            x = batch[s]
            mask = batch.get(f"{s}_mask")
            if self.standardise:
                scale, shift = self._affine(s, x)
                x = torch.addcmul(shift, x, scale)  # (x - mean) / std in one pass, a new tensor
                if mask is not None:  # padding stays exactly 0
                    x.mul_(mask.view(*mask.shape, *[1] * (x.ndim - 2)).to(x.dtype))
            if self.training and s in ACOUSTIC:
                x = self._augment(x, mask)
            out[s] = x
        if self.training and self.modality_dropout > 0:
            self._drop_modality(out)
        return out

    def _drop_modality(self, out: dict[str, Tensor]) -> None:
        """Per utterance, with probability p/2 its text and with p/2 its acoustic streams become 0
        (the training mean; masks kept), so a fusion head cannot lean on one modality alone."""
        acoustic = [s for s in self.streams if s in ACOUSTIC and s in out]
        if "text" not in out or not acoustic:
            return
        n = out["text"].shape[0]
        u = torch.rand(n, device=out["text"].device)
        p = self.modality_dropout
        for streams, dropped in ((["text"], u < p / 2), (acoustic, (u >= p / 2) & (u < p))):
            for s in streams:
                keep = (~dropped).view(n, *[1] * (out[s].ndim - 1)).to(out[s].dtype)
                out[s] = out[s] * keep

    def _affine(self, s: str, x: Tensor) -> tuple[Tensor, Tensor]:
        """(1 / std, -mean / std) of stream ``s`` in ``x``'s dtype, shaped for its rows."""
        mean, std = getattr(self, f"mean_{s}"), getattr(self, f"std_{s}")
        if x.ndim == 2:  # a fixed vector (B, F) with statistics (1, F)
            mean, std = mean[0], std[0]
        scale = 1.0 / std
        return scale.to(x.dtype), (-mean * scale).to(x.dtype)

    def _augment(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if self.time_mask > 0 and mask is not None and x.shape[1] > 0:
            hit = _span_mask(mask.sum(1), x.shape[1], self.time_mask)  # (B, T)
            x = x * (~hit).view(*hit.shape, *[1] * (x.ndim - 2)).to(x.dtype)
        if self.feature_mask > 0:
            width = x.shape[-1]
            full = torch.full((x.shape[0],), float(width), device=x.device)
            hit = _span_mask(full, width, self.feature_mask)  # (B, D)
            x = x * (~hit).view(x.shape[0], *[1] * (x.ndim - 2), width).to(x.dtype)
        return x
