"""Fold plans: no test id leaks into train/val, lopo validation is the session partner, seeds."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from emofuse.corpus.utterance import Utterance
from emofuse.errors import EmofuseError
from emofuse.train.folds import SPLITS, FoldPlan, build_folds, fold_seed

LABELS = ("ang", "hap", "neu", "sad")


def iemocap_like(
    n_per_speaker: int = 30, seed: int = 1, with_split: bool = True
) -> list[Utterance]:
    """5 sessions × 2 speakers, labels drawn at random (uneven), IEMOCAP-style ids."""
    rng = random.Random(seed)
    out = []
    for s in range(1, 6):
        for letter in "FM":
            for i in range(n_per_speaker):
                uid = f"Ses0{s}F_impro01_{letter}{i:03d}"
                out.append(
                    Utterance(
                        id=uid,
                        audio=Path(f"{uid}.wav"),
                        text="x",
                        label=rng.choice(LABELS),
                        speaker=f"Ses0{s}_{letter}",
                        session=f"Ses0{s}",
                        gender=letter,
                        split=rng.choice(["train"] * 8 + ["val", "test"]) if with_split else None,
                    )
                )
    return out


@pytest.fixture(scope="module")
def corpus() -> list[Utterance]:
    return iemocap_like()


@pytest.mark.parametrize("split,lopo_val", [(s, "partner") for s in SPLITS] + [("lopo", "train")])
def test_test_ids_never_in_train_or_val_and_every_id_used(corpus, split, lopo_val):
    plan = build_folds(corpus, split, seed=0, lopo_val=lopo_val)
    expected = {"loso": 5, "lopo": 10, "ra": 10, "predefined": 1}[split]
    assert len(plan.folds) == expected
    all_ids = {u.id for u in corpus}
    tested = []
    for f in plan.folds:
        assert not set(f.test) & set(f.train)
        assert not set(f.test) & set(f.val)
        assert not set(f.train) & set(f.val)
        assert f.train and f.val and f.test
        assert set(f.train) | set(f.val) | set(f.test) <= all_ids
        tested += f.test
    if split in ("loso", "lopo", "ra"):
        # cross-validation: every utterance is tested exactly once
        assert sorted(tested) == sorted(all_ids)
        for f in plan.folds:
            if (split, lopo_val) != ("lopo", "partner"):  # that leaves the partner out
                assert set(f.train) | set(f.val) | set(f.test) == all_ids


def test_loso_tests_one_session_and_val_is_a_stratified_tenth(corpus):
    by_id = {u.id: u for u in corpus}
    plan = build_folds(corpus, "loso", seed=0)
    for k, f in enumerate(plan.folds, start=1):
        assert {by_id[i].session for i in f.test} == {f"Ses0{k}"}
        n_trval = len(f.train) + len(f.val)
        assert abs(len(f.val) - 0.1 * n_trval) <= 1
        # stratified: each class's share in val is within one utterance of its share in train+val
        counts = Counter(by_id[i].label for i in f.train + f.val)
        val_counts = Counter(by_id[i].label for i in f.val)
        for label, n in counts.items():
            assert abs(val_counts[label] - n * len(f.val) / n_trval) <= 1.0


def test_lopo_val_is_the_other_speaker_of_the_same_session(corpus):
    by_id = {u.id: u for u in corpus}
    plan = build_folds(corpus, "lopo", seed=0)
    speakers = sorted({u.speaker for u in corpus})
    for f, spk in zip(plan.folds, speakers, strict=True):
        assert {by_id[i].speaker for i in f.test} == {spk}
        partner = spk[:-1] + ("M" if spk.endswith("F") else "F")
        assert {by_id[i].speaker for i in f.val} == {partner}
        assert len(f.val) == sum(u.speaker == partner for u in corpus)
        assert not {by_id[i].speaker for i in f.train} & {spk, partner}


def test_lopo_val_train_trains_on_the_nine_others_and_validates_on_them_only(corpus, tmp_path):
    by_id = {u.id: u for u in corpus}
    plan = build_folds(corpus, "lopo", seed=0, lopo_val="train")
    speakers = sorted({u.speaker for u in corpus})
    for f, spk in zip(plan.folds, speakers, strict=True):
        others = set(speakers) - {spk}
        assert {by_id[i].speaker for i in f.test} == {spk}
        assert {by_id[i].speaker for i in f.train} == others  # 9 training speakers
        assert {by_id[i].speaker for i in f.val} <= others  # never the test speaker
        assert sorted(f.train + f.val) == sorted(u.id for u in corpus if u.speaker != spk)
        n = len(f.train) + len(f.val)
        assert abs(len(f.val) - 0.1 * n) <= 1
        counts, val_counts = (
            Counter(by_id[i].label for i in ids) for ids in (f.train + f.val, f.val)
        )
        for label, c in counts.items():  # stratified by label
            assert abs(val_counts[label] - c * len(f.val) / n) <= 1.0
    plan.save(tmp_path / "folds.json")
    assert json.loads((tmp_path / "folds.json").read_text())["lopo_val"] == "train"
    assert FoldPlan.load(tmp_path / "folds.json").to_dict() == plan.to_dict()
    partner = build_folds(corpus, "lopo", seed=0).to_dict()
    assert partner["lopo_val"] == "partner"
    del partner["lopo_val"]  # a plan saved before the option reads as the partner plan
    assert FoldPlan.from_dict(partner).lopo_val == "partner"
    with pytest.raises(EmofuseError, match="--lopo-val"):
        build_folds(corpus, "lopo", lopo_val="speaker")


def test_lopo_without_sessions_uses_next_speaker_wrapping():
    corpus = iemocap_like(n_per_speaker=8)
    for u in corpus:
        u.session = None
    by_id = {u.id: u for u in corpus}
    plan = build_folds(corpus, "lopo", seed=0)
    speakers = sorted({u.speaker for u in corpus})
    for k, f in enumerate(plan.folds):
        assert {by_id[i].speaker for i in f.val} == {speakers[(k + 1) % len(speakers)]}
    assert {by_id[i].speaker for i in plan.folds[-1].val} == {speakers[0]}


def test_ra_is_stratified_ten_fold(corpus):
    by_id = {u.id: u for u in corpus}
    plan = build_folds(corpus, "ra", seed=3)
    total = Counter(u.label for u in corpus)
    for f in plan.folds:
        test_counts = Counter(by_id[i].label for i in f.test)
        for label, n in total.items():
            assert abs(test_counts[label] - n / 10) <= 1


def test_predefined_follows_split_column(corpus):
    plan = build_folds(corpus, "predefined")
    (f,) = plan.folds
    for name, ids in (("train", f.train), ("val", f.val), ("test", f.test)):
        assert ids == [u.id for u in corpus if u.split == name]


@pytest.mark.parametrize("split", ["loso", "ra"])
def test_same_seed_same_plan_other_seed_other_plan(corpus, split):
    a = build_folds(corpus, split, seed=7).to_dict()
    b = build_folds(list(corpus), split, seed=7).to_dict()
    c = build_folds(corpus, split, seed=8).to_dict()
    assert a == b
    assert a != c


def test_fold_seed_is_per_fold_and_stable():
    assert fold_seed(0, 1) == fold_seed(0, 1)
    assert len({fold_seed(0, k) for k in range(1, 11)}) == 10
    assert fold_seed(0, 2) != fold_seed(1, 2)


def test_save_load_round_trip(tmp_path, corpus):
    plan = build_folds(corpus, "lopo", seed=2)
    plan.save(tmp_path / "folds.json")
    again = FoldPlan.load(tmp_path / "folds.json")
    assert again.to_dict() == plan.to_dict()
    assert again.to_dict()["folds"][0].keys() == {"fold", "train", "val", "test"}
    assert FoldPlan.from_dict(plan.to_dict()).to_dict() == plan.to_dict()


def test_loaded_plan_with_leak_is_refused(tmp_path, corpus):
    data = build_folds(corpus, "loso").to_dict()
    data["folds"][2]["val"].append(data["folds"][2]["test"][0])
    with pytest.raises(EmofuseError, match="fold 3"):
        FoldPlan.from_dict(data)


def test_impossible_plans_give_one_line_errors(corpus):
    no_sessions = iemocap_like(n_per_speaker=5)
    for u in no_sessions:
        u.session = None
    with pytest.raises(EmofuseError, match="session"):
        build_folds(no_sessions, "loso")
    with pytest.raises(EmofuseError, match="split"):
        build_folds(iemocap_like(n_per_speaker=5, with_split=False), "predefined")
    with pytest.raises(EmofuseError, match="unknown split 'xyz'"):
        build_folds(corpus, "xyz")
    # a class that only one session has: its loso fold trains without it
    rare = iemocap_like(n_per_speaker=5)
    for u in rare:
        if u.label == "ang":
            u.label = "neu"
    rare[0].label = "ang"  # only in Ses01
    with pytest.raises(EmofuseError, match="fold 1 .*no 'ang'") as info:
        build_folds(rare, "loso")
    assert "\n" not in str(info.value)


def test_loso_over_one_session_is_one_line_suggesting_other_splits(tmp_path):
    """One session left loso's training set empty: `min() arg is an empty sequence` traceback."""
    one = [u for u in iemocap_like(n_per_speaker=5) if u.session == "Ses01"]
    with pytest.raises(EmofuseError) as err:
        build_folds(one, "loso")
    msg = str(err.value)
    assert "\n" not in msg and "needs at least 2 sessions" in msg and "has 1 ('Ses01')" in msg
    # 2 speakers, a class with 1 utterance: neither lopo nor ra can run (it advised both before)
    assert "no other --split fits this corpus either" in msg and "lopo 3 speakers" in msg, msg
    assert "use --split" not in msg
    manifest = tmp_path / "one.csv"
    rows = ["id,audio,text,label,speaker,session"]
    import numpy as np
    import soundfile as sf

    for i, u in enumerate(one):
        sf.write(tmp_path / f"u{i}.wav", np.zeros(1600, dtype=np.float32), 16000)
        rows.append(f"{u.id},u{i}.wav,x,{u.label},{u.speaker},{u.session}")
    manifest.write_text("\n".join(rows) + "\n")
    from click.testing import CliRunner

    from emofuse.cli import cli

    result = CliRunner().invoke(
        cli, ["corpus", "folds", "--corpus", "manifest", "--manifest", str(manifest), "--split",
              "loso"],
    )  # fmt: skip
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: split 'loso' needs at least 2 sessions"), lines[0]


