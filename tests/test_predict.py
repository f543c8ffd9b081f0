"""`emofuse predict`: the same features and heads as training, on new files.

One tiny pipeline (synthetic corpus → tiny encoders → cache → a one-fold run of a head that reads
speech, text and speaker) is built once; predict must reproduce that run's saved test predictions
for fold 1's test wavs, and handle resampled stereo audio, missing files and vanished encoders.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from emofuse.cli import cli
from emofuse.corpus import read_corpus, write_synthetic_corpus
from emofuse.encoders.tiny import build_tiny_models
from emofuse.train.rundir import read_predictions


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict")
    tiny = build_tiny_models(base / "models")
    root = base / "corpus"
    write_synthetic_corpus(
        root, utterances_per_speaker=6, others_per_speaker=0, duration=(0.5, 1.2), progress=False
    )
    cache = base / "cache.h5"
    result = invoke(
        "extract", "--corpus", "iemocap", "--root", root, "--out", cache,
        "--speech-model", tiny.speech["hubert"], "--text-model", tiny.text,
        "--speaker-model", tiny.speaker, "--granularity", "frame", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = base / "run"
    result = invoke(
        "train", "--cache", cache, "--split", "loso", "--head", "tdfnet", "--preset", "small",
        "--set", "d_model=32", "--set", "ffn=64", "--folds", "1", "--epochs", "2",
        "--batch-size", "8", "--lr", "1e-3", "--out", run, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    utts = {u.id: u for u in read_corpus("iemocap", root=root, progress=False).utterances}
    plan = json.loads((run / "folds.json").read_text())
    test_ids = plan["folds"][0]["test"]
    return {"base": base, "run": run, "utts": utts, "test_ids": test_ids, "tiny": tiny}


def write_transcripts(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["audio", "text"])
        w.writerows(rows)
    return path


def test_predict_reproduces_the_runs_test_predictions(trained):
    utts, ids = trained["utts"], trained["test_ids"]
    files = [str(utts[i].audio) for i in ids]
    transcripts = write_transcripts(
        trained["base"] / "transcripts.csv", [(str(utts[i].audio), utts[i].text) for i in ids]
    )
    result = invoke(
        "predict", "--run", trained["run"], "--fold", "1", "--transcripts", transcripts,
        "--json", *files,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    saved = read_predictions(trained["run"] / "fold_01" / "predictions.csv")
    saved_label = dict(zip(saved["ids"], saved["predicted"], strict=True))
    got = [p["label"] for p in out["predictions"]]
    assert got == [saved_label[i] for i in ids]
    probs = np.array([list(p["probabilities"].values()) for p in out["predictions"]])
    assert probs.shape == (len(ids), 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # the saved probabilities too, not only the arg-max (fp16 cache on both sides)
    saved_probs = {i: p for i, p in zip(saved["ids"], saved["probs"], strict=True)}
    np.testing.assert_allclose(probs, np.array([saved_probs[i] for i in ids]), atol=2e-3)


def test_predict_applies_the_checkpoints_input_standardisation(trained, monkeypatch):
    """The fold's training statistics travel in the checkpoint: predict with them reproduces the
    saved probabilities (above); with them reset to identity it does not, so they are applied."""
    import torch

    import emofuse.predict as predict_mod

    ckpt = torch.load(trained["run"] / "fold_01" / "checkpoint.pt", weights_only=False)
    means = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("input_pipeline.mean_")}
    assert {k.rsplit("_", 1)[1] for k in means} == {"speech", "text", "speaker"}
    assert all(v.abs().max() > 1e-3 for v in means.values())  # real statistics, not the identity
    utts, ids = trained["utts"], trained["test_ids"]
    files = [str(utts[i].audio) for i in ids]
    saved = read_predictions(trained["run"] / "fold_01" / "predictions.csv")
    saved_probs = dict(zip(saved["ids"], saved["probs"], strict=True))
    load = predict_mod.load_fold_model

    def without_statistics(*args, **kwargs):
        model = load(*args, **kwargs)
        pipe = model.input_pipeline
        for name, buf in pipe.named_buffers():
            buf.fill_(0.0 if name.startswith("mean_") else 1.0)
        return model

    monkeypatch.setattr(predict_mod, "load_fold_model", without_statistics)
    transcripts = write_transcripts(
        trained["base"] / "transcripts2.csv", [(str(utts[i].audio), utts[i].text) for i in ids]
    )
    result = invoke(
        "predict", "--run", trained["run"], "--fold", "1", "--transcripts", transcripts,
        "--json", *files,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    probs = np.array(
        [list(p["probabilities"].values()) for p in json.loads(result.output)["predictions"]]
    )
    assert np.abs(probs - np.array([saved_probs[i] for i in ids])).max() > 1e-2


def test_predict_takes_44k_stereo_and_averages_folds_without_transcript(trained, tmp_path):
    utt = trained["utts"][trained["test_ids"][0]]
    wav, rate = sf.read(utt.audio, dtype="float32")
    t_old = np.arange(len(wav)) / rate
    t_new = np.arange(int(len(wav) * 44100 / rate)) / 44100
    resampled = np.interp(t_new, t_old, wav).astype(np.float32)
    stereo = tmp_path / "stereo44k.flac"
    sf.write(stereo, np.stack([resampled, 0.5 * resampled], axis=1), 44100)
    result = invoke("predict", "--run", trained["run"], stereo)
    assert result.exit_code == 0, result.output
    assert "no transcript given" in result.output
    line = [x for x in result.output.splitlines() if x.startswith(str(stereo))]
    assert len(line) == 1
    label, *probs = line[0].split("\t")[1:]
    assert label in {"ang", "hap", "neu", "sad"}
    values = [float(x.split()[1]) for x in probs[0].split("  ")]
    assert abs(sum(values) - 1.0) < 2e-3  # printed with 3 decimals


def test_predict_missing_audio_is_one_line(trained, tmp_path):
    missing = tmp_path / "nope.wav"
    result = invoke("predict", "--run", trained["run"], missing)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: audio file {missing} not found"


def test_predict_refuses_when_the_encoders_are_gone(trained):
    speech = Path(trained["tiny"].speech["hubert"])
    hidden = speech.with_name(speech.name + "-moved")
    utt = trained["utts"][trained["test_ids"][0]]
    speech.rename(hidden)  # the folder the run's cache was extracted with disappears
    try:
        result = invoke("predict", "--run", trained["run"], utt.audio)
    finally:
        hidden.rename(speech)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(speech) in lines[0], lines


def test_predict_finds_moved_model_folders_by_option_and_checks_their_weights(trained):
    speech = Path(trained["tiny"].speech["hubert"])
    moved = trained["base"] / "elsewhere" / "hubert"
    utt = trained["utts"][trained["test_ids"][0]]
    before = invoke("predict", "--run", trained["run"], "--json", utt.audio)
    assert before.exit_code == 0, before.output
    moved.parent.mkdir()
    speech.rename(moved)
    try:
        gone = invoke("predict", "--run", trained["run"], utt.audio)
        lines = gone.output.strip().splitlines()
        assert gone.exit_code == 2 and len(lines) == 1, gone.output
        assert str(speech) in lines[0] and "emofuse predict --speech-model DIR" in lines[0]
        found = invoke(
            "predict", "--run", trained["run"], "--speech-model", moved, "--json", utt.audio
        )
        assert found.exit_code == 0, found.output
        p0 = json.loads(before.output)["predictions"][0]["probabilities"]
        p1 = json.loads(found.output)["predictions"][0]["probabilities"]
        np.testing.assert_allclose(list(p1.values()), list(p0.values()), atol=1e-6)
        other = invoke(  # a folder with other weights is refused, not silently used
            "predict", "--run", trained["run"], "--speech-model", trained["tiny"].speech["wavlm"],
            utt.audio,
        )  # fmt: skip
        assert other.exit_code == 2 and "other weights" in other.output, other.output
        typo = trained["base"] / "nonexist"  # said the run was trained with it (round-13 row 23)
        wrong = invoke("predict", "--run", trained["run"], "--speech-model", typo, utt.audio)
        assert wrong.exit_code == 2 and wrong.output.strip() == (
            f"error: --speech-model {typo} does not exist: give the folder the speech model was "
            "moved to"
        ), wrong.output
    finally:
        moved.rename(speech)


def test_predict_with_a_speaker_norm_run_standardises_one_speakers_files(trained):
    run = trained["base"] / "run-sn"
    result = invoke(
        "train", "--cache", trained["base"] / "cache.h5", "--split", "loso", "--head", "pooled",
        "--folds", "1", "--epochs", "3", "--lr", "1e-2", "--speaker-norm", "--out", run, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    utts = trained["utts"]
    speaker = utts[trained["test_ids"][0]].speaker
    ids = [i for i in trained["test_ids"] if utts[i].speaker == speaker]  # one speaker's test set
    result = invoke("predict", "--run", run, "--fold", "1", "--json", *[utts[i].audio for i in ids])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert any("standardised together as one speaker" in n for n in out["notes"])
    saved = read_predictions(run / "fold_01" / "predictions.csv")
    saved_probs = {i: p for i, p in zip(saved["ids"], saved["probs"], strict=True)}
    probs = np.array([list(p["probabilities"].values()) for p in out["predictions"]])
    np.testing.assert_allclose(probs, np.array([saved_probs[i] for i in ids]), atol=2e-3)
    one = invoke("predict", "--run", run, utts[ids[0]].audio)
    assert one.exit_code == 2 and "several recordings of one speaker" in one.output
    assert len(one.output.strip().splitlines()) == 1


def test_predict_names_the_audio_file_whose_features_are_not_finite(trained, monkeypatch):
    """An encoder that overflows (fp16 on a GPU) on one file gives NaN/inf features: the message
    names that audio file, not an id of predict's temporary cache that the user never saw."""
    from emofuse.cache.reader import Cache

    load = Cache.load

    def overflowing(self, stream, *args, **kwargs):
        values, offsets = load(self, stream, *args, **kwargs)
        if stream == "speech":
            values = np.array(values)  # a copy: the file is not touched
            values[int(offsets[1]) + 1] = np.inf  # a frame of the second file
        return values, offsets

    monkeypatch.setattr(Cache, "load", overflowing)
    utts, ids = trained["utts"], trained["test_ids"]
    files = [str(utts[i].audio) for i in ids[:3]]
    result = invoke("predict", "--run", trained["run"], "--fold", "1", *files)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {files[1]}: ") and "NaN or inf" in lines[0], lines[0]
    assert "'speech' features" in lines[0] and "emofuse-predict-" not in lines[0], lines[0]


