"""Train-side faults (issue 13): a second writer, a damaged cache or run folder, a full disk, a
failed start — each is the right result or one line naming the file and what to do."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from emofuse import faults
from emofuse.cli import cli
from emofuse.errors import EmofuseError
from emofuse.locks import lock_path
from emofuse.train.command import train_command
from emofuse.train.loop import LoopConfig
from emofuse.train.report import write_report
from emofuse.train.run import train_run
from emofuse.train.rundir import finished_folds, fold_dir, read_predictions
from tests.helpers import ROOT, TINY_HEAD, FakeCache, write_five_session_cache
from tests.users import give_to_user

LOOP = LoopConfig(epochs=2, batch_size=16, lr=3e-3, patience=2, seed=0)
CHILD = """
import sys
sys.path.insert(0, {root!r})
from tests.helpers import FakeCache, TINY_HEAD
from emofuse.train.loop import LoopConfig
from emofuse.train.run import train_run
train_run(FakeCache(n_per_speaker=4), TINY_HEAD, sys.argv[1], "loso",
          loop=LoopConfig(epochs=1, batch_size=16), folds=[1], progress=False)
print("finished", flush=True)
"""


@pytest.fixture(scope="module")
def cache():
    return FakeCache(n_per_speaker=4)


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "run"
    train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    return out


def copy(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.subprocess
def test_a_second_train_into_one_out_is_refused_while_the_first_holds_the_lock(tmp_path, cache):
    out = tmp_path / "run"
    env = {**os.environ, faults.ENV: "lock-taken:1:stop"}
    code = CHILD.format(root=str(ROOT))
    first = subprocess.Popen(
        [sys.executable, "-c", code, str(out)], env=env, stdout=subprocess.PIPE
    )
    try:
        _pid, status = os.waitpid(first.pid, os.WUNTRACED)  # returns once it has stopped
        assert os.WIFSTOPPED(status), status
        with pytest.raises(EmofuseError) as err:
            train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1], progress=False)
        assert f"pid {first.pid}" in str(err.value) and "another emofuse train" in str(err.value)
        assert not (out / "config.json").exists()  # the refused run wrote nothing
    finally:
        os.kill(first.pid, signal.SIGCONT)  # let the holder finish: its lock goes with it
        stdout, _ = first.communicate()
    assert first.returncode == 0 and b"finished" in stdout
    assert finished_folds(out) == [1] and not lock_path(out).exists()


LIMITED = """
import resource, sys
sys.path.insert(0, {root!r})
from tests.helpers import FakeCache, TINY_HEAD
from emofuse.errors import EmofuseError
from emofuse.train.loop import LoopConfig
from emofuse.train.report import write_report
from emofuse.train.run import train_run
out, limit, what = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cache = FakeCache(n_per_speaker=4)  # made before the limit: only the run's own files meet it
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    if what == "train":
        loop = LoopConfig(epochs=2, batch_size=16, lr=3e-3, patience=2, seed=0)
        train_run(cache, TINY_HEAD, out, "loso", loop=loop, folds=[1, 2, 3], progress=False)
    else:
        write_report(out)
except (EmofuseError, OSError) as err:
    print("refused:", err, flush=True)
