"""The user the ``unprivileged`` fixture runs blocks as (root ignores permission bits)."""

from __future__ import annotations

import os
from pathlib import Path

NOBODY = 65534  # nobody's uid and gid


def give_to_user(tree: Path) -> None:
    """Make ``tree`` (a file or a folder and all in it) that user's own, as a user's own run or
    store is, so that only the mode a test sets stands in the way (a no-op when not root)."""
    if os.geteuid() != 0:
        return
    for path in [tree, *tree.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
