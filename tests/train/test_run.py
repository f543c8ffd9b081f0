"""Training runs on an in-memory cache: run folder, determinism, resume, fusion, report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import emofuse.train.run as run_mod
from emofuse.errors import EmofuseError
from emofuse.heads.coattention import CoAttention
from emofuse.train.checkpoints import load_fold_model
from emofuse.train.fuse import fuse_runs
from emofuse.train.loop import LoopConfig
from emofuse.train.predfiles import file_sha256
from emofuse.train.report import write_report
from emofuse.train.resume import FOLD_FILES  # what train writes in a fold folder
from emofuse.train.run import train_run
from emofuse.train.rundir import finished_folds, fold_dir, read_predictions
from tests.helpers import TINY_HEAD, FakeCache

LOOP = LoopConfig(epochs=4, batch_size=16, lr=3e-3, patience=2, seed=0)
RUN_FILES = (
    "config.json",
    "folds.json",
    "predictions.csv",
    "val_predictions.csv",
    "summary.json",
    "report.md",
    "confusion.png",
    "curves.png",
)


def train(cache, out, **kw):
    kw.setdefault("loop", LOOP)
    return train_run(cache, TINY_HEAD, out, kw.pop("split", "loso"), progress=False, **kw)


@pytest.fixture(scope="module")
def cache():
    return FakeCache(n_per_speaker=12)


@pytest.fixture(scope="module")
def loso_run(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("runs") / "a"
    return out, train(cache, out)


def test_run_folder_has_every_file_and_honest_summary(loso_run, cache):
    out, summary = loso_run
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    for k in range(1, 6):
        for name in FOLD_FILES:
            assert (out / f"fold_{k:02d}" / name).is_file(), (k, name)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["folds"] == summary["folds"]
    assert [f["fold"] for f in on_disk["folds"]] == [1, 2, 3, 4, 5]
    assert (
        set(on_disk["mean"]) == {"UA", "WA", "F1"} == set(on_disk["std"]) == set(on_disk["pooled"])
    )
    assert all(0 <= f["UA"] <= 1 for f in on_disk["folds"])
    assert on_disk["mean"]["UA"] == pytest.approx(np.mean([f["UA"] for f in on_disk["folds"]]))
    # the signal is learnable: well above 4-class chance
    assert on_disk["pooled"]["UA"] > 0.6
    # predictions cover every utterance exactly once, probabilities sum to one
    pred = read_predictions(out / "predictions.csv")
    assert sorted(pred["ids"]) == sorted(cache.ids)
    assert np.allclose(pred["probs"].sum(1), 1, atol=1e-5)
    assert pred["predicted"] == [pred["labels"][i] for i in pred["probs"].argmax(1)]
    # per-epoch curves; early stopping never runs past --epochs; best epoch ≤ epochs run
    for k in range(1, 6):
        rows = [
            json.loads(x) for x in (out / f"fold_{k:02d}/curves.jsonl").read_text().splitlines()
        ]
        metrics = json.loads((out / f"fold_{k:02d}/metrics.json").read_text())
        assert 1 <= len(rows) <= LOOP.epochs and [r["epoch"] for r in rows] == list(
            range(1, len(rows) + 1)
        )
        best = min(rows, key=lambda r: r["val_loss"])["epoch"]
        assert metrics["best_epoch"] == best
        assert metrics["test_set"] == f"Ses0{k}"
        # the fold's wall minutes cover its epochs (and the predictions after them)
        assert 0 < sum(r["seconds"] for r in rows) <= metrics["minutes"] * 60 + 0.05
    config = json.loads((out / "config.json").read_text())
    assert config["cache_fingerprint"] == cache.fingerprint
    assert config["head_config"]["hidden"] == 16 and config["split"] == "loso"
    report = (out / "report.md").read_text()
    assert "mean ± std over folds" in report and "pooled" in report
    total = sum(
        json.loads((out / f"fold_{k:02d}/metrics.json").read_text())["minutes"] for k in range(1, 6)
    )
    assert f"{total:.2f} (sum of 5 folds)" in report
    assert f"{100 * summary['pooled']['UA']:.2f}" in report


def test_same_seed_same_numbers_other_seed_differs(loso_run, cache, tmp_path):
    out, summary = loso_run
    again = train(cache, tmp_path / "b")
    assert again["folds"] == summary["folds"]
    a = read_predictions(out / "predictions.csv")["probs"]
    b = read_predictions(tmp_path / "b" / "predictions.csv")["probs"]
    assert np.array_equal(a, b)
    train(cache, tmp_path / "c", loop=LoopConfig(**{**LOOP.__dict__, "seed": 1}))
    c = read_predictions(tmp_path / "c" / "predictions.csv")
    assert not np.array_equal(np.sort(a, axis=None), np.sort(c["probs"], axis=None))


def test_killed_run_resumes_to_the_same_summary(loso_run, cache, tmp_path, monkeypatch):
    out, summary = loso_run
    real = run_mod.train_fold

    def dies_in_fold_3(build, data, fold, cfg, on_epoch=None, progress=True, **kw):
        if fold.fold == 3:
            on_epoch({"fold": 3, "epoch": 1, "val_loss": 0, "train_loss": 0, "val_UA": 0})
            raise KeyboardInterrupt  # a kill in the middle of fold 3
        return real(build, data, fold, cfg, on_epoch, progress, **kw)

    monkeypatch.setattr(run_mod, "train_fold", dies_in_fold_3)
    with pytest.raises(KeyboardInterrupt):
        train(cache, tmp_path / "k")
    assert finished_folds(tmp_path / "k") == [1, 2]
    assert not (tmp_path / "k" / "summary.json").exists()
    monkeypatch.setattr(run_mod, "train_fold", real)
    trained = []
    monkeypatch.setattr(
        run_mod, "train_fold", lambda *a, **kw: trained.append(a[2].fold) or real(*a, **kw)
    )
    resumed = train(cache, tmp_path / "k")
    assert trained == [3, 4, 5]  # finished folds skipped
    assert resumed["folds"] == summary["folds"]
    assert resumed["pooled"] == summary["pooled"]


def test_single_fold_rerun_alone_matches_the_plan(loso_run, cache, tmp_path):
    out, summary = loso_run
    alone = train(cache, tmp_path / "f4", folds=[4])
    assert alone["folds"] == [summary["folds"][3]]


def test_resume_with_other_settings_is_refused(loso_run, cache):
    out, _ = loso_run
    with pytest.raises(EmofuseError, match=r"different settings \(--lr: 0\.003 vs 0\.01\)"):
        train(cache, out, loop=LoopConfig(**{**LOOP.__dict__, "lr": 1e-2}))


def test_speaker_norm_run_records_and_reports_it(loso_run, cache, tmp_path):
    _, plain = loso_run
    loop = LoopConfig(**{**LOOP.__dict__, "speaker_norm": True})
    summary = train(cache, tmp_path / "sn", loop=loop, folds=[1])
    config = json.loads((tmp_path / "sn" / "config.json").read_text())
    assert config["loop"]["speaker_norm"] is True
    assert "speaker normalisation" in (tmp_path / "sn" / "report.md").read_text()
    assert "speaker normalisation" not in (loso_run[0] / "report.md").read_text()
    # the features the head saw changed, so the test predictions of fold 1 differ
    a = read_predictions(tmp_path / "sn" / "fold_01" / "predictions.csv")
    b = read_predictions(loso_run[0] / "fold_01" / "predictions.csv")
    assert not np.allclose(a["probs"], b["probs"])
    assert summary["folds"][0]["fold"] == plain["folds"][0]["fold"] == 1


def test_speaker_norm_without_speakers_is_a_one_line_error(tmp_path):
    blank = FakeCache(n_per_speaker=4)
    blank.table["speaker"] = blank.table["speaker"].copy()
    blank.table["speaker"][:3] = ""
    loop = LoopConfig(**{**LOOP.__dict__, "speaker_norm": True})
    with pytest.raises(EmofuseError, match="--speaker-norm needs a speaker.*3 in fake.h5"):
        train(blank, tmp_path / "x", loop=loop)


def test_bad_set_key_and_fold_are_one_line_errors(cache, tmp_path):
    with pytest.raises(EmofuseError, match="--set nope.*options:.*hidden"):
        train(cache, tmp_path / "x", sets={"nope": "1"})
    with pytest.raises(EmofuseError, match="--folds 7 .*valid folds: 1,2,3,4,5"):
        train(cache, tmp_path / "x", folds=[7])


def test_fuse_is_at_least_its_best_member_on_validation(loso_run, cache, tmp_path):
    out_a, _ = loso_run
    # a weaker second member: speech only, other seed
    out_b = tmp_path / "b"
    train_run(
        cache, TINY_HEAD, out_b, "loso", sets={"use_text": "false"},
        loop=LoopConfig(**{**LOOP.__dict__, "epochs": 2}), progress=False,
    )  # fmt: skip
    fused = fuse_runs([out_a, out_b], tmp_path / "fused")
    assert len(fused["folds"]) == 5
    for k in range(1, 6):
        m = json.loads((tmp_path / "fused" / f"fold_{k:02d}/metrics.json").read_text())
        assert m["val_UA_fused"] >= max(m["val_UA_members"].values()) - 1e-12
        assert sum(m["weights"].values()) == pytest.approx(1.0)
        # the reported fused val UA is what the saved val predictions score
        val = read_predictions(tmp_path / "fused" / f"fold_{k:02d}/val_predictions.csv")
        from emofuse.train.metrics import scores

        assert scores(val["true"], val["predicted"])["UA"] == pytest.approx(m["val_UA_fused"])
    assert (tmp_path / "fused" / "report.md").is_file()
    # a run on another plan is refused
    out_c = tmp_path / "c"
    train(cache, out_c, split="lopo", loop=LoopConfig(**{**LOOP.__dict__, "epochs": 1}), folds=[1])
    with pytest.raises(EmofuseError, match=r"different fold plans \(--split lopo vs loso\)"):
        fuse_runs([out_a, out_c], tmp_path / "bad")
    # loso draws validation with the seed: another seed is another plan
    one = LoopConfig(**{**LOOP.__dict__, "epochs": 1})
    out_d = tmp_path / "d"
    train(cache, out_d, loop=LoopConfig(**{**one.__dict__, "seed": 1}), folds=[1])
    with pytest.raises(EmofuseError, match=r"other val utterances \(--seed 1 vs 0\)"):
        fuse_runs([out_a, out_d], tmp_path / "bad")
    # lopo's folds do not depend on the seed: runs with two seeds fuse (a seed ensemble)
    out_e = tmp_path / "e"
    train(cache, out_e, split="lopo", loop=LoopConfig(**{**one.__dict__, "seed": 1}), folds=[1])
    assert [f["fold"] for f in fuse_runs([out_c, out_e], tmp_path / "seeds")["folds"]] == [1]
    # lopo with validation drawn from the training speakers: named, not "use the same --split"
    out_f = tmp_path / "f"
    train(cache, out_f, split="lopo", loop=one, folds=[1], lopo_val="train")
    with pytest.raises(EmofuseError, match=r"\(--lopo-val train vs partner\); fuse runs"):
        fuse_runs([out_c, out_f], tmp_path / "val")


def test_report_regenerates(loso_run):
    out, _ = loso_run
    (out / "report.md").unlink()
    (out / "confusion.png").unlink()
    write_report(out)
    assert (out / "report.md").is_file() and (out / "confusion.png").stat().st_size > 1000


def test_checkpoint_that_no_longer_fits_its_head_is_a_one_line_error(loso_run, tmp_path):
    out, _ = loso_run
    model = load_fold_model(out, 1)  # loads as saved
    assert not model.training
    ckpt = torch.load(fold_dir(out, 1) / "checkpoint.pt", weights_only=False)
    ckpt["head_config"]["hidden"] += 1  # as if a default had changed since the run was made
    run = tmp_path / "copy"
    shutil.copytree(out, run)
    torch.save(ckpt, fold_dir(run, 1) / "checkpoint.pt")
    config = json.loads((run / "config.json").read_text())  # the run recorded the same config
    config["head_config"]["hidden"] += 1
    (run / "config.json").write_text(json.dumps(config))
    metrics = json.loads((fold_dir(run, 1) / "metrics.json").read_text())
    metrics["sha256"]["checkpoint.pt"] = file_sha256(fold_dir(run, 1) / "checkpoint.pt")
    (fold_dir(run, 1) / "metrics.json").write_text(json.dumps(metrics))  # written so, not edited
    with pytest.raises(EmofuseError, match="checkpoint.pt does not fit head .*size mismatch"):
        load_fold_model(run, 1)


def test_damaged_run_files_and_bad_out_folders_are_one_line_errors(loso_run, cache, tmp_path):
    out, summary = loso_run
    run = tmp_path / "copy"
    shutil.copytree(out, run)
    # a damaged checkpoint names itself and the fix
    (fold_dir(run, 2) / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(EmofuseError, match=r"fold_02/checkpoint.pt is damaged .*rerun"):
        load_fold_model(run, 2)
    # a backup copy of a fold folder is not a second fold 1
    shutil.copytree(fold_dir(run, 1), run / "fold_01_backup")
    assert finished_folds(run) == [1, 2, 3, 4, 5]
    # fuse never writes over an existing run, nor into one of its inputs
    other = tmp_path / "other"
    shutil.copytree(out, other)
    before = (other / "config.json").read_text()
    for target in (other, run):
        with pytest.raises(EmofuseError, match="already holds a run"):
            fuse_runs([out, other], target)  # intact inputs (run's fold 2 is damaged)
    assert (other / "config.json").read_text() == before
    # --out that is a file, and a damaged config.json on resume
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(EmofuseError, match="is a file, not a folder"):
        train(cache, afile)
    # a cut predictions file is never summarised (resume rewrites summary.json from the folds)
    lines = (fold_dir(run, 3) / "predictions.csv").read_text().splitlines()
    (fold_dir(run, 3) / "predictions.csv").write_text("\n".join(lines[:3]) + "\n")
    shutil.rmtree(run / "fold_01_backup")
    with pytest.raises(EmofuseError, match=r"fold_02/checkpoint.pt is damaged .*fold 2 is not fin"):
        train(cache, run)  # the damaged checkpoint of fold 2 is found first
    shutil.copyfile(fold_dir(out, 2) / "checkpoint.pt", fold_dir(run, 2) / "checkpoint.pt")
    with pytest.raises(EmofuseError, match=r"fold_03/predictions.csv does not hold the \d+ utt"):
        train(cache, run)
    (run / "config.json").write_text('{"head": ')
    with pytest.raises(
        EmofuseError, match=r"config.json is unreadable \(not valid JSON: cut short or edited\)"
    ):
        train(cache, run)


def test_coattention_on_a_cache_without_alignments_trains_the_frame_branch_and_says_so(tmp_path):
    """Every segment branch would read the frames (the unaligned fallback): the default becomes
    the frame branch alone, recorded in config.json and the report; a --set choice is kept."""
    cache = FakeCache(n_per_speaker=4, streams=("speech", "text"))
    cache.table["aligned"] = np.zeros(len(cache.ids), dtype=bool)
    sets = {"d_model": "16", "heads": "2", "ffn": "16", "hidden": "8"}
    out = tmp_path / "coa"
    train_run(cache, "coattention", out, "loso", preset="small", sets=sets, loop=LOOP, folds=[1],
              progress=False)  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["head_config"]["granularities"] == ["frame"]
    assert "no utterance of the cache has a forced alignment" in config["adapted"]["granularities"]
    assert "fitted to the cache: `granularities`" in (out / "report.md").read_text()
    state = torch.load(fold_dir(out, 1) / "checkpoint.pt", weights_only=False)["state_dict"]
    assert {k.split(".")[1] for k in state if k.startswith("branches.")} == {"frame"}
    # the user's own choice is never changed (and an aligned cache keeps every branch)
    kept = tmp_path / "kept"
    with pytest.raises(EmofuseError, match="'phone'"):  # this cache has no phone stream to read
        train_run(cache, "coattention", kept, "loso", preset="small",
                  sets={**sets, "granularities": "frame,phone"}, loop=LOOP, folds=[1],
                  progress=False)  # fmt: skip
    cache.table["aligned"][0] = True
    cfg = CoAttention.make_config("small")
    assert CoAttention.fit_to_cache(cfg, cache.table, set()) == {}
    assert cfg.granularities == ["frame", "phone", "syllable", "word"]
