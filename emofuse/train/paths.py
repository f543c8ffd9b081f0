"""Paths a run folder records, made absolute so the run works from any working directory.

config.json used to keep ``--cache``, a user head's ``file.py:Class`` and (through the cache's
settings) the model folders as they were typed: ``emofuse report --tsne`` or ``emofuse predict``
run from another folder then said the cache or a model was gone. A run now records

- ``cache``: the cache's absolute path;
- ``head``: ``/abs/file.py:Class`` for a head read from a file (registry names are unchanged);
- ``model_dirs``: the absolute folder of every local model whose path the cache's settings record
  relative (the settings themselves stay as extract wrote them: they are compared with the
  fingerprint of the features predict makes). Predict uses them where the recorded path does not
  exist from its working directory, and checks that their weights are the same.

Runs made before record these as typed: a relative path that does not exist from here is a
one-line error saying so (:func:`relative_path_error`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from emofuse.errors import EmofuseError

MODEL_KEYS = ("speech_model", "text_model", "speaker_model")


def absolute(path: str | os.PathLike) -> str:
    """``path`` made absolute against the working directory (symlinks kept, ``~`` expanded)."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def head_file(spec: str) -> str | None:
    """The file of a ``path/to/file.py:Class`` head spec, None for a registry name."""
    file, sep, _cls = spec.rpartition(":")
    return file if sep and file.endswith(".py") else None


def absolute_head(spec: str) -> str:
    """``spec`` with the file of a ``file.py:Class`` head made absolute."""
    file = head_file(spec)
    return spec if file is None else f"{absolute(file)}:{spec.rpartition(':')[2]}"


def model_dirs(settings: dict[str, Any] | None, cache_path: str | os.PathLike | None) -> dict:
    """{model key: absolute folder} for the local models the cache's ``settings`` record by a
    relative path: found from the working directory (where extract usually ran), else beside the
    cache. Hub ids and absolute paths need nothing; a folder found nowhere is left out."""
    from emofuse.encoders.common import is_local

    found = {}
    for key in MODEL_KEYS:
        value = (settings or {}).get(key)
        if not value or value == "none" or not is_local(value):
            continue
        path = Path(value).expanduser()
        if path.is_absolute():
            continue
        bases = [Path.cwd()] + ([Path(absolute(cache_path)).parent] if cache_path else [])
        for base in bases:
            if (base / path).is_dir():
                found[key] = absolute(base / path)
                break
    return found


def relative_path_error(run: Path, what: str, path: str, fix: str) -> EmofuseError:
    """The one line for a run (made before paths were recorded absolute) whose ``what`` is the
    relative ``path`` that does not exist from this working directory."""
    return EmofuseError(
        f"{run} records the {what} as the relative path {path} (as typed when it was made), which "
        f"does not exist from {Path.cwd()}; {fix}"
    )
