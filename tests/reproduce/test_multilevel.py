"""emofuse reproduce multilevel: every row (trained and fused), the table against frame-only, reuse."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from click.testing import CliRunner

from emofuse.cli import cli
from emofuse.errors import EmofuseError
from emofuse.reproduce import multilevel, runner
from emofuse.reproduce.runner import reproduce_multilevel
from emofuse.train import run as run_module
from emofuse.train.compare import compare_runs
from tests.reproduce.conftest import fake_cache

FAST = {"epochs": 1, "batch_size": 16}
SLUGS = ["frame", "phone", "syllable", "word", "granularities", "text", "coattention", "late",
         "early-late"]  # fmt: skip


def test_rows_build_the_abstracts_system_up_and_fuse_only_earlier_rows():
    rows = multilevel.rows("loso")
    assert [r.slug for r in rows] == SLUGS
    by_slug = {r.slug: r for r in rows}
    for tier in ("phone", "syllable", "word"):
        assert by_slug[tier].head == "audio" and by_slug[tier].overrides == {"speech_stream": tier}
    assert by_slug["granularities"].overrides == {"speech_stream": "speech+phone+syllable+word"}
    assert by_slug["coattention"].overrides == {"granularities": "frame,phone,syllable,word"}
    assert by_slug["late"].members == ("granularities", "text")
    assert by_slug["early-late"].members == ("coattention", "granularities", "text")
    for i, row in enumerate(rows):  # a fusion's members are trained before it
        assert all(m in [r.slug for r in rows[:i]] and not by_slug[m].fused for m in row.members)


@pytest.mark.slow
def test_every_row_is_written_compared_with_frame_only_and_a_rerun_reuses_them(
    tmp_path, monkeypatch
):
    cache, out = fake_cache(segments=True), tmp_path / "m"
    result = reproduce_multilevel(cache, out, preset="small", seeds=[0], loop_flags=FAST,
                                  progress=False)  # fmt: skip
    assert len(result["trained"]) == 9 and not result["reused"]
    for slug in SLUGS:
        assert (out / slug / "seed0" / "summary.json").is_file()
    fused = json.loads((out / "early-late" / "seed0" / "config.json").read_text())
    assert fused["fused_runs"] == [str(out / s / "seed0") for s in ("coattention", "granularities",
                                                                     "text")]  # fmt: skip
    md = (out / "table.md").read_text()
    lines = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "reference" in lines["frame"]
    for slug in SLUGS[1:]:  # the difference and CI are compare's, against the frame-only run
        c = compare_runs([out / "frame" / "seed0", out / slug / "seed0"])["comparisons"][0]
        cell = (f"{100 * c['pooled_UA_diff']:+.2f} [{100 * c['ci'][0]:+.2f}, "
                f"{100 * c['ci'][1]:+.2f}]")  # fmt: skip
        assert cell in lines[slug] and f"| {c['p']:.3g} |" in lines[slug], lines[slug]
    assert re.search(r"Ours: early-late vs the best baseline row \((frame|phone|syllable|word|"
                     r"text), .*\): [+-]\d+\.\d\d \[", md)  # fmt: skip
    assert "+1.3 UA (IEMOCAP)" in md  # the abstract's figure, from paper_figures.json
    assert (out / "table.png").stat().st_size > 0

    calls = []
    monkeypatch.setattr(run_module, "train_run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(runner, "fuse_row", lambda *a, **k: calls.append(a))
    again = reproduce_multilevel(cache, out, seeds=[0], loop_flags=FAST, progress=False)
    assert calls == [] and len(again["reused"]) == 9
    assert (out / "table.md").read_text() == md
    # an edited summary.json of a reused row run went into the table as "our UA 99.00"
    summary_path = out / "text" / "seed0" / "summary.json"
    edited = json.loads(summary_path.read_text())
    true_ua = edited["pooled"]["UA"]
    edited["pooled"]["UA"] = edited["mean"]["UA"] = 0.99
    summary_path.write_text(json.dumps(edited))
    monkeypatch.setattr(runner, "fuse_row", lambda *a, **k: None)  # the fusions would redo
    reproduce_multilevel(cache, out, seeds=[0], loop_flags=FAST, progress=False)
    assert json.loads(summary_path.read_text())["pooled"]["UA"] == true_ua != 0.99
    assert "99.00" not in (out / "table.md").read_text()
    assert not [c for c in calls if c and c[0] is cache]  # nothing was trained


@pytest.mark.slow
def test_a_member_retrained_makes_its_fusions_fuse_again(tmp_path, monkeypatch):
    cache, out = fake_cache(segments=True), tmp_path / "m"
    reproduce_multilevel(cache, out, seeds=[0], loop_flags=FAST, progress=False)
    text = out / "text" / "seed0"
    (text / "summary.json").unlink()  # as a kill during text's last fold leaves it
    shutil.rmtree(text / "fold_02")
    trained, fused = [], []
    real_train, real_fuse = run_module.train_run, runner.fuse_row
    monkeypatch.setattr(
        run_module, "train_run", lambda *a, **k: (trained.append(a[2]), real_train(*a, **k))[1]
    )
    monkeypatch.setattr(
        runner, "fuse_row", lambda path, members: (fused.append(path), real_fuse(path, members))[1]
    )
    reproduce_multilevel(cache, out, seeds=[0], loop_flags=FAST, progress=False)  # fmt: skip
    assert trained == [text]
    assert fused == [out / "late" / "seed0", out / "early-late" / "seed0"]  # both read text


def test_a_cache_without_a_segment_tier_names_the_row_and_the_extract_option(tmp_path):
    with pytest.raises(EmofuseError, match=r"row phone needs the 'phone' stream.*--granularity"):
        reproduce_multilevel(fake_cache(), tmp_path / "m", loop_flags=FAST)
    assert not (tmp_path / "m").exists()


def test_a_trained_run_where_a_fusion_goes_is_refused_not_deleted(tmp_path):
    out = tmp_path / "late"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"head": "audio"}))
    with pytest.raises(EmofuseError, match="holds a trained run, not a late fusion"):
        runner.fuse_row(out, [])
    assert (out / "config.json").is_file()


@pytest.mark.parametrize("args, message", [(["--seeds", "a"], "--seeds 'a'"),
                                           (["--split", "bogus"], "--split")])  # fmt: skip
def test_bad_options_are_one_line(tmp_path, args, message):
    (tmp_path / "c.h5").write_bytes(b"")
    result = CliRunner().invoke(
        cli,
        [
            "reproduce",
            "multilevel",
            *args,
            "--cache",
            str(tmp_path / "c.h5"),
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_damaged_or_foreign_row_folder_is_one_line_not_reused(tmp_path):
    """A damaged metrics.json was 'finished, reused' into the table; a row folder holding a run of
    other settings was train_run's two whole configs and advice to use another --out."""
    cache, out = fake_cache(segments=True), tmp_path / "m"
    reproduce_multilevel(cache, out, seeds=[0], loop_flags=FAST, progress=False)
    metrics = out / "word" / "seed0" / "fold_02" / "metrics.json"
    good = metrics.read_text()
    metrics.write_text(json.dumps({"UA": "high"}))
    with pytest.raises(EmofuseError, match=f"{re.escape(str(metrics))} is damaged"):
        reproduce_multilevel(cache, out, seeds=[0], loop_flags=FAST, progress=False)
    metrics.write_text(good)
    fused = out / "late" / "seed0" / "fold_01" / "metrics.json"
    fused.write_text("{")  # a damaged fusion is fused again
    again = reproduce_multilevel(cache, out, seeds=[0], loop_flags=FAST, progress=False)
    assert out / "late" / "seed0" in again["trained"] and json.loads(fused.read_text())["fold"] == 1

    frame = out / "frame" / "seed0"  # made with 1 epoch; the same folder asked with 2 epochs
    shutil.rmtree(frame / "fold_03")
    # every row was made with 1 epoch: one line counts them all, before any is trained again
    # (round-10 row 71: refused one row at a time, each after the ones before were retrained)
    message = (f"{frame} holds a run made with other settings than row frame seed 0 (loop epochs "
               "1, this command's is 2), and so do ")  # fmt: skip
    with pytest.raises(EmofuseError, match=re.escape(message)) as err:
        reproduce_multilevel(cache, out, seeds=[0], loop_flags={**FAST, "epochs": 2},
                             progress=False)  # fmt: skip
    assert str(err.value).endswith(
        "give another --out for these settings, or delete or move those folders and rerun"
    )
    assert not (frame / "fold_03").exists()  # nothing trained


