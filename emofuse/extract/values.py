"""What a model emitted is checked before it is stored: no NaN, and within float16's range.

Features are stored as float16 (``encoders.common.half``): a value beyond ±65504 is clamped to it,
which keeps a rare large activation finite. A model whose outputs are of another scale altogether
(every value clamped: a broken or mis-scaled checkpoint) would leave a stream of signs only, and
a model that emits NaN (damaged weights, an fp16 overflow on a GPU) a stream of NaN: both were
stored and reported as a normal success. Either is one line naming the utterance, the stream and
the model, before anything of that batch is committed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from emofuse.encoders.common import FP16_MAX
from emofuse.errors import EmofuseError

FP16_MAX_BITS = 0x7BFF  # 65504 as float16 bits (sign cleared): NaN and inf lie above it
MAX_CLAMPED = 0.01  # share of a stream's values at ±65504 above which its scale is wrong

# stream -> the option of the model that wrote it
MODEL_OF = {
    "speech": "--speech-model",
    "speech_mean": "--speech-model",
    "speech_std": "--speech-model",
    "phone": "--speech-model",
    "syllable": "--speech-model",
    "word": "--speech-model",
    "text": "--text-model",
    "speaker": "--speaker-model",
    "fbank": "the filterbank",
}


def check_values(utt_id: str, row: Mapping[str, Mapping[str, np.ndarray]], dtype: str) -> None:
    """Each float array of one utterance's row is finite and mostly inside float16's range.

    One pass over each array when all is well (``|x| < 65504`` is False for NaN, inf and a clamped
    value alike; for float16, one integer max over its magnitude bits); the kinds are told apart
    only for an array that failed it."""
    for stream, arrays in row.items():
        data = arrays.get("data")
        if data is None or data.dtype.kind != "f" or not data.size:
            continue
        if data.dtype == np.float16:  # the magnitude bits: integer SIMD, ~10x numpy's fp16 abs
            if int((data.view(np.uint16) & 0x7FFF).max()) < FP16_MAX_BITS:
                continue
        inside = np.abs(data) < FP16_MAX
        if inside.all():
            continue
        model = MODEL_OF.get(stream, "the model")
        nan = np.isnan(data)
        if nan.any():
            where = ""
            if data.ndim == 3:  # (T, L, D): the layers holding NaN
                layers = np.flatnonzero(nan.any(axis=(0, 2)))
                where = f", stored layer(s) {', '.join(map(str, layers[:6].tolist()))}"
            raise EmofuseError(
                f"utterance {utt_id}: {model} emitted NaN ({int(nan.sum())} of {data.size} values "
                f"of stream {stream}{where}); its weights are damaged, or it overflowed in "
                f"--dtype {dtype}: check the model folder, or extract with --dtype float32"
            )
        share = 1.0 - float(inside.mean())
        if share > MAX_CLAMPED:
            raise EmofuseError(
                f"utterance {utt_id}: {share:.0%} of stream {stream}'s values from {model} lie "
                f"beyond ±{FP16_MAX:g}, float16's range in which the cache stores them, so they "
                "would be stored as signs only: the model's outputs are not of a normal scale "
                "(a broken or mis-scaled checkpoint); check the model folder"
            )
