"""emofuse reproduce tdfnet: a run per row and seed, reuse of finished runs, table.md, errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from emofuse.cli import cli
from emofuse.errors import EmofuseError
from emofuse.reproduce import runner, tdfnet
from emofuse.reproduce.runner import reproduce
from emofuse.train import run as run_module
from tests.reproduce.conftest import fake_cache

FAST = {"epochs": 1, "batch_size": 16}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_paper_figures_hold_every_row_of_both_tables():
    figures = tdfnet.paper_figures()["tables"]
    for table in tdfnet.TABLES:
        entry = figures[str(table)]
        assert entry["name"].startswith(f"Table {'I' if table == 1 else 'V'}:")
        for row in tdfnet.rows(table):
            paper = entry["rows"][row.slug]
            assert paper["name"] and 0 < paper["WA"] < 100 and 0 < paper["UA"] < 100
    assert figures["5"]["rows"]["full"] == {"name": "our TDFNet", "WA": 76.26, "UA": 77.04}
    assert figures["5"]["rows"]["no-mt"]["UA"] == 74.73
    assert figures["1"]["rows"]["ra"]["UA"] == 82.57
    lopo = figures["1"]["rows"]["lopo"]["folds"]
    assert len(lopo) == 10 and lopo["Ses02M"] == {"WA": 80.63, "UA": 83.95}
    assert len(figures["1"]["rows"]["loso"]["folds"]) == 5


def test_table5_rows_are_the_heads_variants():
    from emofuse.heads.tdfnet import TDFNet

    rows = {r.slug: r for r in tdfnet.rows(5)}
    assert list(rows) == ["full", "audio-path", "text-path", "no-dst", "no-mt", "no-me"]
    assert all(r.split == "loso" for r in rows.values())
    assert rows["no-me"].overrides == {"speech_stream": "fbank"}
    assert rows["no-dst"].overrides == {"use_dst": "false"}
    for r in rows.values():  # each builds a config
        TDFNet.make_config("small", r.overrides)


@pytest.mark.slow
def test_table5_trains_every_row_then_a_rerun_reuses_them(cache, tmp_path, monkeypatch):
    out = tmp_path / "r"
    result = reproduce(cache, 5, out, preset="small", seeds=[0], loop_flags=FAST, progress=False)
    for row in tdfnet.rows(5):
        run = out / row.slug / "seed0"
        assert (run / "summary.json").is_file() and (run / "report.md").is_file()
    assert len(result["trained"]) == 6 and not result["reused"]
    md = (out / "table.md").read_text()
    figures = tdfnet.paper_figures()["tables"]["5"]["rows"]
    for row in tdfnet.rows(5):
        line = next(x for x in md.splitlines() if f"({row.slug})" in x)
        paper = figures[row.slug]
        assert (
            paper["name"] in line and f"{paper['WA']:.2f}" in line and f"{paper['UA']:.2f}" in line
        )
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[6].startswith(("+", "-")) and cells[7].startswith(("+", "-"))  # differences
        if row.slug == "full":
            assert cells[8] == "reference"
        else:  # pooled-UA difference to full with its CI
            assert "[" in cells[8] and "]" in cells[8], line
    assert (out / "table.png").stat().st_size > 0

    calls = []
    monkeypatch.setattr(run_module, "train_run", lambda *a, **k: calls.append(a))
    again = reproduce(cache, 5, out, preset="small", seeds=[0], loop_flags=FAST, progress=False)
    assert calls == [] and len(again["reused"]) == 6 and not again["trained"]
    assert (out / "table.md").read_text() == md


@pytest.mark.slow
def test_an_interrupted_run_resumes_through_train_run(cache, tmp_path, monkeypatch):
    out = tmp_path / "r"
    real = run_module.train_run
    reproduce(cache, 5, out, seeds=[0], loop_flags=FAST, progress=False)
    full = out / "full" / "seed0"
    (full / "summary.json").unlink()
    import shutil

    shutil.rmtree(full / "fold_03")
    calls = []

    def counting(*a, **k):
        calls.append(a[2])
        return real(*a, **k)

    monkeypatch.setattr(run_module, "train_run", counting)
    again = reproduce(cache, 5, out, seeds=[0], loop_flags=FAST, progress=False)
    assert calls == [full] and again["trained"] == [full]
    assert (full / "fold_03" / "metrics.json").is_file() and (full / "summary.json").is_file()


def test_a_cache_without_fbank_names_the_row_and_the_extract_option(tmp_path):
    with pytest.raises(EmofuseError, match=r"row no-me needs the 'fbank' stream.*--fbank"):
        reproduce(fake_cache(fbank=False), 5, tmp_path / "r", loop_flags=FAST)
    assert not (tmp_path / "r").exists()  # refused before any training
    runner.check_streams(fake_cache(fbank=False), tdfnet.rows(1), "small")  # table I: no fbank


@pytest.mark.parametrize(
    "args, message",
    [
        (["--table", "3"], "--table '3'"),
        (["--table", "five"], "--table 'five'"),
        (["--table", "5", "--seeds", "0,x"], "--seeds '0,x'"),
        (["--table", "5", "--seeds", "1,1"], "--seeds '1,1'"),
        (["--table", "5", "--seeds", "-1"], "--seeds '-1'"),
    ],
)
def test_bad_options_are_one_line(tmp_path, args, message):
    (tmp_path / "c.h5").write_bytes(b"")
    result = invoke("reproduce", "tdfnet", *args, "--cache", tmp_path / "c.h5", "--out", tmp_path)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_cache_is_one_line(tmp_path):
    result = invoke("reproduce", "tdfnet", "--table", "5", "--cache", tmp_path / "none.h5",
                    "--out", tmp_path / "r")  # fmt: skip
    assert result.exit_code == 2 and result.output.startswith("error: --cache ")
    assert "does not exist" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_table1_writes_every_split_and_each_fold_beside_the_papers(cache, tmp_path):
    out = tmp_path / "r"
    reproduce(cache, 1, out, preset="small", seeds=[0, 1], loop_flags=FAST, progress=False)
    md = (out / "table.md").read_text()
    figures = tdfnet.paper_figures()["tables"]["1"]["rows"]
    for slug, n_folds in (("loso", 5), ("lopo", 10), ("ra", 10)):
        for seed in (0, 1):
            assert (out / slug / f"seed{seed}" / "summary.json").is_file()
        line = next(x for x in md.splitlines() if f"({slug})" in x)
        assert f"{figures[slug]['UA']:.2f}" in line
        part = md.split(f"## {figures[slug]['name']} per fold")[1].split("\n## ")[0]
        rows = [x for x in part.splitlines() if x.startswith("| ") and x[2].isdigit()]
        assert len(rows) == n_folds, part
    # the paper's fold names: LOSO's Session k, LOPO's Ses0kF/M (the test speaker), RA's Fold k
    lopo = md.split("## LOPO per fold")[1]
    assert "| Ses01F | " in lopo and f"| {figures['lopo']['folds']['Ses01F']['UA']:.2f} |" in lopo
    assert "| Session3 | " in md.split("## LOSO per fold")[1] and "| Fold10 | " in md
    # mean ± std over the two seeds, from the runs' own summaries
    import json

    import numpy as np

    ua = [json.loads((out / "ra" / f"seed{s}" / "summary.json").read_text())["mean"]["UA"]
          for s in (0, 1)]  # fmt: skip
    cell = f"{100 * np.mean(ua):.2f} ± {100 * np.std(ua):.2f}"
    assert cell in next(x for x in md.splitlines() if "(ra)" in x)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_killed_reproduce_reruns_only_the_missing_folds(tmp_path):
    """SIGKILL (faults.py) once the 8th fold is written: the full model's 5 folds and the audio
    path's first 3 are on disk. The rerun leaves those files alone and trains the rest."""
    import os
    import subprocess
    import sys

    from emofuse import faults
    from tests.helpers import ROOT, write_five_session_cache

    cache_path = tmp_path / "c.h5"
    write_five_session_cache(cache_path, fbank=True)
    out = tmp_path / "r"
    args = [sys.executable, "-m", "emofuse", "reproduce", "tdfnet", "--table", "5", "--cache",
            str(cache_path), "--out", str(out), "--epochs", "1", "--jobs", "1", "--quiet"]  # fmt: skip
    env = {**os.environ, faults.ENV: "fold-written:8:kill", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == -9, proc.stderr[-3000:]
    metrics = sorted(out.glob("*/seed0/fold_*/metrics.json"))
    assert [str(p.relative_to(out)).split("/")[0] for p in metrics] == ["audio-path"] * 3 + [
        "full"
    ] * 5
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in metrics}
    assert not (out / "table.md").exists()

    env.pop(faults.ENV)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "full seed 0: finished, reused" in proc.stdout
    assert "audio-path seed 0: training into" in proc.stdout
    for p, stamp in before.items():  # untouched: not retrained
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, p
    for row in tdfnet.rows(5):
        run = out / row.slug / "seed0"
        assert sorted(p.parent.name for p in run.glob("fold_*/metrics.json")) == [
            f"fold_0{k}" for k in range(1, 6)
        ]
        assert (run / "summary.json").is_file()
    assert (out / "table.md").is_file() and (out / "table.png").is_file()