"""


@pytest.mark.subprocess
@pytest.mark.parametrize("what, victim", [("train", "folds.json"), ("report", "confusion.png")])
def test_a_file_size_limit_never_tears_a_finished_run_file(run, tmp_path, cache, what, victim):
    """`ulimit -f` below folds.json's size while resuming a finished run tore that file in place
    (FoldPlan.save wrote it directly): the 2 finished folds could no longer be reported or
    resumed, and the advice said to train again (round-13 train side row 32); report tore
    confusion.png the same way (row 33). Both files are written through a temporary now."""
    out = copy(run, tmp_path)
    if what == "report":
        write_report(out)
    before = (out / victim).read_bytes()
    limit = len(before) - 1  # the one file this call writes that does not fit
    assert all(
        p.stat().st_size < limit for p in (out / "config.json", out / "summary.json") if p.exists()
    )
    code = LIMITED.format(root=str(ROOT))
    child = subprocess.run(
        [sys.executable, "-c", code, str(out), str(limit), what],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert child.returncode == 0 and "File too large" in child.stdout, child.stdout + child.stderr
    assert (out / victim).read_bytes() == before  # whole, as it was
    assert not list(out.rglob("*.tmp")) and finished_folds(out) == [1, 2]
    if what == "train":  # the line's advice: the same command, without the limit, goes on
        summary = train_run(
            cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2, 3], progress=False
        )
        assert [f["fold"] for f in summary["folds"]] == [1, 2, 3]


def test_a_torn_fold_plan_says_to_delete_it_and_rerun_train_which_keeps_the_folds(
    run, tmp_path, cache
):
    """A folds.json cut short was "restore it, or train again into a new --out", which throws
    the finished folds away (round-13 train side rows 31-32): train writes it again."""
    out = copy(run, tmp_path)
    plan = out / "folds.json"
    plan.write_text(plan.read_text()[:500])
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line.startswith(f"error: fold plan {plan} is not valid JSON ("), line
    assert line.endswith(
        f"); restore it, or delete it and rerun {train_command(out)} (it writes the fold plan "
        "again and keeps "
        "the finished folds)"
    ), line
    plan.unlink()  # what the line says
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1, 2] and plan.is_file()
    assert CliRunner().invoke(cli, ["report", str(out)]).exit_code == 0


def test_report_on_a_read_only_file_system_says_to_copy_the_run(run, tmp_path, monkeypatch):
    """report of a run on a read-only mount said "choose a writable --out", an option report has
    not (round-13 train side row 18): it writes in place, so the line says to copy the run."""
    import errno

    from emofuse import locks

    out = copy(run, tmp_path)

    def read_only(path, record):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(locks, "_try_create", read_only)
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line == (
        f"error: cannot write in {out.parent} (Read-only file system); report rewrites "
        f"summary.json, report.md and the plots inside {out}: copy the run folder somewhere "
        "writable and report the copy"
    ), line
    assert "--out" not in line


def test_nan_in_the_cache_names_the_stream_and_utterance(tmp_path):
    bad = FakeCache(n_per_speaker=4)
    values, offsets = bad.arrays["speech"]
    values = values.copy()
    values[offsets[5] + 1, 2, 3] = np.nan  # a frame of the 6th utterance
    bad.arrays["speech"] = (values, offsets)
    with pytest.raises(EmofuseError) as err:
        train_run(bad, TINY_HEAD, tmp_path / "r", "loso", loop=LOOP, folds=[1], progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "'speech'" in msg and bad.ids[5] in msg and "verify" in msg


def test_a_file_where_a_fold_folder_goes_is_one_line_and_the_rerun_resumes(run, tmp_path, cache):
    """`fold_02` replaced by a file: train's rmtree of the fold folder was a NotADirectoryError
    traceback (round-10 row 56 of the train side)."""
    out = copy(run, tmp_path)
    shutil.rmtree(fold_dir(out, 2))
    fold_dir(out, 2).write_text("hi")
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    msg = str(err.value)
    assert "\n" not in msg and f"{fold_dir(out, 2)} is a file where a folder goes" in msg, msg
    assert "1 finished fold(s) are kept" in msg
    fold_dir(out, 2).unlink()  # what the line says to do
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1, 2]


@pytest.mark.parametrize("how", ["deleted", "a folder"])
def test_a_trained_run_whose_config_is_gone_is_refused_by_train_and_report(
    run, tmp_path, cache, how
):
    """config.json deleted: train called the run "a late-fusion run folder"; a folder in its
    place: a traceback (round-10 row 58). Resuming without the recorded settings could mix
    results of two settings, so both are refused, by train as by report."""
    out = copy(run, tmp_path)
    (out / "config.json").unlink()
    if how == "a folder":
        (out / "config.json").mkdir()
    gone = "is not a regular file" if how == "a folder" else "is missing (deleted or lost)"
    expected = (
        f"{out / 'config.json'} {gone}, and a trained run cannot be reported, resumed or "
        "predicted without the settings it records; restore it, or train again into a new --out"
    )
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2, 3], progress=False)
    assert str(err.value) == expected
    assert _one_error_line(CliRunner().invoke(cli, ["report", str(out)])) == f"error: {expected}"
    assert finished_folds(out) == [1, 2] and not fold_dir(out, 3).exists()


def test_a_folder_in_place_of_folds_json_is_named_and_the_rerun_mends_it(run, tmp_path, cache):
    """report said "not a run folder … train it first", train a traceback (round-10 row 57)."""
    out = copy(run, tmp_path)
    (out / "folds.json").unlink()
    (out / "folds.json").mkdir()
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line == (
        f"error: {out / 'folds.json'} is not a regular file: move it away, then rerun "
        f"{train_command(out)} (it writes the fold plan again and keeps the finished folds)"
    ), line
    with pytest.raises(EmofuseError, match="folds.json is a folder where a file goes"):
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    (out / "folds.json").rmdir()
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1, 2]


@pytest.mark.parametrize("clip", ["0", "1"])
def test_a_diverging_run_is_one_cli_line_naming_the_epoch(tmp_path, monkeypatch, clip):
    """ "or set --grad-clip 1" was advice that changed nothing, with the clip on or off: AdamW's
    step is about lr whatever the gradient (round-10 rows 7 and 49 of the train side)."""
    import emofuse.cache

    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: FakeCache(n_per_speaker=4))
    (tmp_path / "fake.h5").write_bytes(b"")
    result = CliRunner().invoke(cli, [
        "train", "--cache", str(tmp_path / "fake.h5"), "--split", "loso", "--head", TINY_HEAD, "--lr", "1e30",
        "--epochs", "2", "--folds", "1", "--out", str(tmp_path / "r"), "--quiet", "--grad-clip", clip,
    ])  # fmt: skip
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: fold 1, epoch 1") and "lower --lr" in lines[0]
    # "e.g. --lr 1e+29" diverged again, and again (round-13 train side row 14)
    assert (
        "(the heads train at 1e-4 to 1e-3: leave --lr out for the head's recipe, or e.g. "
        in (lines[0])
        and "AdamW moves each weight by about lr a step" in lines[0]
    ), lines[0]
    assert "set --grad-clip" not in lines[0]  # following it changed nothing, clip on or off
    result = CliRunner().invoke(cli, [  # the advice followed: --lr left out, the same --out
        "train", "--cache", str(tmp_path / "fake.h5"), "--split", "loso", "--head", TINY_HEAD,
        "--epochs", "2", "--folds", "1", "--out", str(tmp_path / "r"), "--quiet", "--grad-clip", clip,
    ])  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "when",
    ["fold-write:2:enospc", "fold-write:1:erofs", "fold-write:1:efbig", "fold-write:1:emfile"],
)  # emfile: a traceback (round-14 train side row 34)
def test_disk_full_or_read_only_while_training_is_one_line_and_the_rerun_resumes(
    tmp_path, cache, monkeypatch, when
):
    out = tmp_path / "run"
    monkeypatch.setenv(faults.ENV, when)
    faults.reset()
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    msg = str(err.value)
    kept = 1 if when.startswith("fold-write:2") else 0
    assert "\n" not in msg and str(out) in msg and f"its {kept} finished fold(s) are kept" in msg
    if when.endswith("efbig"):  # a per-file size limit, not a full disk (was a traceback)
        assert "`ulimit -f` limits one file's size" in msg and "free disk space" not in msg
    if when.endswith("erofs"):  # disk space is not the problem on a read-only mount
        assert "mounted read-only: remount it" in msg and "free disk space" not in msg
    if when.endswith("emfile"):
        assert "ran out of open files" in msg and "free disk space" not in msg
    assert finished_folds(out) == list(range(1, kept + 1))  # the failed fold is not "finished"
    assert not list(out.glob("**/*.tmp")) and not lock_path(out).exists()
    monkeypatch.delenv(faults.ENV)
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1, 2]


def test_out_under_a_file_inside_the_cache_or_unwritable_is_one_line(tmp_path, cache):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    zarr_cache = tmp_path / "c.zarr"
    (zarr_cache / "streams").mkdir(parents=True)
    cache_here = FakeCache(n_per_speaker=4)
    cache_here.path = str(zarr_cache)
    for target, cache_, expected in (
        (blocker / "run", cache, "is a regular file"),
        (zarr_cache / "streams" / "run", cache_here, "inside the cache"),
        (Path(str(zarr_cache) + ".parts") / "run", cache_here, "inside the cache"),
    ):
        with pytest.raises(EmofuseError, match=expected):
            train_run(cache_, TINY_HEAD, target, "loso", loop=LOOP, folds=[1], progress=False)
    assert not (zarr_cache / "streams" / "run").exists()


def test_a_run_that_failed_before_any_fold_finished_takes_the_corrected_command(tmp_path, cache):
    out = tmp_path / "run"
    diverging = LoopConfig(epochs=2, batch_size=16, lr=1e30, seed=0)
    with pytest.raises(EmofuseError, match="fold 1, epoch 1"):  # found after config.json
        train_run(cache, TINY_HEAD, out, "loso", loop=diverging, folds=[1], progress=False)
    assert (out / "config.json").is_file() and not finished_folds(out)
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1]
    assert json.loads((out / "config.json").read_text())["loop"]["lr"] == LOOP.lr
    with pytest.raises(EmofuseError, match="different settings"):  # now a fold is finished
        train_run(cache, TINY_HEAD, out, "loso", loop=diverging, folds=[1], progress=False)


def test_a_damaged_curves_file_is_one_line_in_report_and_on_resume(run, tmp_path, cache):
    out = copy(run, tmp_path)
    curves = fold_dir(out, 2) / "curves.jsonl"
    curves.write_text(curves.read_text()[:-7])  # a torn last line
    result = CliRunner().invoke(cli, ["report", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"{curves} line" in lines[0] and f"delete {curves.parent}" in lines[0]
    with pytest.raises(EmofuseError, match="curves.jsonl line"):
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    shutil.rmtree(curves.parent)  # what the message says: the fold is trained again
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1, 2]


def test_report_after_a_fold_was_deleted_counts_what_is_on_disk(run, tmp_path):
    out = copy(run, tmp_path)
    shutil.rmtree(fold_dir(out, 2))
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "missing: 2, 3, 4, 5" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [1]
    report = (out / "report.md").read_text()
    assert "1 of 5 folds finished" in report
    assert not [line for line in report.splitlines() if line.startswith("| 2 |")]  # no stale row
    (fold_dir(out, 1) / "metrics.json").unlink()
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 2 and "no finished fold" in result.output


def test_fuse_refuses_the_same_run_twice(run, tmp_path):
    result = CliRunner().invoke(
        cli, ["fuse", str(run), str(run / ".." / run.name), "--out", str(tmp_path / "f")]
    )
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "given twice" in lines[0], result.output
    assert not (tmp_path / "f").exists()


def test_a_full_disk_while_the_checkpoint_is_written_is_one_line_and_the_rerun_resumes(
    tmp_path, cache, monkeypatch
):
    """A real ENOSPC (the checkpoint's file names lead to /dev/full), not an injected OSError:
    torch.save to a path turns it into a RuntimeError that no `except OSError` sees."""
    import emofuse.train.run as run_mod

    out = tmp_path / "run"
    real = run_mod.train_fold

    def full_disk_for_the_checkpoint(build, data, fold, cfg, on_epoch=None, progress=True, **kw):
        result = real(build, data, fold, cfg, on_epoch, progress, **kw)
        for name in ("checkpoint.pt", "checkpoint.pt.tmp"):  # whatever name it is written under
            (fold_dir(out, fold.fold) / name).symlink_to("/dev/full")
        return result

    monkeypatch.setattr(run_mod, "train_fold", full_disk_for_the_checkpoint)
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1], progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "No space left on device" in msg and "checkpoint.pt" in msg
    assert finished_folds(out) == [] and not lock_path(out).exists()
    monkeypatch.setattr(run_mod, "train_fold", real)
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1]
    assert (fold_dir(out, 1) / "checkpoint.pt").stat().st_size > 1000


def test_a_full_disk_while_the_summary_is_written_leaves_no_stale_summary(run, tmp_path, cache):
    """The run had fold 1 summarised; fold 2 is added and the disk fills while the pooled files
    are rewritten: summary.json must not keep describing fold 1 alone beside the new pooled
    predictions (nor any file be left half-written); the rerun writes it whole."""
    out = tmp_path / "run"
    shutil.copytree(run, out)
    shutil.rmtree(fold_dir(out, 2))
    train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1], progress=False)
    assert [f["fold"] for f in json.loads((out / "summary.json").read_text())["folds"]] == [1]
    for name in ("val_predictions.csv", "val_predictions.csv.tmp"):  # its write hits a full disk
        (out / name).unlink(missing_ok=True)
        (out / name).symlink_to("/dev/full")
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "No space left on device" in msg and "2 finished fold(s)" in msg
    pooled = out / "predictions.csv"
    if (out / "summary.json").exists():  # a summary left behind must be that of the pooled files
        summary = json.loads((out / "summary.json").read_text())
        folds = sorted({int(x) for x in read_predictions(pooled)["fold"]})
        assert [f["fold"] for f in summary["folds"]] == folds
    assert not list(out.glob("*.tmp"))
    (out / "val_predictions.csv").unlink()  # the disk has room again
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1, 2]
    assert sorted(set(read_predictions(out / "val_predictions.csv")["fold"])) == [1, 2]


@pytest.mark.parametrize(
    "change, why",
    [("delete", "is missing (deleted or lost)"),
     ("val_UA 7", "line 3 is damaged (val_UA 7 is not between 0 and 1)"),
     ("loss NaN", "line 3 is damaged (train_loss nan is not a finite number)"),
     ("epoch 9", "line 3 is damaged (epoch 9 where epoch 3 was due)"),
     ("extra epoch", "holds 3 epochs but fold 2 ran 2")],
)  # fmt: skip
def test_a_deleted_or_implausible_curves_file_is_one_line_naming_the_fold(
    run, tmp_path, cache, change, why
):
    """Round-7 audit: a deleted curves.jsonl dropped the fold from curves.png without a word, and
    an appended row with val UA 7 (700 %) at an epoch that never ran was drawn."""
    out = copy(run, tmp_path)
    curves = fold_dir(out, 2) / "curves.jsonl"
    rows = [json.loads(x) for x in curves.read_text().splitlines()]
    assert len(rows) == 2  # LOOP runs 2 epochs
    extra = {**rows[-1], "epoch": 3}
    if change == "delete":
        curves.unlink()
    else:
        extra.update({"val_UA 7": {"val_UA": 7}, "loss NaN": {"train_loss": float("nan")},
                      "epoch 9": {"epoch": 9}, "extra epoch": {}}[change])  # fmt: skip
        curves.write_text(curves.read_text() + json.dumps(extra) + "\n")
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line.startswith(f"error: {curves} {why}"), line
    assert line.endswith(
        f"delete {curves.parent} and rerun {train_command(out)} (it retrains that fold only)"
    )


def test_a_curves_value_edited_in_place_is_refused_not_drawn(run, tmp_path):
    """Round-14 train side row 50: an epoch's val_UA 0.3125 -> 0.9125 (valid JSON, the same
    epochs) was drawn in curves.png without a word; metrics.json now seals curves.jsonl too."""
    out = copy(run, tmp_path)
    curves = fold_dir(out, 1) / "curves.jsonl"
    rows = [json.loads(x) for x in curves.read_text().splitlines()]
    rows[0]["val_UA"] = min(1.0, rows[0]["val_UA"] + 0.6)
    curves.write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line == (
        f"error: {curves} was changed after fold 1 was written (its sha256 is not the one its "
        f"metrics.json records); delete {curves.parent} and rerun {train_command(out)} (it "
        "retrains that fold only)"
    ), line


def test_a_damaged_curves_file_is_found_before_a_resume_trains_anything(run, tmp_path, cache):
    out = copy(run, tmp_path)
    curves = fold_dir(out, 2) / "curves.jsonl"
    curves.write_text("{not json\n")
    with pytest.raises(
        EmofuseError, match=r"fold_02/curves.jsonl line 1 is damaged \(not valid JSON"
    ):
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2, 3], progress=False)
    assert not fold_dir(out, 3).exists()  # no fold was trained only to fail at the report


def test_a_read_only_out_or_parent_is_one_line_with_real_permissions(
    run, tmp_path, unprivileged, monkeypatch
):
    import emofuse.cache

    base, as_user = unprivileged
    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: FakeCache(n_per_speaker=4))
    (base / "fake.h5").write_bytes(b"")
    for name in ("ro", "ro_parent"):
        (base / name).mkdir()
        (base / name).chmod(0o555)
    args = ["train", "--cache", str(base / "fake.h5"), "--split", "loso", "--head", TINY_HEAD,
            "--epochs", "1", "--folds", "1", "--quiet", "--out"]  # fmt: skip
    CliRunner().invoke(cli, ["train", "--help"])  # the command's module is imported as root
    results = {}
    with as_user():
        for out in (base / "ro", base / "ro_parent" / "run"):
            results[out] = CliRunner().invoke(cli, [*args, str(out)])
    for out, result in results.items():
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, (out, result.output, result.exception)
        assert "Permission denied" in lines[0] or "permission denied" in lines[0], lines[0]
        assert "writable" in lines[0] and "free disk space" not in lines[0], lines[0]
    assert list((base / "ro").iterdir()) == [] and list((base / "ro_parent").iterdir()) == []


def test_a_read_only_finished_run_is_told_to_be_made_writable_not_trained_elsewhere(
    run, tmp_path, unprivileged, monkeypatch
):
    """A resume into a run folder the user may not write advised "choose a writable --out",
    which trains every fold again elsewhere (round-15 train side row 37)."""
    import emofuse.cache

    base, as_user = unprivileged
    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: FakeCache(n_per_speaker=4))
    (base / "fake.h5").write_bytes(b"")
    done = base / "done"
    shutil.copytree(run, done)
    done.chmod(0o555)
    CliRunner().invoke(cli, ["train", "--help"])  # the command's module is imported as root
    with as_user():
        result = CliRunner().invoke(cli, [
            "train", "--cache", str(base / "fake.h5"), "--split", "loso", "--head", TINY_HEAD,
            "--folds", "1,2", "--quiet", "--out", str(done),
        ])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: --out {done}: cannot write in {done} (permission denied); make it writable "
        f"(`chmod u+w {done}`) to go on in it, or choose a writable --out"
    ), result.output


def test_an_out_under_a_folder_it_may_not_enter_is_one_line(unprivileged, monkeypatch):
    """Found re-checking round-17 extract side row 77 on train: `train --out` under a folder of
    mode 000 was a PermissionError traceback (config.json's stat in the resume check)."""
    import emofuse.cache

    base, as_user = unprivileged
    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: FakeCache(n_per_speaker=4))
    (base / "fake.h5").write_bytes(b"")
    closed = base / "px"
    (closed / "in").mkdir(parents=True)
    closed.chmod(0)
    CliRunner().invoke(cli, ["train", "--help"])  # the command modules are imported as root
    args = ["train", "--cache", str(base / "fake.h5"), "--split", "loso", "--head", TINY_HEAD,
            "--epochs", "1", "--folds", "1", "--quiet", "--out", str(closed / "in" / "r")]  # fmt: skip
    try:
        with as_user():
            result = CliRunner().invoke(cli, args)
    finally:
        closed.chmod(0o755)
    assert _one_error_line(result) == (
        f"error: {closed / 'in' / 'r' / 'config.json'}: the folder {closed} cannot be entered "
        f"(Permission denied); make it accessible (`chmod u+rwx {closed}`, or ask its owner), "
        "then rerun the same command"
    )


