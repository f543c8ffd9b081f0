"""Why a resumed extract's options are not those its store or journal was extracted with: the
option named as typed (or the model whose files changed, or the dtype ``--dtype auto`` chose on
another machine), in one line saying how to resume."""

from __future__ import annotations

import re
from typing import Any

from emofuse.cache.schema import first_difference
from emofuse.errors import EmofuseError

CPU_BF16 = "EMOFUSE_CPU_BF16"  # encoders.common.BF16_ENV (not imported: the cache needs no torch)


class OptionsDiffer(EmofuseError):
    """The store was extracted with other options than this run's (if its metadata is intact)."""


def options_differ(
    stored_settings: dict[str, Any], settings: dict[str, Any], where: str
) -> OptionsDiffer:
    """The refusal for settings that differ from the stored ones (``where``: the store or its
    journal), naming the first option that differs."""
    options = {k: v for k, v in stored_settings.items() if k != "fingerprint"}
    ours = {k: v for k, v in settings.items() if k != "fingerprint"}
    # the option as typed first; the fingerprint's resolved values (models, layer indices)
    key, was, now = first_difference(
        *((options, ours) if options != ours else (stored_settings, settings))
    )
    option = key if "." in key else "--" + key.replace("_", "-")  # extract's option
    model = re.fullmatch(r"fingerprint\.(\w+)_model\.(?:revision|config)", key)
    if model:  # the same option, other files: the folder's weights were replaced
        folder = settings.get(f"{model[1]}_model")
        return OptionsDiffer(
            f"{where} was extracted with other files of the {model[1]} model {folder} "
            f"(content {str(was)[:19]}… then, {str(now)[:19]}… now: its files changed "
            f"since); restore them to resume, or delete {where} (or choose another "
            "output name) to extract from scratch"
        )
    then = stored_settings.get("fingerprint", {}).get("dtype")
    here = settings.get("fingerprint", {}).get("dtype")
    if then != here and options.get("dtype") == "auto":  # the same option, another CPU
        return OptionsDiffer(
            f"{where} was extracted in {then} (--dtype auto chose it on that machine), and "
            f"here it would compute in {here}; resume with --dtype auto and {CPU_BF16}="
            f"{int(then == 'bfloat16')} set (it forces auto's choice), or choose another "
            "output name"
        )
    return OptionsDiffer(
        f"{where} was extracted with {option} {was!r}, this run has {option} {now!r}; "
        "rerun with the same options to resume, or choose another output name"
    )
