"""Option types shared by several commands (one definition, so their limits cannot drift apart)."""

from __future__ import annotations

import click

# numpy's SeedSequence and torch take larger seeds, but scikit-learn and numpy's legacy seeding
# stop at 2**32 - 1; a negative seed is refused by numpy (a ValueError traceback before this)
SEED = click.IntRange(min=0, max=2**32 - 1)
