"""A resume of a run folder: the finished folds were trained with these settings, on these
features (train_run calls ``early_cache_check`` before the plan, ``check_resume`` once the
settings are known)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emofuse.errors import EmofuseError
from emofuse.train.command import train_command
from emofuse.train.configseal import CONFIG_SEAL, check_config_seal
from emofuse.train.headcode import check_head_code
from emofuse.train.paths import absolute, absolute_head
from emofuse.train.rundir import finished_folds, fold_dir, read_run_config

# config.json keys that may change between a run and its resume without changing any result
RESUME_FREE = (
    "folds",
    "head_sha256",  # checked on its own (check_resume): runs made before do not record it
    "head_modules",  # likewise
    "device",
    "cache",
    "loop_sources",
    "model_dirs",
    "cache_digest",
    CONFIG_SEAL,
)


def _check_same_cache(out: Path, old: dict[str, Any], config: dict[str, Any]) -> None:
    """The resumed run's finished folds were trained on the features of this cache (its content
    digest, where the run recorded one); else one line saying which cache they came from."""
    was, now = old.get("cache_digest"), config.get("cache_digest")
    if was is not None and now is not None and was != now:  # a run made before it was recorded
        same = old.get("cache_fingerprint") == config.get(
            "cache_fingerprint"
        )  # has none: as before
        how = (
            f"content digest {str(was)[:12]}… then, {str(now)[:12]}… now: re-extracted or replaced "
            "with the same settings"
            if same
            else f"extraction fingerprint {str(old.get('cache_fingerprint'))[:12]}… then, "
            f"{str(config.get('cache_fingerprint'))[:12]}… now: another extraction put at its path"
        )
        if old.get("cache") and old["cache"] != config["cache"]:  # another --cache was given
            raise EmofuseError(
                f"run folder {out} was trained on the cache {old['cache']}, and --cache "
                f"{config['cache']} holds other features (digest {str(now)[:12]}…, not "
                f"{str(was)[:12]}…); give --cache {old['cache']} to resume, or train into a new "
                "--out"
            )
        raise EmofuseError(
            f"run folder {out} was trained on other contents of cache {config['cache']} ({how}); "
            "train into a new --out, or put the original cache back to resume"
        )


def early_cache_check(out: Path, cache: Any) -> None:
    """Before the plan is built from the cache (a split it cannot make would be blamed on
    --split): a resume on other features is named first."""
    path = out / "config.json"
    if not path.is_file() or not finished_folds(out):
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # check_resume names a damaged config
    if isinstance(old, dict) and cache.path:
        _check_same_cache(out, old, {
            "cache": absolute(cache.path), "cache_fingerprint": cache.fingerprint,
            "cache_digest": (getattr(cache, "meta", None) or {}).get("digest"),
        })  # fmt: skip


def check_resume(out: Path, config: dict[str, Any]) -> None:
    """Refuse to mix results of different settings in one run folder (a folder with no finished
    fold holds no result, so a corrected command simply starts it again)."""
    path = out / "config.json"
    if not path.is_file() or not finished_folds(out):
        return
    old = read_run_config(path)
    check_config_seal(path, old)  # after the checkpoint checks (train_run), which name more
    if isinstance(old.get("head"), str):  # recorded as typed before: the same file from here
        old["head"] = absolute_head(old["head"])
    _check_same_cache(out, old, config)
    if isinstance(old.get("head"), str):  # else the comparison below names it
        check_head_code(old["head"], old, out, "its finished folds were trained with")
    # --preset first: it is what the user typed, the head_config fields it set follow from it
    for key in sorted(set(old) | set(config), key=lambda k: (k != "preset", k)):
        if key in RESUME_FREE:
            continue
        if old.get(key) != config.get(key):
            was, now = old.get(key), config.get(key)
            flag = {"loop": "--{}", "head_config": "--set {}"}.get(key)
            if flag and isinstance(was, dict) and isinstance(now, dict):
                # one field, as its flag: not a dict of every field to compare by hand
                field = next(f for f in sorted(set(was) | set(now)) if was.get(f) != now.get(f))
                name = field.replace("_", "-") if key == "loop" else field
                key, was, now = flag.format(name), was.get(field), now.get(field)
            elif key == "preset":
                key = "--preset"
            raise EmofuseError(
                f"run folder {out} was made with different settings ({key}: {was!r} vs "
                f"{now!r}); use a new --out, or resume it with {train_command(out, old)}"
            )


FOLD_FILES = (
    "curves.jsonl",
    "checkpoint.pt",
    "predictions.csv",
    "val_predictions.csv",
    "metrics.json",
)


def check_unfinished_folds(out: Path, folds: list[int]) -> None:
    """An unfinished fold's folder is deleted and trained again from scratch: it must hold only
    what train writes there (a user's notes inside it were deleted without a word); else one line
    naming them, before anything is trained."""
    done = set(finished_folds(out))
    for k in folds:
        d = fold_dir(out, k)
        if k in done or not d.is_dir():
            continue
        stray = sorted(
            p.name for p in d.iterdir()
            if not (p.name.endswith(".tmp") or (p.name in FOLD_FILES and not _holds_files(p)))
        )  # fmt: skip
        if stray:
            raise EmofuseError(
                f"{d} (fold {k}, unfinished: it is trained again from scratch) holds what "
                f"emofuse does not write there ({', '.join(stray[:3])}); move that out, then "
                "rerun the same command"
            )


def _holds_files(path: Path) -> bool:
    """A folder with something in it (where train writes a file: a user's folder of notes)."""
    return path.is_dir() and not path.is_symlink() and any(path.iterdir())
