"""`emofuse predict --asr-model` with the tiny Whisper, end to end: files without text are
transcribed, and for a head that reads segment streams the files are aligned (or it says why not)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from emofuse.align.pocketsphinx import PocketSphinxAligner
from emofuse.audio import load_audio
from emofuse.cli import cli
from emofuse.corpus import read_corpus, write_synthetic_corpus
from emofuse.encoders.tiny import build_tiny_models


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict-asr")
    tiny = build_tiny_models(base / "models")
    root = base / "corpus"
    write_synthetic_corpus(
        root, utterances_per_speaker=4, others_per_speaker=0, duration=(0.5, 1.2), progress=False
    )
    cache = base / "cache.h5"
    result = invoke(
        "extract", "--corpus", "iemocap", "--root", root, "--out", cache,
        "--speech-model", tiny.speech["hubert"], "--text-model", tiny.text,
        "--speaker-model", "none", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = base / "run"
    result = invoke(
        "train", "--cache", cache, "--split", "loso", "--head", "coattention", "--preset", "small",
        "--set", "d_model=16", "--set", "heads=2", "--set", "ffn=32", "--set", "hidden=16",
        "--folds", "1", "--epochs", "1", "--batch-size", "8", "--out", out, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    utts = read_corpus("iemocap", root=root, progress=False).utterances
    return out, [u.audio for u in utts[:2]], utts


def test_predict_transcribes_and_aligns(run, tiny_asr):
    out, wavs, _ = run
    result = invoke("predict", "--run", out, "--asr-model", tiny_asr, "--json", *wavs)
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert len(got["predictions"]) == 2
    assert "transcribed 2 file(s) with" in got["notes"][0]
    # the tiny model's random text has no alignable words: said, and the head falls back to frames
    assert any("phone,syllable,word" in n for n in got["notes"][1:])
    assert all(p["text"] is not None for p in got["predictions"])


def test_predict_aligns_given_text(run, tiny_asr):
    out, _, utts = run
    aligner = PocketSphinxAligner()
    u = next(u for u in utts if aligner.align(load_audio(u.audio).wav, u.text).tiers is not None)
    result = invoke("predict", "--run", out, "--asr-model", tiny_asr, "--text", u.text, u.audio)
    assert result.exit_code == 0, result.output
    assert "note: --asr-model" in result.output and "not used" in result.output
    assert "note: aligned 1 file(s) with PocketSphinx for the phone,syllable,word branches" in (
        result.output
    )


def test_predict_with_unloadable_asr_model(run, tmp_path):
    out, wavs, _ = run
    result = invoke("predict", "--run", out, "--asr-model", tmp_path / "nope", wavs[0])
    assert result.exit_code == 2
    assert (
        result.output.startswith("error: ASR model folder") and "--asr-model DIR" in result.output
    )
