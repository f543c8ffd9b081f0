"""Metrics against hand-computed examples."""

from __future__ import annotations

import pytest

from emofuse.train.metrics import confusion, scores, summarize

LABELS = ["ang", "hap", "neu", "sad"]


def test_ua_wa_f1_by_hand():
    # ang: 3 true, 2 right; hap: 1 true, 1 right; neu: 4 true, 2 right (one → sad, one → ang)
    y_true = ["ang", "ang", "ang", "hap", "neu", "neu", "neu", "neu"]
    y_pred = ["ang", "ang", "neu", "hap", "neu", "neu", "sad", "ang"]
    s = scores(y_true, y_pred)
    assert s["WA"] == pytest.approx(5 / 8)
    assert s["UA"] == pytest.approx((2 / 3 + 1 + 2 / 4) / 3)  # sad absent from truth
    # per class P/R: ang P=2/3 R=2/3; hap P=1 R=1; neu P=2/3 R=1/2; sad P=0 R=0 (predicted, absent)
    f1 = [2 / 3, 1.0, 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), 0.0]
    assert s["F1"] == pytest.approx(sum(f1) / 4)
    assert s["UA"] != s["WA"]  # the two names really are different numbers here


def test_confusion_counts_and_row_normalised():
    y_true = ["ang", "ang", "hap", "sad", "sad", "sad"]
    y_pred = ["ang", "hap", "hap", "sad", "ang", "sad"]
    cm = confusion(y_true, y_pred, LABELS)
    assert cm["counts"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 2]]
    norm = cm["normalized"]
    assert norm[0] == pytest.approx([0.5, 0.5, 0, 0])
    assert norm[2] == [0, 0, 0, 0]  # neu never true: zero row, not NaN
    assert norm[3] == pytest.approx([1 / 3, 0, 0, 2 / 3])


def test_summary_mean_std_and_pooled_differ_as_defined():
    f1 = (1, ["ang", "hap"], ["ang", "hap"])  # WA 1.0
    f2 = (2, ["ang", "ang", "ang", "hap"], ["hap", "hap", "ang", "hap"])  # WA 0.5
    summary = summarize([f1, f2], LABELS)
    assert [f["fold"] for f in summary["folds"]] == [1, 2]
    assert summary["folds"][1]["WA"] == pytest.approx(0.5)
    assert summary["folds"][1]["UA"] == pytest.approx((1 / 3 + 1) / 2)
    assert summary["mean"]["WA"] == pytest.approx(0.75)
    assert summary["std"]["WA"] == pytest.approx(0.25)  # population std of (1.0, 0.5)
    # pooled: 6 predictions, 4 right — not the mean of the fold WAs
    assert summary["pooled"]["WA"] == pytest.approx(4 / 6)
    assert summary["pooled"]["UA"] == pytest.approx((2 / 4 + 2 / 2) / 2)
    assert summary["confusion"]["counts"][0] == [2, 2, 0, 0]
