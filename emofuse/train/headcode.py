"""The code a user's ``file.py:Class`` head runs, as digests a run records and later checks.

A run records the SHA-256 of the head file (``head_sha256``) and of every module that file
loaded from its own folder or below (``head_modules``, ``{absolute path: sha256}``: a
``helper.py`` beside the head that it imports). Resuming, predicting or drawing a run's t-SNE
with one of them edited would run other code than was trained, with the same shapes, so without
a word: each is refused in one line naming the file (:func:`check_head_code`).

Modules installed in an environment under that folder (``site-packages``) and emofuse itself are
not the user's head code and are left out. A module the head imports only later (inside a
method) is not loaded yet when the run records its digests: the head file's own ``import``
statements name it, and a sibling module (or package) of that name is recorded too. What such
a module imports in turn, only later, is not covered.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from pathlib import Path
from typing import Any

import emofuse
from emofuse.errors import EmofuseError
from emofuse.train.paths import head_file

_INSTALLED = ("site-packages", "dist-packages")


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def head_file_digest(spec: str) -> str | None:
    """sha256 of a ``file.py:Class`` head's file (None for a registry head or a file not found):
    the checkpoint records it, so a head file edited after training is named as the cause."""
    file = head_file(spec)
    return None if file is None else _sha256(Path(file))


def head_module_digests(spec: str) -> dict[str, str] | None:
    """``{absolute path: sha256}`` of the modules loaded from a file head's folder (the head
    file itself excepted: :func:`head_file_digest`); None for a registry head. Call it after the
    head is imported (resolve_head): it reads what the import left in ``sys.modules``."""
    file = head_file(spec)
    if file is None:
        return None
    head = Path(file).resolve()
    folder, own = head.parent, Path(emofuse.__file__).resolve().parent
    found: dict[str, str] = {}
    for module in list(sys.modules.values()):
        try:  # not getattr: it would import a lazy module (speechbrain's) to answer
            name = vars(module).get("__file__")
        except TypeError:  # an object without a __dict__ put in sys.modules
            continue
        if not isinstance(name, str):
            continue
        path = Path(name).resolve()
        if path == head or not path.is_relative_to(folder) or path.is_relative_to(own):
            continue
        if any(part in _INSTALLED for part in path.relative_to(folder).parts):
            continue
        digest = _sha256(path)
        if digest is not None:
            found[str(path)] = digest
    for name in _imported_names(head):  # imported inside a function: not loaded yet, still used
        for path in (folder / f"{name}.py", folder / name / "__init__.py"):
            digest = _sha256(path) if path.is_file() and str(path) not in found else None
            if digest is not None:
                found[str(path)] = digest
    return dict(sorted(found.items()))


def _imported_names(head: Path) -> set[str]:
    """The top-level names every ``import`` of the head file names, nested ones included (a
    sibling imported lazily, inside ``embed``, is in no ``sys.modules`` when training starts)."""
    try:
        tree = ast.parse(head.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def head_file_changed(spec: str, run: Path, what: str, file: str | None = None) -> EmofuseError:
    """A ``file.py:Class`` head whose file (or ``file``, a module it imports) is not the one
    ``run`` was trained with (its SHA-256 differs): ``what`` would run other code than was
    trained."""
    head = head_file(spec)
    name = f"head file {head}" if file is None else f"module {file} (imported by head file {head})"
    return EmofuseError(
        f"{name} changed since {run} was trained (its SHA-256 is not the recorded one), so "
        f"{what} other code; restore the file as it was when the run was trained, or retrain "
        "into a new --out"
    )


def changed_module(recorded: Any) -> str | None:
    """The first module of a run's ``head_modules`` whose file is gone or differs now."""
    if not isinstance(recorded, dict):
        return None  # a registry head, or a run made before they were recorded
    for path, digest in sorted(recorded.items()):
        if _sha256(Path(path)) != digest:
            return str(path)
    return None


def check_head_code(spec: str, recorded: dict[str, Any], run: Path, what: str) -> None:
    """Refuse in one line when the head file or a module it imported differs from the digests
    ``recorded`` (a config.json or a checkpoint: ``head_sha256``, ``head_modules``)."""
    was, now = recorded.get("head_sha256"), head_file_digest(spec)
    if was is not None and now is not None and now != was:
        raise head_file_changed(spec, run, what)
    module = changed_module(recorded.get("head_modules"))
    if module is not None:
        raise head_file_changed(spec, run, what, module)


def check_no_unrecorded_modules(spec: str, recorded: dict[str, Any], run: Path, what: str) -> None:
    """After a head ran: every module it loaded from its folder was recorded when ``run`` was
    trained. One imported by a computed name (``importlib.import_module("dyn" + "help")``) or by
    another module later is in no record, so its code then is unknown: refused, never used."""
    known = recorded.get("head_modules")
    if not isinstance(known, dict):  # a run of an older emofuse, or a registry head
        return
    extra = sorted(set(head_module_digests(spec) or {}) - set(known))
    if extra:
        raise EmofuseError(
            f"module {extra[0]} (loaded by head file {head_file(spec)} as it ran) was not recorded "
            f"when {run} was trained (imported by a computed name, or late by another module), "
            f"so the code {what} is unknown: import it by name in the head file (`import "
            f"{Path(extra[0]).stem}`) and train again into a new --out"
        )
