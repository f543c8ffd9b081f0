"""Whole commands: `emofuse extract` (tiny encoders, synthetic corpus) → train → fuse → report,
the bad-input messages, and a 2-process torchrun that must equal the serial run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from emofuse.cli import cli
from emofuse.corpus import write_synthetic_corpus
from emofuse.encoders.tiny import build_tiny_models
from emofuse.train.rundir import read_predictions

TRAIN = ["--epochs", "3", "--batch-size", "8", "--lr", "3e-3", "--patience", "2", "--quiet"]


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("e2e")
    tiny = build_tiny_models(base / "models")
    root = base / "IEMOCAP_full_release"
    write_synthetic_corpus(
        root, utterances_per_speaker=8, others_per_speaker=0, duration=(0.5, 1.5), progress=False
    )
    out = base / "syn.h5"
    result = invoke(
        "extract", "--corpus", "iemocap", "--root", root, "--out", out,
        "--speech-model", tiny.speech["hubert"], "--text-model", tiny.text,
        "--speaker-model", tiny.speaker, "--granularity", "frame", "--batch-seconds", "4",
        "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def serial_run(cache_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "concat"
    result = invoke(
        "train", "--cache", cache_path, "--split", "loso", "--head", "concat",
        "--preset", "small", "--out", out, *TRAIN,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mean ± std over folds" in result.output and "pooled" in result.output
    return out


def test_extract_then_train_writes_the_whole_run_folder(serial_run, cache_path):
    out = serial_run
    for name in ("config.json", "folds.json", "predictions.csv", "val_predictions.csv",
                 "summary.json", "report.md", "confusion.png", "curves.png"):  # fmt: skip
        assert (out / name).is_file(), name
    for k in range(1, 6):
        for name in ("curves.jsonl", "checkpoint.pt", "predictions.csv", "metrics.json"):
            assert (out / f"fold_{k:02d}" / name).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["folds"]) == 5 and summary["labels"] == ["ang", "hap", "neu", "sad"]
    from emofuse.cache import open_cache

    cache = open_cache(cache_path)
    config = json.loads((out / "config.json").read_text())
    assert config["cache_fingerprint"] == cache.fingerprint
    pred = read_predictions(out / "predictions.csv")
    assert sorted(pred["ids"]) == sorted(cache.ids)
    plan = json.loads((out / "folds.json").read_text())
    sessions = dict(zip(cache.table["id"], cache.table["session"], strict=True))
    for f in plan["folds"]:
        assert {sessions[i] for i in f["test"]} == {f"Ses0{f['fold']}"}
        assert not {sessions[i] for i in f["train"] + f["val"]} & {f"Ses0{f['fold']}"}


def test_rerun_skips_finished_folds_and_report_tsne(serial_run, cache_path):
    before = (serial_run / "summary.json").read_text()
    mtime = (serial_run / "fold_01" / "checkpoint.pt").stat().st_mtime_ns
    result = invoke(
        "train", "--cache", cache_path, "--split", "loso", "--head", "concat",
        "--preset", "small", "--out", serial_run, *TRAIN,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (serial_run / "fold_01" / "checkpoint.pt").stat().st_mtime_ns == mtime
    assert json.loads((serial_run / "summary.json").read_text()) == json.loads(before)
    result = invoke("report", serial_run, "--tsne")
    assert result.exit_code == 0, result.output
    assert (serial_run / "tsne.png").stat().st_size > 1000
    assert "tsne.png" in (serial_run / "report.md").read_text()


def test_fuse_command(serial_run, cache_path, tmp_path):
    audio = tmp_path / "audio"
    result = invoke(
        "train", "--cache", cache_path, "--split", "loso", "--head", "audio",
        "--preset", "small", "--out", audio, *TRAIN,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = invoke("fuse", serial_run, audio, "--out", tmp_path / "fused")
    assert result.exit_code == 0, result.output
    assert "fold 1 weights" in result.output
    for k in range(1, 6):
        m = json.loads((tmp_path / "fused" / f"fold_{k:02d}" / "metrics.json").read_text())
        assert m["val_UA_fused"] >= max(m["val_UA_members"].values())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--head", "nope"], r"unknown head \(built-in: tdfnet"),
        (["--head", "concat", "--set", "bogus=1"], "--set bogus: head concat has no such option"),
        (["--head", "audio", "--set", "speech_stream=fbank"], "stream 'fbank'.*--fbank"),
        (["--head", "concat", "--folds", "9"], "--folds 9 is not a fold"),
        (["--head", "concat", "--folds", ","], "--folds ',': give fold numbers"),  # not all folds
        (["--head", "concat", "--folds", ""], "--folds '': give fold numbers"),  # an unset $F
        (["--head", "concat", "--folds", "1,,2"], r"--folds '1,,2': give fold numbers"),
    ],
)
def test_bad_input_is_one_line(cache_path, tmp_path, args, message):
    result = invoke("train", "--cache", cache_path, "--split", "loso", "--out", tmp_path / "r",
                    *args, *TRAIN)  # fmt: skip
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    import re

    assert re.search(message, lines[0]), lines[0]


def test_missing_or_incomplete_cache(tmp_path):
    result = invoke("train", "--cache", tmp_path / "none.h5", "--split", "loso", "--head",
                    "concat", "--out", tmp_path / "r")  # fmt: skip
    assert result.exit_code == 2 and "does not exist" in result.output
    (tmp_path / "half.h5.parts").mkdir()
    (tmp_path / "half.h5").write_bytes(b"not a cache")
    result = invoke("train", "--cache", tmp_path / "half.h5", "--split", "loso", "--head",
                    "concat", "--out", tmp_path / "r")  # fmt: skip
    assert result.exit_code == 2 and result.output.startswith("error: ")


@pytest.mark.slow
@pytest.mark.subprocess
def test_torchrun_two_processes_equal_serial(serial_run, cache_path, tmp_path):
    out = tmp_path / "dist"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the serial run used one thread too
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "-m", "emofuse", "train", "--cache",
         str(cache_path), "--split", "loso", "--head", "concat", "--preset", "small",
         "--out", str(out), "--device", "cpu", *TRAIN],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = json.loads((serial_run / "summary.json").read_text())
    b = json.loads((out / "summary.json").read_text())
    assert a["folds"] == b["folds"] and a["pooled"] == b["pooled"]
    pa, pb = (read_predictions(r / "predictions.csv") for r in (serial_run, out))
    assert pa["ids"] == pb["ids"] and np.array_equal(pa["probs"], pb["probs"])


def test_parallel_jobs_equal_serial_and_report_their_wall_time(serial_run, cache_path, tmp_path):
    out = tmp_path / "jobs"
    result = invoke(
        "train", "--cache", cache_path, "--split", "loso", "--head", "concat",
        "--preset", "small", "--out", out, "--jobs", "2", *TRAIN,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    a = json.loads((serial_run / "summary.json").read_text())
    b = json.loads((out / "summary.json").read_text())
    assert a["folds"] == b["folds"] and a["pooled"] == b["pooled"]
    pa, pb = (read_predictions(r / "predictions.csv") for r in (serial_run, out))
    assert pa["ids"] == pb["ids"] and np.array_equal(pa["probs"], pb["probs"])
    calls = json.loads((out / "wall.json").read_text())["calls"]
    assert [c["jobs"] for c in calls] == [2] and sorted(calls[0]["folds"]) == [1, 2, 3, 4, 5]
    assert "up to 2 folds at once" in (out / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_failing_fold_in_a_worker_is_one_line_and_the_rerun_resumes(cache_path, tmp_path):
    from emofuse import faults

    out = tmp_path / "jobs-fail"
    args = ["train", "--cache", cache_path, "--split", "loso", "--head", "concat", "--preset",
            "small", "--out", out, "--jobs", "2", *TRAIN]  # fmt: skip
    env = {**os.environ, faults.ENV: "fold-write:1:enospc"}  # each worker's first fold write
    proc = subprocess.run(
        [sys.executable, "-m", "emofuse", *map(str, args)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1].startswith("error: cannot write the run folder"), proc.stderr
    assert str(out) in lines[-1]
    assert "free disk space" in lines[-1]
    result = invoke(*args)  # no fault now: trains what is missing
    assert result.exit_code == 0, result.output
    assert len(json.loads((out / "summary.json").read_text())["folds"]) == 5


def test_a_worker_refuses_a_cache_replaced_since_the_run_started(cache_path, tmp_path):
    """Workers reopen the cache by path: one that changed since the parent read it (another
    extraction moved into place) must not be trained on under the first one's fingerprint."""
    from emofuse.errors import EmofuseError
    from emofuse.train.loop import LoopConfig
    from emofuse.train.run import _worker_init

    spec = {
        "cache": str(cache_path), "head_spec": "concat", "cfg": {}, "loop": LoopConfig(),
        "device": "cpu", "out": str(tmp_path), "head_meta": {"cache_fingerprint": "0" * 64},
    }  # fmt: skip
    with pytest.raises(EmofuseError, match="changed while emofuse train was starting"):
        _worker_init(spec)


