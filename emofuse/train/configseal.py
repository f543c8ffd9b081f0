"""A run's config.json sealed with the sha256 of its contents, so that an edit made after the run
wrote it is found even where no checkpoint or prediction file contradicts it (a top-level seed,
the preset's name). Runs written before the seal have none and are read as before."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from emofuse.errors import EmofuseError
from emofuse.fileio import write_json

CONFIG_SEAL = "config_sha256"  # sha256 of the rest of config.json, as the run wrote it


def write_run_config(path: Path, config: dict[str, Any]) -> None:
    """A run's config.json, sealed: an edit is found by :func:`check_config_seal`."""
    # as it will be read back: JSON turns tuples into lists and int keys into strings
    body = json.loads(json.dumps({k: v for k, v in config.items() if k != CONFIG_SEAL}))
    write_json(path, {**body, CONFIG_SEAL: _digest(body)})


def check_config_seal(path: Path, config: dict[str, Any]) -> None:
    """One line when config.json no longer matches its seal (an older run has none): called
    after the checks that can name what was edited and the value to restore."""
    recorded = config.get(CONFIG_SEAL)
    if recorded is None:
        return
    if _digest({k: v for k, v in config.items() if k != CONFIG_SEAL}) != recorded:
        raise EmofuseError(
            f"{path} was edited after the run wrote it (it no longer matches the checksum it "
            "records, so its settings may not be what the folds were made with); restore it, "
            "or train again into a new --out"
        )


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


METRICS_SEAL = "fields_sha256"  # a fold's metrics.json: its fields no other file can check
SEALED_FIELDS = ("fold", "test_set", "best_epoch", "epochs_run", "minutes")


def seal_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with the sha256 of the fields the report shows that no prediction file or
    checkpoint can contradict (UA, WA and F1 are checked against predictions.csv)."""
    return {**metrics, METRICS_SEAL: _digest({k: metrics.get(k) for k in SEALED_FIELDS})}


def metrics_edited(metrics: dict[str, Any]) -> bool:
    """A sealed metrics.json whose sealed fields changed since (an older fold has no seal)."""
    recorded = metrics.get(METRICS_SEAL)
    body = json.loads(json.dumps({k: metrics.get(k) for k in SEALED_FIELDS}))
    return recorded is not None and recorded != _digest(body)
