"""Baseline probes (audio, text, concat): the SUPERB recipe, both presets, invariance, training."""

from __future__ import annotations

import re

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
        head.probes["speech"].mix.weights.copy_(torch.tensor([0.5, -1.0, 2.0]))
    batch = make_batch(DIMS, [5, 8], [2, 2], seed=8)
    x = batch["speech"][0, :5]  # (T, L, D) real frames of utterance 0
    w = torch.softmax(torch.tensor([0.5, -1.0, 2.0]), 0)
    mixed = (x * w[None, :, None]).sum(1)  # (T, D)
    lin1, lin2 = head.probes["speech"].proj[0], head.classifier
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
        rows = head.probes["speech"].proj(head.probes["speech"].mix(x))  # (T, hidden)
        std = (rows.var(0, unbiased=False) + 1e-6).sqrt()  # eps keeps the gradient finite
        expected = torch.cat([rows.mean(0), std])
        assert torch.allclose(head.embed(batch)[0], expected, atol=1e-4)
    with pytest.raises(Exception, match="pool=max"):
        build("audio", pool="max")


@pytest.mark.parametrize("tier", ["phone", "syllable", "word"])
def test_audio_probe_on_a_segment_tier_reads_its_segments_and_frames_where_unaligned(tier) -> None:
    batch = make_batch(DIMS, [9, 12, 7], [4, 6, 3], [3, 4, 0], aligned=[False, True, True], seed=6)
    head = build("audio", speech_stream=tier, dropout=0.0).eval()
    assert type(head).required_streams(head.cfg) == {tier, "speech"}  # frames: the fallback
    frames = build("audio", dropout=0.0).eval()
    state = {
        k.replace(f"probes.{tier}.", "probes.speech."): v for k, v in head.state_dict().items()
    }
    frames.load_state_dict(state)  # the same weights, reading the frames
    with torch.no_grad():
        out, on_frames = head(batch), frames(batch)
        # utterance 0 is unaligned and utterance 2 has no segment: both read their frames
        assert torch.allclose(out[[0, 2]], on_frames[[0, 2]], atol=1e-5)
        assert not torch.allclose(out[1], on_frames[1], atol=1e-3)  # aligned: its segments
        other = dict(batch, speech=torch.randn_like(batch["speech"]))
        moved = head(other)
        assert torch.equal(moved[1], out[1]) and not torch.allclose(moved[0], out[0])
    assert max_padding_diff(head, batch) <= 1e-5


def test_audio_probe_on_every_granularity_concatenates_one_probe_per_stream(batch16) -> None:
    streams = "speech+phone+syllable+word"
    head = build("audio", speech_stream=streams).eval()
    assert type(head).required_streams(head.cfg) == {"speech", "phone", "syllable", "word"}
    assert list(head.probes) == streams.split("+")
    batch, labels = batch16
    assert head.embed(batch).shape == (16, 4 * 2 * 64)  # 4 probes, meanstd: 2 hidden each
    assert head.classifier.in_features == 4 * 2 * 64
    single = build("audio", speech_stream="word").eval()
    with torch.no_grad():  # each probe's part of the embedding is that stream's probe alone
        single.probes["word"].load_state_dict(head.probes["word"].state_dict())
        assert torch.allclose(head.embed(batch)[:, -128:], single.embed(batch), atol=1e-5)
    assert max_padding_diff(head, batch) <= 1e-5
    assert params_without_grad(head, batch) == []
    loss, steps = overfit(build("audio", speech_stream=streams, dropout=0.0), batch, labels,
                          steps=400, lr=3e-3)  # fmt: skip
    assert loss < 0.05, f"loss {loss:.3f} after {steps} steps"


@pytest.mark.parametrize("value", ["mfcc", "speech+speech", "speech+", "frame"])
def test_audio_probe_refuses_an_unknown_or_repeated_stream_in_one_line(value) -> None:
    from emofuse.errors import EmofuseError

    with pytest.raises(
        EmofuseError, match=re.escape(f"speech_stream={value}: choose speech, fbank, phone")
    ):
        build("audio", speech_stream=value)


def test_concat_reads_frames_only_and_old_audio_checkpoints_still_load() -> None:
    from emofuse.errors import EmofuseError

    with pytest.raises(EmofuseError, match="the concat head reads speech or fbank"):
        build("concat", speech_stream="word")
    head = build("audio")
    old = {k.replace("probes.speech.", "probe."): v for k, v in head.state_dict().items()}
    assert any(k.startswith("probe.") for k in old)  # as a run trained before `+` saved it
    fresh = build("audio", dropout=0.5)
    fresh.load_state_dict(old)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(),
                                                 head.state_dict().values(), strict=True))  # fmt: skip
