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

from emofuse.streams import ACOUSTIC_STREAMS

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
        """Streams in any stored dtype (the data layer hands fp16 rows over as they are) -> fp32.

        One pass builds the standardised copy (``addcmul`` converts fp16 as it reads) and one
        multiplies it by every mask at once (padding, time spans, feature bands): the batch of a
        layered stream is the largest tensor of a step, so passes over it are what a step costs.
        """
        out = dict(batch)
        for s in self.streams:
            if s not in batch:
                continue
            x = batch[s]
            keep = self._keep(x, batch.get(f"{s}_mask"), self.training and s in ACOUSTIC_STREAMS)
            if self.standardise:
                scale, shift = self._affine(s, x)
                x = torch.addcmul(shift, x, scale)  # (x - mean) / std in fp32, a new tensor
                if keep is not None:
                    x.mul_(keep)  # padding exactly 0, masked spans and bands 0 = the training mean
            else:
                x = x.float()
                if keep is not None:
                    x = x * keep  # out of place: x may be the caller's tensor
            out[s] = x
        if self.training and self.modality_dropout > 0:
            self._drop_modality(out)
        return out

    def _keep(self, x: Tensor, mask: Tensor | None, augment: bool) -> Tensor | None:
        """fp32 multiplier broadcastable to ``x``: padding rows, and (training) time spans and
        feature bands, are 0; None where nothing is masked."""
        rows = mask  # (B, T) or None for a fixed stream
        if augment and self.time_mask > 0 and mask is not None and x.shape[1] > 0:
            rows = mask & ~_span_mask(mask.sum(1), x.shape[1], self.time_mask)  # (B, T)
        keep = None if rows is None else rows.view(*rows.shape, *[1] * (x.ndim - 2)).float()
        if augment and self.feature_mask > 0:
            width = x.shape[-1]
            full = torch.full((x.shape[0],), float(width), device=x.device)
            bands = ~_span_mask(full, width, self.feature_mask)  # (B, D)
            bands = bands.view(x.shape[0], *[1] * (x.ndim - 2), width).float()
            keep = bands if keep is None else keep * bands  # (B, T, 1.., D)
        return keep

    def _drop_modality(self, out: dict[str, Tensor]) -> None:
        """Per utterance, with probability p/2 its text and with p/2 its acoustic streams become 0
        (the training mean; masks kept), so a fusion head cannot lean on one modality alone."""
        acoustic = [s for s in self.streams if s in ACOUSTIC_STREAMS and s in out]
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
        """(1 / std, -mean / std) of stream ``s`` in fp32, shaped for its rows in ``x``."""
        mean, std = getattr(self, f"mean_{s}"), getattr(self, f"std_{s}")
        if x.ndim == 2:  # a fixed vector (B, F) with statistics (1, F)
            mean, std = mean[0], std[0]
        scale = 1.0 / std
        return scale.float(), (-mean * scale).float()