def test_predict_pads_a_clip_shorter_than_the_speaker_models_minimum(trained, tmp_path):
    """400 samples (25 ms) are too few frames for ECAPA's dilated convolutions: predict used to
    end in SpeechBrain's RuntimeError traceback; the clip is padded as extraction pads it."""
    clip = tmp_path / "blip.wav"
    sf.write(clip, 0.1 * np.random.default_rng(5).standard_normal(400).astype(np.float32), 16000)
    result = invoke("predict", "--run", trained["run"], clip)
    assert "Traceback" not in result.output
    assert result.exit_code == 0, result.output
    assert len([x for x in result.output.splitlines() if x.startswith(str(clip))]) == 1
    notes = [x for x in result.output.splitlines() if x.startswith("note: ") and "padded" in x]
    assert len(notes) == 1 and str(clip) in notes[0] and "minimum of 640 samples" in notes[0]


def test_predict_refuses_a_fold_whose_checkpoint_is_cut_short(trained, tmp_path, monkeypatch):
    """Refused before any feature is extracted (the error came after the extraction before)."""
    import shutil

    import emofuse.extract

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were extracted for a run whose checkpoint is damaged")

    monkeypatch.setattr(emofuse.extract, "run_extract", no_extraction)
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    ckpt = run / "fold_01" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:-100])
    utt = trained["utts"][trained["test_ids"][0]]
    result = invoke("predict", "--run", run, utt.audio)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {ckpt} is damaged") and f"delete {ckpt.parent}" in lines[0]