def test_report_tsne_of_a_run_whose_cache_moved_gives_the_resume_that_records_it(
    serial_run, cache_path, tmp_path
):
    """A moved cache was "no cache at …; run `emofuse extract` first" in report --tsne (round-13
    train side row 38): the line says the cache moved, and its resume command records the new
    place, after which t-SNE is drawn."""
    import shlex

    shutil.copy(cache_path, tmp_path / "c.h5")
    run = tmp_path / "run"
    shutil.copytree(serial_run, run)
    result = invoke(  # resumed on the copy: the run records that place (nothing retrained)
        "train", "--cache", tmp_path / "c.h5", "--split", "loso", "--head", "concat",
        "--preset", "small", "--out", run, *TRAIN,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (tmp_path / "c.h5").rename(tmp_path / "moved.h5")
    result = CliRunner().invoke(cli, ["report", str(run), "--tsne"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(
        f"error: the cache {tmp_path / 'c.h5'} that {run} was trained on is gone (moved or "
        "deleted), and t-SNE reads its features: put it back, or rerun `emofuse train --cache NEW"
    ), lines[0]
    command = lines[0].split("`")[1].replace("--cache NEW", f"--cache {tmp_path / 'moved.h5'}")
    result = invoke(*shlex.split(command)[1:])  # the advice, as printed
    assert result.exit_code == 0, result.output
    result = invoke("report", run, "--tsne")
    assert result.exit_code == 0 and (run / "tsne.png").is_file(), result.output


def test_report_tsne_refuses_a_cache_of_other_contents_with_the_same_settings(
    serial_run, monkeypatch
):
    """A cache re-extracted with the same settings (same fingerprint, other features, e.g. another
    --limit) at the run's path was used by report --tsne without a word, while train refused
    it by its content digest (round-13 train side row 69)."""
    import emofuse.cache

    real = emofuse.cache.open_cache

    def re_extracted(path, *args, **kw):
        cache = real(path, *args, **kw)
        cache.meta = {**cache.meta, "digest": "0" * 64}
        return cache

    monkeypatch.setattr(emofuse.cache, "open_cache", re_extracted)
    result = CliRunner().invoke(cli, ["report", str(serial_run), "--tsne"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "changed since" in lines[0] and "(content digest differs: another extraction" in lines[0]


def test_compare_of_a_run_with_itself_and_outputs_inside_a_zarr_cache_are_refused(
    serial_run, tmp_path
):
    """`compare RUN RUN` printed diff +0.00, p 1 for a typo; fuse and compare wrote their files
    inside a Zarr cache folder (among its arrays), where train refuses to (round-13 train side
    rows 85, 97)."""
    twice = CliRunner().invoke(cli, ["compare", str(serial_run), str(serial_run)])
    assert twice.exit_code == 2 and twice.output.strip() == (
        f"error: {serial_run} is given twice (also as {serial_run}); compare different runs"
    ), twice.output
    store = tmp_path / "c.zarr"
    store.mkdir()
    (store / "zarr.json").write_text("{}")  # what marks a folder as a Zarr store
    other = tmp_path / "other"
    shutil.copytree(serial_run, other)
    for args in (
        ["fuse", str(serial_run), str(other), "--out", str(store / "f")],
        ["compare", str(serial_run), str(other), "--out", str(store / "streams")],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and f"is inside the cache {store}" in result.output, (
            args[0], result.output)  # fmt: skip
    assert sorted(p.name for p in store.iterdir()) == ["zarr.json"]


def test_report_tsne_with_an_unreadable_cache_says_to_make_it_readable(
    serial_run, cache_path, monkeypatch
):
    """A cache without read permission was "cannot write … make the run writable" in report
    --tsne (round-14 train side row 42). (Root reads everything: the refusal is injected.)"""
    import emofuse.cache

    def refused(path, *args, **kw):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(emofuse.cache, "open_cache", refused)
    result = CliRunner().invoke(cli, ["report", str(serial_run), "--tsne"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: cannot read {cache_path} (Permission denied), which "), (
        lines
    )
    assert "writable" not in lines[0]


def test_compare_never_writes_over_a_users_file_of_the_same_name(serial_run, tmp_path):
    """`compare … --out notes` replaced the user's notes/compare.md without a word (round-14
    train side row 48); an earlier comparison in the same --out is still replaced."""
    other = tmp_path / "other"
    shutil.copytree(serial_run, other)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "compare.md").write_text("my own notes\n")
    result = CliRunner().invoke(cli, ["compare", str(serial_run), str(other), "--out", str(notes)])
    assert result.exit_code == 2 and result.output.strip() == (
        f"error: --out {notes} holds compare.md, which emofuse compare did not write; give "
        "another --out (an earlier comparison's files are replaced, nothing else)"
    ), result.output
    assert (notes / "compare.md").read_text() == "my own notes\n"
    mine = tmp_path / "cmp"
    for _ in range(2):  # the second run replaces the first's files
        result = CliRunner().invoke(
            cli, ["compare", str(serial_run), str(other), "--out", str(mine)]
        )
        assert result.exit_code == 0, result.output
