"""A run folder's files are checked against each other before anything is reported (issue 13,
audit round 4): an edited prediction file, a checkpoint copied in from another fold, labels edited
in config.json — each is one line naming the file, never figures that the run does not hold."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from emofuse.cli import cli
from emofuse.train.command import train_command
from emofuse.train.loop import LoopConfig
from emofuse.train.run import train_run
from emofuse.train.rundir import fold_dir
from tests.helpers import TINY_HEAD, FakeCache

LOOP = LoopConfig(epochs=1, batch_size=16, lr=3e-3, patience=1, seed=0)


@pytest.fixture(scope="module")
def cache():
    return FakeCache(n_per_speaker=4)


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("integrity") / "run"
    train_run(cache, TINY_HEAD, out, "loso", loop=LOOP, progress=False)  # all 5 folds: compare
    return out


def _copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    shutil.copytree(run, tmp_path / name)
    return tmp_path / name


def _edit(path: Path, how: str) -> None:
    """The audit's edits of a fold's predictions.csv (each keeps the file well-formed CSV)."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    labels = [h[2:] for h in header[4:]]
    nxt = {a: labels[(i + 1) % len(labels)] for i, a in enumerate(labels)}
    if how == "predicted":  # contradicts its own probabilities
        for r in body[:3]:
            r[3] = nxt[r[3]]
    elif how == "half":  # probabilities that are not a distribution
        for r in body:
            r[4:] = [repr(float(x) / 2) for x in r[4:]]
    elif how == "true":  # wrong gold labels: a well-formed file that only its digest betrays
        for r in body[:3]:
            r[2] = nxt[r[2]]
    elif how == "fold":  # a fold the plan does not have
        for r in body:
            r[1] = "9"
    elif how == "swapcols":  # another label order than the other folds (values untouched)
        header[4], header[5] = header[5], header[4]
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *body])


EDITS = ["predicted", "half", "true", "fold", "swapcols"]


