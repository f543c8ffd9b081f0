"""The tiny model builders: real classes, deterministic, reusable."""

from __future__ import annotations

import json

from emofuse.encoders import TINY_SPEECH_FAMILIES, build_tiny_models
from emofuse.encoders.common import weights_sha256


def test_every_family_is_saved_in_real_layouts(tiny):
    assert set(tiny.speech) == set(TINY_SPEECH_FAMILIES)
    for family, folder in tiny.speech.items():
        config = json.loads((folder / "config.json").read_text())
        assert (folder / "model.safetensors").is_file()
        assert (folder / "preprocessor_config.json").is_file()
        assert config["model_type"] == {
            "wav2vec2-group": "wav2vec2",
            "wav2vec2-layer": "wav2vec2",
        }.get(family, family)
    assert (
        json.loads((tiny.speech["wav2vec2-group"] / "config.json").read_text())["feat_extract_norm"]
        == "group"
    )
    assert (
        json.loads((tiny.speech["wav2vec2-layer"] / "config.json").read_text())["feat_extract_norm"]
        == "layer"
    )
    assert (tiny.text / "tokenizer.json").is_file() and (tiny.text / "vocab.txt").is_file()
    assert "lin_neurons: 192" in (tiny.speaker / "hyperparams.yaml").read_text()
    assert (tiny.speaker / "embedding_model.ckpt").is_file()


def test_deterministic_from_seed_and_reused(tiny, tmp_path):
    again = build_tiny_models(tmp_path / "a", seed=0)
    other = build_tiny_models(tmp_path / "b", seed=1)
    for family in TINY_SPEECH_FAMILIES:
        assert weights_sha256(again.speech[family]) == weights_sha256(tiny.speech[family])
        assert weights_sha256(other.speech[family]) != weights_sha256(tiny.speech[family])
    assert weights_sha256(again.speaker) == weights_sha256(tiny.speaker)
    # a complete folder is reused, not rebuilt
    stamp = (again.text / "model.safetensors").stat().st_mtime_ns
    build_tiny_models(tmp_path / "a", seed=0)
    assert (again.text / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_damaged_or_deleted_tiny_model_file_is_built_again(tmp_path, capsys):
    """Round-17 extract side row 74: the demo reused its tiny models with a file truncated (then
    deleted), and the error said to copy the file "from where the model came from"."""
    models = build_tiny_models(tmp_path / "m", seed=0)
    weights = models.text / "model.safetensors"
    whole = weights.read_bytes()
    for damage in ("truncate", "delete"):
        if damage == "truncate":
            weights.write_bytes(whole[:1000])
        else:
            weights.unlink()
        capsys.readouterr()
        build_tiny_models(tmp_path / "m", seed=0)
        assert weights.read_bytes() == whole, damage  # the same seed: the same bytes again
        assert "changed since they were built" in capsys.readouterr().err
