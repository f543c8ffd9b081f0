"""Audio decoding for extraction: any file soundfile reads → 16 kHz mono float32.

Decoding and resampling run in the extraction pipeline's thread pool (soundfile and torch release
the GIL), so the model never waits on the disk. Bad audio is not an exception to crash on: it is a
reason (``AudioProblem``) the pipeline reports, records in the cache and skips — or, with
``--strict``, turns into a one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

SAMPLE_RATE = 16000
SILENCE_PEAK = 1e-4  # below -80 dBFS everywhere: nothing an encoder can use


class AudioProblem(Exception):
    """An utterance's audio cannot be used; ``str()`` is the reason stored in the cache."""


@dataclass
class Decoded:
    wav: np.ndarray  # (n,) float32 at SAMPLE_RATE, mono
    source_rate: int
    channels: int


def load_audio(path: str | Path, target_rate: int = SAMPLE_RATE) -> Decoded:
    """Read ``path``, average the channels, resample to ``target_rate``.

    Raises AudioProblem for a missing, unreadable, corrupt, empty or silent file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioProblem(f"missing audio file {path}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (n, C)
    except Exception as err:  # libsndfile raises several types for damaged files
        raise AudioProblem(f"unreadable audio {path.name}: {str(err).splitlines()[0]}") from None
    if data.shape[0] == 0:
        raise AudioProblem(f"empty audio {path.name} (0 samples)")
    if not np.isfinite(data).all():
        raise AudioProblem(f"corrupt audio {path.name} (NaN/inf samples)")
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]  # (n,)
    if float(np.abs(wav).max()) < SILENCE_PEAK:
        raise AudioProblem(f"silent audio {path.name} (peak below -80 dBFS)")
    if rate != target_rate:
        wav = AF.resample(torch.from_numpy(np.ascontiguousarray(wav)), rate, target_rate).numpy()
    return Decoded(np.ascontiguousarray(wav, dtype=np.float32), int(rate), int(data.shape[1]))


def duration_of(path: str | Path) -> float:
    """Duration in seconds from the header only (0.0 when unreadable: decoding will report why)."""
    try:
        return float(sf.info(str(path)).duration)
    except Exception:
        return 0.0