def test_an_unreadable_fold_plan_is_one_line_naming_its_mode_in_every_command(
    run, tmp_path, unprivileged, monkeypatch
):
    """folds.json at mode 000: a PermissionError traceback in report, fuse and compare, and
    "cannot write the run folder … make it writable" from a resume whose folder was writable
    (round-15 train side rows 55, 56)."""
    import emofuse.cache

    base, as_user = unprivileged
    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: FakeCache(n_per_speaker=4))
    (base / "fake.h5").write_bytes(b"")
    plan = base / "pc" / "folds.json"
    shutil.copytree(run, base / "pc")
    shutil.copytree(run, base / "other")
    give_to_user(base / "pc")  # the run is the user's own, only its plan unreadable
    plan.chmod(0)
    CliRunner().invoke(cli, ["train", "--help"])  # the command modules are imported as root
    commands = {
        "report": ["report", str(base / "pc")],
        "fuse": ["fuse", str(base / "pc"), str(base / "other"), "--out", str(base / "f")],
        "compare": ["compare", str(base / "pc"), str(base / "other")],
        "train": ["train", "--cache", str(base / "fake.h5"), "--split", "loso", "--head",
                  TINY_HEAD, "--epochs", "2", "--folds", "1,2", "--quiet", "--out",
                  str(base / "pc")],
    }  # fmt: skip
    with as_user():
        results = {name: CliRunner().invoke(cli, args) for name, args in commands.items()}
    for name, result in results.items():
        assert result.exit_code == 2, (name, result.output)
        assert "Traceback" not in result.output, (name, result.output)
        errors = [x for x in result.output.splitlines() if x.startswith("error: ")]
        assert errors == [
            f"error: fold plan {plan} cannot be read (Permission denied); make it readable "
            "(`chmod u+r` it, or ask its owner), then rerun the same command"
        ], (name, result.output)


@pytest.mark.parametrize(
    "target", ["fold_01", "fold_01/curves.jsonl", "fold_01/predictions.csv",
               "fold_01/val_predictions.csv"],
)  # fmt: skip
def test_a_fold_file_or_folder_the_user_may_not_read_is_named_not_missing_or_unwritable(
    run, tmp_path, unprivileged, target
):
    """At mode 000: an intact fold folder was "missing" (report rewrote the summary without it),
    curves.jsonl a PermissionError traceback, predictions.csv "cannot write … make it writable",
    a member's val_predictions.csv "free disk space" in fuse (round-15 train side rows 57-60)."""
    base, as_user = unprivileged
    for name in ("r", "other"):
        shutil.copytree(run, base / name)
    give_to_user(base / "r")  # the run is the user's own, only the target unreadable
    (base / "r" / target).chmod(0)
    before = (base / "r" / "summary.json").read_bytes()
    CliRunner().invoke(cli, ["train", "--help"])  # the command modules are imported as root
    with as_user():
        results = [
            CliRunner().invoke(cli, ["report", str(base / "r")]),
            CliRunner().invoke(
                cli, ["fuse", str(base / "r"), str(base / "other"), "--out", str(base / "f")]
            ),
        ]
    for result in results:  # fuse checks a member's curves as report does (round 17 row 95)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        errors = [x for x in result.output.splitlines() if x.startswith("error: ")]
        assert len(errors) == 1, result.output
        assert errors[0].startswith(f"error: {base / 'r' / target} cannot be read (Permission "), (
            errors
        )
        assert "then rerun the same command" in errors[0] and "writable" not in errors[0], errors
    assert (base / "r" / "summary.json").read_bytes() == before  # nothing rewritten without it


def test_a_head_that_cannot_be_built_is_one_line_before_anything_is_written(tmp_path, cache):
    """A value the head's own checks miss (here a user head's negative width, which torch refuses
    when the layer is made) fails before the run folder exists, not after config.json."""
    out = tmp_path / "run"
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, out, "loso", sets={"hidden": "-1"}, loop=LOOP, folds=[1],
                  progress=False)  # fmt: skip
    msg = str(err.value)
    assert "\n" not in msg and "TinyHead" in msg and "--set" in msg, msg
    assert not out.exists()


@pytest.fixture
def held_by_a_train(tmp_path):
    """Start a child `train` into a folder and freeze it (SIGSTOP) once it holds the lock; yields
    a function that does so for an out folder. The child is let go and reaped at the end."""
    children = []

    def hold(out: Path, loop: str = "epochs=1, batch_size=16", folds: str = "[1]"):
        code = CHILD.format(root=str(ROOT))
        code = code.replace("epochs=1, batch_size=16", loop).replace("folds=[1]", f"folds={folds}")
        env = {**os.environ, faults.ENV: "lock-taken:1:stop"}
        child = subprocess.Popen(
            [sys.executable, "-c", code, str(out)], env=env, stdout=subprocess.PIPE
        )
        children.append(child)
        _pid, status = os.waitpid(child.pid, os.WUNTRACED)  # returns once it has stopped
        assert os.WIFSTOPPED(status), status
        return child

    yield hold
    for child in children:
        os.kill(child.pid, signal.SIGCONT)
        child.communicate()


LOOP_ARGS = "epochs=2, batch_size=16, lr=3e-3, patience=2, seed=0"  # LOOP, for a child


