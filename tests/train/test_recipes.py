"""Recipes (a preset's own training loop), input standardisation and train-only augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import emofuse.train.run as run_mod
from emofuse.cli import cli
from emofuse.errors import EmofuseError
from emofuse.heads import get_head
from emofuse.train.checkpoints import load_fold_model, make_dims
from emofuse.train.config import LoopConfig
from emofuse.train.data import TrainData
from emofuse.train.recipes import resolve_loop
from emofuse.train.run import train_run
from tests.helpers import TINY_HEAD, FakeCache


@pytest.fixture(scope="module")
def cache():
    return FakeCache(n_per_speaker=8)


def test_a_presets_loop_is_used_unless_a_flag_overrides_it(cache, tmp_path):
    out = tmp_path / "run"
    train_run(
        cache, TINY_HEAD, out, "loso", preset="small", loop_flags={"lr": 1e-2, "epochs": None},
        folds=[1], progress=False,
    )  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    loop, sources = config["loop"], config["loop_sources"]
    assert loop["lr"] == 1e-2 and sources["lr"] == "flag"  # the flag wins
    assert loop["epochs"] == 3 and sources["epochs"] == "recipe"  # None = not given
    assert loop["schedule"] == "cosine" and loop["select"] == "ua" and sources["select"] == "recipe"
    assert (
        loop["weight_decay"] == LoopConfig().weight_decay and sources["weight_decay"] == "default"
    )
    curves = [json.loads(x) for x in (out / "fold_01" / "curves.jsonl").read_text().splitlines()]
    assert 1 <= len(curves) <= 3  # the recipe's epochs bound the run
    # no preset: the papers' protocol for every field
    loop0, sources0 = resolve_loop(get_head(TINY_HEAD), None, {})
    assert loop0 == LoopConfig() and set(sources0.values()) == {"default"}


def test_the_cli_passes_only_the_flags_given(monkeypatch, tmp_path):
    seen = {}

    def fake_train_run(*args, **kwargs):
        seen.update(kwargs["loop_flags"])

    monkeypatch.setattr(run_mod, "train_run", fake_train_run)
    (tmp_path / "c.h5").write_bytes(b"")
    result = CliRunner().invoke(cli, [
        "train", "--cache", str(tmp_path / "c.h5"), "--split", "loso", "--head", "audio",
        "--out", str(tmp_path / "r"), "--lr", "0.002", "--no-class-weights",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    given = {k: v for k, v in seen.items() if v is not None}
    assert given == {"lr": 0.002, "class_weights": False}


def test_every_builtin_recipe_is_a_valid_loop_and_paper_keeps_the_papers_loop():
    for name in ("tdfnet", "coattention", "audio", "text", "concat", "pooled"):
        cls = get_head(name)
        for preset in [None, *cls.presets]:
            loop, _ = resolve_loop(cls, preset)
            loop.validate()
        if "paper" in cls.presets:
            assert resolve_loop(cls, "paper")[0] == LoopConfig(), name


def test_a_recipes_warm_up_yields_to_a_shorter_epochs_flag():
    cls = get_head("audio")
    assert resolve_loop(cls, None)[0].warmup_epochs == 2  # the recipe's warm-up
    for epochs, warmup in ((1, 0), (2, 1), (3, 2), (10, 2)):
        loop, sources = resolve_loop(cls, None, {"epochs": epochs})
        assert (loop.epochs, loop.warmup_epochs) == (epochs, warmup)
        assert sources["epochs"] == "flag" and sources["warmup_epochs"] == "recipe"
    with pytest.raises(EmofuseError, match="--warmup-epochs 2 must be below --epochs 2"):
        resolve_loop(cls, None, {"epochs": 2, "warmup_epochs": 2})  # both given: still an error


def test_unknown_loop_field_in_a_recipe_is_a_one_line_error(monkeypatch):
    cls = get_head(TINY_HEAD)
    monkeypatch.setattr(cls, "recipes", {"small": {"learning_rate": 1.0}})
    with pytest.raises(EmofuseError, match="unknown loop field.*learning_rate"):
        resolve_loop(cls, "small")


def _stats_by_hand(cache, stream, ids):
    values, offsets = cache.arrays[stream]
    pos = [cache.ids.index(i) for i in ids]
    if offsets is None:
        rows = values[pos].astype(np.float64)
    else:
        rows = np.concatenate([values[offsets[i] : offsets[i + 1]] for i in pos]).astype(np.float64)
    return rows.mean(0), rows.std(0)


def test_standardisation_statistics_come_from_training_rows_only(tmp_path):
    cache = FakeCache(n_per_speaker=8)
    out = tmp_path / "run"
    train_run(cache, TINY_HEAD, out, "loso", preset="small", folds=[2], progress=False)
    plan = json.loads((out / "folds.json").read_text())["folds"][1]
    model = load_fold_model(out, 2)
    for stream in ("speech", "text", "speaker"):
        mean, std = _stats_by_hand(cache, stream, plan["train"])
        got_mean = getattr(model.input_pipeline, f"mean_{stream}").numpy().reshape(mean.shape)
        got_std = getattr(model.input_pipeline, f"std_{stream}").numpy().reshape(std.shape)
        np.testing.assert_allclose(got_mean, mean, atol=1e-4)
        np.testing.assert_allclose(got_std, std, rtol=1e-4, atol=1e-5)
    # moving every validation and test row leaves the statistics where they were
    shifted = FakeCache(n_per_speaker=8)
    held_out = set(plan["val"]) | set(plan["test"])
    for stream in ("speech", "text", "speaker"):
        values, offsets = shifted.arrays[stream]
        for i, uid in enumerate(shifted.ids):
            if uid in held_out:
                rows = slice(i, i + 1) if offsets is None else slice(offsets[i], offsets[i + 1])
                values[rows] = values[rows] * 3 + 50
    cls = get_head(TINY_HEAD)
    cfg = cls.make_config("small")
    for c in (cache, shifted):
        data = TrainData.from_cache(c, cls.required_streams(cfg), cfg)
        stats = data.stream_stats(data.indices(plan["train"]))
        if c is cache:
            before = stats
    for stream, (m, s) in stats.items():
        torch.testing.assert_close(m, before[stream][0])
        torch.testing.assert_close(s, before[stream][1])
    # ... and the statistics of all rows would differ: the test can tell
    data = TrainData.from_cache(shifted, cls.required_streams(cfg), cfg)
    all_rows = data.stream_stats(torch.arange(len(data.ids)))
    assert not torch.allclose(all_rows["speech"][0], before["speech"][0], atol=1e-2)


def _model_and_batch(cfg_sets):
    cache = FakeCache(n_per_speaker=4)
    cls = get_head("audio")
    cfg = cls.make_config(None, cfg_sets)
    data = TrainData.from_cache(cache, cls.required_streams(cfg), cfg)
    model = cls(cfg, make_dims(data), 4)
    model.input_pipeline.fit(data.stream_stats(torch.arange(len(data.ids))))
    return model, data.batch(torch.arange(16))


def test_augmentation_is_on_in_training_and_off_in_eval():
    torch.manual_seed(0)
    model, batch = _model_and_batch({"time_mask": 0.5, "feature_mask": 0.5, "dropout": 0.0})
    model.train()
    a, b = model.prepare(batch)["speech"], model.prepare(batch)["speech"]
    assert not torch.equal(a, b)  # masks drawn anew
    assert (a == 0).float().mean() > (batch["speech"] == 0).float().mean()  # something masked
    model.eval()
    with torch.no_grad():
        first, second = model(model.prepare(batch)), model(model.prepare(batch))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    # eval input = standardised input, nothing masked: real rows are non-zero
    x = model.prepare(batch)["speech"]
    assert (x[batch["speech_mask"]] != 0).float().mean() > 0.99


def test_frame_pool_is_the_mean_of_windows_of_each_utterance_and_keeps_padding_invariance():
    cache = FakeCache(n_per_speaker=4)
    cls = get_head("audio")
    plain, pooled = (
        TrainData.from_cache(cache, {"speech"}, cls.make_config(None, {"frame_pool": k}))
        for k in (1, 3)
    )
    x, off = plain.streams["speech"].values.float(), plain.streams["speech"].offsets
    got, goff = pooled.streams["speech"].values.float(), pooled.streams["speech"].offsets
    for i in range(len(plain.ids)):
        frames = x[off[i] : off[i + 1]]
        want = torch.stack([frames[a : a + 3].mean(0) for a in range(0, len(frames), 3)])
        torch.testing.assert_close(got[goff[i] : goff[i + 1]], want, atol=2e-3, rtol=2e-3)
    cfg = cls.make_config(None, {"frame_pool": 3, "dropout": 0.0})
    model = cls(cfg, make_dims(pooled), 4).eval()
    model.input_pipeline.fit(pooled.stream_stats(torch.arange(len(pooled.ids))))
    with torch.no_grad():  # an utterance alone = the same utterance in a padded batch
        batch = pooled.batch(torch.arange(16))
        alone = pooled.batch(torch.arange(1))
        torch.testing.assert_close(
            model(model.prepare(alone)), model(model.prepare(batch))[:1], atol=1e-5, rtol=1e-5
        )


def test_non_finite_loss_names_the_fold_and_epoch(cache, tmp_path):
    loop = LoopConfig(epochs=2, batch_size=16, lr=1e30, patience=1)
    with pytest.raises(EmofuseError, match=r"fold 1, epoch 1: the .* went non-finite.*lower --lr"):
        train_run(cache, TINY_HEAD, tmp_path / "r", "loso", loop=loop, folds=[1], progress=False)


def test_same_seed_same_numbers_with_augmentation_and_mixup(cache, tmp_path):
    sets = {"time_mask": "0.3", "feature_mask": "0.2"}
    flags = {"mixup": 0.4, "grad_clip": 1.0, "ema": 0.9}
    runs = []
    for name in ("a", "b"):
        train_run(cache, TINY_HEAD, tmp_path / name, "loso", preset="small", sets=sets,
                  loop_flags=flags, folds=[1], progress=False)  # fmt: skip
        runs.append((tmp_path / name / "fold_01" / "predictions.csv").read_text())
    assert runs[0] == runs[1]  # every probability, to the last digit
    curves = (tmp_path / "a" / "fold_01" / "curves.jsonl").read_text().splitlines()
    lrs = [json.loads(x)["lr"] for x in curves]
    assert (
        lrs[0] == pytest.approx(3e-3) and lrs[-1] < lrs[0]
    )  # warm-up reached the peak, then decay


def test_modality_dropout_zeroes_one_modality_per_utterance_in_training_only():
    torch.manual_seed(0)
    cache = FakeCache(n_per_speaker=4)
    cls = get_head("concat")
    cfg = cls.make_config(None, {"modality_dropout": 0.9, "time_mask": 0.0, "feature_mask": 0.0})
    data = TrainData.from_cache(cache, cls.required_streams(cfg), cfg)
    model = cls(cfg, make_dims(data), 4)
    model.input_pipeline.fit(data.stream_stats(torch.arange(len(data.ids))))
    batch = data.batch(torch.arange(40))
    model.train()
    out = model.prepare(batch)
    text_off = (out["text"] == 0).flatten(1).all(1)  # (B,)
    speech_off = (out["speech"] == 0).flatten(1).all(1)
    assert text_off.any() and speech_off.any() and not (text_off & speech_off).any()
    assert torch.equal(out["text_mask"], batch["text_mask"])  # masks kept: pooling still works
    model.eval()
    kept = model.prepare(batch)
    assert not (kept["text"] == 0).flatten(1).all(1).any()


USER_HEAD = """
from dataclasses import dataclass
from tests.train.tiny_head import TinyConfig, TinyHead

