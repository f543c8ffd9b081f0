"""The ravdess-dev README's reference linear probe, recomputed from an emofuse cache.

Reference (../shared/data/ravdess-dev/README.md): frozen Whisper-base encoder, per-layer mean+std
pooling over real frames, standardised, logistic regression (C = 0.1), `lopo` over the 12 actors,
UA/WA pooled over the 12 test speakers. Here the features are the cache's `speech_mean` and
`speech_std` streams (every layer, pooled over real frames at extraction) and the folds are
emofuse's own `lopo` plan (emofuse.train.folds), so the probe and the heads see the same features
and the same test speakers. The probe trains on train + validation speakers (the reference trains
on "the other 11 actors"; there is nothing to tune), the scaler is fitted on those rows only.

Reported per layer (0 = the encoder's input embedding, 6 = the last layer): pooled UA/WA over all
test predictions, and mean ± std of the per-fold UA. The best layer is picked on the test scores,
as the README's reference is (an optimistic figure); the line "val-picked" picks the layer per
fold on that fold's validation speaker instead (train speakers only for fitting), which is the
honest counterpart (``--val-pick``; it doubles the run time).

``--speaker-norm`` first standardises the pooled features per speaker (each actor's own mean and
std, no labels; the test actor's unlabelled clips included), exactly as ``emofuse train
--speaker-norm`` does (the same ``TrainData.normalize_per_speaker``): the like-for-like reference
for runs made with it.

    .venv/bin/python bench/ravdess_probe.py --cache /tmp/ravdess/whisper-minilm.h5 [--val-pick]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from emofuse.cache import open_cache
from emofuse.train.data import TrainData
from emofuse.train.folds import build_folds_from_columns
from emofuse.train.metrics import scores


def layer_features(cache, speaker_norm: bool = False) -> np.ndarray:
    """(N, L, 2D) float32: [mean, std] over real frames for every cached speech layer."""
    cfg = argparse.Namespace(speech_layers=None)
    data = TrainData.from_cache(cache, {"speech_mean", "speech_std"}, cfg, "cpu")
    if speaker_norm:
        data.normalize_per_speaker([str(x) for x in cache.table["speaker"]])
    mean, std = (data.streams[s].values.float().numpy() for s in ("speech_mean", "speech_std"))
    return np.concatenate([mean, std], axis=-1)  # (N, L, 2D)


def fit_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, c: float, seed: int):
    scaler = StandardScaler().fit(x_tr)
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    clf.fit(scaler.transform(x_tr), y_tr)
    return clf.predict(scaler.transform(x_te))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", required=True)
    ap.add_argument("--C", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", default=None, help="comma list of layers (default: all cached)")
    ap.add_argument(
        "--val-pick",
        action="store_true",
        help="also pick the layer per fold on its validation speaker (7 x 12 more fits)",
    )
    ap.add_argument(
        "--speaker-norm", action="store_true", help="standardise per speaker first (transductive)"
    )
    ap.add_argument("--json", default=None, help="write the figures to this file")
    args = ap.parse_args()

    t0 = time.perf_counter()
    cache = open_cache(args.cache)
    table = cache.table
    ids = [str(i) for i in cache.ids]
    labels = np.asarray([str(x) for x in table["label"]], dtype=object)
    plan = build_folds_from_columns(
        ids=ids,
        labels=labels.tolist(),
        speakers=[str(x) for x in table["speaker"]],
        sessions=[None if x in (None, "") else str(x) for x in table["session"]],
        splits=[None] * len(ids),
        split="lopo",
        seed=args.seed,
    )
    pos = {u: i for i, u in enumerate(ids)}
    feats = layer_features(cache, args.speaker_norm)  # (N, L, 2D)
    n_layers = feats.shape[1]
    layers = [int(x) for x in args.layers.split(",")] if args.layers else list(range(n_layers))
    print(
        f"{cache.path if hasattr(cache, 'path') else args.cache}: {len(ids)} utterances, "
        f"{n_layers} layers x {feats.shape[2]} features, {len(plan.folds)} lopo folds, C={args.C}"
        + (", per-speaker standardisation" if args.speaker_norm else "")
    )

    folds = [
        (
            np.array([pos[u] for u in f.train]),
            np.array([pos[u] for u in f.val]),
            np.array([pos[u] for u in f.test]),
        )
        for f in plan.folds
    ]
    results: dict[str, dict] = {}
    test_preds: dict[int, list[np.ndarray]] = {}
    for layer in layers:
        x = feats[:, layer]  # (N, 2D)
        pooled_true, pooled_pred, fold_ua = [], [], []
        test_preds[layer] = []
        for tr, va, te in folds:
            fit = np.concatenate([tr, va])  # the other 11 actors
            pred = fit_predict(x[fit], labels[fit], x[te], args.C, args.seed)
            test_preds[layer].append(pred)
            pooled_true.append(labels[te])
            pooled_pred.append(pred)
            fold_ua.append(scores(labels[te], pred)["UA"])
        s = scores(np.concatenate(pooled_true), np.concatenate(pooled_pred))
        results[str(layer)] = {
            "UA": s["UA"],
            "WA": s["WA"],
            "fold_UA_mean": float(np.mean(fold_ua)),
            "fold_UA_std": float(np.std(fold_ua)),
        }
        print(
            f"layer {layer}: pooled UA {s['UA']:.3f} WA {s['WA']:.3f} | "
            f"per-fold UA {np.mean(fold_ua):.3f} ± {np.std(fold_ua):.3f}",
            flush=True,
        )
    best = max(results, key=lambda k: results[k]["UA"])
    last = str(n_layers - 1)
    print(
        f"best layer (picked on test, as the README): {best}: UA {results[best]['UA']:.3f} "
        f"WA {results[best]['WA']:.3f}"
    )
    if last in results:
        print(f"last layer {last}: UA {results[last]['UA']:.3f} WA {results[last]['WA']:.3f}")

    out = {
        "C": args.C,
        "speaker_norm": args.speaker_norm,
        "layers": results,
        "best_layer_on_test": int(best),
    }
    if args.val_pick:
        # Honest counterpart: per fold, pick the layer on the validation speaker (fit on train
        # speakers only), then use that layer's 11-actor model's test predictions.
        true_all, pred_all, picks = [], [], []
        for k, (tr, va, te) in enumerate(folds):
            val_ua = {
                layer: scores(
                    labels[va],
                    fit_predict(feats[tr, layer], labels[tr], feats[va, layer], args.C, args.seed),
                )["UA"]
                for layer in layers
            }
            pick = max(val_ua, key=val_ua.get)
            picks.append(pick)
            true_all.append(labels[te])
            pred_all.append(test_preds[pick][k])
        s = scores(np.concatenate(true_all), np.concatenate(pred_all))
        print(f"val-picked layer per fold {picks}: pooled UA {s['UA']:.3f} WA {s['WA']:.3f}")
        out["val_picked"] = {"UA": s["UA"], "WA": s["WA"], "layers": picks}
    print(f"{time.perf_counter() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