@pytest.mark.subprocess
def test_report_is_refused_while_a_train_writes_the_run(run, tmp_path, held_by_a_train):
    """report rewrites summary.json and the pooled files: not while a train resumes the run."""
    out = copy(run, tmp_path)
    before = (out / "summary.json").read_text()
    child = held_by_a_train(out, LOOP_ARGS, "[1, 2, 3]")
    result = CliRunner().invoke(cli, ["report", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"another emofuse train (pid {child.pid}" in lines[0]
    assert (out / "summary.json").read_text() == before


@pytest.mark.subprocess
def test_fuse_is_refused_into_an_out_a_train_is_writing(run, tmp_path, held_by_a_train):
    out = tmp_path / "busy"
    child = held_by_a_train(out)
    other = copy(run, tmp_path)
    result = CliRunner().invoke(cli, ["fuse", str(run), str(other), "--out", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"another emofuse train (pid {child.pid}" in lines[0]
    assert not (out / "config.json").exists()


@pytest.mark.parametrize("name", ["wall.json", "summary.json", "report.md"])
def test_a_folder_in_the_way_of_a_run_file_is_one_line_and_the_rerun_resumes(
    run, tmp_path, cache, name
):
    """A folder where train writes wall.json (or the summary, the report) was a 47-line
    IsADirectoryError traceback once the new fold was saved (round-10 row 13)."""
    out = copy(run, tmp_path)
    shutil.rmtree(fold_dir(out, 2))
    (out / name).unlink(missing_ok=True)
    (out / name).mkdir()
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    msg = str(err.value)
    assert "\n" not in msg and f"{out / name} is a folder where a file goes" in msg, msg
    assert "2 finished fold(s) are kept" in msg and finished_folds(out) == [1, 2]
    (out / name).rmdir()  # what the line says to do
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1, 2]
    assert (out / name).is_file() or name == "wall.json"  # no fold trained: no wall time to add


@pytest.mark.parametrize("target", ["c.zarr", "c.zarr/streams", "c.h5", "c.h5.parts/run"])
def test_out_on_the_cache_itself_is_one_cli_line(tmp_path, monkeypatch, target):
    import emofuse.cache

    (tmp_path / "c.zarr" / "streams").mkdir(parents=True)
    (tmp_path / "c.h5").write_bytes(b"")
    (tmp_path / "c.h5.parts").mkdir()
    cache_path = tmp_path / target.split("/")[0].removesuffix(".parts")
    fake = FakeCache(n_per_speaker=4)
    fake.path = str(cache_path)
    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: fake)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = CliRunner().invoke(cli, [
        "train", "--cache", str(cache_path), "--split", "loso", "--head", TINY_HEAD,
        "--epochs", "1", "--folds", "1", "--quiet", "--out", str(tmp_path / target),
    ])  # fmt: skip
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "inside the cache" in lines[0] or "is a file, not a folder" in lines[0], lines[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("damage", ["cut", "empty", "gone"])
def test_a_finished_fold_whose_checkpoint_is_damaged_is_not_reported_complete(
    run, tmp_path, cache, damage
):
    """metrics.json marks a fold finished; a checkpoint.pt cut short (a full disk, a copy that
    stopped) left the run 'complete' on resume and in report, and predict failed only later."""
    from emofuse.train.checkpoints import load_fold_model

    out = copy(run, tmp_path)
    ckpt = fold_dir(out, 2) / "checkpoint.pt"
    if damage == "gone":
        ckpt.unlink()
    else:
        data = ckpt.read_bytes()
        ckpt.write_bytes(data[: len(data) // 2] if damage == "cut" else b"")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(EmofuseError) as err:  # the resume
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    msg = str(err.value)
    assert "\n" not in msg and f"{ckpt} is " in msg and f"delete {ckpt.parent}" in msg, msg
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    result = CliRunner().invoke(cli, ["report", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {ckpt} is ") and "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    shutil.rmtree(ckpt.parent)  # what the message says: only that fold is trained again
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1, 2]
    load_fold_model(out, 2)  # whole again


def test_fuse_and_train_of_a_partial_run_say_which_folds_are_missing(run, tmp_path, monkeypatch):
    """fuse printed mean ± std over 2 folds of 5 with no word that 3 were missing (report did)."""
    import emofuse.cache

    other = copy(run, tmp_path)
    result = CliRunner().invoke(cli, ["fuse", str(run), str(other), "--out", str(tmp_path / "f")])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    fused_note = (
        "note: 2 of 5 folds finished; missing: 3, 4, 5 (finish those folds in every member run "
        "with `emofuse train`, then fuse them again into a new --out)"
    )
    assert notes == [fused_note], result.output
    # report and compare of the fused run give the same advice: train refuses a fused --out
    report = CliRunner().invoke(cli, ["report", str(tmp_path / "f")])
    assert report.exit_code == 0 and fused_note in report.output.splitlines(), report.output
    compared = CliRunner().invoke(cli, ["compare", str(tmp_path / "f"), str(run)])
    assert compared.exit_code == 2 and "then fuse them again into a new --out, before " in (
        compared.output
    ), compared.output
    assert "into the same --out" not in compared.output
    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: FakeCache(n_per_speaker=4))
    (tmp_path / "fake.h5").write_bytes(b"")
    result = CliRunner().invoke(cli, [
        "train", "--cache", str(tmp_path / "fake.h5"), "--split", "loso", "--head", TINY_HEAD,
        "--epochs", "1", "--folds", "1", "--out", str(tmp_path / "t"), "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "note: 1 of 5 folds finished; missing: 2, 3, 4, 5 (rerun `emofuse train` with the same "
        "options, but without --folds (or with --folds naming the missing ones): it trains the "
        "missing folds only)" in result.output  # the same --folds trains nothing (round 19 #13)
    )


@pytest.mark.parametrize(
    "garbage",
    [b"garbage,,,\n", b"\xf7\x00\x13 not text", b"", b"id,fold,true,predicted,p_ang,p_hap\n"],
    ids=["text", "binary", "empty", "header-only"],
)
def test_fuse_names_a_damaged_fold_predictions_file_and_writes_nothing(run, tmp_path, garbage):
    other = copy(run, tmp_path)
    bad = fold_dir(other, 2) / "predictions.csv"
    bad.write_bytes(garbage)
    out = tmp_path / "f"
    result = CliRunner().invoke(cli, ["fuse", str(run), str(other), "--out", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {bad} ") and "Traceback" not in result.output
    assert f"delete {bad.parent}" in lines[0], lines[0]
    assert not out.exists()  # fold 1 was not fused before fold 2's file was found damaged


@pytest.mark.parametrize("plan", ["[]", '{"split": "loso", "seed": 0, "folds": []}', "{"])
def test_a_damaged_folds_json_is_named_in_fuse_and_report(run, tmp_path, plan):
    other = copy(run, tmp_path)
    (other / "folds.json").write_text(plan)
    for args in (
        ["fuse", str(run), str(other), "--out", str(tmp_path / "f")],
        ["report", str(other)],
    ):
        result = CliRunner().invoke(cli, args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert f"fold plan {other / 'folds.json'} " in lines[0] and "restore it" in lines[0], lines
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("name", ["config.json", "fold_01/metrics.json"])
def test_a_run_json_file_holding_a_list_is_named_in_report(run, tmp_path, name):
    out = copy(run, tmp_path)
    (out / name).write_text("[]")  # an AttributeError traceback before
    result = CliRunner().invoke(cli, ["report", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {out / name} is unreadable (a JSON list"), lines[0]


def test_a_cut_fold_metrics_file_costs_that_fold_only(run, tmp_path):
    """Round-12 row 50 (train side): a cut fold_01/metrics.json said "(JSONDecodeError); restore
    it, or delete the run folder and train again" - a Python class name, and advice that throws
    away every good fold; the advice that works retrains fold 1 alone."""
    out = copy(run, tmp_path)
    metrics = out / "fold_01" / "metrics.json"
    metrics.write_text('{"ua": 0.9')
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line.startswith(f"error: {metrics} is unreadable (not valid JSON: cut short or edited)")
    assert f"delete {out / 'fold_01'} and rerun `emofuse train " in line, line
    assert line.endswith("(it retrains that fold only)") and "JSONDecodeError" not in line


def _users_folder(path: Path) -> dict[str, bytes]:
    """A folder of the user's own files, with names a run folder also uses."""
    path.mkdir()
    (path / "config.json").write_text('{"my": "settings"}\n')
    (path / "notes.txt").write_text("mine\n")
    return {p.name: p.read_bytes() for p in path.iterdir()}


def test_train_refuses_a_non_empty_folder_that_is_not_a_run(tmp_path, monkeypatch):
    """`train --out` into a folder of the user's replaced its config.json (silent loss)."""
    import emofuse.cache

    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: FakeCache(n_per_speaker=4))
    (tmp_path / "fake.h5").write_bytes(b"")
    out = tmp_path / "mine"
    before = _users_folder(out)
    result = CliRunner().invoke(cli, [
        "train", "--cache", str(tmp_path / "fake.h5"), "--split", "loso", "--head", TINY_HEAD,
        "--epochs", "1", "--folds", "1", "--quiet", "--out", str(out),
    ])  # fmt: skip
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: --out {out} is a folder that is not empty and not an "
                               "emofuse run folder") and "new or empty --out" in lines[0]  # fmt: skip
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not lock_path(out).exists()


def test_fuse_refuses_a_non_empty_folder_that_is_not_a_run(run, tmp_path):
    other = copy(run, tmp_path)
    out = tmp_path / "mine"
    before = _users_folder(out)
    result = CliRunner().invoke(cli, ["fuse", str(run), str(other), "--out", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: --out {out} is a folder that is not empty and not an "
                               "emofuse run folder"), lines[0]  # fmt: skip
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_empty_folder_or_an_interrupted_fuse_is_a_valid_out(run, tmp_path):
    other = copy(run, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["fuse", str(run), str(other), "--out", str(empty)])
    assert result.exit_code == 0, result.output
    (empty / "config.json").unlink()  # a fuse stopped before its last file: fold plan, folds
    result = CliRunner().invoke(cli, ["fuse", str(run), str(other), "--out", str(empty)])
    assert result.exit_code == 0, result.output
    assert "emofuse_version" in json.loads((empty / "config.json").read_text())


@pytest.mark.subprocess
def test_a_train_through_a_symlink_to_a_run_being_trained_is_refused(
    tmp_path, held_by_a_train, monkeypatch
):
    import emofuse.cache

    out = tmp_path / "run"
    child = held_by_a_train(out)
    (tmp_path / "link").symlink_to(out, target_is_directory=True)
    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: FakeCache(n_per_speaker=4))
    (tmp_path / "fake.h5").write_bytes(b"")
    result = CliRunner().invoke(cli, [
        "train", "--cache", str(tmp_path / "fake.h5"), "--split", "loso", "--head", TINY_HEAD,
        "--epochs", "1", "--folds", "1", "--quiet", "--out", str(tmp_path / "link"),
    ])  # fmt: skip
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"another emofuse train (pid {child.pid}" in lines[0]
    assert not (tmp_path / "link.lock").exists() and not (out / "config.json").exists()


@pytest.fixture
def h5_cache(tmp_path) -> Path:
    path = tmp_path / "c.h5"
    write_five_session_cache(path)
    return path


def _stopped_parallel_train(cache: Path, out: Path, stage: str = "workers-start", jobs: int = 2):
    """`emofuse train --jobs 2` in a child (its own process group, as a shell job), frozen
    (SIGSTOP) where it reaches the faults.py ``stage`` (default: just before its workers start)."""
    env = {**os.environ, faults.ENV: f"{stage}:1:stop", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "emofuse", "train", "--cache", str(cache), "--split", "loso",
         "--head", TINY_HEAD, "--epochs", "1", "--jobs", str(jobs), "--quiet", "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    _pid, status = os.waitpid(child.pid, os.WUNTRACED)  # returns once it has stopped
    assert os.WIFSTOPPED(status), status
    return child


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("change", ["deleted", "replaced"])
def test_a_cache_deleted_or_replaced_while_workers_start_is_one_line(tmp_path, h5_cache, change):
    """The workers reopen the cache by path: one that was gone printed the initializer's
    traceback and then 'a fold worker process died (out of memory?)'."""
    child = _stopped_parallel_train(h5_cache, tmp_path / "run")
    if change == "deleted":
        h5_cache.unlink()
    else:
        write_five_session_cache(tmp_path / "other.h5", seed=1)
        os.replace(tmp_path / "other.h5", h5_cache)
    os.kill(child.pid, signal.SIGCONT)
    _out, err = child.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert child.returncode == 2 and len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"error: cache {h5_cache} "), lines[0]
    expected = "disappeared" if change == "deleted" else "changed while emofuse train"
    assert expected in lines[0] and "out of memory" not in lines[0], lines[0]
    assert finished_folds(tmp_path / "run") == []


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("jobs, stage", [(1, "fold-written"), (2, "fold-reported")])
def test_a_cache_written_over_in_place_while_training_is_named_and_the_folds_kept(
    tmp_path, h5_cache, jobs, stage
):
    """`cp other.h5 cache.h5` under a running train: with --jobs 2 'a fold worker process died
    (out of memory?)'; with --jobs 1 the process died of SIGBUS (exit 135, no message)."""
    out = tmp_path / "run"
    child = _stopped_parallel_train(h5_cache, out, stage, jobs)  # stopped after fold 1 is saved
    write_five_session_cache(tmp_path / "other.h5", seed=1, n=20)  # another, smaller cache
    shutil.copyfile(tmp_path / "other.h5", h5_cache)  # the same file, rewritten in place
    os.kill(child.pid, signal.SIGCONT)
    _out, err = child.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert child.returncode == 2 and len(lines) == 1, (child.returncode, err[-3000:])
    assert lines[0].startswith(f"error: cache {h5_cache} changed while emofuse train was "), lines
    assert "out of memory" not in lines[0] and "the finished folds are kept" in lines[0]
    kept = finished_folds(out)
    assert 1 <= len(kept) < 5, kept  # fold 1 was saved before the copy; not every fold after it
    for k in kept:  # whole folds only: none was saved from the rewritten file after the check
        assert (fold_dir(out, k) / "checkpoint.pt").is_file()


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("stage", ["workers-started", "fold-reported"])
def test_ctrl_c_while_fold_workers_start_or_train_is_the_interrupted_line(
    tmp_path, h5_cache, stage
):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while the workers were
    still starting raised InvalidStateError in the executor's thread, plus the workers' own
    KeyboardInterrupt tracebacks; at any moment it must be `interrupted`, exit 130."""
    out = tmp_path / "run"
    child = _stopped_parallel_train(h5_cache, out, stage)
    os.killpg(child.pid, signal.SIGINT)  # the parent is frozen: its SIGINT waits for SIGCONT
    os.kill(child.pid, signal.SIGCONT)
    _out, err = child.communicate(timeout=300)
    assert child.returncode == 130 and err.count("\n") == 1, err[-3000:]
    kept = len(finished_folds(out))
    assert err == (
        f"interrupted: rerun the same command to resume (the {kept} finished fold(s) in {out} are "
        "kept)\n"
        if kept
        else "interrupted: no fold had finished: rerun the same command to start again\n"
    ), err
    assert not lock_path(out).exists()


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize(
    "stage, sig",
    [("workers-started", signal.SIGTERM), ("fold-reported", signal.SIGTERM),
     ("fold-reported", signal.SIGKILL)],
)  # fmt: skip
def test_a_parallel_train_killed_leaves_no_leaked_semaphore_warning(tmp_path, h5_cache, stage, sig):
    """multiprocessing's resource tracker printed 'There appear to be 6 leaked semaphore
    objects' after a `--jobs` train (or `emofuse demo`) was terminated or killed: the executor's
    queues in the parent, and tqdm's lock in each worker, were named semaphores."""
    child = _stopped_parallel_train(h5_cache, tmp_path / "run", stage)
    os.kill(child.pid, sig)
    os.kill(child.pid, signal.SIGCONT)
    _out, err = child.communicate(timeout=300)  # EOF: the workers and the tracker are gone too
    if sig == signal.SIGKILL:
        assert child.returncode == -sig, err[-3000:]
    else:  # SIGTERM ends it as Ctrl-C does: the cleanup, then one line, 128 + 15
        assert child.returncode == 143 and err.count("\n") == 1, err[-3000:]
        assert err.startswith("interrupted by SIGTERM: ") and "rerun the same command" in err
        assert not lock_path(tmp_path / "run").exists()
    assert "leaked" not in err and "resource_tracker" not in err and "Traceback" not in err, err


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_fold_worker_killed_mid_fold_is_one_line_and_the_rerun_resumes(tmp_path, h5_cache):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "emofuse", "train", "--cache", str(h5_cache), "--split", "loso",
            "--head", TINY_HEAD, "--epochs", "1", "--jobs", "2", "--quiet", "--out", str(out)]  # fmt: skip
    env = {**os.environ, faults.ENV: "fold-write:1:kill", "OMP_NUM_THREADS": "1"}  # as an OOM kill
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert re.fullmatch(  # which fold, and what ended it (round-15 train side row 53)
        r"error: the worker process training fold [12] was killed \(SIGKILL: out of memory, or "
        r"killed from outside\?\); rerun the same command \(with --jobs 1 if memory ran out\): "
        r"the finished folds are kept",
        lines[0],
    ), lines[0]
    env.pop(faults.ENV)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]
    assert finished_folds(out) == [1, 2, 3, 4, 5]


def test_a_run_records_absolute_paths_and_resumes_from_the_same_relative_ones(
    tmp_path, h5_cache, monkeypatch
):
    """config.json kept --cache (and a head file) as typed: `report --tsne` from another folder
    said the cache was gone. Now absolute; the same relative command resumes; a run recorded
    relative by an older emofuse is one line saying so."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    shutil.move(h5_cache, work / "c.h5")
    shutil.copy(ROOT / "tests" / "train" / "tiny_head.py", work / "head.py")

    def args(folds: str) -> list[str]:
        return ["train", "--cache", "c.h5", "--split", "loso", "--head", "head.py:TinyHead",
                "--epochs", "1", "--folds", folds, "--quiet", "--out", "run"]  # fmt: skip

    monkeypatch.chdir(work)
    result = CliRunner().invoke(cli, args("1"))
    assert result.exit_code == 0, result.output
    mtime = (work / "run" / "fold_01" / "checkpoint.pt").stat().st_mtime_ns
    result = CliRunner().invoke(cli, args("1,2"))
    assert result.exit_code == 0, result.output  # the same relative command resumes the run
    assert (work / "run" / "fold_01" / "checkpoint.pt").stat().st_mtime_ns == mtime
    assert finished_folds(work / "run") == [1, 2]
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(cli, ["report", str(work / "run"), "--tsne"])
    assert result.exit_code == 0, result.output
    assert (work / "run" / "tsne.png").is_file()
    config = json.loads((work / "run" / "config.json").read_text())
    assert config["cache"] == str(work / "c.h5")
    assert config["head"] == f"{work / 'head.py'}:TinyHead"
    old = {**config, "cache": "c.h5", "head": "head.py:TinyHead"}  # as an older emofuse wrote it
    old.pop("config_sha256")  # (which sealed nothing)
    (work / "run" / "config.json").write_text(json.dumps(old))
    result = CliRunner().invoke(cli, ["report", str(work / "run"), "--tsne"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert (
        lines[0].startswith(f"error: {work / 'run'} records the ") and "relative path" in lines[0]
    )
    assert f"from {elsewhere}" in lines[0] and "folder the run was trained in" in lines[0]
    monkeypatch.chdir(work)  # an old run resumes from its own folder, with its relative spelling
    result = CliRunner().invoke(cli, args("1,2"))
    assert result.exit_code == 0, result.output


def _one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("key", ["head", "labels", "head_config", "seed"])
def test_a_config_json_without_a_required_key_is_one_line_in_report_fuse_compare_and_train(
    run, tmp_path, cache, key
):
    """report said "head: None" and "2 of 5 folds finished"; a train rerun "different settings"."""
    out = copy(run, tmp_path)
    config = json.loads((out / "config.json").read_text())
    del config[key]
    (out / "config.json").write_text(json.dumps(config))
    expected = f"error: {out / 'config.json'} is damaged (no {key!r}); retrain into a new --out"
    for args in (
        ["report", str(out)],
        ["fuse", str(run), str(out), "--out", str(tmp_path / "f")],
        ["compare", str(out), str(run)],
    ):
        assert _one_error_line(CliRunner().invoke(cli, args)) == expected, args
    assert not (tmp_path / "f").exists()
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert f"error: {err.value}" == expected


def test_a_config_json_with_labels_of_the_wrong_type_is_named(run, tmp_path):
    out = copy(run, tmp_path)
    config = json.loads((out / "config.json").read_text())
    config["labels"] = "ang,hap"
    (out / "config.json").write_text(json.dumps(config))
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line.startswith(f"error: {out / 'config.json'} is damaged ('labels' is a JSON str")


@pytest.mark.parametrize(
    "metrics, why",
    [({"UA": 0.5}, "no 'WA'"), ({"UA": "high", "WA": 0.5, "F1": 0.5}, "'UA' is 'high'"),
     ({"UA": 1.5, "WA": 0.5, "F1": 0.5}, "'UA' is 1.5"), ({"UA": 0.5, "WA": 0.5}, "no 'F1'"),
     ({"UA": 0.5, "WA": 0.5, "F1": 0.5, "best_epoch": 7, "epochs_run": 2},
      "'best_epoch' 7 is not one of the 2 epochs it ran")],
)  # fmt: skip
def test_a_valid_json_but_damaged_metrics_file_is_one_line_in_report_and_train(
    run, tmp_path, cache, metrics, why
):
    """report printed "2 of 5 folds finished" with blank cells for fold 2 (exit 0)."""
    out = copy(run, tmp_path)
    bad = fold_dir(out, 2) / "metrics.json"
    bad.write_text(json.dumps(metrics))
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line.startswith(f"error: {bad} is damaged ({why}"), line
    assert line.endswith(
        f"delete {bad.parent} and rerun {train_command(out)} (it retrains that fold only)"
    )
    line = _one_error_line(
        CliRunner().invoke(cli, ["fuse", str(run), str(out), "--out", str(tmp_path / "f")])
    )
    assert line.startswith(f"error: {bad} is damaged ({why}")
    with pytest.raises(EmofuseError, match="metrics.json is damaged"):
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    shutil.rmtree(bad.parent)  # what the message says: fold 2 is trained again
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1, 2]


def test_a_fused_run_whose_member_was_retrained_is_not_reported_as_current(run, tmp_path, cache):
    other = copy(run, tmp_path)
    fused = tmp_path / "f"
    result = CliRunner().invoke(cli, ["fuse", str(run), str(other), "--out", str(fused)])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(cli, ["report", str(fused)]).exit_code == 0
    shutil.rmtree(other)  # retrained with other settings into the same folder
    other_loop = LoopConfig(epochs=1, batch_size=8, lr=1e-2, patience=1, seed=0)
    train_run(cache, TINY_HEAD, other, "loso", loop=other_loop, folds=[1, 2], progress=False)
    expected = f"error: {fused} was fused from {other} as it was before {other} was retrained"
    again = tmp_path / "f2"  # fuse took the stale run as a member and made a "current" one
    for args in (
        ["report", str(fused)],
        ["compare", str(fused), str(run)],
        ["fuse", str(fused), str(run), "--out", str(again)],
    ):
        line = _one_error_line(CliRunner().invoke(cli, args))
        assert line.startswith(expected) and "fuse again" in line, line
    assert not again.exists()


BAD_WIDTH_HEAD = """
from torch import nn
from tests.train.tiny_head import TinyHead


class BadWidth(TinyHead):
    name = "bad-width"

    def __init__(self, cfg, dims, n_classes):
        super().__init__(cfg, dims, n_classes)
        self.classifier = nn.Linear(cfg.hidden + 3, n_classes)  # embed returns cfg.hidden
"""


def test_a_user_head_whose_forward_fails_is_one_line_before_anything_is_written(
    tmp_path, monkeypatch
):
    """`mat1 and mat2 shapes cannot be multiplied` was a RuntimeError traceback from fold 1."""
    line, out, spec = _train_user_head(tmp_path, monkeypatch, "BadWidth", source=BAD_WIDTH_HEAD)
    assert line.startswith(f"error: head {spec}: its forward failed on a batch"), line
    assert "RuntimeError: mat1 and mat2 shapes cannot be multiplied" in line
    assert not out.exists()


BROKEN_HEADS = """
import torch
from tests.train.tiny_head import TinyHead


class NoGrad(TinyHead):
    def forward(self, batch):
        return torch.zeros(batch["speech"].shape[0], self.classifier.out_features)


class NanOut(TinyHead):
    def forward(self, batch):
        return super().forward(batch) * float("nan")


class NanInTraining(TinyHead):  # finite in eval mode (the smoke batch), NaN once training starts
    def forward(self, batch):
        z = super().forward(batch)
        return z * float("nan") if self.training else z


class LateRaise(TinyHead):  # passes the smoke batch, raises once training is under way
    calls = 0

    def forward(self, batch):
        LateRaise.calls += 1
        if LateRaise.calls > 3:
            raise ValueError("late boom")
        return super().forward(batch)


class LateNan(TinyHead):  # finite on the first batches, NaN from its 4th training call
    calls = 0

    def forward(self, batch):
        z = super().forward(batch)
        LateNan.calls += self.training
        return z * float("nan") if LateNan.calls > 3 else z


class ExitInForward(TinyHead):
    def forward(self, batch):
        raise SystemExit(0)


class StringStreams(TinyHead):
    @classmethod
    def required_streams(cls, cfg):
        return "speech"


class UnknownStream(TinyHead):
    @classmethod
    def required_streams(cls, cfg):
        return {"speech", "nosuchstream"}
"""


def _train_user_head(
    tmp_path, monkeypatch, cls: str, *extra: str, source: str | None = None
) -> tuple[str, Path, str]:
    """`emofuse train` of a class of BROKEN_HEADS (or of ``source``) on a fake cache: (its error
    line, --out, spec)."""
    import emofuse.cache

    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: FakeCache(n_per_speaker=4))
    (tmp_path / "fake.h5").write_bytes(b"")
    head = tmp_path / "broken_heads.py"
    head.write_text(BROKEN_HEADS if source is None else source)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "train", "--cache", str(tmp_path / "fake.h5"), "--split", "loso", "--head",
        f"{head}:{cls}", "--epochs", "1", "--folds", "1", "--quiet", "--out", str(out), *extra,
    ])  # fmt: skip
    return _one_error_line(result), out, f"{head}:{cls}"


def test_a_user_head_without_a_gradient_path_is_one_line_before_anything_is_written(
    tmp_path, monkeypatch
):
    """forward returning torch.zeros was a RuntimeError traceback from loss.backward()."""
    line, out, spec = _train_user_head(tmp_path, monkeypatch, "NoGrad")
    assert line.startswith(
        f"error: head {spec}: its output does not depend on any trainable parameter"
    ), line
    assert not out.exists()


def test_a_user_head_whose_output_is_nan_is_told_its_forward_is_broken_not_to_lower_the_lr(
    tmp_path, monkeypatch
):
    """'lower --lr, or set --grad-clip 1' was the advice, and following it changed nothing."""
    line, out, spec = _train_user_head(
        tmp_path, monkeypatch, "NanOut", "--lr", "1e-7", "--grad-clip", "1"
    )
    assert line.startswith(f"error: head {spec}: its output is not finite"), line
    assert "forward is broken" in line and "lower --lr" not in line
    assert not out.exists()
    # NaN only in training mode: the first batch of fold 1, before any optimizer step
    line, out, spec = _train_user_head(tmp_path, monkeypatch, "NanInTraining")
    assert line.startswith(
        f"error: fold 1, epoch 1: head {spec}'s output is not finite (NaN or inf) on the first "
        "batch, before any training step"
    ), line
    assert "forward is broken" in line and "lower --lr, or set --grad-clip 1" not in line


def test_a_user_head_whose_required_streams_is_a_string_is_named(tmp_path, monkeypatch):
    """The string was iterated as characters: 'the head needs stream 'c' … extract it'."""
    line, out, spec = _train_user_head(tmp_path, monkeypatch, "StringStreams")
    assert line == (
        f"error: head {spec}: its required_streams returned str 'speech'; it must return a set "
        'of stream names like {"speech", "text"}'
    ), line
    assert not out.exists()


def test_a_user_head_needing_a_stream_no_extractor_makes_is_told_to_fix_the_head(
    tmp_path, monkeypatch
):
    """The advice was "extract it", which no extract can do for a made-up name (round 10)."""
    line, out, spec = _train_user_head(tmp_path, monkeypatch, "UnknownStream")
    assert line.startswith("error: the head needs stream 'nosuchstream' but cache"), line
    assert "no emofuse extractor makes a stream of that name" in line and "extract it" not in line
    assert line.endswith("fix the head's required_streams") and not out.exists()


@pytest.mark.parametrize("finished", [True, False])
def test_train_into_a_fused_run_says_it_is_a_late_fusion_folder(
    run, tmp_path, monkeypatch, finished
):
    import emofuse.cache

    other = copy(run, tmp_path)
    fused = tmp_path / "f"
    assert (
        CliRunner().invoke(cli, ["fuse", str(run), str(other), "--out", str(fused)]).exit_code == 0
    )
    if not finished:
        (fused / "config.json").unlink()  # a fuse killed before its last file
    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: FakeCache(n_per_speaker=4))
    (tmp_path / "fake.h5").write_bytes(b"")
    before = sorted(p.name for p in fused.iterdir())
    result = CliRunner().invoke(cli, [
        "train", "--cache", str(tmp_path / "fake.h5"), "--split", "loso", "--head", TINY_HEAD,
        "--epochs", "1", "--folds", "1", "--quiet", "--out", str(fused),
    ])  # fmt: skip
    line = _one_error_line(result)
    assert line.startswith(f"error: --out {fused} is a late-fusion run folder"), line
    assert "not a train run" in line and "new --out" in line
    assert sorted(p.name for p in fused.iterdir()) == before


def test_report_of_a_missing_path_or_a_file_says_which(tmp_path):
    gone = tmp_path / "nope"
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(gone)]))
    assert line.startswith(f"error: {gone} does not exist"), line
    cache_file = tmp_path / "demo.h5"
    cache_file.write_bytes(b"\x89HDF\r\n")
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(cache_file)]))
    assert line.startswith(f"error: {cache_file} is a file, not a run folder"), line


def test_report_names_a_file_where_a_fold_folder_goes(run, tmp_path):
    """fold_02 replaced by an empty file was counted "missing" with train's advice, which train
    then refused (round-12 train side row 13): the note names the file to move first."""
    out = copy(run, tmp_path)
    shutil.rmtree(fold_dir(out, 2))
    fold_dir(out, 2).write_text("")
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output
    note = result.output.splitlines()[0]
    assert note.startswith("note: 1 of 5 folds finished; missing: 2, 3, 4, 5 ("), note
    assert f"{fold_dir(out, 2)}: a file where a fold folder goes; move it away, then rerun" in note


@pytest.mark.parametrize("damage", ["a folder", "cut", "no jobs", "negative minutes", "NaN"])
def test_report_says_when_a_damaged_wall_file_leaves_out_the_wall_clock_line(run, tmp_path, damage):
    """A folder (or garbage) in place of wall.json silently dropped report.md's wall-clock line
    (round-12 train side row 7): the report still runs, and a note names the file."""
    out = copy(run, tmp_path)
    wall = out / "wall.json"
    clean = CliRunner().invoke(cli, ["report", str(out)])
    assert clean.exit_code == 0 and "wall.json" not in clean.output, clean.output
    assert "Wall clock:" in (out / "report.md").read_text()
    wall.unlink()
    if damage == "a folder":
        wall.mkdir()
    else:
        wall.write_text(  # the last two: round-14 row 50 printed "Wall clock: -5.00 min"
            {
                "cut": '{"calls": [{"minutes": 0.1',
                "no jobs": '{"calls": [{"minutes": 1}]}',
                "negative minutes": '{"calls": [{"folds": [1], "jobs": 1, "minutes": -5.0}]}',
                "NaN": '{"calls": [{"folds": [1], "jobs": 1, "minutes": NaN}]}',
            }[damage]
        )
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "wall.json" in line]
    assert len(notes) == 1 and notes[0].startswith(f"note: {wall} is "), notes
    assert "no wall-clock line" in notes[0]
    assert "Wall clock:" not in (out / "report.md").read_text()


def test_an_unreadable_wall_file_is_told_to_be_made_readable_not_thrown_away(run, unprivileged):
    """Round-16 train side row 12: an unreadable wall.json got only "move it away", which throws
    its record away; `chmod u+r`, as for the other files, keeps it, and the line comes back."""
    base, as_user = unprivileged
    out = base / "r"
    shutil.copytree(run, out)
    give_to_user(out)
    (out / "wall.json").chmod(0)
    CliRunner().invoke(cli, ["report", "--help"])  # the command modules are imported as root
    with as_user():
        result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "wall.json" in line]
    assert len(notes) == 1 and notes[0].startswith(f"note: {out / 'wall.json'} cannot be read ("), (
        notes
    )
    assert "make it readable (`chmod u+r` it, or ask its owner) to get the line back" in notes[0]
    (out / "wall.json").chmod(0o644)  # the advice followed
    with as_user():
        again = CliRunner().invoke(cli, ["report", str(out)])
    assert again.exit_code == 0 and "wall.json" not in again.output, again.output
    assert "Wall clock:" in (out / "report.md").read_text()


def test_report_of_a_fuse_killed_midway_says_to_rerun_the_same_fuse(run, tmp_path):
    other = copy(run, tmp_path)
    fused = tmp_path / "f"
    assert (
        CliRunner().invoke(cli, ["fuse", str(run), str(other), "--out", str(fused)]).exit_code == 0
    )
    for name in ("config.json", "summary.json", "report.md", "predictions.csv"):
        (fused / name).unlink()
    shutil.rmtree(fold_dir(fused, 2))  # killed while fusing fold 2
    # compare blamed the members ("finish those folds in every member run"; round-10 row 53)
    # and as a member of another fuse it said "has no finished fold; run `emofuse train` first",
    # or "config.json is unreadable (FileNotFoundError)" (round-12 rows 29-30, train side)
    again = tmp_path / "again"
    import soundfile as sf

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, dtype=np.float32), 16000)
    for args in (
        ["report", str(fused)],
        ["predict", "--run", str(fused), str(wav)],  # "not an emofuse run folder" (round 13, 7)
        ["compare", str(fused), str(run)],
        ["fuse", str(fused), str(run), "--out", str(again)],
        ["fuse", str(run), str(fused), "--out", str(again)],
    ):
        line = _one_error_line(CliRunner().invoke(cli, args))
        assert line == (
            f"error: {fused} is an unfinished `emofuse fuse` (it stopped before writing "
            f"config.json): rerun the same `emofuse fuse {run} {other} --out {fused}`"
        ), line
        assert not again.exists()  # a refused fuse leaves no half folder behind


def test_a_checkpoint_copied_from_a_run_of_another_split_is_named(tmp_path):
    """The same head's checkpoint from a lopo run, copied into a loso run's fold: predict used
    it without a word, so the run's figures no longer described its model (the re-audit)."""
    from emofuse.train.checkpoints import load_fold_model

    cache = FakeCache(n_per_speaker=4)
    loop = LoopConfig(epochs=1, batch_size=16)
    loso, lopo = tmp_path / "loso", tmp_path / "lopo"
    train_run(cache, TINY_HEAD, loso, "loso", loop=loop, folds=[1], progress=False)
    train_run(cache, TINY_HEAD, lopo, "lopo", loop=loop, folds=[1], progress=False)
    load_fold_model(loso, 1)  # its own checkpoint loads
    shutil.copy(fold_dir(lopo, 1) / "checkpoint.pt", fold_dir(loso, 1) / "checkpoint.pt")
    with pytest.raises(EmofuseError, match="was trained for another test set than fold 1"):
        load_fold_model(loso, 1)


def test_a_user_head_that_raises_during_training_is_one_line_naming_fold_and_line(
    tmp_path, monkeypatch
):
    """Round-7 audit: a ValueError from the head's forward after the smoke batch was a 51-line
    traceback, exit 1; now one line naming the head, the fold, the error and its line."""
    line, out, spec = _train_user_head(tmp_path, monkeypatch, "LateRaise")
    source_line = BROKEN_HEADS.splitlines().index('            raise ValueError("late boom")') + 1
    assert line == (
        f"error: head {spec} failed while training fold 1 (ValueError: late boom, at "
        f"{spec.rpartition(':')[0]} line {source_line}); fix the head, then rerun the same "
        "command (finished folds are kept)"
    ), line


def test_a_user_head_that_calls_sys_exit_is_an_error_not_a_silent_success(tmp_path, monkeypatch):
    """Round-7 audit: SystemExit(0) from the head ended train with exit 0 and no line at all."""
    line, out, spec = _train_user_head(tmp_path, monkeypatch, "ExitInForward")
    assert line.startswith(f"error: head {spec}: its forward failed on a batch"), line
    assert "(SystemExit: 0, at " in line and not out.exists()


def test_a_head_too_large_for_the_free_memory_is_refused_before_it_is_allocated(
    tmp_path, monkeypatch
):
    """Round-7 audit: `--set hidden=100000000` was killed by the OOM killer without a word."""
    from tests.train import tiny_head

    source = f"from {tiny_head.__name__} import TinyHead\n"
    line, out, spec = _train_user_head(
        tmp_path, monkeypatch, "TinyHead", "--set", "hidden=100000000", source=source
    )
    assert line.startswith(f"error: head {spec} would have "), line
    assert "GiB with gradients and optimizer state), more than the " in line
    assert line.endswith("of memory free; choose smaller sizes than --set hidden=100000000")
    assert not out.exists()


def test_a_deleted_fold_predictions_file_names_the_fold_to_retrain(run, tmp_path, cache):
    """Round-7 audit: "predictions.csv is missing; rerun `emofuse train` for this run folder", and
    that rerun stopped on the same line (the fold still has its checkpoint and metrics)."""
    out = copy(run, tmp_path)
    gone = fold_dir(out, 2) / "predictions.csv"
    gone.unlink()
    expected = (
        f"error: {gone} is missing (deleted or lost); delete {gone.parent} and rerun "
        f"{train_command(out)} (it retrains that fold only)"
    )
    assert _one_error_line(CliRunner().invoke(cli, ["report", str(out)])) == expected
    shutil.rmtree(gone.parent)  # as the line says
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1, 2] and gone.is_file()


def test_a_run_that_lost_its_folds_json_is_named_as_such_and_the_train_rerun_mends_it(
    run, tmp_path, cache
):
    """Round-7 audit: report said the folder "is not a run folder" though config.json and its
    finished folds were there."""
    out = copy(run, tmp_path)
    (out / "folds.json").unlink()
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line == (
        f"error: {out / 'folds.json'} is missing (deleted or lost); rerun {train_command(out)} "
        "(it writes the fold plan again and keeps the finished folds)"
    ), line
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1, 2] and (out / "folds.json").is_file()


def test_a_forward_that_turns_nan_from_finite_weights_is_blamed_on_the_head_not_the_lr(
    tmp_path, monkeypatch
):
    """Round-7 audit: a head's forward emitting NaN mid-epoch got "lower --lr, or set --grad-clip
    1", which cannot help; the weights were still finite and small."""
    line, out, spec = _train_user_head(tmp_path, monkeypatch, "LateNan", "--batch-size", "2")
    assert line.startswith("error: fold 1, epoch 1: the training loss went non-finite"), line
    assert f"while every weight of {spec} is finite and small" in line
    assert line.endswith("fix the head's forward") and "lower --lr, or" not in line


def test_train_or_compare_into_a_run_folder_or_under_one_is_refused(run, tmp_path, cache):
    """Round-7 audit: `train --out RUN/fold_01` wrote a run inside another run's fold (which the
    advice "delete RUN/fold_01" elsewhere then destroys), and `compare --out RUN` dropped
    compare.* into a member run."""
    out = copy(run, tmp_path)
    inner = fold_dir(out, 1) / "nested"
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, inner, "loso", loop=LOOP, folds=[1], progress=False)
    assert str(err.value) == (
        f"--out {inner} is inside the run folder {out.resolve()}; give a folder for the run "
        "outside any run folder"
    )
    assert not inner.exists()
    same = _one_error_line(
        CliRunner().invoke(cli, ["compare", str(run), str(out), "--out", str(out)])
    )
    assert same == f"error: --out {out} is a run folder; give a new folder for the comparison"
    assert not (out / "compare.md").exists()
    elsewhere = CliRunner().invoke(
        cli, ["compare", str(run), str(out), "--out", str(tmp_path / "c")]
    )
    assert "has 2 of 5 folds finished" in elsewhere.output  # past the --out check: runs are partial


def test_an_absurd_weight_decay_that_diverges_is_named_not_the_lr(tmp_path, monkeypatch):
    """Round-7 audit: `--weight-decay 1e30` went non-finite and the line said "lower --lr, or set
    --grad-clip 1", neither of which helps."""
    import emofuse.cache

    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: FakeCache(n_per_speaker=4))
    (tmp_path / "fake.h5").write_bytes(b"")
    result = CliRunner().invoke(cli, [
        "train", "--cache", str(tmp_path / "fake.h5"), "--split", "loso", "--head", TINY_HEAD,
        "--weight-decay", "1e30", "--epochs", "2", "--folds", "1", "--out", str(tmp_path / "r"),
        "--quiet",
    ])  # fmt: skip
    line = _one_error_line(result)
    assert line.startswith("error: fold 1, epoch ") and "with --weight-decay 1e+30" in line, line
    assert "lower --lr" not in line and line.endswith("(the recipes use 0.01-0.1)")


def test_a_write_error_right_after_the_lock_is_taken_is_one_line(tmp_path, cache, monkeypatch):
    """Round-7 audit: `EMOFUSE_FAULT=lock-taken:1:enospc` was a traceback: the fault point sat
    outside the guard that turns a write error into the run folder's line."""
    monkeypatch.setenv(faults.ENV, "lock-taken:1:enospc")
    faults.reset()
    out = tmp_path / "run"
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1], progress=False)
    assert "No space left on device" in str(err.value) and "\n" not in str(err.value)
    assert not lock_path(out).exists()


def test_report_on_a_stray_config_or_a_train_run_that_lost_its_config_says_what_it_is(
    run, tmp_path
):
    """Round-8 audit: a folder with a stray config.json was called a fused run to "fuse again",
    and a train run whose config.json was deleted "an unfinished emofuse fuse"."""
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "config.json").write_text('{"lr": 1}')
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(stray)]))
    assert line.startswith(f"error: {stray} is not a run folder"), line
    lost = copy(run, tmp_path)
    (lost / "config.json").unlink()
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(lost)]))
    assert line == (
        f"error: {lost / 'config.json'} is missing (deleted or lost), and a trained run cannot be "
        "reported, resumed or predicted without the settings it records; restore it, or train "
        "again into a new --out"
    )


