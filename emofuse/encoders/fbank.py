"""80-bin log-mel filterbank: the non-pretrained "speech model" of the TDFNet without-ME ablation.

Kaldi-compatible fbank (torchaudio.compliance.kaldi): 25 ms windows every 10 ms (100 frames/s), no
dither (deterministic), computed per utterance so batching cannot change it. Shaped (T, 1, 80) so it
stores and loads like a one-layer speech stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi

from emofuse.encoders.common import SAMPLE_RATE
from emofuse.errors import EmofuseError


class FbankEncoder:
    model_id = "fbank-80"
    revision = "kaldi-fbank-v1"
    num_layers = 1

    def __init__(
        self, n_mels: int = 80, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0
    ):
        self.dim = n_mels
        self.frame_length_ms = frame_length_ms
        self.frame_shift_ms = frame_shift_ms
        self.window = int(SAMPLE_RATE * frame_length_ms / 1000)  # 400 samples
        self.shift = int(SAMPLE_RATE * frame_shift_ms / 1000)  # 160 samples
        self.min_samples = self.window
        self.frame_rate = 1000.0 / frame_shift_ms

    def n_frames(self, n_samples: int) -> int:
        """Kaldi's snip_edges framing: only whole windows."""
        n = int(n_samples)
        return 0 if n < self.window else 1 + (n - self.window) // self.shift

    def encode(self, wavs: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Per utterance (T_i, 1, n_mels) float32 log-mel."""
        out = []
        for i, wav in enumerate(wavs):
            arr = np.asarray(wav, dtype=np.float32)
            if arr.ndim != 1 or arr.shape[0] < self.min_samples:
                raise EmofuseError(
                    f"fbank: waveform {i} has shape {arr.shape}; pass 16 kHz mono 1-D arrays of at "
                    f"least {self.min_samples} samples"
                )
            # Kaldi works on 16-bit sample values; scaling keeps its energy floor meaningful
            signal = torch.from_numpy(arr)[None, :] * 32768.0  # (1, N)
            feats = kaldi.fbank(
                signal,
                num_mel_bins=self.dim,
                frame_length=self.frame_length_ms,
                frame_shift=self.frame_shift_ms,
                dither=0.0,
                energy_floor=0.0,
                sample_frequency=SAMPLE_RATE,
            )  # (T, n_mels)
            out.append(feats[:, None, :].contiguous())  # (T, 1, n_mels)
        return out
