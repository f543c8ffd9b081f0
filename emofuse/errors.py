"""User-facing errors.

Anything a user can cause (missing file, bad audio, wrong cache, bad option) is raised as an
``EmofuseError`` whose message is ONE line naming the file / utterance / option and what to do.
The CLI prints ``error: <message>`` and exits with status 2 — never a traceback.
"""

from __future__ import annotations


class EmofuseError(Exception):
    """A problem the user can fix; ``str(err)`` is the one-line message shown to them."""

    exit_code = 2