def test_fuse_into_a_fold_folder_of_a_run_is_refused(run, tmp_path):
    """Round-8 audit: `fuse … --out RUN/fold_01/fz` wrote a run that RUN's own advice "delete
    RUN/fold_01" then deletes with it."""
    other = copy(run, tmp_path)
    inner = fold_dir(run, 1) / "fz"
    line = _one_error_line(
        CliRunner().invoke(cli, ["fuse", str(run), str(other), "--out", str(inner)])
    )
    assert line == (
        f"error: --out {inner} is inside the run folder {run.resolve()}; give a folder for the "
        "fused run outside any run folder"
    )
    assert not inner.exists()


def test_a_folder_where_report_md_goes_is_one_line(tmp_path, cache):
    """Round-8 audit: report.md replaced by a folder made `report` end in an IsADirectoryError
    traceback."""
    out = tmp_path / "run"
    train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1], progress=False)
    (out / "report.md").unlink()
    (out / "report.md").mkdir()
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line.startswith(f"error: cannot write {out / 'report.md'} (") and "rerun" in line, line


def test_predict_after_the_runs_head_file_moved_names_the_file(tmp_path, cache):
    """Round-8 audit: a moved user head file made predict say "--head …: no such file (give
    path/to/file.py:ClassName)"; predict has no --head option."""
    from emofuse.train.checkpoints import load_fold_model

    head = tmp_path / "myhead.py"
    head.write_text("from tests.train.tiny_head import TinyHead\n")
    out = tmp_path / "run"
    train_run(cache, f"{head}:TinyHead", out, "loso", loop=LOOP, folds=[1], progress=False)
    head.rename(tmp_path / "moved.py")
    with pytest.raises(EmofuseError) as err:
        load_fold_model(out, 1)
    assert str(err.value) == (
        f"the head file {head} that {out} was trained with is gone (moved, renamed or deleted); "
        "put it back at that path (the run loads its head from there)"
    )