@pytest.mark.parametrize("how", EDITS)
def test_an_edited_fold_predictions_file_is_refused_by_report_compare_and_fuse(run, tmp_path, how):
    edited = _copy(run, tmp_path)
    bad = fold_dir(edited, 2) / "predictions.csv"
    _edit(bad, how)
    before = (edited / "summary.json").read_bytes()
    for args in (
        ["report", str(edited)],
        ["compare", str(run), str(edited)],
        ["fuse", str(edited), str(run), "--out", str(tmp_path / "fused")],
    ):
        result = CliRunner().invoke(cli, args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, (args, result.output)
        assert lines[0].startswith(f"error: {bad} "), lines[0]
        fix = f"delete {bad.parent} and rerun {train_command(edited)} (it retrains that fold only)"
        assert lines[0].endswith(fix), lines[0]
        assert "Traceback" not in result.output
    assert (edited / "summary.json").read_bytes() == before  # no figure rewritten from it
    assert not (tmp_path / "fused").exists()


@pytest.mark.parametrize("how", ["predicted", "half", "fold", "swapcols"])
def test_a_run_without_recorded_digests_still_gets_the_checks_a_file_allows(run, tmp_path, how):
    """Folds written before metrics.json recorded digests: what one file can betray is caught."""
    older = _copy(run, tmp_path)
    for k in range(1, 6):
        path = fold_dir(older, k) / "metrics.json"
        metrics = json.loads(path.read_text())
        del metrics["sha256"]
        path.write_text(json.dumps(metrics))
    assert CliRunner().invoke(cli, ["report", str(older)]).exit_code == 0  # readable as it was
    bad = fold_dir(older, 2) / "predictions.csv"
    _edit(bad, how)
    result = CliRunner().invoke(cli, ["report", str(older)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {bad} is damaged ("), lines[0]


def test_each_fold_records_the_digests_of_its_prediction_files(run):
    from emofuse.train.predfiles import file_sha256

    for k in (1, 2):
        d = fold_dir(run, k)
        recorded = json.loads((d / "metrics.json").read_text())["sha256"]
        assert recorded == {
            kind: file_sha256(d / kind)
            for kind in ("predictions.csv", "val_predictions.csv", "checkpoint.pt", "curves.jsonl")
        }


def test_a_checkpoint_whose_weights_were_flipped_is_refused_by_predict_and_report(run, tmp_path):
    """Round-8 audit: bits flipped in fold_01/checkpoint.pt's weight data (the zip still
    readable) went unnoticed: predict printed NaN probabilities and exited 0."""
    from emofuse.errors import EmofuseError
    from emofuse.train.checkpoints import load_fold_model
    from emofuse.train.command import train_command

    damaged = _copy(run, tmp_path, "flipped")
    ckpt = fold_dir(damaged, 1) / "checkpoint.pt"
    import zipfile

    with zipfile.ZipFile(ckpt) as z:  # the largest tensor's bytes, not the zip's own records
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(ckpt.read_bytes())
    head = info.header_offset  # a local header: 30 bytes, the name, the extra field, the data
    name_len, extra_len = (int.from_bytes(raw[head + o : head + o + 2], "little") for o in (26, 28))
    start = head + 30 + name_len + extra_len
    for i in range(start, start + info.file_size, 7):
        raw[i] ^= 0x40
    ckpt.write_bytes(bytes(raw))
    expected = (
        f"{ckpt} does not match {ckpt.parent / 'metrics.json'} (its sha256 is not the one "
        "recorded there: the checkpoint or the fold's result files were changed or replaced "
        f"after the fold was written), so fold 1 is not finished; delete {ckpt.parent} and rerun "
        f"{train_command(damaged)} (it retrains that fold only)"
    )
    with pytest.raises(EmofuseError) as err:
        load_fold_model(damaged, 1)  # what predict does
    assert str(err.value) == expected, str(err.value)
    result = CliRunner().invoke(cli, ["report", str(damaged)])
    assert result.exit_code == 2 and result.output.strip() == f"error: {expected}", result.output


def test_result_files_from_another_run_are_not_blamed_on_the_untouched_checkpoint(
    run, cache, tmp_path
):
    """Round-14 train side row 25: fold_01's predictions, metrics.json and curves copied from
    another run (its own checkpoint kept) was refused as "checkpoint.pt was changed", the one
    file that was not; the line now says the two do not match, and its advice works."""
    other = tmp_path / "other"
    loop = LoopConfig(epochs=1, batch_size=16, lr=3e-3, patience=1, seed=1)
    train_run(cache, TINY_HEAD, other, "loso", loop=loop, folds=[1], progress=False)
    swapped = _copy(run, tmp_path, "swapped")
    d = fold_dir(swapped, 1)
    for name in ("predictions.csv", "val_predictions.csv", "metrics.json", "curves.jsonl"):
        shutil.copy(fold_dir(other, 1) / name, d / name)
    result = CliRunner().invoke(cli, ["report", str(swapped)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith(
        f"error: {d / 'checkpoint.pt'} does not match {d / 'metrics.json'} (its sha256 is not "
        "the one recorded there: the checkpoint or the fold's result files were changed or "
        "replaced after the fold was written), so fold 1 is not finished; delete "
    ), result.output
    shutil.rmtree(d)  # the advice: delete the fold and retrain it
    train_run(cache, TINY_HEAD, swapped, "loso", loop=LOOP, folds=[1], progress=False)
    assert CliRunner().invoke(cli, ["report", str(swapped)]).exit_code == 0


def test_a_fused_run_records_digests_and_refuses_an_edited_fold(run, tmp_path):
    other = _copy(run, tmp_path, "other")
    fused = tmp_path / "fused"
    assert (
        CliRunner().invoke(cli, ["fuse", str(run), str(other), "--out", str(fused)]).exit_code == 0
    )
    assert set(json.loads((fold_dir(fused, 1) / "metrics.json").read_text())["sha256"]) == {
        "predictions.csv",
        "val_predictions.csv",
    }
    bad = fold_dir(fused, 1) / "val_predictions.csv"
    _edit(bad, "true")
    result = CliRunner().invoke(cli, ["report", str(fused)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {bad} was changed after fold 1 was written"), lines[0]
    assert "fuse the runs of" in lines[0]  # a fused fold is fused again, not trained


def test_a_checkpoint_copied_from_another_fold_is_refused_by_train_resume_and_report(
    run, cache, tmp_path
):
    """train's resume took it as a finished fold and reported the run complete (predict refused it)."""
    from emofuse.errors import EmofuseError

    copied = _copy(run, tmp_path)
    shutil.rmtree(fold_dir(copied, 5))  # a run stopped before its last fold
    shutil.copy(fold_dir(copied, 1) / "checkpoint.pt", fold_dir(copied, 2) / "checkpoint.pt")
    bad = fold_dir(copied, 2) / "checkpoint.pt"
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, copied, "loso", loop=LOOP, progress=False)
    assert str(err.value).startswith(f"{bad} was trained for another test set than fold 2")
    assert not fold_dir(copied, 5).exists()  # refused before anything was trained
    result = CliRunner().invoke(cli, ["report", str(copied)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {bad} was trained for another test set"), lines[0]


def test_labels_edited_in_config_json_are_blamed_on_config_json_not_on_a_fold(run, cache, tmp_path):
    """predict blamed fold_01/checkpoint.pt and advised deleting it: following that destroyed good
    folds one after another, and train then refused the folder as 'different settings'."""
    edited = _copy(run, tmp_path)
    path = edited / "config.json"
    config = json.loads(path.read_text())
    trained = list(config["labels"])
    config["labels"][:2] = config["labels"][1::-1]
    path.write_text(json.dumps(config))
    expected = f"{path} lists the labels {', '.join(config['labels'])} but fold 1 of {edited}"
    line = _blamed_in_report_predict_and_train(edited, cache, expected)
    assert f'(its "labels" was {json.dumps(trained)}; the folds are kept)' in line
    assert all((fold_dir(edited, k) / "metrics.json").is_file() for k in range(1, 6))
    config["labels"] = trained  # what the message says to do
    path.write_text(json.dumps(config))
    assert CliRunner().invoke(cli, ["report", str(edited)]).exit_code == 0


@pytest.mark.parametrize("key, value", [("seed", 5), ("preset", "paper")])
def test_an_edit_of_config_json_no_file_contradicts_is_found_by_its_seal(
    run, cache, tmp_path, key, value
):
    """Round-8 audit: config.json's top-level seed (0 -> 5) or preset (none -> paper) edited:
    report.md stated them as the run's, and the resume advice looped. config.json records the
    sha256 of its contents; report and a train resume refuse an edited one (predict too, after
    its checkpoint checks)."""
    from emofuse.errors import EmofuseError

    edited = _copy(run, tmp_path)
    path = edited / "config.json"
    config = json.loads(path.read_text())
    assert len(config["config_sha256"]) == 64
    config[key] = value
    path.write_text(json.dumps(config))
    expected = (
        f"{path} was edited after the run wrote it (it no longer matches the checksum it records, "
        "so its settings may not be what the folds were made with); restore it, or train again "
        "into a new --out"
    )
    result = CliRunner().invoke(cli, ["report", str(edited)])
    assert result.exit_code == 2 and result.output.strip() == f"error: {expected}", result.output
    with pytest.raises(EmofuseError) as err:
        train_run(cache, TINY_HEAD, edited, "loso", loop=LOOP, progress=False)
    assert str(err.value) == expected


def test_the_head_edited_in_config_json_is_blamed_on_config_json(run, cache, tmp_path):
    """Round-8 audit: config.json's "head" edited (audio -> tdfnet) blamed every intact
    checkpoint as "copied from another run?" and advised deleting the folds one by one."""
    edited = _copy(run, tmp_path)
    path = edited / "config.json"
    config = json.loads(path.read_text())
    trained = config["head"]
    config["head"] = "pooled"
    path.write_text(json.dumps(config))
    result = CliRunner().invoke(cli, ["report", str(edited)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0] == (
        f"error: {path} says head pooled but every finished fold of {edited} was trained with "
        f"{trained} (their checkpoints): config.json was edited, or is another run's: restore "
        f'this run\'s own config.json (its "head" was {json.dumps(trained)}; the folds are kept), '
        "or train again into a new --out"
    )


@pytest.mark.parametrize("section, key, value", [("loop", "epochs", 50),
                                                ("head_config", "hidden", 512)])  # fmt: skip
def test_a_loop_or_head_config_edited_in_config_json_is_blamed_on_config_json(
    run, cache, tmp_path, section, key, value
):
    """Round-7/8 audits: config.json's loop (epochs) or head_config (hidden) edited blamed
    fold_01/checkpoint.pt as "copied from another run?" (or was accepted by report and predict)
    and advised deleting it; that destroyed good folds one by one."""
    edited = _copy(run, tmp_path)
    path = edited / "config.json"
    config = json.loads(path.read_text())
    trained = dict(config[section])
    config[section][key] = value
    path.write_text(json.dumps(config))
    expected = (
        f"{path} says {key} {value} but every finished fold of {edited} was trained with "
        f"{json.dumps(trained[key])} (their checkpoints): config.json was edited"
    )
    line = _blamed_in_report_predict_and_train(edited, cache, expected)
    assert line.endswith(
        f'(its "{section}" was {json.dumps(trained, sort_keys=True)}; the folds are kept), or '
        "train again into a new --out"
    )
    path.write_text(json.dumps({**config, section: trained}))  # what the message says to do
    assert CliRunner().invoke(cli, ["report", str(edited)]).exit_code == 0


def test_a_checkpoint_of_the_same_fold_of_a_run_with_another_seed_is_refused(run, cache, tmp_path):
    """Accepted everywhere: predict answered with the other run's model while report kept this
    run's figures (audit round 5, row 20)."""
    import dataclasses

    from emofuse.errors import EmofuseError
    from emofuse.train.checkpoints import load_fold_model

    other = tmp_path / "seed1"
    train_run(cache, TINY_HEAD, other, "loso", folds=[1], progress=False,
              loop=dataclasses.replace(LOOP, seed=1))  # fmt: skip
    mixed = _copy(run, tmp_path, "mixed")
    bad = fold_dir(mixed, 1) / "checkpoint.pt"
    shutil.copy(fold_dir(other, 1) / "checkpoint.pt", bad)
    result = CliRunner().invoke(cli, ["report", str(mixed)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(
        f"error: {bad} was trained with other settings than {mixed} (seed 1 vs 0)"
    )
    with pytest.raises(EmofuseError, match="trained with other settings"):
        load_fold_model(mixed, 1)  # what predict does


def test_an_edited_fold_plan_is_blamed_on_folds_json_not_on_the_folds(run, cache, tmp_path):
    """folds.json with folds 1 and 2 swapped: the checkpoint was blamed and 'delete the fold'
    destroyed good folds one after another (audit round 5, row 19)."""
    edited = _copy(run, tmp_path)
    path = edited / "folds.json"
    plan = json.loads(path.read_text())
    first, second = plan["folds"][0], plan["folds"][1]
    for key in ("train", "val", "test"):
        first[key], second[key] = second[key], first[key]
    path.write_text(json.dumps(plan))
    _blamed_in_report_predict_and_train(
        edited, cache, f"{path} was edited: its fold 1 does not test the"
    )
    compared = CliRunner().invoke(cli, ["compare", str(run), str(edited)])  # as report says it
    assert compared.exit_code == 2 and f"error: {path} was edited: its fold 1 does not test" in (
        compared.output
    ), compared.output
    assert all((fold_dir(edited, k) / "metrics.json").is_file() for k in range(1, 6))


def _blamed_in_report_predict_and_train(edited: Path, cache, expected: str) -> str:
    """report, predict's first step and a train resume each refuse ``edited`` with the line
    ``expected`` (which names the edited file), never advising to delete a fold; the report line."""
    from emofuse.errors import EmofuseError
    from emofuse.train.checkpoints import load_fold_model

    result = CliRunner().invoke(cli, ["report", str(edited)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {expected}"), lines[0]
    assert "delete" not in lines[0]
    for attempt in (
        lambda: load_fold_model(edited, 1),  # what predict does first
        lambda: train_run(cache, TINY_HEAD, edited, "loso", loop=LOOP, progress=False),
    ):
        with pytest.raises(EmofuseError) as err:
            attempt()
        assert str(err.value).startswith(expected), str(err.value)
    return lines[0]


def test_a_resume_on_a_cache_of_other_contents_with_the_same_settings_is_refused(tmp_path):
    """The resume compared the cache's fingerprint (its settings) and ids only: a cache extracted
    again with the same settings but other features was accepted, mixing folds of both. The run
    records the content digest; a run recorded without one resumes as before."""
    from emofuse.errors import EmofuseError

    first, second = FakeCache(n_per_speaker=4), FakeCache(n_per_speaker=4)
    first.meta, second.meta = {"digest": "a" * 64}, {"digest": "b" * 64}
    out = tmp_path / "run"
    train_run(first, TINY_HEAD, out, "loso", loop=LOOP, folds=[1], progress=False)
    assert json.loads((out / "config.json").read_text())["cache_digest"] == "a" * 64
    with pytest.raises(EmofuseError) as err:
        train_run(second, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert str(err.value) == (
        f"run folder {out} was trained on other contents of cache {Path(first.path).resolve()} (content digest "
        f"aaaaaaaaaaaa… then, bbbbbbbbbbbb… now: re-extracted or replaced with the same "
        "settings); train into a new --out, or put the original cache back to resume"
    ), err.value
    assert not (out / "fold_02").exists()
    second.fingerprint = "c" * 64  # another extraction (other settings) put at the path
    with pytest.raises(EmofuseError) as err:
        train_run(second, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert (
        f"(extraction fingerprint {first.fingerprint[:12]}… then, cccccccccccc… now: another "
        "extraction put at its path)" in str(err.value)
    ), err.value  # round-7 row 34: not "same"
    second.path = str(tmp_path / "other.zarr")  # another --cache given (round-13 train side 37)
    with pytest.raises(EmofuseError) as err:
        train_run(second, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    trained_on = Path(first.path).resolve()
    assert str(err.value) == (
        f"run folder {out} was trained on the cache {trained_on}, and --cache "
        f"{tmp_path / 'other.zarr'} holds other features (digest bbbbbbbbbbbb…, not "
        f"aaaaaaaaaaaa…); give --cache {trained_on} to resume, or train into a new --out"
    ), err.value
    second.path = first.path
    second.fingerprint = first.fingerprint
    config = json.loads((out / "config.json").read_text())
    config.pop("cache_digest")  # a run made before the digest was recorded
    config.pop("config_sha256")  # (and before config.json was sealed)
    (out / "config.json").write_text(json.dumps(config))
    train_run(second, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert (out / "fold_02" / "metrics.json").is_file()


def test_a_resume_on_other_features_is_named_before_the_split_is_checked(tmp_path):
    """A cache of one session put at the run's path: the resume said "split 'loso' needs at
    least 2 sessions … use --split ra", and following that only then named the cache (round-13
    train side row 68). The cache is named first."""
    from emofuse.errors import EmofuseError

    first, second = FakeCache(n_per_speaker=4), FakeCache(n_per_speaker=4)
    first.meta, second.meta = {"digest": "a" * 64}, {"digest": "b" * 64}
    second.table["session"][:] = "Ses01"
    out = tmp_path / "run"
    train_run(first, TINY_HEAD, out, "loso", loop=LOOP, folds=[1], progress=False)
    with pytest.raises(EmofuseError) as err:
        train_run(second, TINY_HEAD, out, "loso", loop=LOOP, folds=[1, 2], progress=False)
    assert str(err.value).startswith(
        f"run folder {out} was trained on other contents of cache {Path(first.path).resolve()} "
        "(content digest aaaaaaaaaaaa… then, bbbbbbbbbbbb… now"
    ), err.value


def test_a_plausible_score_edited_into_a_fold_metrics_file_is_named(run, tmp_path):
    """A fold's metrics.json UA set to 0.99 (valid JSON): report showed the true figure from the
    predictions but left the contradicting file unmentioned (audit round 5, row 16)."""
    edited = _copy(run, tmp_path, "met")
    path = fold_dir(edited, 1) / "metrics.json"
    metrics = json.loads(path.read_text())
    true_ua = metrics["UA"]
    metrics["UA"] = 0.99 if true_ua != 0.99 else 0.5
    path.write_text(json.dumps(metrics))
    for args in (["report", str(edited)], ["compare", str(run), str(edited)]):
        result = CliRunner().invoke(cli, args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, (args, result.output)
        assert lines[0] == (
            f"error: {path} was edited: its UA {metrics['UA']!r} is not the {true_ua:.4f} that "
            f"fold 1's predictions.csv gives; delete {path.parent} and rerun "
            f"{train_command(edited)} (it retrains that fold only)"
        ), lines[0]
