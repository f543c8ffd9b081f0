"""UA, WA, macro-F1 and confusion matrices, per fold, mean ± std over folds, and pooled.

Definitions follow docs/architecture.md §6 and are computed by scikit-learn so nobody has to trust a
hand-written formula (one peer swapped the names of UA and WA):

- UA (unweighted accuracy) = mean per-class recall = ``balanced_accuracy_score``
- WA (weighted accuracy)   = overall accuracy      = ``accuracy_score``
- F1 = macro F1 over the classes present in truth or prediction (``f1_score(average="macro")``)

All values are fractions in [0, 1]. "mean"/"std" summarise the per-fold values (the papers'
convention; std is the population std over folds, ``ddof=0``); "pooled" scores the concatenated
test predictions of all folds as one set.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

METRICS = ("UA", "WA", "F1")


def scores(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    """UA, WA and macro-F1 of one set of predictions (fractions)."""
    with warnings.catch_warnings():
        # a class predicted but absent from this fold's truth is expected on small folds
        warnings.simplefilter("ignore", UserWarning)
        return {
            "UA": float(balanced_accuracy_score(y_true, y_pred)),
            "WA": float(accuracy_score(y_true, y_pred)),
            "F1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        }


def confusion(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> dict[str, list[list[float]]]:
    """Confusion matrix (rows = true class, columns = predicted) as counts and row-normalised.

    Rows of a class absent from ``y_true`` are all zero in the normalised matrix.
    """
    counts = confusion_matrix(y_true, y_pred, labels=list(labels))  # (C, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = confusion_matrix(y_true, y_pred, labels=list(labels), normalize="true")
    return {"counts": counts.tolist(), "normalized": np.nan_to_num(norm).tolist()}


def summarize(
    folds: Sequence[tuple[int, Sequence[str], Sequence[str]]], labels: Sequence[str]
) -> dict[str, Any]:
    """The summary.json object from ``[(fold, y_true, y_pred), …]``.

    ``{"folds": [{"fold": 1, "UA", "WA", "F1"}, …], "mean": {…}, "std": {…}, "pooled": {…},
    "labels": [...], "confusion": {"counts", "normalized"}}`` where the confusion matrix is pooled.
    """
    per_fold = [{"fold": int(k), **scores(t, p)} for k, t, p in folds]
    table = np.array([[f[m] for m in METRICS] for f in per_fold], dtype=float)  # (K, 3)
    all_true = [y for _, t, _ in folds for y in t]
    all_pred = [y for _, _, p in folds for y in p]
    return {
        "folds": per_fold,
        "mean": dict(zip(METRICS, table.mean(axis=0).tolist(), strict=True)),
        "std": dict(zip(METRICS, table.std(axis=0).tolist(), strict=True)),
        "pooled": scores(all_true, all_pred),
        "labels": list(labels),
        "confusion": confusion(all_true, all_pred, labels),
    }