def test_a_write_error_while_fuse_writes_is_one_line_and_the_rerun_fuses(
    run, tmp_path, monkeypatch
):
    """Round-9 audit: a write error while fuse copied folds.json (`ulimit -f 1`: EFBIG) was a
    traceback that left a truncated folds.json, and the advised rerun was then refused."""
    import errno

    import emofuse.train.fuse as fuse_module
    from emofuse.fileio import atomic_open

    def too_big(path, mode="w", **kw):
        if Path(path).name == "folds.json":
            raise OSError(errno.EFBIG, "File too large", str(path))
        return atomic_open(path, mode, **kw)

    other = copy(run, tmp_path)
    out = tmp_path / "fused"
    monkeypatch.setattr(fuse_module, "atomic_open", too_big)
    line = _one_error_line(
        CliRunner().invoke(cli, ["fuse", str(run), str(other), "--out", str(out)])
    )
    assert line.startswith(f"error: cannot write the fused run {out} (File too large writing "), (
        line
    )
    assert line.endswith("then rerun the same command (it fuses again)") and "ulimit -f" in line
    assert not (out / "folds.json").exists()
    monkeypatch.undo()
    again = CliRunner().invoke(cli, ["fuse", str(run), str(other), "--out", str(out)])
    assert again.exit_code == 0 and (out / "config.json").is_file(), again.output


