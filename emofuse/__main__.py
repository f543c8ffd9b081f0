"""``python -m emofuse`` (also what ``torchrun -m emofuse`` runs)."""

from emofuse.cli import main

main()
