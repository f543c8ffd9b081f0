"""Progress bars: the one place that decides whether a bar is drawn.

A bar is drawn on a terminal only. With stderr redirected (a log file, ``nohup``, a batch job, a
pipe) every redraw would land in the log as another line of carriage returns, so there the bar is
off, as tqdm's own ``disable=None`` does; ``--quiet`` (``enabled=False``) turns it off everywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def stderr_is_terminal() -> bool:
    """Whether stderr (where bars go) is a terminal; False for a file, a pipe or a closed stream."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kw: Any) -> tqdm:
    """``tqdm(iterable, **kw)`` on stderr, drawn when ``enabled`` and stderr is a terminal."""
    return tqdm(iterable, disable=not (enabled and stderr_is_terminal()), **kw)