def test_an_out_that_is_a_dangling_symlink_is_named_as_such(run, tmp_path, cache, monkeypatch):
    """Round-11 rows 113-114: a --out linking to nowhere was "a parent is a regular file" in
    train and fuse, and "File exists: free disk space" in compare."""
    import emofuse.cache

    dang = tmp_path / "dang"
    dang.symlink_to(tmp_path / "nowhere" / "x")
    expected = (
        f"error: --out {dang}: {dang} is a symbolic link to {tmp_path / 'nowhere' / 'x'}, whose "
        "folder does not exist; fix or remove the link, or choose another --out"
    )
    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: FakeCache(n_per_speaker=4))
    (tmp_path / "fake.h5").write_bytes(b"")
    other = copy(run, tmp_path)
    for args in (
        ["train", "--cache", str(tmp_path / "fake.h5"), "--split", "loso", "--head", TINY_HEAD,
         "--epochs", "1", "--folds", "1", "--quiet", "--out", str(dang)],
        ["fuse", str(run), str(other), "--out", str(dang)],
    ):  # fmt: skip
        assert _one_error_line(CliRunner().invoke(cli, args)) == expected
    assert dang.is_symlink() and not (tmp_path / "nowhere").exists()


def test_a_name_too_long_or_a_looping_link_is_one_line_in_every_train_side_command(
    run, tmp_path, h5_cache
):
    """A 300-byte name was an `OSError: File name too long` traceback in train, report, fuse,
    compare and predict, and a symlink loop as --out a `RuntimeError: Symlink loop` traceback
    (round-13 train side rows 105, 106, 112)."""
    long = tmp_path / ("x" * 300)
    loop = tmp_path / "loopA"
    loop.symlink_to(tmp_path / "loopB")
    (tmp_path / "loopB").symlink_to(loop)
    train = ["train", "--cache", str(h5_cache), "--split", "loso", "--head", "audio"]
    for args in (
        ["report", str(long)],
        [*train, "--out", str(long)],
        ["predict", "--run", str(long), str(long) + ".wav"],
        ["compare", str(long), str(run)],
        ["fuse", str(run), str(long), "--out", str(tmp_path / "f")],
        ["train", "--cache", str(h5_cache), "--split", "loso", "--head", f"{long}.py:X",
         "--out", str(tmp_path / "r")],
    ):  # fmt: skip
        line = _one_error_line(CliRunner().invoke(cli, args))
        assert "longer than the file system allows" in line and "give a shorter name" in line, (
            args[0], line)  # fmt: skip
    other = copy(run, tmp_path)
    for args in ([*train, "--out", str(loop)],
                 ["fuse", str(run), str(other), "--out", str(loop)]):  # fmt: skip
        line = _one_error_line(CliRunner().invoke(cli, args))
        assert line == (f"error: {loop} is a symbolic link that loops back on itself (directly or "
                        "through another link); fix or remove the link"), (args[0], line)  # fmt: skip


def test_a_users_file_in_an_unfinished_fold_is_named_not_deleted(run, tmp_path, cache):
    """A resume deleted an unfinished fold's folder with a user's notes in it, without a word
    (round-13 train side row 109)."""
    out = copy(run, tmp_path)
    (fold_dir(out, 1) / "metrics.json").unlink()  # unfinished: trained again from scratch
    notes = fold_dir(out, 1) / "mynotes.txt"
    notes.write_text("mine")
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert str(err.value) == (
        f"{fold_dir(out, 1)} (fold 1, unfinished: it is trained again from scratch) holds what "
        "emofuse does not write there (mynotes.txt); move that out, then rerun the same command"
    )
    assert notes.read_text() == "mine"
    notes.rename(tmp_path / "mynotes.txt")  # what the line says
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1, 2]


def test_the_retrain_advice_names_the_damaged_fold_among_its_folds(run, tmp_path, cache):
    """After `train --folds 3` the advice for a damaged fold 1 was "rerun `emofuse train …
    --folds 3`", which does not retrain fold 1 (round-13 train side row 104)."""
    import re

    out = copy(run, tmp_path)
    train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[3], progress=False)
    metrics = fold_dir(out, 1) / "metrics.json"
    metrics.write_text('{"ua": 0.9')
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert f"delete {fold_dir(out, 1)} and rerun `emofuse train " in line, line
    folds = re.search(r"--folds ([\d,]+)", line).group(1)
    assert folds == "1,3", line
    shutil.rmtree(fold_dir(out, 1))  # the advice, followed
    train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[int(k) for k in folds.split(",")],
              progress=False)  # fmt: skip
    assert finished_folds(out) == [1, 2, 3]


def test_a_fold_file_that_cannot_be_read_for_permissions_is_not_called_damaged(
    run, tmp_path, monkeypatch
):
    """`chmod 000` on an intact checkpoint was "is damaged (cut short, or not a torch
    checkpoint) … delete the fold and rerun", and on metrics.json "restore it, or delete the
    fold" (round-13 train side rows 113-114): the fix is to make it readable. (Root reads
    everything, so the permission is refused here by the checks' own calls.)"""
    import os as os_module
    from pathlib import Path as P

    out = copy(run, tmp_path)
    ckpt = fold_dir(out, 2) / "checkpoint.pt"
    real_access = os_module.access
    monkeypatch.setattr(
        os_module, "access", lambda p, m, **kw: False if P(p) == ckpt else real_access(p, m, **kw)
    )
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line == (
        f"error: {ckpt} cannot be read (Permission denied); make it readable (`chmod u+r` it, or "
        "ask its owner), then rerun the same command"
    ), line
    monkeypatch.setattr(os_module, "access", real_access)
    metrics = fold_dir(out, 1) / "metrics.json"
    real_read = P.read_text

    def refused(self, *a, **kw):
        if self == metrics:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *a, **kw)

    monkeypatch.setattr(P, "read_text", refused)
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line.startswith(f"error: {metrics} cannot be read (Permission denied); make it "), line
    assert "delete" not in line


def test_report_into_a_run_folder_it_may_not_write_says_to_make_it_writable(
    run, tmp_path, monkeypatch
):
    """EACCES writing summary.json was "free disk space, or move away what is in the way"
    (round-13 train side row 115). (Root writes everywhere: the refusal is injected.)"""
    from emofuse.train import rundir

    out = copy(run, tmp_path)

    def refused(run_folder, plan):
        raise PermissionError(13, "Permission denied", str(run_folder / "summary.json"))

    monkeypatch.setattr(rundir, "write_summary", refused)
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line == (
        f"error: cannot write {out / 'summary.json'} (Permission denied): make {out} writable, or "
        "copy the run folder somewhere writable and report the copy, then rerun the same command"
    ), line


def test_ctrl_c_during_fuse_says_how_to_go_on(run, tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM of fuse printed a bare `interrupted` (round-13 train side row 78)."""
    from emofuse.train import fuse

    def stopped(runs, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(fuse, "fuse_runs", stopped)
    out = tmp_path / "f"
    result = CliRunner().invoke(
        cli, ["fuse", str(run), str(copy(run, tmp_path)), "--out", str(out)]
    )
    assert result.exit_code == 130, result.output
    assert result.output.strip() == (
        f"interrupted: rerun the same command to fuse again into {out} (an unfinished fuse is "
        "redone)"
    )


def test_a_fold_folder_given_as_a_run_is_named(run, tmp_path):
    """A run's fold folder was "not a run folder … train it first" (round-13 train side row 110)."""
    fold = fold_dir(run, 1)
    for args in (
        ["report", str(fold)],
        ["fuse", str(fold), str(run), "--out", str(tmp_path / "f")],
    ):
        line = _one_error_line(CliRunner().invoke(cli, args))
        assert line == f"error: {fold} is one fold of the run {run}: give the run folder {run}", (
            line
        )


@pytest.mark.parametrize(
    "field, value", [("test_set", "Ses03"), ("best_epoch", 2), ("minutes", 99.0)]
)
def test_a_fold_metrics_field_no_other_file_checks_is_sealed(run, tmp_path, field, value):
    """test_set, best_epoch and minutes edited in a fold's metrics.json were reported as fact
    (round-14 train side row 39); an edited UA is caught by predictions.csv, these by a seal."""
    out = copy(run, tmp_path)
    path = fold_dir(out, 1) / "metrics.json"
    metrics = json.loads(path.read_text())
    if metrics[field] == value:  # best_epoch: the other one of the fold's two epochs
        value = 3 - value
    path.write_text(json.dumps({**metrics, field: value}))
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line.startswith(f"error: {path} is damaged (its test_set, best_epoch, epochs_run or "
                           "minutes was edited after the fold was written); delete "), line  # fmt: skip


def test_an_edited_fold_plan_on_resume_says_to_delete_it_not_to_use_a_new_out(run, tmp_path, cache):
    """folds.json edited in a fold not trained yet was "holds a different fold plan (the cache
    changed?); use a new --out", which throws away the finished folds (round-14 train side
    row 44): the cache is checked first, so the plan was edited, and train writes it again."""
    out = copy(run, tmp_path)
    plan = json.loads((out / "folds.json").read_text())
    fold3 = next(f for f in plan["folds"] if f["fold"] == 3)
    fold3["val"], fold3["train"] = fold3["val"] + fold3["train"][:3], fold3["train"][3:]
    (out / "folds.json").write_text(json.dumps(plan))
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2, 3], progress=False)
    assert str(err.value).startswith(f"{out / 'folds.json'} is not the fold plan the cache gives")
    (out / "folds.json").unlink()  # what the line says
    summary = train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2, 3], progress=False)
    assert [f["fold"] for f in summary["folds"]] == [1, 2, 3]