def test_predict_with_a_fused_run_says_it_predicts_through_its_members(trained, tmp_path):
    """A run made by `emofuse fuse` has no checkpoint: predict said it was 'trained with an older
    emofuse' and to retrain it."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(trained["run"], other)
    fused = tmp_path / "fused"
    assert invoke("fuse", trained["run"], other, "--out", fused).exit_code == 0
    utt = trained["utts"][trained["test_ids"][0]]
    result = invoke("predict", "--run", fused, utt.audio, "--text", "hi")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {fused} is a fused run"), lines[0]
    assert "older emofuse" not in lines[0] and "cannot predict alone" in lines[0]
    assert str(trained["run"]) in lines[0] and str(other) in lines[0]


def test_predict_from_another_folder_finds_models_the_cache_names_relative(
    trained, tmp_path, monkeypatch
):
    """A cache extracted with relative model paths (--speech-model models/…): predict from any
    other folder said the model was gone. The run records where they are (model_dirs); a run
    without that record (an older emofuse) is one line saying the path is relative."""
    base = trained["base"]
    tiny = trained["tiny"]
    monkeypatch.chdir(base)
    rel = {k: str(Path(v).relative_to(base)) for k, v in (
        ("speech", tiny.speech["hubert"]), ("text", tiny.text), ("speaker", tiny.speaker))}  # fmt: skip
    result = invoke(
        "extract", "--corpus", "iemocap", "--root", "corpus", "--out", "rel.h5",
        "--speech-model", rel["speech"], "--text-model", rel["text"],
        "--speaker-model", rel["speaker"], "--granularity", "frame", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = invoke(
        "train", "--cache", "rel.h5", "--split", "loso", "--head", "concat", "--preset", "small",
        "--folds", "1", "--epochs", "1", "--batch-size", "8", "--out", "relrun", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    utt = trained["utts"][trained["test_ids"][0]]
    monkeypatch.chdir(tmp_path)
    result = invoke("predict", "--run", base / "relrun", utt.audio, "--text", "hi")
    assert result.exit_code == 0, result.output
    config = json.loads((base / "relrun" / "config.json").read_text())
    assert config["cache"] == str(base / "rel.h5")
    assert config["model_dirs"]["speech_model"] == str(tiny.speech["hubert"])
    speech = Path(tiny.speech["hubert"])
    speech.rename(speech.with_name("hubert-away"))  # the recorded folder gone, no option given
    try:  # it said "--speech-model … does not exist", an option never given (round-14 row 55)
        line = _one_line(invoke("predict", "--run", base / "relrun", utt.audio, "--text", "hi"))
    finally:
        speech.with_name("hubert-away").rename(speech)
    assert line.startswith(f"error: the speech model {base / 'relrun'} was trained with, "), line
    # as an older emofuse wrote it: no model_dirs, and no seal over config.json yet
    old = {k: v for k, v in config.items() if k not in ("model_dirs", "config_sha256")}
    (base / "relrun" / "config.json").write_text(json.dumps(old))
    result = invoke("predict", "--run", base / "relrun", utt.audio, "--text", "hi")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {base / 'relrun'} records the speech model as the relative "
                               f"path {rel['speech']}"), lines[0]  # fmt: skip
    assert f"from {tmp_path}" in lines[0] and "--speech-model DIR" in lines[0]


def _copy_run(trained, tmp_path: Path, name: str = "copy") -> Path:
    import shutil

    out = tmp_path / name
    shutil.copytree(trained["run"], out)
    return out


def _one_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("key", ["head", "labels", "head_config"])
def test_predict_with_a_config_json_without_a_required_key_is_one_line(trained, tmp_path, key):
    """A KeyError traceback before (predict read config["head"] / ["labels"])."""
    run = _copy_run(trained, tmp_path)
    config = json.loads((run / "config.json").read_text())
    del config[key]
    (run / "config.json").write_text(json.dumps(config))
    utt = trained["utts"][trained["test_ids"][0]]
    line = _one_line(invoke("predict", "--run", run, utt.audio))
    assert line == f"error: {run / 'config.json'} is damaged (no {key!r}); retrain into a new --out"


@pytest.fixture(scope="module")
def pooled_run(trained):
    """A one-fold run of the speech-only ``pooled`` head on the same cache as ``trained``."""
    run = trained["base"] / "pooled-run"
    result = invoke(
        "train", "--cache", trained["base"] / "cache.h5", "--split", "loso", "--head", "pooled",
        "--folds", "1", "--epochs", "1", "--batch-size", "8", "--out", run, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return run


def test_predict_of_a_folder_says_to_give_its_audio_files(trained, tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    line = _one_line(invoke("predict", "--run", trained["run"], folder))
    assert line == f"error: audio {folder} is a folder: give audio files (e.g. {folder}/*.wav)"


def test_predict_names_a_checkpoint_copied_from_a_run_of_another_head(
    trained, pooled_run, tmp_path
):
    """predict said "the batch has no 'speech' stream: load it from the cache"."""
    import shutil

    run = tmp_path / "pooled"
    shutil.copytree(pooled_run, run)
    shutil.copy(trained["run"] / "fold_01" / "checkpoint.pt", run / "fold_01" / "checkpoint.pt")
    utt = trained["utts"][trained["test_ids"][0]]
    line = _one_line(invoke("predict", "--run", run, utt.audio))
    ckpt = run / "fold_01" / "checkpoint.pt"
    assert line.startswith(f"error: {ckpt} is not this run's head's: it holds a tdfnet model"), line
    assert "(pooled)" in line and f"delete {run / 'fold_01'}" in line
    assert "stream" not in line


def test_predict_with_text_for_a_head_that_reads_none_notes_it_is_ignored(trained, pooled_run):
    utt = trained["utts"][trained["test_ids"][0]]
    result = CliRunner().invoke(
        cli, ["predict", "--run", str(pooled_run), str(utt.audio), "--text", "hello", "--json"]
    )
    assert result.exit_code == 0, result.output
    note = f"note: --text is ignored: head pooled of {pooled_run} reads no text"
    assert result.stderr.strip().splitlines() == [note], result.stderr
    out = json.loads(result.stdout)
    assert out["text_used"] is False and out["predictions"][0]["text"] is None
    result = CliRunner().invoke(cli, ["predict", "--run", str(pooled_run), str(utt.audio)])
    assert result.exit_code == 0 and "ignored" not in result.output  # no --text: no note
    result = CliRunner().invoke(
        cli, ["predict", "--run", str(pooled_run), str(utt.audio), "--json"]
    )  # round 9: without --text it claimed text_used true for a head that reads no text
    assert json.loads(result.stdout)["text_used"] is False
    result = CliRunner().invoke(  # a head that reads text: no note, the text is echoed
        cli, ["predict", "--run", str(trained["run"]), str(utt.audio), "--text", "hi", "--json"]
    )
    assert result.exit_code == 0 and "ignored" not in result.stderr, result.output
    out = json.loads(result.stdout)
    assert out["text_used"] is True and out["predictions"][0]["text"] == "hi"


def _train_user_head(trained, tmp_path: Path, spec: str) -> Path:
    """A one-fold run of a user head file (``path.py:Class``) on the shared cache."""
    run = tmp_path / "run"
    result = invoke(
        "train", "--cache", trained["base"] / "cache.h5", "--split", "loso", "--head", spec,
        "--folds", "1", "--epochs", "1", "--out", run, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return run


def test_predict_after_the_user_head_file_was_edited_names_the_file(trained, tmp_path):
    """predict advised "retrain the run with this emofuse version" for a user's own edit."""
    from tests.helpers import TINY_HEAD

    head = tmp_path / "my_head.py"
    head.write_text(Path(TINY_HEAD.rpartition(":")[0]).read_text())
    run = _train_user_head(trained, tmp_path, f"{head}:TinyHead")
    source = head.read_text()
    edited = source.replace(
        "        self.classifier = nn.Linear(cfg.hidden, n_classes)",
        "        self.extra = nn.Linear(cfg.hidden, cfg.hidden)\n"
        "        self.classifier = nn.Linear(cfg.hidden, n_classes)",
    )
    assert edited != source
    head.write_text(edited)
    import sys

    for name in [m for m in sys.modules if m.startswith("emofuse_user_head_")]:
        del sys.modules[name]  # a new `emofuse predict` process imports the edited file
    utt = trained["utts"][trained["test_ids"][0]]
    line = _one_line(invoke("predict", "--run", run, utt.audio, "--text", "hi"))
    assert line.startswith(f"error: head file {head} changed since {run} was trained"), line
    assert "this emofuse version" not in line and "restore the file" in line


