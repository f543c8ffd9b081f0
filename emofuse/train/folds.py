"""Fold plans: which utterance ids train, select (val) and score (test) in each fold.

The plan is made explicit and saved beside every run (docs/architecture.md §6) so two runs can be proven to use
the same folds and anyone can check that no test id reaches training or model selection. Splitting
uses scikit-learn (``StratifiedKFold``, ``train_test_split``); fold k's validation draw uses a seed
derived from the plan seed and k (:func:`fold_seed`), so a single fold can be rebuilt or rerun alone.

Splits (docs/architecture.md §6):

- ``loso``: one fold per session (sorted); val = 10 % of the training utterances, stratified by label.
- ``lopo``: one fold per speaker (sorted). Validation (``lopo_val``, recorded in folds.json):
  ``partner`` (default) = the other speaker(s) of the test speaker's session, or, when the corpus
  has no sessions (or the session has a single speaker), the next speaker in sorted order, wrapping
  round; ``train`` = a stratified 10 % of the other speakers' utterances, so training sees every
  speaker but the test one (TDFNet's setting: 9 IEMOCAP speakers train).
- ``ra``: a seeded stratified 10-fold split; val = 10 % of the training utterances, stratified.
- ``predefined``: one fold from ``Utterance.split`` (``train`` / ``val`` / ``test``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from emofuse.corpus.utterance import Utterance
from emofuse.errors import EmofuseError, cannot_read

SPLITS = ("loso", "lopo", "ra", "predefined")
LOPO_VALS = ("partner", "train")
RA_FOLDS = 10
VAL_FRACTION = 0.1


def fold_seed(seed: int, fold: int) -> int:
    """Seed for fold ``fold`` (1-based), derived from the plan/run seed.

    Mixing through ``SeedSequence`` keeps neighbouring seeds' folds unrelated and lets one fold be
    rerun alone with exactly the randomness it had inside the whole plan.
    """
    return int(np.random.SeedSequence([int(seed), int(fold)]).generate_state(1)[0])


@dataclass
class Fold:
    fold: int  # 1-based
    train: list[str]
    val: list[str]
    test: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"fold": self.fold, "train": self.train, "val": self.val, "test": self.test}


@dataclass
class FoldPlan:
    split: str
    seed: int
    folds: list[Fold] = field(default_factory=list)
    lopo_val: str = "partner"  # lopo only: partner | train (how validation is drawn)

    def to_dict(self) -> dict[str, Any]:
        head = {"split": self.split, "seed": self.seed}
        if self.split == "lopo":
            head["lopo_val"] = self.lopo_val
        return {**head, "folds": [f.to_dict() for f in self.folds]}

    def difference(self, other: FoldPlan) -> str | None:
        """What first tells ``other`` from this plan (None: the same folds, utterance for
        utterance), in the words of the options that made it."""
        if other.split != self.split:
            return f"--split {other.split} vs {self.split}"
        if self.split == "lopo" and other.lopo_val != self.lopo_val:
            return f"--lopo-val {other.lopo_val} vs {self.lopo_val}"
        if [f.fold for f in other.folds] != [f.fold for f in self.folds]:
            return f"{len(other.folds)} folds vs {len(self.folds)}"
        seeds = f" (--seed {other.seed} vs {self.seed})" if other.seed != self.seed else ""
        for mine, theirs in zip(self.folds, other.folds, strict=True):
            for part in ("test", "val", "train"):
                if sorted(getattr(mine, part)) != sorted(getattr(theirs, part)):
                    return f"fold {mine.fold} has other {part} utterances{seeds}"
        return None

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> FoldPlan:
        """The plan from its JSON form; ``source`` (e.g. ``fold plan run/folds.json``) names it in
        the one-line error for a malformed or empty plan."""
        what = source or "fold plan"
        fix = "; restore it, or train again into a new --out" if source else ""
        try:
            if not isinstance(data, dict):
                raise TypeError(f"a JSON object is expected, not {type(data).__name__}")
            folds = [
                Fold(int(f["fold"]), list(f["train"]), list(f["val"]), list(f["test"]))
                for f in data["folds"]
            ]
            plan = cls(str(data["split"]), int(data["seed"]), folds)
            plan.lopo_val = str(data.get("lopo_val", "partner"))  # plans before it: the partner
            if plan.lopo_val not in LOPO_VALS:
                raise ValueError(f"lopo_val {plan.lopo_val!r} is not one of {LOPO_VALS}")
        except (KeyError, TypeError, ValueError) as err:
            raise EmofuseError(
                f"{what} is malformed ({err!r}); expected "
                '{"split", "seed", "folds": [{"fold", "train", "val", "test"}]}' + fix
            ) from None
        if not plan.folds:
            raise EmofuseError(f"{what} holds no folds{fix or '; rebuild it'}")
        plan.check(source)
        return plan

    def save(self, path: str | Path) -> None:
        """Atomically: a resume rewrites a finished run's plan, which a failed write never tears."""
        from emofuse.fileio import write_json

        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> FoldPlan:
        path = Path(path)
        if not path.is_file():
            raise EmofuseError(f"fold plan {path} does not exist; rerun the command that writes it")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            from emofuse.train.outdir import plan_fix

            raise EmofuseError(
                f"fold plan {path} is not valid JSON ({err}); {plan_fix(path)}"
            ) from None
        except OSError as err:  # its mode, not damage: never "cannot write the run folder"
            raise cannot_read(f"fold plan {path}", err) from None
        return cls.from_dict(data, source=f"fold plan {path}")

    def fold(self, k: int) -> Fold:
        for f in self.folds:
            if f.fold == k:
                return f
        valid = ",".join(str(f.fold) for f in self.folds)
        raise EmofuseError(f"fold {k} is not in the {self.split} plan; valid folds: {valid}")

    def check(self, source: str | None = None) -> None:
        """Refuse a plan in which a test id also trains or selects the model in the same fold."""
        what = source or f"the {self.split} plan"
        for f in self.folds:
            leaked = set(f.test) & (set(f.train) | set(f.val))
            if leaked:
                raise EmofuseError(
                    f"fold {f.fold} of {what} has test ids in train/val "
                    f"(e.g. {sorted(leaked)[0]}); rebuild the plan"
                )
            if set(f.train) & set(f.val):
                raise EmofuseError(
                    f"fold {f.fold} of {what} has val ids in train; rebuild the plan"
                )


