"""The registry: built-in names, user heads from a file (the README's example), clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emofuse.errors import EmofuseError
from emofuse.heads.base import Head
from emofuse.heads.registry import build_head, get_head, list_heads
from tests.helpers import DIMS, max_padding_diff, overfit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_head.py"


def test_every_builtin_head_resolves_with_presets() -> None:
    assert list_heads() == ["tdfnet", "coattention", "audio", "text", "concat", "pooled"]
    for name in list_heads():
        cls = get_head(name)
        assert issubclass(cls, Head) and cls.name == name
        assert {"small", "paper"} <= set(cls.presets)


def test_custom_head_example_loads_and_trains(batch16) -> None:
    spec = f"{EXAMPLE}:GatedMeanHead"
    cls = get_head(spec)
    assert cls.name == "gated-mean" and get_head(spec) is cls  # loaded once
    torch.manual_seed(0)
    head = build_head(spec, DIMS, 4, preset="small", overrides={"dropout": "0"})
    batch, labels = batch16
    before = torch.nn.functional.cross_entropy(head(batch), labels).item()
    loss, steps = overfit(head, batch, labels, steps=300, lr=1e-2)
    assert loss < 0.05 < before, f"loss {before:.3f} -> {loss:.3f} after {steps} steps"
    assert head.embed(batch).shape == (16, 32)
    assert max_padding_diff(head, batch) <= 1e-5


def test_custom_head_example_honours_every_layer_mix_option(batch16) -> None:
    spec = f"{EXAMPLE}:GatedMeanHead"
    batch, _ = batch16
    plain = build_head(spec, DIMS, 4, preset="small")
    normed = build_head(spec, DIMS, 4, preset="small", overrides={"layer_norm": "true"})
    assert not plain.speech_mix.normalize and normed.speech_mix.normalize
    assert normed.text_mix.normalize
    concat = build_head(spec, DIMS, 4, preset="small", overrides={"layer_mix": "concat"})
    s_layers, s_dim = DIMS.get("speech")
    assert concat.speech_proj.in_features == s_layers * s_dim  # every layer side by side
    assert concat(batch).shape == (16, 4)


def test_registry_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(EmofuseError, match="unknown head"):
        get_head("tdfnet2")
    with pytest.raises(EmofuseError, match="no such file"):
        get_head(f"{tmp_path}/missing.py:Head")
    with pytest.raises(EmofuseError, match="defines no class 'Nope'"):
        get_head(f"{EXAMPLE}:Nope")
    for empty in ("", " "):  # round-6 row 18: it said "no such file" of a file that exists
        with pytest.raises(EmofuseError, match=f"{empty!r} is not a class name"):
            get_head(f"{EXAMPLE}:{empty}")
    with pytest.raises(EmofuseError, match="is not a head"):
        get_head(f"{EXAMPLE}:GatedMeanConfig")
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    with pytest.raises(EmofuseError, match="importing .*broken.py failed"):
        get_head(f"{broken}:X")