def test_predict_notes_go_to_stderr_so_stdout_holds_only_the_table(trained):
    """A 'note:' in text mode went to stdout: `predict … | cut -f2` read it as a prediction
    (fifth audit, train side, row 24)."""
    utt = trained["utts"][trained["test_ids"][0]]
    result = CliRunner().invoke(cli, ["predict", "--run", str(trained["run"]), str(utt.audio)])
    assert result.exit_code == 0, result.output
    assert "note: no transcript given" in result.stderr, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("(") and len(lines) == 2, result.stdout
    assert lines[1].split("\t")[:2] == [str(utt.audio), lines[1].split("\t")[1]]
    assert "note:" not in result.stdout


@pytest.mark.parametrize(
    "text, says",
    [
        ("   ", "has no words once normalised as in extraction (text_norm default"),
        ("[LAUGHTER]", "has no words once normalised as in extraction (text_norm default"),
        ("\x01\x02", "has no words once normalised as in extraction (text_norm default"),
        (" ".join(["word"] * 3000), "is longer than the text model takes: it was cut to"),
    ],
    ids=["blank", "a tag only", "control characters", "3000 words"],
)
def test_predict_says_when_the_text_model_saw_no_words_or_a_cut_transcript(trained, text, says):
    """A transcript with no words left after normalisation, and one cut at the text model's
    length, were predicted from silently (`"notes": []`; round-15 train side rows 27, 28)."""
    utt = trained["utts"][trained["test_ids"][0]]
    result = CliRunner().invoke(
        cli, ["predict", "--run", str(trained["run"]), str(utt.audio), "--text", text, "--json"]
    )
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    assert len(notes) == 1 and says in notes[0], notes
    assert notes[0].startswith(f"the transcript of {utt.audio}"), notes