def build_folds(
    utterances: Sequence[Utterance], split: str, seed: int = 0, lopo_val: str = "partner"
) -> FoldPlan:
    """The fold plan for ``split`` over ``utterances`` (kept in their order inside every list)."""
    return build_folds_from_columns(
        ids=[u.id for u in utterances],
        labels=[u.label for u in utterances],
        speakers=[u.speaker for u in utterances],
        sessions=[u.session for u in utterances],
        splits=[u.split for u in utterances],
        split=split,
        seed=seed,
        lopo_val=lopo_val,
    )


def build_folds_from_columns(
    ids: Sequence[str],
    labels: Sequence[str],
    speakers: Sequence[str],
    sessions: Sequence[str | None],
    splits: Sequence[str | None],
    split: str,
    seed: int = 0,
    lopo_val: str = "partner",
) -> FoldPlan:
    """Same as :func:`build_folds`, from parallel columns (e.g. a cache's utterance table)."""
    if split not in SPLITS:
        raise EmofuseError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if lopo_val not in LOPO_VALS:
        raise EmofuseError(f"--lopo-val {lopo_val}: choose one of {', '.join(LOPO_VALS)}")
    if not ids:
        raise EmofuseError("cannot build folds over an empty corpus")
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    if dupes:
        raise EmofuseError(f"utterance id {dupes[0]!r} appears more than once; ids must be unique")
    if split == "predefined":  # name the first row without a mark, not a Python repr of it
        bad = next(
            ((i, s) for i, s in zip(ids, splits, strict=True) if s not in ("train", "val", "test")),
            None,
        )
        if bad is not None:
            what = "has no split" if bad[1] in (None, "") else f"has split {bad[1]!r}"
            raise EmofuseError(
                f"split 'predefined' needs train, val or test in the 'split' column of every row; "
                f"utterance {bad[0]} {what}: fill it in, or use another split"
            )
    ids = np.asarray(ids, dtype=object)
    labels = np.asarray(labels, dtype=object)
    builders = {"loso": _loso, "lopo": _lopo, "ra": _ra, "predefined": _predefined}
    extra = {"mode": lopo_val} if split == "lopo" else {}
    index_folds = builders[split](
        labels=labels,
        speakers=list(speakers),
        sessions=list(sessions),
        splits=list(splits),
        seed=seed,
        **extra,
    )
    plan = FoldPlan(split, int(seed), lopo_val=lopo_val)
    all_classes = sorted(set(labels))
    for k, (tr, va, te) in enumerate(index_folds, start=1):
        missing = sorted(set(all_classes) - set(labels[tr]))
        if missing:
            raise EmofuseError(
                f"fold {k} of the {split} plan has no '{missing[0]}' utterances in its training set; "
                "use another split or drop that class from the corpus"
            )
        if len(va) == 0:
            raise EmofuseError(
                f"fold {k} of the {split} plan has an empty validation set; the corpus is too small "
                "for this split"
            )
        plan.folds.append(
            Fold(k, ids[np.sort(tr)].tolist(), ids[np.sort(va)].tolist(), ids[np.sort(te)].tolist())
        )
    plan.check()
    return plan