def test_loso_over_one_session_suggests_only_the_splits_the_corpus_can_run():
    one = [u for u in iemocap_like(n_per_speaker=25) if u.session == "Ses01"]  # 2 speakers
    for split in ("loso", "lopo"):
        with pytest.raises(EmofuseError) as err:
            build_folds(one, split)
        assert str(err.value).endswith("; use --split ra or predefined instead"), str(err.value)
    build_folds(one, "ra")  # what it suggests runs


def test_train_with_loso_over_one_session_is_one_cli_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import emofuse.cache
    from emofuse.cli import cli
    from tests.helpers import TINY_HEAD, FakeCache

    cache = FakeCache(n_per_speaker=4)
    cache.table["session"][:] = "Ses01"
    monkeypatch.setattr(emofuse.cache, "open_cache", lambda path: cache)
    (tmp_path / "fake.h5").write_bytes(b"")
    result = CliRunner().invoke(cli, [
        "train", "--cache", str(tmp_path / "fake.h5"), "--split", "loso", "--head", TINY_HEAD,
        "--epochs", "1", "--quiet", "--out", str(tmp_path / "run"),
    ])  # fmt: skip
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "needs at least 2 sessions" in lines[0] and not (tmp_path / "run").exists()


@pytest.mark.parametrize("mark, says", [(None, "has no split"), ("Train", "has split 'Train'")])
def test_a_predefined_split_names_the_first_row_without_a_mark(mark, says):
    """One empty cell gave "(found 'None')", naming neither the row nor what empty means
    (round-15 extract side row 69)."""
    from emofuse.train.folds import build_folds_from_columns

    ids = [f"u{i}" for i in range(6)]
    splits = ["train", "train", "val", mark, "test", "test"]
    with pytest.raises(EmofuseError) as err:
        build_folds_from_columns(ids, ["a", "b"] * 3, ["s"] * 6, [None] * 6, splits, "predefined")
    assert str(err.value) == (
        "split 'predefined' needs train, val or test in the 'split' column of every row; "
        f"utterance u3 {says}: fill it in, or use another split"
    )