@dataclass
class ScaledConfig(TinyConfig):
    scale: float = 1.0  # a user head's float option with no range check of its own

class ScaledHead(TinyHead):
    name = "scaled-test"
    Config = ScaledConfig
"""


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_set_value_or_loop_field_is_one_line_before_anything_is_written(
    cache, tmp_path, monkeypatch, value
):
    """`--set scale=nan` of a float head field was taken as given and NaN written to config.json
    (built-in fields only refused it where a range check happened to catch nan); a LoopConfig
    with a nan lr from a library caller or a head's recipe trained into a run folder."""
    import emofuse.cache

    head_file = tmp_path / "user_head.py"
    head_file.write_text(USER_HEAD)
    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: cache)
    (tmp_path / "fake.h5").write_bytes(b"")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "train", "--cache", str(tmp_path / "fake.h5"), "--split", "loso",
        "--head", f"{head_file}:ScaledHead", "--set", f"scale={value}", "--epochs", "1",
        "--folds", "1", "--quiet", "--out", str(out),
    ])  # fmt: skip
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0] == f"error: --set scale='{value}': give a finite number", lines[0]
    assert not out.exists()
    for field in ("lr", "grad_clip", "mixup", "weight_decay", "ema"):
        loop = LoopConfig(epochs=1, batch_size=16, **{field: float(value)})
        with pytest.raises(EmofuseError, match=f"--{field.replace('_', '-')} .*finite"):
            train_run(cache, TINY_HEAD, out, "loso", loop=loop, folds=[1], progress=False)
        assert not out.exists()
