"""Frozen self-supervised speech encoders (wav2vec 2.0, HuBERT, WavLM, data2vec-audio) and the loader.

The one property the cache depends on: an utterance's features must not depend on what it was batched
with. Hugging Face's models get close but not all the way:

- group-norm front ends (wav2vec2-base, HuBERT-base, WavLM-base…) normalise each channel over the whole
  (padded) input, and were trained without attention masks, so zero padding changes every frame. We run
  the conv front end per utterance (unpadded), then pad its output and run projection + transformer
  batched with an attention mask.
- the positional conv embedding sees padded frames near an utterance's end. Hugging Face zeroes them
  before the first conv, but HuBERT's batch-norm variant and data2vec-audio's 5-layer conv stack turn
  those zeros into non-zeros before the next conv. We zero padded frames at the input of every conv in
  the positional embedding (a no-op for the single-conv families), which is exactly what an unpadded
  input sees (the conv's own zero padding).
- layer-norm front ends are padding invariant on real frames (each output frame's receptive field
  lies inside the real samples), WavLM's relative position bias depends only on offsets, and
  attention masks handle the rest.

Registered in families.py for the model types wav2vec2, hubert, wavlm and data2vec-audio.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from transformers import AutoFeatureExtractor, AutoModel, Wav2Vec2FeatureExtractor

from emofuse.encoders.common import (
    SAMPLE_RATE,
    check_sampling_rate,
    from_pretrained,
    hold_frozen,
    load_error,
    model_revision,
    pack_batches,
    resolved_dir,
    to_device,
)
from emofuse.encoders.speech import OPTION, SpeechEncoder


class _Precomputed(nn.Module):
    """Stands in for a model's conv front end when its output was computed per utterance."""

    def __init__(self, features: torch.Tensor):
        super().__init__()
        self.features = features

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.features


@contextmanager
def _swapped_feature_extractor(model: nn.Module, features: torch.Tensor):
    original = model.feature_extractor
    model.feature_extractor = _Precomputed(features)
    try:
        yield
    finally:
        model.feature_extractor = original


