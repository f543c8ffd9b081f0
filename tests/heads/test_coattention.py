"""Multi-level co-attention head: every granularity subset, unaligned fallback, invariance."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from emofuse.errors import EmofuseError
from emofuse.heads.base import InputDims
from emofuse.heads.coattention import CoAttention
from emofuse.streams import GRANULARITIES
from tests.helpers import DIMS, make_batch, max_padding_diff, overfit, params_without_grad

SUBSETS = [
    list(c)
    for r in range(1, len(GRANULARITIES) + 1)
    for c in itertools.combinations(GRANULARITIES, r)
]


def small(**overrides) -> CoAttention:
    torch.manual_seed(0)
    return CoAttention(CoAttention.make_config("small", overrides), DIMS, 4)


def test_shapes_and_required_streams(batch_mixed) -> None:
    head = small().eval()
    assert head(batch_mixed).shape == (5, 4)
    assert head.embed(batch_mixed).shape == (5, head.cfg.hidden)
    assert CoAttention.required_streams(head.cfg) == {"speech", "text", "phone", "syllable", "word"}
    cfg = CoAttention.make_config("small", {"granularities": "frame,word"})
    assert CoAttention.required_streams(cfg) == {"speech", "text", "word"}


@pytest.mark.parametrize("granularities", ["frame,phone,syllable,word", "word", "frame"])
def test_padding_invariance(granularities, batch_mixed) -> None:
    head = small(granularities=granularities)
    assert max_padding_diff(head, batch_mixed) <= 1e-5


def test_paper_preset_shapes_and_padding_invariance() -> None:
    dims = InputDims(speech=(1, 1024), text=(1, 768), phone=(1, 1024), syllable=(1, 1024),
                     word=(1, 1024))  # fmt: skip
    torch.manual_seed(0)
    head = CoAttention(CoAttention.make_config("paper"), dims, 4)
    batch = make_batch(dims, [6, 13, 3], [4, 8, 2], [2, 5, 0], [True, True, False], seed=5)
    with torch.no_grad():
        assert head.eval()(batch).shape == (3, 4)
    assert max_padding_diff(head, batch) <= 1e-5


def test_unaligned_utterance_uses_its_frames_in_segment_branches() -> None:
    """A 'phone' branch on an unaligned utterance equals a 'frame' branch with the same weights."""
    batch = make_batch(DIMS, [9, 12], [4, 6], [3, 4], aligned=[False, True], seed=6)
    phone = small(granularities="phone").eval()
    frame = small(granularities="frame").eval()
    state = {
        k.replace("branches.phone", "branches.frame"): v for k, v in phone.state_dict().items()
    }
    frame.load_state_dict(state)
    with torch.no_grad():
        p, f = phone(batch), frame(batch)
    assert torch.allclose(p[0], f[0], atol=1e-6)  # unaligned: frames, whatever its segments hold
    assert not torch.allclose(p[1], f[1], atol=1e-3)  # aligned: its own phone segments

    # an aligned utterance with no segments at this granularity falls back the same way
    batch["aligned"] = torch.tensor([True, True])
    batch["phone_mask"][0] = False
    with torch.no_grad():
        assert torch.allclose(phone(batch)[0], f[0], atol=1e-6)


@pytest.mark.parametrize("granularities", SUBSETS, ids=lambda g: "+".join(g))
def test_trains_with_every_granularity_subset(granularities, batch16) -> None:
    batch, labels = batch16  # 3 of the 16 have no segments, 2 more are unaligned
    head = small(granularities=granularities, dropout=0.0)
    before = F.cross_entropy(head(batch), labels).item()
    loss, _ = overfit(head, batch, labels, steps=8, lr=3e-3, target=0.0)
    assert loss < before and torch.isfinite(torch.tensor(loss))


def test_overfits_a_batch_of_16(batch16) -> None:
    batch, labels = batch16
    loss, steps = overfit(small(dropout=0.0), batch, labels, steps=300)
    assert loss < 0.05, f"loss {loss:.3f} after {steps} steps"


def test_gradient_reaches_every_parameter(batch16) -> None:
    assert params_without_grad(small(), batch16[0]) == []


def test_batch_where_no_utterance_has_segments() -> None:
    batch = make_batch(DIMS, [7, 10], [3, 5], [0, 0], aligned=[False, False], seed=7)
    head = small(granularities="word,syllable")
    batch["word"] = batch["word"][:, :0]  # the data layer may pad to zero segment rows
    batch["word_mask"] = batch["word_mask"][:, :0]
    logits = head(batch)
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    logits.sum().backward()


def test_bad_options() -> None:
    with pytest.raises(EmofuseError, match="granularities"):
        CoAttention.make_config("small", {"granularities": "frame,sentence"})
    with pytest.raises(EmofuseError, match="granularities"):
        CoAttention.make_config("small", {"granularities": ""})
    dims = InputDims(speech=(3, 32), text=(2, 24), word=(2, 32))
    with pytest.raises(EmofuseError, match="same speech_layers"):
        CoAttention(CoAttention.make_config("small", {"granularities": "word"}), dims, 4)


def test_attention_branch_fusion_weights_the_branches_and_keeps_the_mlp_width(batch_mixed) -> None:
    from emofuse.heads.base import count_parameters

    concat = small()
    attention = small(branch_fusion="attention")
    d, h, g = concat.cfg.d_model, concat.cfg.hidden, len(GRANULARITIES)
    # the MLP reads one branch's 4d instead of all G branches' 4d G; the scorer adds W, b and w
    assert attention.mlp[0].in_features == 4 * d and concat.mlp[0].in_features == 4 * d * g
    scorer = 4 * d * h + h + h
    assert count_parameters(attention) == count_parameters(concat) - 4 * d * (g - 1) * h + scorer
    attention.eval()
    assert attention(batch_mixed).shape == (5, 4)
    branches = torch.randn(5, g, 4 * d)
    w = attention.branch_weights(branches)
    assert w.shape == (5, g) and torch.allclose(w.sum(1), torch.ones(5))
    # the embedding is the MLP of the weighted sum of the branch vectors
    expected = torch.softmax(attention.branch_score(branches).squeeze(-1), -1)
    assert torch.allclose(w, expected)
    assert max_padding_diff(attention, batch_mixed) <= 1e-5
    assert params_without_grad(attention, batch_mixed) == []
    with pytest.raises(EmofuseError, match="branch_fusion=sum: choose concat or attention"):
        small(branch_fusion="sum")


def test_attention_branch_fusion_overfits_a_batch_of_16(batch16) -> None:
    batch, labels = batch16
    loss, steps = overfit(small(branch_fusion="attention", dropout=0.0), batch, labels, steps=300)
    assert loss < 0.05, f"loss {loss:.3f} after {steps} steps"
