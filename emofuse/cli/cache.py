"""CLI commands for the cache area (thin: parse options, call the library, print)."""

from __future__ import annotations

import click  # noqa: F401

COMMANDS: list = []