def test_a_text_only_head_without_words_to_read_is_refused(trained, tmp_path):
    """Round-16 train side row 21 and round-18 rows 18, 62, 81: for a head that reads only text,
    a blank transcript, an empty transcripts cell or no transcript at all gave exit 0 and a label
    that is only the head's bias ("the prediction rests on the other streams": there are none)."""
    run = tmp_path / "text_run"
    result = invoke(
        "train", "--cache", trained["base"] / "cache.h5", "--split", "loso", "--head", "text",
        "--folds", "1", "--epochs", "1", "--batch-size", "8", "--out", run, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    utt = trained["utts"][trained["test_ids"][0]]
    line = _one_line(invoke("predict", "--run", run, utt.audio, "--text", "   ", "--json"))
    assert line.startswith(f"error: the transcript of {utt.audio} has no words once normalised")
    assert line.endswith("reads text only, so a prediction would say nothing of the recording: "
                         "give a transcript with words"), line  # fmt: skip
    table = tmp_path / "t.csv"
    table.write_text(f"audio,text\n{utt.audio},\n")  # an empty cell
    line = _one_line(invoke("predict", "--run", run, utt.audio, "--transcripts", table))
    assert "has no words once normalised" in line and "reads text only" in line, line
    line = _one_line(invoke("predict", "--run", run, utt.audio))  # no transcript at all
    assert line == (
        f"error: head text of {run} reads text only and no transcript was given, so a prediction "
        "would say nothing of the recording: give --text, --transcripts or --asr-model"
    ), line
    assert invoke("predict", "--run", run, utt.audio, "--text", "hello there").exit_code == 0


BOOM_HEAD = """
import os

from tests.train.tiny_head import TinyHead


class BoomHead(TinyHead):  # trains as TinyHead; raises once EMOFUSE_TEST_BOOM is set
    def embed(self, batch):
        if os.environ.get("EMOFUSE_TEST_BOOM"):
            raise ValueError("eval boom")
        return super().embed(batch)
"""


def test_a_user_head_raising_in_predict_or_report_tsne_is_one_line_naming_it(
    trained, tmp_path, monkeypatch
):
    """Train named a raising user head in one line; predict and `report --tsne` let its
    exception out as a traceback, exit 1 (round-10 row 35 of the train side)."""
    head = tmp_path / "boom_head.py"
    head.write_text(BOOM_HEAD)
    run = _train_user_head(trained, tmp_path, f"{head}:BoomHead")
    monkeypatch.setenv("EMOFUSE_TEST_BOOM", "1")
    utt = trained["utts"][trained["test_ids"][0]]
    line = _one_line(invoke("predict", "--run", run, utt.audio, "--text", "hi"))
    assert line.startswith(f"error: head {head}:BoomHead failed while predicting with fold 1 ("), (
        line
    )
    assert f"ValueError: eval boom, at {head} line 10" in line, line
    assert line.endswith("fix the head, then rerun the same command"), line
    line = _one_line(invoke("report", run, "--tsne"))
    assert line.startswith(
        f"error: head {head}:BoomHead failed while computing the t-SNE embeddings of fold 1 ("
    ), line
    assert "eval boom" in line and line.endswith("rerun the same `emofuse report`"), line
    monkeypatch.delenv("EMOFUSE_TEST_BOOM")
    assert invoke("predict", "--run", run, utt.audio, "--text", "hi").exit_code == 0


def test_transcripts_rows_match_the_longest_path_tail_and_a_shared_name_is_refused(
    trained, tmp_path, monkeypatch
):
    """`w/b/x.wav` took the row `x.wav` (another file's) though the CSV had `b/x.wav`; a bare
    name matching two different files gave both its text (round-10 row 40 of the train side)."""
    import shutil

    utts, ids = trained["utts"], trained["test_ids"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w" / "b").mkdir(parents=True)
    shutil.copy(utts[ids[0]].audio, "w/x.wav")
    shutil.copy(utts[ids[1]].audio, "w/b/x.wav")
    table = write_transcripts(tmp_path / "t.csv", [("x.wav", "hello"), ("b/x.wav", "other")])
    result = invoke("predict", "--run", trained["run"], "--transcripts", table, "--json",
                    "w/x.wav", "w/b/x.wav")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [(p["audio"], p["text"]) for p in out["predictions"]] == [
        ("w/x.wav", "hello"), ("w/b/x.wav", "other"),
    ]  # fmt: skip
    alone = write_transcripts(tmp_path / "one.csv", [("x.wav", "hello")])
    line = _one_line(invoke("predict", "--run", trained["run"], "--transcripts", alone,
                            "w/x.wav", "w/b/x.wav"))  # fmt: skip
    assert line.startswith("error: --transcripts row 'x.wav' matches 2 different AUDIO files"), line
    assert "(w/x.wav, w/b/x.wav, …)" in line and "its own row" in line, line
    # the same file twice on the command line is one file: its row serves both
    twice = invoke("predict", "--run", trained["run"], "--transcripts", alone, "--json",
                   "w/x.wav", "./w/x.wav")  # fmt: skip
    assert twice.exit_code == 0, twice.output
    assert [p["text"] for p in json.loads(twice.stdout)["predictions"]] == ["hello", "hello"]


def test_a_head_file_edited_with_the_same_shapes_is_refused_by_predict_report_and_train(
    trained, tmp_path
):
    """Round-11 row 40: an edit of a user head's code that keeps its parameter shapes was used
    without a word by predict and `report --tsne` (the recorded digest was only read when the
    weights did not fit), and a resume would train the remaining folds with the edited code."""
    import sys

    from tests.helpers import TINY_HEAD

    head = tmp_path / "same_shapes.py"
    head.write_text(Path(TINY_HEAD.rpartition(":")[0]).read_text())
    run = _train_user_head(trained, tmp_path, f"{head}:TinyHead")
    source = head.read_text()
    edited = source.replace(
        "    def embed(self, batch", "    # edited after training\n    def embed(self, batch", 1
    )
    assert edited != source
    head.write_text(edited)
    for name in [m for m in sys.modules if m.startswith("emofuse_user_head_")]:
        del sys.modules[name]
    expected = f"error: head file {head} changed since {run} was trained (its SHA-256 is not the"
    utt = trained["utts"][trained["test_ids"][0]]
    line = _one_line(invoke("predict", "--run", run, utt.audio, "--text", "hi"))
    assert line.startswith(expected) and "fold 1's checkpoint would run other code" in line, line
    assert line.endswith(
        "restore the file as it was when the run was trained, or retrain into a new --out"
    )
    assert _one_line(invoke("report", run, "--tsne")).startswith(expected)
    line = _one_line(invoke(
        "train", "--cache", trained["base"] / "cache.h5", "--split", "loso", "--head",
        f"{head}:TinyHead", "--folds", "1,2", "--epochs", "1", "--out", run, "--quiet",
    ))  # fmt: skip
    assert line.startswith(expected) and "its finished folds were trained with other code" in line
    head.write_text(source)  # the file as it was: everything works again
    for name in [m for m in sys.modules if m.startswith("emofuse_user_head_")]:
        del sys.modules[name]
    assert invoke("predict", "--run", run, utt.audio, "--text", "hi").exit_code == 0


@pytest.mark.parametrize("lazily", [False, True], ids=["at the top", "inside forward"])
def test_a_module_the_head_file_imports_edited_after_training_is_refused(trained, tmp_path, lazily):
    """Round-12 rows 5-6 (train side): a user head importing a sibling ``helper.py`` recorded only
    the head file's digest, so predict and `report --tsne` ran the edited helper without a word
    (its probabilities moved from sad 0.284 to 0.262). Round-13 row 100: imported inside a method,
    it was not loaded when the digests were taken (``head_modules`` was empty)."""
    import json
    import sys

    from tests.helpers import TINY_HEAD

    folder = tmp_path / "h"
    folder.mkdir()
    helper_name = f"scale_helper_{tmp_path.name.replace('-', '_')}"
    helper = folder / f"{helper_name}.py"
    helper.write_text("SCALE = 1.0\n")
    source = Path(TINY_HEAD.rpartition(":")[0]).read_text()
    imported = f"import {helper_name} as helper"  # a plain sibling import (round-13 row 1)
    if lazily:
        source = source.replace(
            "return self.mlp(torch.cat(parts",
            f"{imported}\n\n        return helper.SCALE * self.mlp(torch.cat(parts",
        )
    else:
        source = source.replace(
            "from emofuse.heads.base", f"{imported}\n\nfrom emofuse.heads.base"
        ).replace(
            "return self.mlp(torch.cat(parts", "return helper.SCALE * self.mlp(torch.cat(parts"
        )
    assert "helper.SCALE" in source
    head = folder / "head.py"
    head.write_text(source)

    def new_process() -> None:  # a new emofuse process imports the files as they are now
        for name in [m for m in sys.modules if m.startswith(("emofuse_user_head_", helper_name))]:
            del sys.modules[name]

    try:
        run = _train_user_head(trained, tmp_path, f"{head}:TinyHead")
        recorded = json.loads((run / "config.json").read_text())["head_modules"]
        assert list(recorded) == [str(helper.resolve())], recorded  # not emofuse, not torch
        helper.write_text("SCALE = 0.0\n")
        new_process()
        expected = (
            f"error: module {helper.resolve()} (imported by head file {head}) changed since {run} "
            "was trained (its SHA-256 is not the recorded one)"
        )
        utt = trained["utts"][trained["test_ids"][0]]
        line = _one_line(invoke("predict", "--run", run, utt.audio, "--text", "hi"))
        assert line.startswith(expected) and "fold 1's checkpoint would run" in line, line
        new_process()
        assert _one_line(invoke("report", run, "--tsne")).startswith(expected)
        new_process()
        line = _one_line(invoke(
            "train", "--cache", trained["base"] / "cache.h5", "--split", "loso", "--head",
            f"{head}:TinyHead", "--folds", "1,2", "--epochs", "1", "--out", run, "--quiet",
        ))  # fmt: skip
        assert line.startswith(expected) and "its finished folds were trained with" in line, line
        helper.write_text("SCALE = 1.0\n")  # as it was: everything works again
        new_process()
        assert invoke("predict", "--run", run, utt.audio, "--text", "hi").exit_code == 0
    finally:
        new_process()
        sys.path[:] = [p for p in sys.path if p != str(folder.resolve())]


def test_unreadable_audio_is_one_line_naming_the_file_once(trained, tmp_path):
    """Round-12 row 61 (train side): `error: bad.wav: unreadable audio bad.wav: Format not
    recognised.` named the file twice and said nothing of what to do."""
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"junk" * 100)
    line = _one_line(invoke("predict", "--run", trained["run"], bad, "--text", "hi"))
    assert line.startswith(f"error: {bad}: unreadable audio: "), line
    assert line.count("bad.wav") == 1 and line.endswith("(WAV, FLAC, OGG or MP3)"), line


def test_audio_the_tool_read_but_cannot_use_gets_advice_that_fits(trained, tmp_path):
    """Round-16 train side row 17: silent audio was told to "give a recording soundfile reads",
    the advice for a file soundfile cannot read, and a truncated copy got two pieces of advice."""
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(32000, np.float32), 16000)
    line = _one_line(invoke("predict", "--run", trained["run"], silent, "--text", "hi"))
    want = (
        f"error: {silent}: silent audio (peak below -80 dBFS); give a recording with speech in it"
    )
    assert line == want, line
    cut = tmp_path / "cut.wav"
    sf.write(cut, np.random.default_rng(0).uniform(-0.5, 0.5, 32000).astype(np.float32), 16000)
    cut.write_bytes(cut.read_bytes()[:20000])  # the header still claims 2 s
    line = _one_line(invoke("predict", "--run", trained["run"], cut, "--text", "hi"))
    assert line.startswith(f"error: {cut}: truncated audio"), line
    assert line.endswith("copy the file again") and "soundfile reads" not in line, line


