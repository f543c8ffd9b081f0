"""emofuse compare: its CI and p-value against direct scipy computations on constructed runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats
from sklearn.metrics import balanced_accuracy_score

from emofuse.cli import cli
from emofuse.errors import EmofuseError
from emofuse.fileio import write_json
from emofuse.train.compare import compare_runs
from emofuse.train.folds import Fold, FoldPlan
from emofuse.train.metrics import scores
from emofuse.train.rundir import fold_dir, write_predictions

LABELS = ["ang", "hap", "neu", "sad"]


def make_run(out: Path, true: dict[int, list[str]], pred: dict[int, list[str]], split="loso"):
    """A finished run folder from given test labels and predictions per fold (no training)."""
    folds = []
    for k, t in true.items():
        ids = [f"f{k}_{i:03d}" for i in range(len(t))]
        folds.append(Fold(k, [f"tr{k}"], [f"va{k}"], ids))
        d = fold_dir(out, k)
        d.mkdir(parents=True)
        probs = np.full((len(t), 4), 0.1)
        probs[np.arange(len(t)), [LABELS.index(p) for p in pred[k]]] = 0.7
        write_predictions(d / "predictions.csv", k, ids, t, probs, LABELS)
        write_json(d / "metrics.json", {"fold": k, **scores(t, pred[k])})  # as save_fold writes
    FoldPlan(split, 0, folds).save(out / "folds.json")
    return out


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(3)
    true = {k: list(rng.choice(LABELS, size=20 + 5 * k)) for k in range(1, 6)}

    def noisy(p_right):
        return {
            k: [y if rng.random() < p_right else rng.choice(LABELS) for y in t]
            for k, t in true.items()
        }

    a = make_run(tmp_path / "a", true, noisy(0.5))
    b = make_run(tmp_path / "b", true, noisy(0.7))
    return a, b


def _parts(run: Path):
    from emofuse.train.rundir import read_predictions

    return [read_predictions(fold_dir(run, k) / "predictions.csv") for k in range(1, 6)]


def test_ci_and_p_equal_a_direct_scipy_computation(pair):
    a, b = pair
    result = compare_runs([a, b], resamples=400, seed=7)
    pa, pb = _parts(a), _parts(b)
    # per-fold samples of positions: scipy resamples each fold's utterances within the fold
    true = np.concatenate([p["true"] for p in pa])
    ya, yb = (
        np.concatenate([p["predicted"] for p in pa]),
        np.concatenate([p["predicted"] for p in pb]),
    )
    bounds = np.cumsum([0, *[len(p["ids"]) for p in pa]])
    samples = [np.arange(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]

    def diff(*idx):
        pos = np.concatenate(idx).astype(int)
        return balanced_accuracy_score(true[pos], yb[pos]) - balanced_accuracy_score(
            true[pos], ya[pos]
        )

    ref = stats.bootstrap(
        samples, diff, n_resamples=400, paired=False, vectorized=False, method="percentile",
        rng=np.random.default_rng(7), batch=200,  # compare draws its resamples 200 at a time
    )  # fmt: skip
    comp = result["comparisons"][0]
    assert comp["ci"] == pytest.approx(
        [ref.confidence_interval.low, ref.confidence_interval.high], abs=1e-12
    )
    pooled = balanced_accuracy_score(true, yb) - balanced_accuracy_score(true, ya)
    assert comp["pooled_UA_diff"] == pytest.approx(pooled, abs=1e-12)
    assert comp["ci"][0] < pooled < comp["ci"][1]
    fold_a = [balanced_accuracy_score(p["true"], p["predicted"]) for p in pa]
    fold_b = [balanced_accuracy_score(p["true"], p["predicted"]) for p in pb]
    ref_p = stats.wilcoxon(fold_b, fold_a, method="exact").pvalue
    assert comp["p"] == pytest.approx(ref_p)
    assert result["runs"][1]["mean"]["UA"] == pytest.approx(np.mean(fold_b))
    assert result["runs"][1]["std"]["UA"] == pytest.approx(np.std(fold_b))


def test_a_run_against_a_copy_of_itself_differs_by_zero_with_p_one(pair, tmp_path):
    import shutil

    a, _ = pair
    same = tmp_path / "copy"  # the same run twice is refused as a typo
    shutil.copytree(a, same)
    comp = compare_runs([a, same], resamples=200)["comparisons"][0]
    assert comp["pooled_UA_diff"] == 0.0
    assert comp["ci"] == [0.0, 0.0]
    assert comp["p"] == 1.0


def test_different_plans_are_refused_in_one_line(pair, tmp_path):
    a, _ = pair
    other = make_run(tmp_path / "c", {1: ["ang", "hap"] * 5}, {1: ["ang"] * 10})
    with pytest.raises(EmofuseError, match="different fold plans"):
        compare_runs([a, other])
    res = CliRunner().invoke(cli, ["compare", str(a), str(other)])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and res.output.startswith("error: ")


def test_incomplete_run_is_refused(pair):
    """These folders have no config.json, as a fuse killed before its last file leaves them: a
    missing fold there is the fuse's to finish, not its members' (round-10 row 53)."""
    a, b = pair
    (fold_dir(a, 3) / "metrics.json").unlink()
    res = CliRunner().invoke(cli, ["compare", str(a), str(b)])
    assert res.exit_code == 2 and f"{a} is an unfinished `emofuse fuse`" in res.output, res.output


def test_cli_json_and_out_folder(pair, tmp_path):
    a, b = pair
    out = tmp_path / "cmp"
    res = CliRunner().invoke(cli, ["compare", str(a), str(b), "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert len(data["runs"]) == 2 and len(data["comparisons"]) == 1
    assert data == json.loads((out / "compare.json").read_text())
    assert (out / "compare.png").stat().st_size > 1000
    text = CliRunner().invoke(cli, ["compare", str(a), str(b)]).output
    assert "Wilcoxon p" in text and "pooled" in text


@pytest.mark.parametrize("name", ["compare.json", "compare.png"])
def test_a_full_disk_while_writing_the_comparison_is_one_line_and_leaves_no_file(
    pair, tmp_path, name
):
    """Round-7 audit: a full disk under `compare --out` was a traceback, and a 0-byte
    compare.json was left looking like a result. The temporary file is a link to /dev/full."""
    a, b = pair
    out = tmp_path / "cmp"
    out.mkdir()
    (out / f"{name}.tmp").symlink_to("/dev/full")
    res = CliRunner().invoke(cli, ["compare", str(a), str(b), "--out", str(out)])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert res.output.startswith(f"error: cannot write {out / name} (No space left on device)")
    assert not (out / name).exists() and not (out / f"{name}.tmp").exists()


def test_a_run_with_a_damaged_fold_metrics_file_is_refused_as_report_refuses_it(pair):
    """compare went ahead on a run whose metrics.json was {"UA": "high"} (the re-audit)."""
    import json

    a, b = pair
    bad = fold_dir(b, 2) / "metrics.json"
    bad.write_text(json.dumps({"UA": "high"}))
    res = CliRunner().invoke(cli, ["compare", str(a), str(b)])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert res.output.startswith(f"error: {bad} is damaged")


def test_a_single_run_gets_its_scores_and_no_word_of_a_test_never_made(pair):
    """Round-17 train side row 55: `compare RUN` alone printed the CI and Wilcoxon legend of a
    comparison it never computed."""
    a, b = pair
    alone = CliRunner().invoke(cli, ["compare", str(a)])
    assert alone.exit_code == 0 and "pooled" in alone.output, alone.output
    assert "CI:" not in alone.output and "Wilcoxon" not in alone.output, alone.output
    both = CliRunner().invoke(cli, ["compare", str(a), str(b)])
    assert "CI: percentile" in both.output and "Wilcoxon" in both.output, both.output


def test_a_matplotlib_config_folder_it_cannot_make_adds_no_lines(pair, tmp_path):
    """Round-17 train side row 69: with a read-only HOME (MPLCONFIGDIR not writable) matplotlib's
    own two-line warning about its temporary cache folder came with the figure."""
    import os
    import subprocess
    import sys

    a, b = pair
    (tmp_path / "afile").write_text("x")
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "afile" / "mpl")}  # cannot be made
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = str(root)
    proc = subprocess.run(
        [sys.executable, "-m", "emofuse", "compare", str(a), str(b), "--out", str(tmp_path / "c")],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c" / "compare.png").stat().st_size > 1000
    assert "Matplotlib" not in proc.stderr and "mkdir" not in proc.stderr, proc.stderr
