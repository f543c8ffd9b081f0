"""The `emofuse train` command that resumes a run folder, rebuilt from its config.json.

Advice such as "delete fold_02 and rerun emofuse train" is only followable with the run's options:
a demo run or one trained with loop flags is refused as "different settings" by a plain
``emofuse train --cache C --split S --head H --out RUN``. :func:`train_command` gives the whole
command: the cache, split, head, preset, each ``--set``, and each loop field whose value is not the
one the head's preset gives by itself (resolving that recipe again yields the recorded loop).
"""

from __future__ import annotations

import contextlib
import json
import shlex
from pathlib import Path
from typing import Any

from emofuse.errors import EmofuseError

# loop fields whose flag is a --x/--no-x switch
SWITCHES = ("class_weights", "speaker_norm")


def _flag(name: str, value: Any) -> list[str]:
    option = "--" + name.replace("_", "-")
    if name in SWITCHES:
        return [option if value else "--no-" + name.replace("_", "-")]
    return [option, f"{value:g}" if isinstance(value, float) else str(value)]


def _recipe_loop(head: str, preset: str | None) -> dict[str, Any] | None:
    """The loop the head's preset gives with no flag (None: the head cannot be loaded here)."""
    import dataclasses

    from emofuse.heads import get_head
    from emofuse.train.recipes import resolve_loop

    with contextlib.suppress(EmofuseError, ImportError, OSError, TypeError, ValueError):
        return dataclasses.asdict(resolve_loop(get_head(head), preset)[0])
    return None


def train_command(
    run: Path,
    config: dict[str, Any] | None = None,
    cache: str | None = None,
    fold: int | None = None,
) -> str:
    """``emofuse train …`` that resumes ``run`` as it was trained; ``config``: its config.json
    (read when not given); ``cache``: another --cache to show (a moved cache's new place);
    ``fold``: a fold the command must train (the last call's --folds may not hold it). A config
    that cannot be read gives the bare advice."""
    if config is None:
        try:
            config = json.loads((run / "config.json").read_text())
        except (OSError, ValueError):
            return f"`emofuse train` for {run} with its original options"
    try:
        args = [
            "emofuse",
            "train",
            "--cache",
            cache or str(config["cache"]),
            "--split",
            config["split"],
        ]
        if config.get("lopo_val"):
            args += ["--lopo-val", config["lopo_val"]]
        args += ["--head", config["head"]]
        if config.get("preset"):
            args += ["--preset", config["preset"]]
        for key, value in (config.get("set") or {}).items():
            args += ["--set", f"{key}={value}"]
        loop, sources = config["loop"], config.get("loop_sources") or {}
        plain = _recipe_loop(config["head"], config.get("preset"))
        for name, value in loop.items():
            if plain is None and sources.get(name) in ("default", "recipe"):
                continue
            if plain is None or plain.get(name) != value:
                args += _flag(name, value)
        folds = list(config.get("folds") or [])  # the folds the last command trained
        if folds and fold is not None and fold not in folds:  # the fold to retrain is named too
            folds = sorted([*folds, fold])
        if folds:
            args += ["--folds", ",".join(str(k) for k in folds)]
        args += ["--out", str(run)]
    except (KeyError, TypeError, AttributeError):
        return f"`emofuse train` for {run} with its original options"
    return "`" + shlex.join(args) + "`"


def retrain_fold(fold_folder: Path) -> str:
    """``delete FOLD and rerun `emofuse train …` (it retrains that fold only)``: the advice for a
    fold whose files are damaged, with that fold among the command's --folds."""
    run = fold_folder.parent
    k = int(fold_folder.name.removeprefix("fold_")) if fold_folder.name[5:].isdigit() else None
    planned = planned_folds(run)
    if k is not None and planned and k not in planned:  # a stray copy: no fold to retrain
        return (
            f"{fold_folder.name} is no fold of the plan in {run / 'folds.json'} (folds "
            f"{','.join(map(str, planned))}): move {fold_folder} out of {run}, then rerun the same "
            "command"
        )
    return (
        f"delete {fold_folder} and rerun {train_command(run, fold=k)} (it retrains that fold only)"
    )


def planned_folds(run: Path) -> list[int]:
    """The fold numbers of ``run``'s folds.json ([] when it cannot be read: no claim made)."""
    import json

    try:
        folds = json.loads((run / "folds.json").read_text())["folds"]
        return sorted(int(f["fold"]) for f in folds)
    except (OSError, ValueError, KeyError, TypeError):
        return []
