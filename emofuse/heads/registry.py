"""Heads by name, or from a user's own file (``path/to/file.py:ClassName``).

Built-in heads are imported on first use so listing them stays cheap; a user head is loaded from its
file with importlib and must subclass ``emofuse.heads.base.Head`` (see that module's docstring).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from emofuse.errors import EmofuseError, cannot_read
from emofuse.heads.base import Head, InputDims

BUILTIN = {
    "tdfnet": "emofuse.heads.tdfnet:TDFNet",
    "coattention": "emofuse.heads.coattention:CoAttention",
    "audio": "emofuse.heads.baselines:AudioProbe",
    "text": "emofuse.heads.baselines:TextProbe",
    "concat": "emofuse.heads.baselines:ConcatProbe",
    "pooled": "emofuse.heads.pooled:PooledProbe",
}


def list_heads() -> list[str]:
    """Names of the built-in heads, in a stable order."""
    return list(BUILTIN)


def _check_head(cls: Any, where: str) -> type[Head]:
    if not (isinstance(cls, type) and issubclass(cls, Head)) or cls is Head:
        raise EmofuseError(
            f"{where} is not a head: subclass emofuse.heads.base.Head (see examples/custom_head.py)"
        )
    return cls


def _load_from_file(spec: str) -> type[Head]:
    file_part, _, class_name = spec.rpartition(":")
    path = Path(file_part).expanduser()
    if not path.is_file():
        raise EmofuseError(f"--head {spec}: no such file '{path}' (give path/to/file.py:ClassName)")
    if not class_name.isidentifier():
        raise EmofuseError(
            f"--head {spec}: {class_name!r} is not a class name; give the class after the colon "
            f"({path}:ClassName)"
        )
    # A stable module name per file lets dataclasses and pickling find the module again.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"emofuse_user_head_{digest}"
    module = sys.modules.get(module_name)
    if module is None:
        folder = str(path.resolve().parent)  # its sibling modules import as a script's would
        if folder not in sys.path:  # (last: never in place of an installed module)
            sys.path.append(folder)
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except OSError as err:  # the file (or a sibling it imports) may not be read: its mode
            del sys.modules[module_name]
            raise cannot_read(err.filename or path, err) from None
        except Exception as err:
            del sys.modules[module_name]
            raise EmofuseError(f"--head {spec}: importing {path} failed: {err}") from err
    if not hasattr(module, class_name):
        raise EmofuseError(f"--head {spec}: {path} defines no class '{class_name}'")
    return _check_head(getattr(module, class_name), f"--head {spec}")


def get_head(name_or_path: str) -> type[Head]:
    """The head class for a built-in name or a ``file.py:ClassName`` spec."""
    if name_or_path in BUILTIN:
        module_name, class_name = BUILTIN[name_or_path].split(":")
        return getattr(importlib.import_module(module_name), class_name)
    if ":" in name_or_path and name_or_path.rpartition(":")[0].endswith(".py"):
        return _load_from_file(name_or_path)
    raise EmofuseError(
        f"--head {name_or_path}: unknown head (built-in: {', '.join(BUILTIN)}; "
        "or give path/to/file.py:ClassName)"
    )


def build_head(
    name_or_path: str,
    dims: InputDims,
    n_classes: int,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Head:
    """Class lookup + config (preset, then overrides) + construction, in one call."""
    cls = get_head(name_or_path)
    return cls(cls.make_config(preset, overrides), dims, n_classes)


def head_streams(cls: type[Head], cfg: Any, spec: str) -> set[str]:
    """``cls.required_streams(cfg)`` checked: a set (or list) of stream names, never a bare string
    (iterated as characters it would ask for streams 's', 'p', …)."""
    try:
        streams = cls.required_streams(cfg)
    except NotImplementedError:  # a user head that does not say what it reads
        raise EmofuseError(
            f"head {spec}: it does not define required_streams; add a classmethod "
            "required_streams(cls, cfg) returning the stream names it reads, like "
            '{"speech", "text"} (see emofuse/heads/base.py)'
        ) from None
    if isinstance(streams, set | frozenset | list | tuple) and all(
        isinstance(s, str) and s for s in streams
    ):
        return set(streams)
    raise EmofuseError(
        f"head {spec}: its required_streams returned {type(streams).__name__} {streams!r}; it "
        'must return a set of stream names like {"speech", "text"}'
    )