# --- split builders: each returns [(train_idx, val_idx, test_idx), …] as int arrays ---------------


def _val_from_train(train: np.ndarray, labels: np.ndarray, seed: int):
    """Split VAL_FRACTION of ``train`` off for validation, stratified by label.

    Stratification needs every class twice and at least one val row per class; tiny corpora that
    cannot meet that get an unstratified draw instead (still seeded) rather than an error.
    """
    y = labels[train]
    n_classes = len(set(y))
    n_val = max(math.ceil(VAL_FRACTION * len(train)), n_classes)
    stratify = y if min(Counter(y).values()) >= 2 and n_val <= len(train) - n_classes else None
    n_val = min(n_val, len(train) - 1) if stratify is None else n_val
    if n_val < 1:
        return train, train[:0]
    tr, va = train_test_split(train, test_size=n_val, stratify=stratify, random_state=seed)
    return tr, va


_PROBING: list[bool] = []  # non-empty while _instead tries the other splits
NEEDS = {
    "loso": "a session per utterance and 2 sessions",
    "lopo": "3 speakers",
    "ra": f"{RA_FOLDS} utterances of every class",
    "predefined": "a train/val/test split column",
}


def _instead(split: str, labels, speakers, sessions, splits, seed) -> str:
    """The advice after a split that cannot run: the other splits this corpus can run (each is
    tried), or that none can, with what each needs."""
    if _PROBING:  # a split tried here failed: its own advice is not needed (and would recurse)
        return ""
    fits = []
    _PROBING.append(True)
    try:
        builders = {"loso": _loso, "lopo": _lopo, "ra": _ra, "predefined": _predefined}
        for name, build in builders.items():
            if name == split:
                continue
            try:
                build(labels, speakers, sessions, splits, seed)
            except EmofuseError:
                continue
            fits.append(name)
    finally:
        _PROBING.clear()
    if fits:
        return f"use --split {' or '.join(fits)} instead"
    needs = ", ".join(f"{k} {v}" for k, v in NEEDS.items() if k != split)
    return f"no other --split fits this corpus either (they need: {needs})"


