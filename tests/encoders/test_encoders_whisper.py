"""Whisper encoders: real frames only (sliced positions), batching, > 30 s windows."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from emofuse.encoders import WhisperSpeechEncoder, load_speech_encoder


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.fixture(scope="module")
def whisper(tiny) -> WhisperSpeechEncoder:
    enc = load_speech_encoder(tiny.speech["whisper"])
    assert isinstance(enc, WhisperSpeechEncoder)
    return enc


def test_batched_equals_one_at_a_time(whisper, wavs):
    batched = whisper.encode(wavs)
    for wav, b in zip(wavs, batched, strict=True):
        single = whisper.encode([wav])[0]
        assert b.shape == single.shape == (whisper.n_frames(len(wav)), 3, 32)
        assert max_abs_diff(b, single) <= 1e-4


def test_frames_are_mel_frames_over_two(whisper, wavs):
    assert whisper.frame_rate == 50.0 and whisper.min_samples == 320
    for wav, states in zip(wavs, whisper.encode(wavs), strict=True):
        mel_frames = len(wav) // 160
        assert states.shape[0] == mel_frames // 2 == whisper.n_frames(len(wav))


def test_mel_equals_hugging_face_padded_mel_on_real_frames(whisper, wavs):
    """No 30 s padding in the front end either: the real frames of HF's padded log-mel."""
    wav = wavs[0]
    ours = whisper.mel(wav)
    padded = whisper.feature_extractor(wav, sampling_rate=16_000, return_tensors="np")
    reference = padded["input_features"][0]
    assert reference.shape[1] == 3000 and ours.shape[1] == 2 * whisper.n_frames(len(wav))
    assert np.abs(reference[:, : ours.shape[1]] - ours).max() <= 1e-4


def test_sliced_path_equals_hugging_face_on_the_same_input(whisper, wavs):
    """HF's own WhisperEncoder.forward, built with max_source_positions = T (so its length check
    accepts the sliced input) and the same weights, gives the same hidden states for every layer."""
    mel = whisper.mel(wavs[2])
    frames = mel.shape[1] // 2
    config = copy.deepcopy(whisper.encoder.config)
    config.max_source_positions = frames
    reference = WhisperEncoder(config).eval()
    weights = whisper.encoder.state_dict()
    weights["embed_positions.weight"] = weights["embed_positions.weight"][:frames]
    reference.load_state_dict(weights)
    with torch.inference_mode():
        out = reference(torch.from_numpy(mel)[None], output_hidden_states=True)
    expected = torch.stack(out.hidden_states, dim=2)[0]  # (T, L, D)
    ours = whisper.encode([wavs[2]])[0]
    assert ours.shape == expected.shape
    assert max_abs_diff(ours, expected) <= 1e-4


def test_longer_than_30s_is_windowed_and_concatenated(whisper):
    rng = np.random.default_rng(1)
    wav = (0.1 * rng.standard_normal(31 * 16_000 + 500)).astype(np.float32)
    states = whisper.encode([wav])[0]
    assert states.shape[0] == whisper.n_frames(len(wav)) == 1500 + (16_500 // 160) // 2
    first = whisper.encode([wav[:480_000]])[0]
    rest = whisper.encode([wav[480_000:]])[0]
    assert max_abs_diff(states[:1500], first) <= 1e-4
    assert max_abs_diff(states[1500:], rest) <= 1e-4
    # and it batches with a short utterance without changing either
    both = whisper.encode([wav[:20_000], wav])
    assert max_abs_diff(both[1], states) <= 1e-4


@pytest.mark.parametrize("family", ["whisper", "wav2vec2-group", "hubert"])
def test_float16_output_is_the_float32_output_rounded_and_clamped(tiny, wavs, family):
    """Extract asks for float16 (what it stores): each state goes into the host tensor in float16
    directly. The values must be exactly the float32 output rounded to float16, and a value past
    float16's range stored as ±65504, not inf (the last state's layer norm scaled by 1e8 here)."""
    from emofuse.encoders.common import half

    enc = load_speech_encoder(tiny.speech[family])
    wide = enc.encode(wavs)
    narrow = enc.encode(wavs, out_dtype=torch.float16)
    for w, n in zip(wide, narrow, strict=True):
        assert n.dtype == torch.float16 and torch.equal(n, w.to(torch.float16))
    # the last state's own norm: Whisper's final layer norm, the SSL models' last layer's
    norm = enc.encoder.layer_norm if family == "whisper" else enc.model.encoder.layers[-1]
    norm = norm if family == "whisper" else norm.final_layer_norm
    with torch.no_grad():
        norm.weight.mul_(1e8)
    big = enc.encode(wavs[:2], out_dtype=torch.float16)
    ref = enc.encode(wavs[:2])
    for b, r in zip(big, ref, strict=True):
        assert float(r.abs().max()) > 65504  # it really overflows float16
        assert torch.isfinite(b).all() and torch.equal(b, half(r))
        assert float(b.abs().max()) == 65504.0