def test_predict_with_a_fold_of_the_run_gone_says_so(trained, tmp_path):
    """Round-12 row 55 (train side): with a fold's metrics deleted predict printed "(mean of
    folds 1,2,3,5)" and no word that the run is no longer whole."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    result = invoke(
        "train", "--cache", trained["base"] / "cache.h5", "--split", "loso", "--head", "tdfnet",
        "--preset", "small", "--set", "d_model=32", "--set", "ffn=64", "--folds", "1,2",
        "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--out", run, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    utt = trained["utts"][trained["test_ids"][0]]
    whole = CliRunner().invoke(cli, ["predict", "--run", str(run), str(utt.audio)])
    assert whole.exit_code == 0 and "not finished" not in whole.stderr, whole.output
    assert "(mean of folds 1,2)" in whole.stdout, whole.stdout
    (run / "fold_02" / "metrics.json").unlink()
    result = CliRunner().invoke(cli, ["predict", "--run", str(run), str(utt.audio)])
    assert result.exit_code == 0, result.output
    assert f"note: {run}: fold 2 of the 2 it was trained with is not finished" in result.stderr
    # a fold a full disk stopped before it finished was never deleted (round-17 train row 33)
    assert "(never finished, or deleted or damaged since; rerun `emofuse train`" in result.stderr
    assert "predicting with fold 1 only" in result.stderr and "(fold 1)" in result.stdout


def test_a_hand_edited_config_json_is_named_by_predict_not_the_model_folders(trained, tmp_path):
    """An edited model record in config.json was "the encoders loaded now differ …; restore the
    original model folders", which are untouched (round-13 train side row 99); report named it."""
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(trained["run"], run)
    config = json.loads((run / "config.json").read_text())
    config["cache_settings"]["speech_model"] += "-other"
    (run / "config.json").write_text(json.dumps(config))
    utt = trained["utts"][trained["test_ids"][0]]
    line = _one_line(invoke("predict", "--run", run, utt.audio))
    assert line.startswith(f"error: {run / 'config.json'} was edited after the run wrote it"), line