def _loso(labels, speakers, sessions, splits, seed):
    if any(s is None or s == "" for s in sessions):
        raise EmofuseError(
            "split 'loso' needs a session for every utterance (manifest column 'session'); "
            + _instead("loso", labels, speakers, sessions, splits, seed)
        )
    sess = np.asarray(sessions, dtype=object)
    names = sorted(set(sessions))
    if len(names) < 2:
        raise EmofuseError(
            f"split 'loso' needs at least 2 sessions (one to test, the others to train and "
            f"validate on); the corpus has {len(names)} ({names[0]!r}); "
            + _instead("loso", labels, speakers, sessions, splits, seed)
        )
    out = []
    for k, name in enumerate(names, start=1):
        test = np.flatnonzero(sess == name)
        tr, va = _val_from_train(np.flatnonzero(sess != name), labels, fold_seed(seed, k))
        out.append((tr, va, test))
    return out


def _lopo(labels, speakers, sessions, splits, seed, mode="partner"):
    spk = np.asarray(speakers, dtype=object)
    names = sorted(set(speakers))
    if len(names) < 3:
        raise EmofuseError(
            f"split 'lopo' needs at least 3 speakers (test, val, train); the corpus has "
            f"{len(names)}; " + _instead("lopo", labels, speakers, sessions, splits, seed)
        )
    have_sessions = all(s not in (None, "") for s in sessions)
    session_of = {}
    if have_sessions:
        for s, ses in zip(speakers, sessions, strict=True):
            if session_of.setdefault(s, ses) != ses:
                raise EmofuseError(
                    f"speaker {s!r} appears in sessions {session_of[s]!r} and {ses!r}; "
                    "lopo needs each speaker in one session"
                )
    out = []
    for k, name in enumerate(names, start=1):
        test = np.flatnonzero(spk == name)
        if mode == "train":  # every other speaker trains; validation: a stratified tenth of them
            tr, va = _val_from_train(np.flatnonzero(spk != name), labels, fold_seed(seed, k))
            out.append((tr, va, test))
            continue
        val_speakers = _val_speakers(name, names, session_of)
        val = np.flatnonzero(np.isin(spk, list(val_speakers)))
        train = np.flatnonzero(~np.isin(spk, [name, *val_speakers]))
        out.append((train, val, test))
    return out


def _val_speakers(test_speaker: str, names: list[str], session_of: dict[str, str]) -> list[str]:
    if session_of:
        same = [s for s in names if s != test_speaker and session_of[s] == session_of[test_speaker]]
        if same:
            return same
    return [names[(names.index(test_speaker) + 1) % len(names)]]


def _ra(labels, speakers, sessions, splits, seed):
    counts = Counter(labels)
    if min(counts.values()) < RA_FOLDS:
        rare = min(counts, key=counts.get)
        raise EmofuseError(
            f"split 'ra' needs at least {RA_FOLDS} utterances of every class; '{rare}' has "
            f"{counts[rare]}; drop that class or use another split"
        )
    skf = StratifiedKFold(n_splits=RA_FOLDS, shuffle=True, random_state=seed % 2**32)
    out = []
    for k, (train, test) in enumerate(skf.split(np.zeros(len(labels)), labels), start=1):
        tr, va = _val_from_train(train, labels, fold_seed(seed, k))
        out.append((tr, va, test))
    return out


def _predefined(labels, speakers, sessions, splits, seed):
    marks = np.asarray(splits, dtype=object)  # every mark checked (build_folds_from_columns)
    parts = [np.flatnonzero(marks == name) for name in ("train", "val", "test")]
    for name, idx in zip(("train", "val", "test"), parts, strict=True):
        if len(idx) == 0:
            raise EmofuseError(
                f"split 'predefined' has no rows marked {name!r} in the split column"
            )
    return [tuple(parts)]


def label_set(labels: Iterable[str]) -> list[str]:
    """The class order used everywhere (sorted label names): logits index i = ``label_set[i]``."""
    return sorted(set(labels))
