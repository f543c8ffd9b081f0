"""Training recipes: the loop each head and preset trains with unless a flag says otherwise.

Resolution, field by field: ``LoopConfig``'s defaults (the papers' protocol: AdamW, lr 1e-4,
batch 32, at most 20 epochs, patience 3, constant lr, selection on validation loss), then the
head's recipe for the chosen preset (``Head.recipes[preset]``; key ``None`` = no ``--preset``),
then the command-line flags that were given (a recipe's warm-up is shortened to fit a
smaller ``--epochs``). The run's config.json records the resolved loop and,
per field, where its value came from (``default`` | ``recipe`` | ``flag``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from emofuse.errors import EmofuseError
from emofuse.train.config import LoopConfig

LOOP_FIELDS = tuple(f.name for f in dataclasses.fields(LoopConfig))


def recipe_of(head_cls: type, preset: str | None) -> dict[str, Any]:
    """The head's loop settings for ``preset`` (empty: the papers' protocol)."""
    recipes = getattr(head_cls, "recipes", {}) or {}
    recipe = dict(recipes.get(preset, {}))
    unknown = sorted(set(recipe) - set(LOOP_FIELDS))
    if unknown:  # a user head's typo must not pass silently
        raise EmofuseError(
            f"head {getattr(head_cls, 'name', head_cls.__name__)}: recipe for preset {preset!r} "
            f"has unknown loop field(s) {', '.join(unknown)} (fields: {', '.join(LOOP_FIELDS)})"
        )
    return recipe


def resolve_loop(
    head_cls: type, preset: str | None, flags: dict[str, Any] | None = None
) -> tuple[LoopConfig, dict[str, str]]:
    """(LoopConfig, {field: "default" | "recipe" | "flag"}) for a head, preset and given flags."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    unknown = sorted(set(flags) - set(LOOP_FIELDS))
    if unknown:
        raise EmofuseError(f"unknown loop option(s) {', '.join(unknown)}")
    recipe = recipe_of(head_cls, preset)
    values = {**recipe, **flags}
    sources = {
        name: "flag" if name in flags else "recipe" if name in recipe else "default"
        for name in LOOP_FIELDS
    }
    if "warmup_epochs" not in flags and "epochs" in flags:
        # a recipe's warm-up yields to a shorter --epochs (a 2-epoch smoke run must not fail on
        # the recipe's 2 warm-up epochs); a --warmup-epochs given with it is still checked
        values["warmup_epochs"] = min(values.get("warmup_epochs", 0), max(flags["epochs"] - 1, 0))
    loop = LoopConfig(**values)
    loop.validate()
    return loop, sources


def describe_loop(loop: LoopConfig) -> str:
    """One line for `emofuse heads`: the settings that differ between recipes."""
    parts = [
        f"lr {loop.lr:g}",
        f"bs {loop.batch_size}",
        f"≤{loop.epochs} ep",
        f"patience {loop.patience}",
        loop.schedule + (f"+{loop.warmup_epochs}wu" if loop.warmup_epochs else ""),
        f"wd {loop.weight_decay:g}",
        f"select {loop.select}",
    ]
    if loop.class_weights:
        parts.append("class-weights")
    if loop.grad_clip:
        parts.append(f"clip {loop.grad_clip:g}")
    if loop.mixup:
        parts.append(f"mixup {loop.mixup:g}")
    if loop.ema:
        parts.append(f"ema {loop.ema:g}")
    return ", ".join(parts)
