"""`emofuse corpus folds` and the shared corpus options, through click's CliRunner."""

from __future__ import annotations

import json

from click.testing import CliRunner

from emofuse.cli import cli
from emofuse.corpus import read_corpus


def _folds(root, *extra):
    args = ["corpus", "folds", "--root", str(root), "--json", *extra]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def test_lopo_plan_uses_the_true_speaker(demo_corpus, tmp_path):
    plan = _folds(
        demo_corpus.root, "--split", "lopo", "--seed", "3", "--out", str(tmp_path / "p.json")
    )
    assert plan["split"] == "lopo" and len(plan["folds"]) == 10
    speaker = {
        u.id: u.speaker
        for u in read_corpus("iemocap", root=demo_corpus.root, progress=False).utterances
    }
    for fold in plan["folds"]:
        test_spk = {speaker[i] for i in fold["test"]}
        val_spk = {speaker[i] for i in fold["val"]}
        assert len(test_spk) == 1 and len(val_spk) == 1
        (t,), (v,) = test_spk, val_spk
        assert t[:5] == v[:5] and t != v  # the other speaker of the same session
        assert not set(fold["test"]) & (set(fold["train"]) | set(fold["val"]))
    assert json.loads((tmp_path / "p.json").read_text()) == plan
    assert _folds(demo_corpus.root, "--split", "lopo", "--seed", "3") == plan


def test_loso_plan_respects_corpus_options(demo_corpus):
    plan = _folds(demo_corpus.root, "--split", "loso", "--improvised-only", "--classes", "6")
    ids = {i for f in plan["folds"] for part in ("train", "val", "test") for i in f[part]}
    assert all("_impro" in i for i in ids)
    assert [sorted({i[:5] for i in f["test"]}) for f in plan["folds"]] == [
        ["Ses01"],
        ["Ses02"],
        ["Ses03"],
        ["Ses04"],
        ["Ses05"],
    ]


def test_folds_text_summary_and_bad_option(demo_corpus):
    out = CliRunner().invoke(
        cli, ["corpus", "folds", "--root", str(demo_corpus.root), "--split", "loso"]
    )
    assert out.exit_code == 0 and "fold  5" in out.output
    bad = CliRunner().invoke(cli, ["corpus", "stats", "--corpus", "manifest"])
    assert bad.exit_code == 2 and "needs --manifest" in bad.output and "Traceback" not in bad.output


def test_help_lists_the_corpus_commands():
    out = CliRunner().invoke(cli, ["corpus", "--help"])
    assert out.exit_code == 0
    assert all(cmd in out.output for cmd in ("stats", "synth", "folds"))


def test_bad_profile_and_out_under_a_file_are_one_error_line(tmp_path):
    bad = CliRunner().invoke(
        cli, ["corpus", "synth", "--out", str(tmp_path / "s"), "--profile", "bogus"]
    )
    lines = [x for x in bad.output.splitlines() if x.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert "--profile" in lines[0] and "demo" in lines[0]
    (tmp_path / "file").write_text("mine")
    under = CliRunner().invoke(cli, ["corpus", "synth", "--out", str(tmp_path / "file" / "x"),
                                     "--utterances-per-speaker", "4"])  # fmt: skip
    lines = [x for x in under.output.splitlines() if x.strip()]
    assert under.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), under.output
    assert str(tmp_path / "file") in lines[0] and "regular file" in lines[0]
    assert (tmp_path / "file").read_text() == "mine"


def test_a_bad_synth_duration_is_a_usage_error_naming_the_option(tmp_path):
    """`--duration -1 5` said "bad duration range -1.0–5.0 s" without naming the option."""
    for values in (["-1", "5"], ["0", "0"], ["3", "1"], ["1", "inf"]):
        out = tmp_path / "s"
        bad = CliRunner().invoke(cli, ["corpus", "synth", "--out", str(out), "--duration", *values])
        lines = [x for x in bad.output.splitlines() if x.strip()]
        assert bad.exit_code == 2 and len(lines) == 1, bad.output
        assert lines[0].startswith("error: Invalid value for '--duration': "), lines[0]
        why = (
            "'inf' is not a finite number"  # the float type refuses it before the range check
            if "inf" in values
            else f"{values[0]} {values[1]}: give MIN MAX seconds with 0.05 <= MIN <= MAX"
        )
        assert why in lines[0], lines[0]
        assert not out.exists()


def test_corpus_without_a_subcommand_shows_the_groups_help():
    """`emofuse corpus` printed its help squeezed into one `error:` line."""
    out = CliRunner().invoke(cli, ["corpus"], prog_name="emofuse")
    assert "error:" not in out.output, out.output
    lines = out.output.splitlines()
    assert lines[0] == "Usage: emofuse corpus [OPTIONS] COMMAND [ARGS]..."
    assert "Commands:" in lines
    assert [x.split()[0] for x in lines[lines.index("Commands:") + 1 :] if x.strip()] == [
        "folds", "stats", "synth",
    ]  # fmt: skip
    assert out.exit_code == CliRunner().invoke(cli, []).exit_code  # as `emofuse` alone does
