"""--lopo-val train: a run trains on every speaker but the test one and records the choice."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from emofuse.cli import cli
from emofuse.errors import EmofuseError
from emofuse.train.loop import LoopConfig
from emofuse.train.run import train_run
from emofuse.train.rundir import read_predictions
from tests.helpers import TINY_HEAD, FakeCache

ONE = LoopConfig(epochs=1, batch_size=16, lr=3e-3, patience=1, seed=0)


def test_lopo_val_train_run_validates_on_training_speakers_and_records_it(tmp_path):
    cache = FakeCache(n_per_speaker=10)
    speaker = dict(zip(cache.table["id"], cache.table["speaker"], strict=True))
    out = tmp_path / "run"
    train_run(cache, TINY_HEAD, out, "lopo", loop=ONE, folds=[1], progress=False, lopo_val="train")
    plan = json.loads((out / "folds.json").read_text())
    assert plan["lopo_val"] == "train"
    assert json.loads((out / "config.json").read_text())["lopo_val"] == "train"
    fold = plan["folds"][0]
    test_speaker = {speaker[i] for i in fold["test"]}
    assert len(test_speaker) == 1
    assert {speaker[i] for i in fold["train"]} == set(speaker.values()) - test_speaker  # 9
    val = read_predictions(out / "fold_01" / "val_predictions.csv")["ids"]
    assert sorted(val) == sorted(fold["val"])
    assert not {speaker[i] for i in val} & test_speaker
    # the partner plan in the same folder is another plan: refused, never mixed
    with pytest.raises(EmofuseError, match="different settings"):
        train_run(cache, TINY_HEAD, out, "lopo", loop=ONE, folds=[1], progress=False)


def test_lopo_val_with_another_split_is_a_one_line_error(tmp_path):
    cache = tmp_path / "c.h5"
    cache.write_bytes(b"")
    res = CliRunner().invoke(
        cli, ["train", "--cache", str(cache), "--split", "loso", "--lopo-val", "train",
              "--head", "concat", "--out", str(tmp_path / "r")],
    )  # fmt: skip
    assert res.exit_code == 2
    assert res.output.startswith("error: --lopo-val train applies to --split lopo only")
    assert res.output.count("\n") == 1
