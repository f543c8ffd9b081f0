"""The pooled-statistics probe: it is the standardised linear probe, learns, and standardises with
training statistics only."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from emofuse.errors import EmofuseError
from emofuse.heads.base import InputDims
from emofuse.heads.pooled import Standardize
from emofuse.heads.registry import get_head
from tests.helpers import DIMS, max_padding_diff, overfit, params_without_grad


def build(preset: str = "small", dims: InputDims = DIMS, **overrides):
    torch.manual_seed(0)
    cls = get_head("pooled")
    return cls(cls.make_config(preset, overrides), dims, 4)


def test_reads_only_the_pooled_streams_and_keeps_batch_invariance(batch_mixed) -> None:
    cls = get_head("pooled")
    assert cls.required_streams(cls.make_config("small")) == {"speech_mean", "speech_std"}
    assert cls.required_streams(cls.make_config("small", {"stats": "mean"})) == {"speech_mean"}
    for head in (build().eval(), build(combine="mix").eval()):
        assert head(batch_mixed).shape == (5, 4)
        assert max_padding_diff(head, batch_mixed) <= 1e-5
    assert build(combine="mix").embed(batch_mixed).shape == (5, 64)  # [mean, std] of D = 32
    assert build(combine="mix", hidden=16).embed(batch_mixed).shape == (5, 16)


def test_standardize_uses_the_statistics_of_the_training_rows_only() -> None:
    g = torch.Generator().manual_seed(0)
    train = 3.0 + 5.0 * torch.randn(200, 2, 6, generator=g)
    other = 100.0 + torch.randn(50, 2, 6, generator=g)
    norm = Standardize((2, 6))
    norm.train()
    for part in train.split(32):  # batches of a training epoch
        norm(part)
    norm.eval()
    z = norm(train)
    assert torch.allclose(z.mean(0), torch.zeros(2, 6), atol=1e-4)
    assert torch.allclose(z.std(0, correction=0), torch.ones(2, 6), atol=1e-3)
    before = norm.count.clone()
    norm(other)  # eval rows never move the statistics
    assert torch.equal(norm.count, before)
    expected = (other - train.mean(0)) / train.std(0, correction=0)
    assert torch.allclose(norm(other), expected, rtol=1e-3, atol=1e-3)
    assert set(norm.state_dict()) == {"count", "total", "total_sq"}  # saved with checkpoints


def test_linear_preset_is_the_standardised_linear_probe(batch16) -> None:
    """hidden 0, one layer: logits = W z + b with z the z-scored [mean, std] of that layer."""
    batch, _ = batch16
    head = build(combine="mix", layer_mix="single", mix_index=1, dropout=0.0)
    head.train()
    head(batch)  # one training pass fixes the statistics
    head.eval()
    x = torch.cat([batch["speech_mean"], batch["speech_std"]], -1)  # (B, 3, 64)
    z = (x - x.mean(0)) / (x.std(0, correction=0) + 1e-5)
    expected = head.classifier(z[:, 1])
    assert torch.allclose(head(batch), expected, atol=1e-4)


def test_overfits_and_every_parameter_learns(batch16) -> None:
    batch, labels = batch16
    assert params_without_grad(build(combine="mix"), batch) == []
    loss, steps = overfit(build(combine="mix", dropout=0.0, hidden=32), batch, labels, 300, 3e-3)
    assert loss < 0.05, f"loss {loss:.3f} after {steps} steps"


def test_bad_options_are_one_line_errors() -> None:
    with pytest.raises(EmofuseError, match="stats=max"):
        build(stats="max")
    with pytest.raises(EmofuseError, match="hidden=-1"):
        build(combine="mix", hidden=-1)
    with pytest.raises(EmofuseError, match="'speech_mean' stream"):
        get_head("pooled")(get_head("pooled").make_config("small"), InputDims(speech=(3, 8)), 4)


def test_ensemble_averages_one_linear_probe_per_layer(batch16) -> None:
    """combine=ensemble: softmax(logits) is the mean over layers of each layer's own probe."""
    batch, labels = batch16
    head = build(dropout=0.0)  # the default
    head.train()
    head(batch)  # fixes the standardisation statistics
    head.eval()
    x = torch.cat([batch["speech_mean"], batch["speech_std"]], -1)  # (B, 3, 64)
    z = (x - x.mean(0)) / (x.std(0, correction=0) + 1e-5)
    per_layer = [
        torch.softmax(z[:, k] @ head.member_weight[k] + head.member_bias[k], -1) for k in range(3)
    ]
    assert torch.allclose(torch.softmax(head(batch), -1), sum(per_layer) / 3, atol=1e-5)
    assert head.embed(batch).shape == (16, 3 * 64)
    assert params_without_grad(build(combine="ensemble"), batch) == []
    loss, steps = overfit(build(combine="ensemble", dropout=0.0), batch, labels, 300, 3e-3)
    assert loss < 0.05, f"loss {loss:.3f} after {steps} steps"
    with pytest.raises(EmofuseError, match="combine=vote"):
        build(combine="vote")
    with pytest.raises(EmofuseError, match="hidden=8 needs --set combine=mix"):
        build(hidden=8)


def test_mix_options_need_combine_mix_and_old_runs_load_as_mix() -> None:
    for key, value in (("layer_mix", "single"), ("mix_index", 1), ("layer_norm", True)):
        with pytest.raises(EmofuseError, match=f"{key}={value} needs --set combine=mix"):
            build(**{key: value})
    cls = get_head("pooled")
    saved = dataclasses.asdict(cls.make_config("small", {"combine": "mix"}))
    del saved["combine"]  # a config.json written before the option existed
    assert cls.config_from_saved(saved).combine == "mix"
    assert cls.config_from_saved({**saved, "combine": "ensemble"}).combine == "ensemble"
