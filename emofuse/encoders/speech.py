"""The speech encoder interface every family implements (extract and predict use only this).

A family is one module with a ``SpeechEncoder`` subclass and a loader, registered in families.py
(wav2vec2.py: wav2vec 2.0 / HuBERT / WavLM / data2vec-audio; whisper.py: Whisper encoders). The one
property the cache depends on: an utterance's features must not depend on what it was batched with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from emofuse.encoders.common import half
from emofuse.errors import EmofuseError

OPTION = "--speech-model"


class SpeechEncoder:
    """What extract and predict use (docs/architecture.md, "Encoders").

    A family sets the attributes below in its ``__init__`` and implements ``n_frames`` and
    ``_encode_checked``; this class checks the inputs and describes the encoder for the cache
    fingerprint. Not thread-safe (one encoder per worker).
    """

    family: str  # the registry key it was loaded under (e.g. "hubert", "whisper")

    model_id: str
    revision: str
    num_layers: int  # hidden states returned: embedding output + one per transformer layer
    dim: int
    frame_rate: float
    min_samples: int
    device: torch.device
    dtype: torch.dtype
    max_batch_samples: int  # padded samples per forward pass (caller batches are split to fit)

    def n_frames(self, n_samples: int) -> int:
        raise NotImplementedError

    def encode(
        self, wavs: Sequence[np.ndarray], out_dtype: torch.dtype = torch.float32
    ) -> list[torch.Tensor]:
        """Per utterance (T_i, num_layers, dim) on CPU, real frames only, T_i == n_frames.

        ``out_dtype=torch.float16`` halves the device → host copy when the caller stores fp16.
        """
        arrays = [self._check(i, w) for i, w in enumerate(wavs)]
        if not arrays:
            return []
        self._out_dtype = out_dtype
        with torch.inference_mode():
            return self._encode_checked(arrays)

    def _to_host(self, states: torch.Tensor, frames: list[int]) -> list[torch.Tensor]:
        """(B, T, L, D) on the device → per-utterance (T_i, L, D) views of one host tensor."""
        dtype = getattr(self, "_out_dtype", torch.float32)
        host = (half(states) if dtype == torch.float16 else states.to(dtype)).cpu()
        return [host[i, :n] for i, n in enumerate(frames)]

    def _encode_checked(self, arrays: list[np.ndarray]) -> list[torch.Tensor]:
        raise NotImplementedError

    def _check(self, index: int, wav: np.ndarray) -> np.ndarray:
        arr = np.asarray(wav, dtype=np.float32)
        if arr.ndim != 1:
            raise EmofuseError(
                f"speech model {self.model_id}: waveform {index} has shape {arr.shape}; "
                "pass 16 kHz mono 1-D arrays"
            )
        if arr.shape[0] < self.min_samples:
            raise EmofuseError(
                f"speech model {self.model_id}: waveform {index} has {arr.shape[0]} samples, fewer "
                f"than the {self.min_samples} it needs; pad it to min_samples first"
            )
        if not np.isfinite(arr).all():
            raise EmofuseError(
                f"speech model {self.model_id}: waveform {index} contains NaN/inf samples; "
                "fix or skip that audio"
            )
        return arr