def test_a_pipe_or_a_device_given_as_audio_is_named_as_such(trained, tmp_path):
    """A FIFO or /dev/zero as audio was "audio file … not found" (round-13 train side row 107)."""
    import os

    fifo = tmp_path / "a.wav"
    os.mkfifo(fifo)
    for given in (fifo, Path("/dev/zero")):
        line = _one_line(invoke("predict", "--run", trained["run"], given, "--text", "hi"))
        assert line == f"error: audio {given} is a device or a pipe, not a file: give audio files"


def _dynamic_head(tmp_path: Path, when: str | None = None) -> tuple[Path, str]:
    """A copy of the tiny head whose forward imports a sibling by a computed name
    (``importlib.import_module("dyn" + "help…")``), always or only when ``when`` holds."""
    from tests.helpers import TINY_HEAD

    folder = tmp_path / "h"
    folder.mkdir()
    name = f"dynhelp_{tmp_path.name.replace('-', '_')}"
    (folder / f"{name}.py").write_text("SCALE = 1.0\n")
    load = f"importlib.import_module({name[:3]!r} + {name[3:]!r}).SCALE"
    scale = f"({load} if {when} else 1.0)" if when else load
    source = (
        Path(TINY_HEAD.rpartition(":")[0])
        .read_text()
        .replace(
            "return self.mlp(torch.cat(parts",
            f"import importlib\n        import os\n\n        return {scale} * self.mlp(torch.cat(parts",
        )
    )
    assert "import_module" in source
    (folder / "head.py").write_text(source)
    return folder, name


