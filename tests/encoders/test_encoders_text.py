"""BERT-family text encoder: word ids, truncation, padding invariance."""

from __future__ import annotations

import re

import pytest
import torch

from emofuse.encoders import load_text_encoder
from emofuse.errors import EmofuseError

TEXTS = [
    "Hello, how are you today?",
    "",
    "I'm so ANGRY right now!!",
    "yes",
    "unbelievably wonderful news everybody",
]


@pytest.fixture(scope="module")
def text_encoder(tiny):
    return load_text_encoder(tiny.text)


def test_word_ids_line_up_with_whitespace_words(text_encoder):
    outs = text_encoder.encode(TEXTS)
    tok = text_encoder.tokenizer
    for text, out in zip(TEXTS, outs, strict=True):
        words = text.split()
        ids = text_encoder.tokenize([text])["input_ids"][0]
        assert out.states.shape == (len(ids), text_encoder.num_layers, text_encoder.dim)
        assert out.word_ids.shape == (len(ids),)
        assert out.word_ids[0] == -1 and out.word_ids[-1] == -1  # [CLS] ... [SEP]
        real = out.word_ids[1:-1]
        assert (real >= 0).all()
        # every word gets at least one token, in order, and the tokens of word j spell word j
        assert sorted(set(real.tolist())) == list(range(len(words)))
        assert (real[1:] >= real[:-1]).all()
        for j, word in enumerate(words):
            pieces = tok.convert_ids_to_tokens(
                [ids[k] for k in range(len(ids)) if out.word_ids[k] == j]
            )
            assert "".join(p.removeprefix("##") for p in pieces) == word.lower()
        assert not out.truncated


def test_empty_text_is_just_cls_sep(text_encoder):
    (out,) = text_encoder.encode([""])
    assert out.states.shape[0] == 2 and out.word_ids.tolist() == [-1, -1]


def test_batched_equals_one_at_a_time(text_encoder):
    batched = text_encoder.encode(TEXTS)
    for text, b in zip(TEXTS, batched, strict=True):
        (single,) = text_encoder.encode([text])
        assert b.states.shape == single.states.shape
        assert float((b.states - single.states).abs().max()) <= 1e-4
        assert b.states.dtype == torch.float32


def test_truncation_is_counted(tiny):
    enc = load_text_encoder(tiny.text, max_tokens=8)
    long_text = "one two three four five six seven eight nine ten"
    outs = enc.encode([long_text, "short one", long_text + " eleven"])
    assert [o.truncated for o in outs] == [True, False, True]
    assert enc.n_truncated == 2
    assert outs[0].states.shape[0] == 8
    assert outs[0].word_ids.tolist() == [-1, 0, 1, 2, 3, 4, 5, -1]
    assert enc.max_tokens == 8 and load_text_encoder(tiny.text).max_tokens == 512