def _receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Shortest input (samples) for which a conv stack yields one frame."""
    field = 1
    for kernel, stride in zip(reversed(kernels), reversed(strides), strict=True):
        field = (field - 1) * stride + kernel
    return field


class SSLSpeechEncoder(SpeechEncoder):
    """wav2vec 2.0 / HuBERT / WavLM / data2vec-audio through transformers' AutoModel."""

    def __init__(
        self,
        model: nn.Module,
        feature_extractor,
        model_id: str,
        revision: str,
        device: torch.device,
        dtype: torch.dtype,
        max_batch_seconds: float,
    ):
        self.model = model.eval().requires_grad_(False)
        self.feature_extractor = feature_extractor
        hold_frozen(self, model_id, revision, device, dtype)
        config = model.config
        self.family = config.model_type
        # data2vec-audio has no such key: its front end is always layer-normed
        self.group_norm = getattr(config, "feat_extract_norm", "layer") == "group"
        self.num_layers = config.num_hidden_layers + 1
        self.dim = config.hidden_size
        self.frame_rate = SAMPLE_RATE / float(np.prod(config.conv_stride))
        self.min_samples = _receptive_field(config.conv_kernel, config.conv_stride)
        self.max_batch_samples = int(max_batch_seconds * SAMPLE_RATE)
        params = inspect.signature(model._get_feat_extract_output_lengths).parameters
        # hidden states come from the transformer, before any adapter
        self._length_kwargs = {"add_adapter": False} if "add_adapter" in params else {}
        self._frame_mask: torch.Tensor | None = None  # (B, T) while a padded batch runs
        for module in model.encoder.pos_conv_embed.modules():
            if isinstance(module, nn.Conv1d):
                module.register_forward_pre_hook(self._zero_padded_frames)

    def _zero_padded_frames(self, module: nn.Module, args: tuple) -> tuple | None:
        if self._frame_mask is None:
            return None
        (hidden,) = args  # (B, D, T)
        return (hidden * self._frame_mask[:, None, :].to(hidden.dtype),)

    def n_frames(self, n_samples: int) -> int:
        lengths = self.model._get_feat_extract_output_lengths(
            torch.tensor(int(n_samples)), **self._length_kwargs
        )
        return int(lengths)

    def _normalise(self, arr: np.ndarray) -> np.ndarray:
        """The checkpoint's own input normalisation, per utterance (never over padding)."""
        out = self.feature_extractor(arr, sampling_rate=SAMPLE_RATE, return_tensors="np")
        return out["input_values"][0].astype(np.float32, copy=False)

    def _encode_checked(self, arrays: list[np.ndarray]) -> list[torch.Tensor]:
        inputs = [self._normalise(a) for a in arrays]
        results: list[torch.Tensor | None] = [None] * len(inputs)
        for batch in pack_batches([len(a) for a in inputs], self.max_batch_samples):
            for idx, states in zip(batch, self._forward([inputs[i] for i in batch]), strict=True):
                results[idx] = states
        return results  # type: ignore[return-value]

    def _forward(self, inputs: list[np.ndarray]) -> list[torch.Tensor]:
        lengths = [len(a) for a in inputs]
        frames = [self.n_frames(n) for n in lengths]
        batch, longest = len(inputs), max(lengths)
        padded = torch.zeros(batch, longest)  # (B, N)
        for i, arr in enumerate(inputs):
            padded[i, : len(arr)] = torch.from_numpy(arr)
        x = to_device(padded, self.device).to(self.dtype)  # (B, N)
        ragged = len(set(lengths)) > 1
        sample_mask = None
        if ragged:
            sample_mask = to_device(
                (torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]).long(),
                self.device,
            )  # (B, N)
            self._frame_mask = (
                torch.arange(max(frames))[None, :] < torch.tensor(frames)[:, None]
            ).to(self.device)  # (B, T)
        try:
            out = self._run(x, sample_mask, lengths, frames, ragged)
        finally:
            self._frame_mask = None
        return self._to_host(torch.stack(out.hidden_states, dim=2), frames)  # (B, T, L, D)

    def _run(self, x, sample_mask, lengths: list[int], frames: list[int], ragged: bool):
        with warnings.catch_warnings():
            # WavLM mixes a bool padding mask with a float position bias: torch warns, same result
            warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask.*")
            if not (self.group_norm and ragged):
                return self.model(x, attention_mask=sample_mask, output_hidden_states=True)
            # group norm: the conv front end per utterance on its real samples only
            channels = self.model.config.conv_dim[-1]
            feats = torch.zeros(
                len(lengths), channels, max(frames), dtype=self.dtype, device=self.device
            )  # (B, C, T)
            for i, n in enumerate(lengths):
                feats[i, :, : frames[i]] = self.model.feature_extractor(x[i : i + 1, :n])[0]
            with _swapped_feature_extractor(self.model, feats):
                return self.model(x, attention_mask=sample_mask, output_hidden_states=True)


def _load_feature_extractor(name: str):
    try:
        return AutoFeatureExtractor.from_pretrained(name)
    except (OSError, ValueError):
        # some checkpoints (e.g. pretraining-only ones) ship no preprocessor_config.json:
        # the wav2vec2 family's standard input normalisation is the sensible default
        return Wav2Vec2FeatureExtractor(do_normalize=True)


def load_wav2vec2_family(
    name: str, device: torch.device, dtype: torch.dtype, max_batch_seconds: float
) -> SSLSpeechEncoder:
    """Load a wav2vec 2.0 / HuBERT / WavLM / data2vec-audio checkpoint (hub id or local folder)."""
    try:
        model = from_pretrained(AutoModel, name, device, dtype).to(device)
        feature_extractor = _load_feature_extractor(name)
    except Exception as exc:  # noqa: BLE001 - any failure here is "cannot load this model"
        raise load_error("speech", name, OPTION, exc) from exc
    check_sampling_rate(name, feature_extractor)
    revision = model_revision(name, resolved_dir(name))
    return SSLSpeechEncoder(
        model, feature_extractor, name, revision, device, dtype, max_batch_seconds
    )
