"""Baseline probes (audio, text, concat): the SUPERB recipe, both presets, invariance, training."""

from __future__ import annotations

import pytest
import torch

from emofuse.heads.base import InputDims
from emofuse.heads.registry import get_head
from tests.helpers import DIMS, make_batch, max_padding_diff, overfit, params_without_grad

NAMES = ["audio", "text", "concat"]


def build(name: str, preset: str = "small", dims: InputDims = DIMS, **overrides):
    torch.manual_seed(0)
    cls = get_head(name)
    return cls(cls.make_config(preset, overrides), dims, 4)


@pytest.mark.parametrize("preset", ["small", "paper"])
@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_padding_invariance(name, preset, batch_mixed) -> None:
    head = build(name, preset).eval()
    hidden = head.cfg.hidden
    assert hidden == {"small": 64, "paper": 256}[preset]
    assert head(batch_mixed).shape == (5, 4)
    width = hidden * (2 if head.cfg.pool == "meanstd" and name != "concat" else 1)  # concat: MLP
    assert head.embed(batch_mixed).shape == (5, width)
    assert max_padding_diff(head, batch_mixed) <= 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_overfits_a_batch_of_16_and_every_parameter_learns(name, batch16) -> None:
    batch, labels = batch16
    assert params_without_grad(build(name), batch) == []
    loss, steps = overfit(build(name, dropout=0.0), batch, labels, steps=400, lr=3e-3)
    assert loss < 0.05, f"{name}: loss {loss:.3f} after {steps} steps"


def test_audio_probe_is_the_superb_recipe() -> None:
    """logits = W2 · mean_t ReLU(W1 · sum_l softmax(w)_l h_{t,l}) over real frames only."""
    head = build("audio", "paper", dropout=0.0).eval()  # paper: SUPERB's mean pooling
    with torch.no_grad():
        head.probe.mix.weights.copy_(torch.tensor([0.5, -1.0, 2.0]))
    batch = make_batch(DIMS, [5, 8], [2, 2], seed=8)
    x = batch["speech"][0, :5]  # (T, L, D) real frames of utterance 0
    w = torch.softmax(torch.tensor([0.5, -1.0, 2.0]), 0)
    mixed = (x * w[None, :, None]).sum(1)  # (T, D)
    lin1, lin2 = head.probe.proj[0], head.classifier
    expected = lin2(torch.relu(lin1(mixed)).mean(0))  # (C,)
    with torch.no_grad():
        assert torch.allclose(head(batch)[0], expected, atol=1e-5)


def test_audio_probe_on_fbank_reads_only_fbank(batch_mixed) -> None:
    head = build("audio", speech_stream="fbank").eval()
    assert type(head).required_streams(head.cfg) == {"fbank"}
    other = dict(batch_mixed, speech=torch.randn_like(batch_mixed["speech"]))
    with torch.no_grad():
        assert torch.equal(head(batch_mixed), head(other))
        assert head(batch_mixed).shape == (5, 4)


@pytest.mark.parametrize("name", NAMES)
def test_meanstd_pooling_and_layer_norm_keep_padding_invariance(name, batch_mixed) -> None:
    head = build(name, pool="meanstd", layer_norm=True).eval()
    width = 64 if name == "concat" else 128  # concat's MLP brings it back to hidden
    assert head.embed(batch_mixed).shape == (5, width)
    assert head(batch_mixed).shape == (5, 4)
    assert max_padding_diff(head, batch_mixed) <= 1e-5


def test_meanstd_pooling_is_mean_and_std_of_the_projected_frames() -> None:
    head = build("audio", dropout=0.0, pool="meanstd").eval()
    batch = make_batch(DIMS, [5, 8], [2, 2], seed=8)
    x = batch["speech"][0, :5]  # (T, L, D) real frames of utterance 0
    with torch.no_grad():
        rows = head.probe.proj(head.probe.mix(x))  # (T, hidden)
        std = (rows.var(0, unbiased=False) + 1e-6).sqrt()  # eps keeps the gradient finite
        expected = torch.cat([rows.mean(0), std])
        assert torch.allclose(head.embed(batch)[0], expected, atol=1e-4)
    with pytest.raises(Exception, match="pool=max"):
        build("audio", pool="max")
