"""SSL speech encoders: padding-consistent batching, true frame counts, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from emofuse.encoders import load_speech_encoder
from emofuse.encoders.common import hub_commit, pack_batches
from emofuse.errors import EmofuseError


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


SSL = ["wav2vec2-group", "wav2vec2-layer", "hubert", "wavlm", "data2vec-audio"]


@pytest.fixture(scope="module")
def encoders(tiny):
    return {family: load_speech_encoder(tiny.speech[family]) for family in SSL}


@pytest.mark.parametrize("family", SSL)
def test_batched_equals_one_at_a_time(encoders, wavs, family):
    enc = encoders[family]
    batched = enc.encode(wavs)
    single = [enc.encode([w])[0] for w in wavs]
    for b, s in zip(batched, single, strict=True):
        assert b.shape == s.shape == (s.shape[0], enc.num_layers, enc.dim)
        assert b.dtype == torch.float32
        assert max_abs_diff(b, s) <= 1e-4


@pytest.mark.parametrize("family", SSL)
def test_frames_follow_the_model_length_formula(encoders, wavs, family):
    enc = encoders[family]
    for wav, states in zip(wavs, enc.encode(wavs), strict=True):
        expected = int(enc.model._get_feat_extract_output_lengths(torch.tensor(len(wav))))
        assert states.shape[0] == enc.n_frames(len(wav)) == expected
    assert enc.frame_rate == 50.0
    # the shortest accepted input yields exactly one frame; one sample less is refused
    assert enc.n_frames(enc.min_samples) == 1 and enc.n_frames(enc.min_samples - 1) == 0
    assert enc.encode([np.zeros(enc.min_samples, np.float32)])[0].shape[0] == 1
    with pytest.raises(EmofuseError, match="fewer than"):
        enc.encode([np.zeros(enc.min_samples - 1, np.float32)])


def test_sub_batching_keeps_results(tiny, wavs, encoders):
    small = load_speech_encoder(tiny.speech["wav2vec2-group"], max_batch_seconds=2.0)
    assert len(pack_batches([len(w) for w in wavs], small.max_batch_samples)) > 1
    for a, b in zip(small.encode(wavs), encoders["wav2vec2-group"].encode(wavs), strict=True):
        assert max_abs_diff(a, b) <= 1e-4


@pytest.mark.parametrize("family", ["wav2vec2-group", "data2vec-audio"])
def test_plain_padded_batch_would_differ(encoders, wavs, family):
    """The failure the encoder exists to avoid: Hugging Face's padded batch (attention mask and
    all) changes these families' features, so the equality above is not vacuous."""
    enc = encoders[family]
    single = [enc.encode([w])[0] for w in wavs]
    inputs = [enc._normalise(w) for w in wavs]
    longest = max(len(a) for a in inputs)
    x = torch.zeros(len(inputs), longest)
    mask = torch.zeros(len(inputs), longest, dtype=torch.long)
    for i, a in enumerate(inputs):
        x[i, : len(a)] = torch.from_numpy(a)
        mask[i, : len(a)] = 1
    with torch.inference_mode():
        out = enc.model(x, attention_mask=mask, output_hidden_states=True)
    naive = torch.stack(out.hidden_states, dim=2)
    worst = max(max_abs_diff(naive[i, : s.shape[0]], s) for i, s in enumerate(single))
    assert worst > 1e-2


def test_hubert_batch_norm_positional_conv(tmp_path, wavs):
    """HuBERT's conv_pos_batch_norm variant turns padded zeros into non-zeros before its conv."""
    torch.manual_seed(3)
    config = HubertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embedding_groups=4,
        conv_pos_batch_norm=True,
    )
    model = HubertModel(config)
    with torch.no_grad():  # non-trivial running stats, as a trained model has
        bn = model.encoder.pos_conv_embed.batch_norm
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    model.save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(tmp_path)
    enc = load_speech_encoder(tmp_path)
    batched = enc.encode(wavs)
    for b, w in zip(batched, wavs, strict=True):
        assert max_abs_diff(b, enc.encode([w])[0]) <= 1e-4


def test_fingerprint_changes_with_weights(tiny, tmp_path, encoders):
    enc = encoders["hubert"]
    assert enc.model_id == str(tiny.speech["hubert"])
    assert enc.revision.startswith("sha256:")
    assert encoders["wav2vec2-group"].revision != enc.revision
    assert load_speech_encoder(tiny.speech["hubert"]).revision == enc.revision
    assert hub_commit("/cache/models--facebook--hubert/snapshots/abc123/config.json") == "abc123"


def test_missing_folder_is_one_line_error(tmp_path):
    with pytest.raises(EmofuseError) as err:
        load_speech_encoder(tmp_path / "nope")
    assert "not found" in str(err.value) and "\n" not in str(err.value)


def test_broken_folder_is_one_line_error(tiny, tmp_path):
    (tmp_path / "config.json").write_text((tiny.speech["hubert"] / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EmofuseError) as err:
        load_speech_encoder(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "\n" not in message


def test_unreachable_hub_model_says_how_to_provide_it():
    with pytest.raises(EmofuseError) as err:
        load_speech_encoder("emofuse-test/no-such-model")
    message = str(err.value)
    assert "huggingface-cli download emofuse-test/no-such-model" in message
    assert "--speech-model" in message and "\n" not in message


def test_text_model_is_not_a_speech_encoder(tiny):
    with pytest.raises(EmofuseError, match="not a supported speech encoder"):
        load_speech_encoder(tiny.text)


@pytest.mark.parametrize("damage", ["config", "weights"])
def test_a_damaged_file_of_a_model_folder_is_named(tiny, tmp_path, damage):
    """Only the folder and a parser's detail were named ('Expecting ',' delimiter …')."""
    import shutil

    folder = tmp_path / "hubert"
    shutil.copytree(tiny.speech["hubert"], folder)
    name = "config.json" if damage == "config" else "model.safetensors"
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[:100] if damage == "config" else data[:1000])
    with pytest.raises(EmofuseError) as err:
        load_speech_encoder(folder)
    message = str(err.value)
    assert f"{name} is damaged" in message and str(folder) in message and "\n" not in message