def _forget_head(folder: Path, name: str) -> None:
    import sys

    for m in [m for m in sys.modules if m.startswith(("emofuse_user_head_", name))]:
        del sys.modules[m]  # a new process: nothing of training loaded
    sys.path[:] = [p for p in sys.path if p != str(folder.resolve())]


def test_a_module_the_head_imports_by_a_computed_name_is_recorded_by_train(trained, tmp_path):
    """`importlib.import_module("dyn" + "help")` inside the head's forward: in no record, so an
    edit of it after training changed predictions silently (round-14 train side row 31), then
    train finished a run predict always refused (round-15 row 2). Train records what the head's
    first forward loads: predict runs, and an edit of the module is named."""
    folder, name = _dynamic_head(tmp_path)
    helper = (folder / f"{name}.py").resolve()
    try:
        run = _train_user_head(trained, tmp_path, f"{folder / 'head.py'}:TinyHead")
        assert str(helper) in json.loads((run / "config.json").read_text())["head_modules"]
        _forget_head(folder, name)
        utt = trained["utts"][trained["test_ids"][0]]
        result = invoke("predict", "--run", run, utt.audio, "--text", "hi")
        assert result.exit_code == 0, result.output
        _forget_head(folder, name)
        helper.write_text("SCALE = 2.0\n")
        line = _one_line(invoke("predict", "--run", run, utt.audio, "--text", "hi"))
        assert line.startswith(f"error: module {helper} (imported by head file "), line
        assert "changed since" in line
    finally:
        _forget_head(folder, name)


def test_a_module_the_head_imports_only_at_predict_time_is_refused(trained, tmp_path, monkeypatch):
    """A sibling the head loads by a computed name in a branch training never took: its code
    is in no record, so predict refuses it rather than run unverified code."""
    folder, name = _dynamic_head(tmp_path, when="os.environ.get('EMOFUSE_TEST_LATE_IMPORT')")
    try:
        run = _train_user_head(trained, tmp_path, f"{folder / 'head.py'}:TinyHead")
        _forget_head(folder, name)
        monkeypatch.setenv("EMOFUSE_TEST_LATE_IMPORT", "1")
        utt = trained["utts"][trained["test_ids"][0]]
        line = _one_line(invoke("predict", "--run", run, utt.audio, "--text", "hi"))
        assert (
            line.startswith(
                f"error: module {(folder / f'{name}.py').resolve()} (loaded by head file "
            )
            and "was not recorded when" in line
        ), line
    finally:
        _forget_head(folder, name)


def test_a_module_the_head_imports_only_while_training_is_refused_before_the_fold_is_saved(
    trained, tmp_path
):
    """Loaded in a branch the first (eval-mode) forward never takes: no fold is saved that
    predict would refuse; the line says what to change."""
    folder, name = _dynamic_head(tmp_path, when="self.training")
    try:
        run = tmp_path / "run"
        line = _one_line(
            invoke(
                "train",
                "--cache",
                trained["base"] / "cache.h5",
                "--split",
                "loso",
                "--head",
                f"{folder / 'head.py'}:TinyHead",
                "--folds",
                "1",
                "--epochs",
                "1",
                "--out",
                run,
                "--quiet",
            )  # fmt: skip
        )
        assert line.startswith(
            f"error: module {(folder / f'{name}.py').resolve()} (loaded by head file "
        ), line
        assert "so the code fold 1 trained with is unknown: import it by name" in line, line
        assert not (run / "fold_01" / "metrics.json").exists()
    finally:
        _forget_head(folder, name)
