"""The advice "delete fold_0k and rerun …" gives the whole `emofuse train` command, and it works
(fifth audit, train side, row 2: "rerun `emofuse train` for RUN" gave no options, and the plain
command was refused with a dict of every loop field); a repeated --set key is refused (row 31)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from emofuse.cli import cli
from emofuse.train.rundir import fold_dir
from tests.helpers import TINY_HEAD, write_five_session_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cmd") / "c.h5"
    write_five_session_cache(path, n=20)
    return path


def _train(*args: str):
    return CliRunner().invoke(cli, ["train", "--quiet", *args])


def test_the_advice_for_a_damaged_fold_is_a_command_that_retrains_it(cache, tmp_path) -> None:
    out = tmp_path / "run"
    flags = ("--epochs", "2", "--lr", "0.004", "--batch-size", "8", "--no-class-weights")
    base = ("--cache", str(cache), "--split", "loso", "--head", TINY_HEAD, "--folds", "1,2")
    first = _train(*base, *flags, "--set", "hidden=8", "--out", str(out))
    assert first.exit_code == 0, first.output
    before = (fold_dir(out, 1) / "predictions.csv").read_bytes()
    (fold_dir(out, 1) / "metrics.json").write_text("{}")  # damaged: the advice says what to do
    report = CliRunner().invoke(cli, ["report", str(out)])
    assert report.exit_code == 2, report.output
    line = report.output.strip()
    found = re.search(r"delete (\S+) and rerun `([^`]+)` \(it retrains that fold only\)$", line)
    assert found, line
    command = shlex.split(found.group(2))
    assert command[:2] == ["emofuse", "train"]
    assert "--lr" in command and command[command.index("--lr") + 1] == "0.004", command
    assert "--set" in command and command[command.index("--set") + 1] == "hidden=8", command
    assert command[command.index("--folds") + 1] == "1,2" and command[-2:] == ["--out", str(out)]
    # class weights were off by default: a flag equal to the preset's value is left out
    assert "--no-class-weights" not in command, command
    import shutil

    shutil.rmtree(found.group(1))
    again = CliRunner().invoke(cli, [*command[1:], "--quiet"])  # the advice, as given
    assert again.exit_code == 0, again.output
    assert "trained 1 fold" in again.output or "fold 1:" in again.output, again.output
    assert (fold_dir(out, 1) / "predictions.csv").read_bytes() == before  # the same fold again
    assert CliRunner().invoke(cli, ["report", str(out)]).exit_code == 0


def test_a_resume_with_another_loop_flag_names_that_flag_and_the_resume_command(
    cache, tmp_path
) -> None:
    out = tmp_path / "run"
    base = ("--cache", str(cache), "--split", "loso", "--head", TINY_HEAD, "--folds", "1")
    assert _train(*base, "--epochs", "1", "--out", str(out)).exit_code == 0
    refused = _train(*base, "--epochs", "1", "--lr", "0.5", "--out", str(out))
    assert refused.exit_code == 2, refused.output
    line = refused.output.strip()
    assert line.startswith(
        f"error: run folder {out} was made with different settings (--lr: 0.0001 vs 0.5); use a "
        "new --out, or resume it with `emofuse train --cache "
    ), line
    assert "{" not in line and line.endswith(f"--epochs 1 --folds 1 --out {out}`"), line


@pytest.mark.parametrize(
    "head, first, then, names",
    [
        (TINY_HEAD, ("--set", "hidden=8"), ("--set", "hidden=16"), "(--set hidden: 8 vs 16)"),
        ("audio", (), ("--preset", "small"), "(--preset: None vs 'small')"),
    ],
    ids=["--set", "--preset"],
)
def test_a_resume_with_another_head_option_names_that_option_not_two_dicts(
    cache, tmp_path, head, first, then, names
) -> None:
    """Another --preset printed two whole 14-field head_config dicts that differed in one field,
    and never named --preset (round-15 train side row 45)."""
    out = tmp_path / "run"
    base = (
        "--cache",
        str(cache),
        "--split",
        "loso",
        "--head",
        head,
        "--folds",
        "1",
        "--epochs",
        "1",
    )
    assert _train(*base, *first, "--out", str(out)).exit_code == 0
    refused = _train(*base, *then, "--out", str(out))
    assert refused.exit_code == 2, refused.output
    line = refused.output.strip()
    assert line.startswith(f"error: run folder {out} was made with different settings {names}; "), (
        line
    )
    assert "{" not in line, line


def test_a_set_key_given_twice_is_refused(cache, tmp_path) -> None:
    out = tmp_path / "run"
    result = _train(
        "--cache", str(cache), "--split", "loso", "--head", TINY_HEAD, "--epochs", "1",
        "--set", "hidden=8", "--set", "hidden=16", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        "error: --set hidden is given twice (8, then 16): give each key once"
    )
    assert not out.exists()