@pytest.mark.parametrize(
    "head, key, kind, reads",
    [("audio", "text_layers", "text", "speech"), ("text", "speech_layers", "speech", "text")],
)
def test_layers_of_a_stream_the_head_does_not_read_are_refused(
    cache, tmp_path, head, key, kind, reads
):
    """`--set text_layers=0` with the audio head was recorded in config.json and ignored (round-15
    train side row 14); nothing is written."""
    with pytest.raises(EmofuseError) as err:
        train_run(cache, head, tmp_path / "r", "loso", sets={key: "0"}, loop=LOOP, progress=False)
    assert str(err.value) == (
        f"--set {key}=0 has no effect: head {head} reads no {kind} stream (it reads {reads}); "
        f"drop it, or choose a head that reads {kind}"
    )
    assert not (tmp_path / "r").exists()


def test_compare_names_a_fold_plan_mismatch_before_advising_to_finish_a_run(run, cache, tmp_path):
    """compare of a partial loso run with a complete run of another plan advised training the 3
    missing folds, after which it refused the plans anyway (round-15 train side row 19)."""
    other = tmp_path / "lopo"
    train_run(cache, TINY_HEAD, other, "lopo", loop=LOOP, progress=False)
    for runs in ([other, run], [run, other]):
        line = _one_error_line(CliRunner().invoke(cli, ["compare", *map(str, runs)]))
        assert " have different fold plans (split " in line, line
        assert "folds finished" not in line, line


def test_compare_names_the_seed_that_drew_other_folds_before_advising_to_finish(cache, tmp_path):
    """Round-17 train side rows 87, 89: two `--split ra` runs of other seeds were first told to
    finish their folds, and after that refused as of another "--split", which was the same."""
    a, b = tmp_path / "a", tmp_path / "b"
    train_run(cache, TINY_HEAD, a, "ra", loop=dataclasses.replace(LOOP, seed=1), folds=[1],
              progress=False)  # fmt: skip
    train_run(cache, TINY_HEAD, b, "ra", loop=dataclasses.replace(LOOP, seed=2), folds=[1],
              progress=False)  # fmt: skip
    why = "(--seed 2 vs 1)"
    line = _one_error_line(CliRunner().invoke(cli, ["compare", str(a), str(b)]))
    assert line.startswith(f"error: {b} and {a} have different fold plans (fold "), line
    assert f"tests other utterances {why})" in line and "folds finished" not in line, line


@pytest.mark.parametrize(
    "sig, how",
    [
        (signal.SIGTERM, "was ended by SIGTERM (sent from outside?)"),
        (signal.SIGKILL, "was killed (SIGKILL: out of memory, or killed from outside?)"),
    ],
)
def test_a_dead_worker_is_named_by_its_fold_and_what_ended_it(sig, how):
    """A fold worker SIGTERMed from outside was reported as "died (out of memory?)", with no
    fold and no signal (round-15 train side row 53)."""
    import multiprocessing
    import types

    from emofuse.train.workers import WorkerDied

    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=signal.pause)
    proc.start()
    os.kill(proc.pid, sig)
    died = WorkerDied(types.SimpleNamespace(process=proc, item=3))
    assert (died.item, died.how) == (3, how)
    assert str(died) == f"worker pid {proc.pid} {how}"


def test_a_fold_folder_outside_the_plan_is_to_be_moved_away_not_retrained(run, tmp_path):
    """A fold_06 (a copy of fold_01) in a 5-fold run: "damaged; delete it and rerun … --folds
    1,2,6", which fails when followed (round-15 train side row 31)."""
    out = copy(run, tmp_path)
    stray = out / "fold_06"
    shutil.copytree(fold_dir(out, 1), stray)
    for args in (["report", str(out)], ["fuse", str(out), str(run), "--out", str(tmp_path / "f")]):
        line = _one_error_line(CliRunner().invoke(cli, args))
        assert line.endswith(
            f"fold_06 is no fold of the plan in {out / 'folds.json'} (folds 1,2,3,4,5): move "
            f"{stray} out of {out}, then rerun the same command"
        ), line
    shutil.move(stray, tmp_path / "fold_06")  # the advice
    assert CliRunner().invoke(cli, ["report", str(out)]).exit_code == 0


def test_a_speaker_normalised_run_is_named_transductive_in_compare_and_in_a_fusion(cache, tmp_path):
    """A --speaker-norm run (transductive) compared with an ordinary one got no note, and its
    fusion's config.json and report.md did not mention it (round-15 train side row 76)."""
    import dataclasses

    plain, normed = tmp_path / "plain", tmp_path / "normed"
    train_run(cache, TINY_HEAD, plain, "loso", loop=LOOP, progress=False)
    train_run(cache, TINY_HEAD, normed, "loso", loop=dataclasses.replace(LOOP, speaker_norm=True),
              progress=False)  # fmt: skip
    result = CliRunner().invoke(cli, ["compare", str(plain), str(normed), "--out",
                                      str(tmp_path / "cmp")])  # fmt: skip
    assert result.exit_code == 0, result.output
    note = f"note: {normed} standardised features per speaker (--speaker-norm"
    assert note in result.output and note in (tmp_path / "cmp" / "compare.md").read_text()
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"]
    assert [r["transductive"] for r in rows] == [False, True]
    fused = tmp_path / "fused"
    assert (
        CliRunner().invoke(cli, ["fuse", str(plain), str(normed), "--out", str(fused)]).exit_code
        == 0
    )
    assert json.loads((fused / "config.json").read_text())["transductive"] == [str(normed)]
    assert "so this fusion is transductive too" in (fused / "report.md").read_text()
    again = CliRunner().invoke(
        cli, ["compare", str(plain), str(fused), "--out", str(tmp_path / "c2")]
    )
    assert again.exit_code == 0 and f"note: {fused} standardised" in again.output, again.output


@pytest.mark.parametrize("name", ["report.md", "confusion.png"])
def test_a_folder_where_report_writes_a_file_is_to_be_moved_not_disk_freed(run, tmp_path, name):
    """report.md replaced by a folder: "free disk space, or move away what is in the way" —
    freeing disk space cannot fix it (round-15 train side row 77); nothing in it is lost."""
    out = copy(run, tmp_path)
    (out / name).unlink()
    (out / name).mkdir()
    (out / name / "mine.txt").write_text("keep")
    line = _one_error_line(CliRunner().invoke(cli, ["report", str(out)]))
    assert line.startswith(f"error: cannot write {out / name} (Is a directory): "), line
    assert "move away what is in the way" in line and "disk space" not in line, line
    assert (out / name / "mine.txt").read_text() == "keep"


def test_a_head_file_the_user_may_not_read_is_named_with_a_fix(tmp_path, unprivileged):
    """predict of a run whose head file is at mode 000 said "--head …: importing … failed:
    [Errno 13]" (predict has no --head) with no advice (round-15 train side row 73)."""
    from emofuse.heads.registry import get_head

    base, as_user = unprivileged
    head = base / "locked_head.py"
    head.write_text(Path(TINY_HEAD.rpartition(":")[0]).read_text())
    head.chmod(0)
    with as_user(), pytest.raises(EmofuseError) as err:
        get_head(f"{head}:TinyHead")
    assert str(err.value) == (
        f"{head} cannot be read (Permission denied); make it readable (`chmod u+r` it, or ask its "
        "owner), then rerun the same command"
    )


def test_a_wall_clock_line_says_which_folds_its_record_lost(run, cache, tmp_path):
    """wall.json deleted, then the run extended: report.md gave the new call's minutes as the
    run's wall clock with no word of the earlier folds (round-15 train side row 34)."""
    out = copy(run, tmp_path)
    (out / "wall.json").unlink()
    train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2, 3], progress=False)
    text = (out / "report.md").read_text()
    assert "Wall clock: " in text and (
        "Folds 1, 2 were trained by calls wall.json does not record" in text
    ), text
    clean = (run / "report.md").read_text()
    assert "does not record" not in clean


def test_a_run_folder_moved_while_train_runs_is_not_made_again(cache, tmp_path, monkeypatch):
    """`mv r/mvr r/mvr2` after fold 1 was saved: train made r/mvr again and left fold 2 and a
    1-fold summary there (round-15 train side row 62)."""
    import emofuse.train.run as run_module

    out, moved = tmp_path / "mvr", tmp_path / "mvr2"
    real = run_module.save_fold

    def save_then_move(*args, **kwargs):
        metrics = real(*args, **kwargs)
        if metrics["fold"] == 1:
            shutil.move(out, moved)  # the user's mv, between two folds
        return metrics

    monkeypatch.setattr(run_module, "save_fold", save_then_move)
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert str(err.value) == (
        f"the run folder {out} was moved or deleted while train ran (its config.json is gone), "
        "so fold 2 was not saved there; rerun the same command with --out at the folder's new "
        "place to resume it"
    )
    assert not out.exists()
    monkeypatch.setattr(run_module, "save_fold", real)
    train_run(cache, TINY_HEAD, moved, "loso", loop=LOOP, folds=[1, 2], progress=False)  # advice
    assert finished_folds(moved) == [1, 2]


def test_compare_and_fuse_refuse_a_fold_copied_in_from_another_run(run, cache, tmp_path):
    """Round-17 train side rows 105, 106: a fold folder copied in from another run (another head,
    or the same head trained with other epochs) was scored by compare as the run's own and fused
    by fuse, exit 0, where report, predict and train refuse it."""
    other = tmp_path / "other"
    train_run(cache, TINY_HEAD, other, "loso", loop=dataclasses.replace(LOOP, epochs=3),
              folds=[1, 2], progress=False)  # fmt: skip
    mixed = tmp_path / "mixed"
    shutil.copytree(run, mixed)
    shutil.rmtree(fold_dir(mixed, 2))
    shutil.copytree(fold_dir(other, 2), fold_dir(mixed, 2))
    says = f"error: {fold_dir(mixed, 2) / 'checkpoint.pt'} was trained with other settings than {mixed} (epochs 3 vs 2), copied from another run?"
    for args in (["compare", str(mixed), str(run)], ["fuse", str(mixed), str(run), "--out", str(tmp_path / "f")]):  # fmt: skip
        line = _one_error_line(CliRunner().invoke(cli, args))
        assert line.startswith(says), line
    assert not (tmp_path / "f").exists()


def test_compare_and_fuse_name_a_fold_whose_curves_were_deleted_as_report_does(run, tmp_path):
    """Round-17 train side row 95: with a fold's curves.jsonl deleted report said to retrain that
    fold, while compare treated the run as complete."""
    gone = tmp_path / "gone"
    shutil.copytree(run, gone)
    (fold_dir(gone, 1) / "curves.jsonl").unlink()
    says = f"error: {fold_dir(gone, 1) / 'curves.jsonl'} is missing (deleted or lost); "
    for args in (["report", str(gone)], ["compare", str(gone), str(run)],
                 ["fuse", str(gone), str(run), "--out", str(tmp_path / "f")]):  # fmt: skip
        line = _one_error_line(CliRunner().invoke(cli, args))
        assert line.startswith(says), (args[0], line)


NO_STREAMS_HEAD = """
from emofuse.heads.base import Head


class H(Head):
    def __init__(self, *a, **k):
        raise ValueError("boom")
"""


def test_a_user_head_that_does_not_define_required_streams_is_named(tmp_path, monkeypatch):
    """Round-19 row 103: a Head subclass without required_streams was a NotImplementedError
    traceback from heads/base.py, exit 1."""
    line, out, spec = _train_user_head(tmp_path, monkeypatch, "H", source=NO_STREAMS_HEAD)
    assert line == (
        f"error: head {spec}: it does not define required_streams; add a classmethod "
        "required_streams(cls, cfg) returning the stream names it reads, like "
        '{"speech", "text"} (see emofuse/heads/base.py)'
    ), line
    assert not out.exists()