def test_a_row_trained_again_takes_the_old_table_away_first(tmp_path, monkeypatch):
    """Round-10 row 71: rows retrained into a finished reproduce left table.md showing the old
    figures (nothing marked it stale) until the whole table was written again."""
    cache, out = fake_cache(segments=True), tmp_path / "m"
    reproduce_multilevel(cache, out, seeds=[0], loop_flags=FAST, progress=False)
    assert (out / "table.md").is_file()
    shutil.rmtree(out / "word" / "seed0" / "fold_02")  # one row to finish again

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as a Ctrl-C while the row trains

    monkeypatch.setattr(runner.run_module, "train_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reproduce_multilevel(cache, out, seeds=[0], loop_flags=FAST, progress=False)
    assert not (out / "table.md").exists() and not (out / "table.png").exists()
    monkeypatch.undo()
    reproduce_multilevel(cache, out, seeds=[0], loop_flags=FAST, progress=False)
    assert (out / "table.md").is_file()


def test_reproduce_refuses_an_out_that_is_a_run_or_holds_other_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(EmofuseError, match=f"--out {re.escape(str(run))} is a run folder"):
        reproduce_multilevel(fake_cache(segments=True), run, loop_flags=FAST)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(EmofuseError, match="holds notes.txt, which is not a row of this table"):
        reproduce_multilevel(fake_cache(segments=True), other, loop_flags=FAST)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    again = tmp_path / "again"  # an earlier reproduce's folder: its rows and table are welcome
    (again / "frame").mkdir(parents=True)
    (again / "table.md").write_text("")
    runner.check_reproduce_out(again, multilevel.rows("loso"))
    (again / "notes.txt").write_text("x")  # the user's note in an earlier run's folder
    with pytest.raises(EmofuseError, match="is an earlier run of this table but also holds "
                       "notes.txt, which reproduce did not write: move it out"):  # fmt: skip
        runner.check_reproduce_out(again, multilevel.rows("loso"))


def test_report_of_a_reproduce_folder_names_a_row_run(tmp_path):
    (tmp_path / "m" / "frame" / "seed1").mkdir(parents=True)  # run with --seeds 1: no seed0
    (tmp_path / "m" / "frame" / "seed1" / "config.json").write_text("{}")
    (tmp_path / "m" / "table.md").write_text("")  # a finished reproduce
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "m")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "is an `emofuse reproduce` folder" in lines[0]
    assert f"emofuse report {tmp_path / 'm' / 'frame' / 'seed1'}`" in lines[0]  # a real run
    # a row folder (it holds the seed runs) was "not a run folder …: train it first"
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "m" / "frame")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "is a row of an `emofuse reproduce` folder" in lines[0] and "train it" not in lines[0]
    assert f"emofuse report {tmp_path / 'm' / 'frame' / 'seed1'}`" in lines[0]