def test_missing_or_broken_folder_is_one_line_error(tmp_path):
    with pytest.raises(EmofuseError, match="not found"):
        load_text_encoder(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{ broken")
    with pytest.raises(EmofuseError) as err:
        load_text_encoder(tmp_path)
    assert "--text-model" in str(err.value) or str(tmp_path) in str(err.value)
    assert "\n" not in str(err.value)


def test_a_speech_model_given_as_the_text_model_is_named_as_such(tiny):
    """Round-7 audit: a HuBERT folder as --text-model leaked transformers' internal TypeError
    ("expected str, bytes or os.PathLike object, not NoneType") with save_pretrained advice."""
    folder = tiny.speech["wav2vec2-group"]
    with pytest.raises(EmofuseError) as err:
        load_text_encoder(folder)
    assert str(err.value) == (
        f"--text-model {folder} is a speech model (model type 'wav2vec2'), not a text model: give "
        "it as --speech-model, and a BERT-family model folder (with its tokenizer) as --text-model"
    )


def test_speaker_and_transformers_folders_swapped_are_named_as_what_they_are(tiny):
    """Round-13 audit (extract side row 41): a HuBERT folder as --speaker-model, or the ECAPA
    folder as --speech/--text-model, got "must hold the model's config and weights as written
    by save_pretrained", which the folder already did (or which SpeechBrain never writes)."""
    from emofuse.encoders import load_speaker_encoder, load_speech_encoder

    speech, text, speaker = tiny.speech["hubert"], tiny.text, tiny.speaker
    cases = [
        (load_speaker_encoder, speech, f"--speaker-model {speech} is a transformers speech model "
         "(model type 'hubert'), not a SpeechBrain speaker model: give it as --speech-model"),
        (load_speaker_encoder, text, f"--speaker-model {text} is a transformers text model "
         "(model type 'bert'), not a SpeechBrain speaker model: give it as --text-model"),
        (load_speech_encoder, speaker, f"--speech-model {speaker} is a SpeechBrain speaker model "
         "(it holds hyperparams.yaml), not a speech model: give it as --speaker-model"),
        (load_text_encoder, speaker, f"--text-model {speaker} is a SpeechBrain speaker model "
         "(it holds hyperparams.yaml), not a text model: give it as --speaker-model"),
    ]  # fmt: skip
    for load, folder, said in cases:
        with pytest.raises(EmofuseError) as err:
            load(folder)
        assert str(err.value).startswith(said) and "\n" not in str(err.value), str(err.value)
        assert "save_pretrained" not in str(err.value)


def test_a_text_model_folder_that_lost_its_vocabulary_is_refused(tiny, tmp_path):
    """Without tokenizer.json and vocab.txt transformers built a tokenizer of the 5 special
    tokens: every word became [UNK], stored as a success (round-13 extract side row 104)."""
    import json
    import shutil

    folder = tmp_path / "bert"
    shutil.copytree(tiny.text, folder)
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").unlink()
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    with pytest.raises(EmofuseError) as err:
        load_text_encoder(folder)
    assert re.fullmatch(
        rf"--text-model {re.escape(str(folder))}: its tokenizer knows \d+ tokens but the model "
        rf"has a vocabulary of {vocab}, so most words would be \[UNK\] .*",
        str(err.value),
    ), str(err.value)
    assert load_text_encoder(tiny.text).tokenizer is not None  # the whole folder loads


def test_a_config_asking_for_more_layers_or_a_larger_tokenizer_is_refused(tiny, tmp_path):
    """A hubert whose config.json asks for 4 layers with weights for 2 (transformers fills the
    rest at random: two runs stored different features), a preprocessor at 8 kHz (a
    ValueError traceback on the first batch) and a tokenizer larger than the embedding table
    (an IndexError traceback) are each one line at load (round-14 extract side rows 21, 41, 24)."""
    import json
    import shutil

    from emofuse.encoders import load_speech_encoder

    deep = tmp_path / "deep"
    shutil.copytree(tiny.speech["hubert"], deep)
    config = json.loads((deep / "config.json").read_text())
    config["num_hidden_layers"] += 2
    (deep / "config.json").write_text(json.dumps(config))
    with pytest.raises(EmofuseError) as err:
        load_speech_encoder(deep)
    assert str(err.value).startswith(f"--speech-model {deep}: its weights lack "), err.value
    assert "which would be random" in str(err.value)
    for family in ("hubert", "whisper"):  # whisper's was used at 16 kHz silently (row 93)
        slow = tmp_path / f"slow-{family}"
        shutil.copytree(tiny.speech[family], slow)
        pre = json.loads((slow / "preprocessor_config.json").read_text())
        pre["sampling_rate"] = 8000
        (slow / "preprocessor_config.json").write_text(json.dumps(pre))
        with pytest.raises(EmofuseError, match="preprocessor_config.json says sampling_rate 8000"):
            load_speech_encoder(slow)
    big = tmp_path / "bert"
    shutil.copytree(tiny.text, big)
    (big / "tokenizer.json").unlink()
    vocab = (big / "vocab.txt").read_text().splitlines()
    size = json.loads((big / "config.json").read_text())["vocab_size"]
    extra = [f"zz{i}" for i in range(size + 5 - len(vocab))]
    (big / "vocab.txt").write_text("\n".join(vocab + extra) + "\n")
    with pytest.raises(EmofuseError, match="embedding table has"):
        load_text_encoder(big)


def test_a_model_file_without_read_permission_is_named_as_such(tiny, monkeypatch):
    """`chmod 000 model.safetensors` was "is damaged (… No such file or directory) … copy that
    file again", which keeps its mode (round-14 extract side row 75). (Root reads everything:
    the permission is refused by the check's own call.)"""
    import os
    from pathlib import Path

    from emofuse.encoders.common import broken_file, load_error

    weights = Path(tiny.speech["hubert"]) / "model.safetensors"
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == weights else real(p, m))

    assert broken_file(weights.parent)[1].startswith("cannot be read (Permission denied)")
    line = str(load_error("speech", str(weights.parent), "--speech-model", OSError("x")))
    assert line == (
        f"cannot load speech model from folder {weights.parent}: model.safetensors cannot be read "
        "(Permission denied): make it readable (`chmod u+r` it, or ask its owner)"
    ), line


def test_a_speaker_model_of_another_sampling_rate_is_refused(tmp_path):
    """An ECAPA whose hyperparams.yaml says sample_rate 8000 was fed 16 kHz audio and stored as a
    success (round-14 extract side row 89)."""
    from emofuse.encoders.speaker import load_speaker_encoder
    from emofuse.encoders.tiny import build_speaker

    folder = build_speaker(tmp_path / "ecapa8k")
    yaml = folder / "hyperparams.yaml"
    yaml.write_text(yaml.read_text().replace("sample_rate: 16000", "sample_rate: 8000"))
    with pytest.raises(EmofuseError, match="its hyperparams.yaml says sample_rate 8000"):
        load_speaker_encoder(folder)
    assert load_speaker_encoder(build_speaker(tmp_path / "ecapa")) is not None  # 16 kHz loads