def test_predict_on_a_reproduce_row_folder_names_a_seed_run(tmp_path):
    """predict said "not an emofuse run folder … give --run RUN" for a row folder, where report
    and compare point at its seed runs (fifth audit, train side, row 8)."""
    import numpy as np
    import soundfile as sf

    seed = tmp_path / "m" / "frame" / "seed1"
    seed.mkdir(parents=True)
    (seed / "config.json").write_text("{}")
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600), 16000)
    (tmp_path / "m" / "table.md").write_text("")  # a finished reproduce
    for folder, start in (
        (tmp_path / "m" / "frame", "is a row of an `emofuse reproduce` folder, not a run: give "
         f"one of its seed runs, e.g. --run {seed} (1 seed runs)"),
        (tmp_path / "m", "is an `emofuse reproduce` folder"),
    ):  # fmt: skip
        result = CliRunner().invoke(cli, ["predict", "--run", str(folder), str(wav)])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0].startswith(f"error: {folder} {start}"), lines[0]
        assert f"--run {seed}" in lines[0]


def test_an_interrupted_reproduce_folder_says_to_rerun_it_and_names_a_finished_row(tmp_path):
    """Killed mid-row: the line named a table.md that did not exist and, as its example, the
    unfinished row, whose report then said "run `emofuse train`" (round-10 row 42, train side)."""
    from emofuse.train.outdir import unfinished_advice

    root = tmp_path / "m"
    for row in ("coattention", "frame"):
        (root / row / "seed0").mkdir(parents=True)
        (root / row / "seed0" / "config.json").write_text("{}")
    result = CliRunner().invoke(cli, ["report", str(root)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0] == (
        f"error: {root} is an unfinished `emofuse reproduce` folder (no table.md yet): rerun the "
        f"same `emofuse reproduce … --out {root}` to finish it"
    )
    (root / "frame" / "seed0" / "summary.json").write_text("{}")  # one row finished
    line = CliRunner().invoke(cli, ["report", str(root)]).output.strip()
    assert line.endswith(
        f"to finish it, or give one of its finished row runs, e.g. `emofuse report "
        f"{root / 'frame' / 'seed0'}`"
    ), line
    assert unfinished_advice(root / "coattention" / "seed0") == (
        f"rerun the same `emofuse reproduce … --out {root}` to finish it"
    )
    assert unfinished_advice(tmp_path / "run") == "run `emofuse train` to completion first"
