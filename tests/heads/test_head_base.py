"""Layer mixing, masked pooling and config parsing shared by every head."""

from __future__ import annotations

import pytest
import torch

from emofuse.errors import EmofuseError
from emofuse.heads import get_head
from emofuse.heads.base import InputDims, LayerMix, avg_max_pool, masked_max, masked_mean
from emofuse.heads.tdfnet import TDFNet


def test_weighted_mix_starts_as_the_mean_and_learns_towards_a_layer() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 8)  # (B, T, L, D)
    mix = LayerMix(4, "weighted")
    assert torch.allclose(mix(x), x.mean(2), atol=1e-6)
    target = x[:, :, 2]  # the signal lives in layer 2
    opt = torch.optim.SGD(mix.parameters(), lr=5.0)
    for _ in range(50):
        opt.zero_grad()
        ((mix(x) - target) ** 2).mean().backward()
        opt.step()
    weights = torch.softmax(mix.weights, 0)
    assert weights.argmax() == 2 and weights[2] > 0.8


def test_single_and_mean_mixes_have_no_parameters() -> None:
    x = torch.randn(3, 4, 8)  # (T, L, D)
    assert torch.equal(LayerMix(4, "single", 1)(x), x[:, 1])
    assert torch.equal(LayerMix(4, "single")(x), x[:, -1])
    assert torch.allclose(LayerMix(4, "mean")(x), x.mean(1))
    assert list(LayerMix(4, "mean").parameters()) == []
    assert list(LayerMix(1, "weighted").parameters()) == []  # one layer: nothing to weigh
    with pytest.raises(EmofuseError, match="mix_index=4"):
        LayerMix(4, "single", 4)


def test_a_layer_index_without_the_single_mix_is_refused_not_ignored() -> None:
    """Round-7 audit: `--set mix_index=5` with the default weighted mix was accepted, recorded in
    config.json and ignored."""
    cls = get_head("audio")
    with pytest.raises(EmofuseError, match=r"mix_index=5 picks a layer for layer_mix=single only"):
        cls.make_config("small", {"mix_index": "5"})
    assert cls.make_config("small", {"mix_index": "1", "layer_mix": "single"}).mix_index == 1


def test_concat_mix_keeps_every_layer_and_every_head_sizes_its_projection_from_it() -> None:
    x = torch.randn(3, 4, 8)  # (T, L, D)
    mix = LayerMix(4, "concat")
    assert torch.equal(mix(x), x.reshape(3, 32)) and mix.out_dim(8) == 32
    assert LayerMix(4, "weighted").out_dim(8) == 8 and LayerMix(1, "concat").out_dim(8) == 8
    dims = InputDims(speech=[3, 16], text=[2, 12], speaker=8)
    batch = {
        "speech": torch.randn(2, 5, 3, 16), "speech_mask": torch.ones(2, 5, dtype=torch.bool),
        "text": torch.randn(2, 4, 2, 12), "text_mask": torch.ones(2, 4, dtype=torch.bool),
        "speaker": torch.randn(2, 8),
    }  # fmt: skip
    for name in ("tdfnet", "coattention", "audio", "concat"):
        cls = get_head(name)
        overrides = (
            {"layer_mix": "concat", "granularities": ["frame"]}
            if name == "coattention"
            else {"layer_mix": "concat"}
        )
        model = cls(cls.make_config("small", overrides), dims, 4).eval()
        assert model(model.prepare(batch)).shape == (2, 4), name


def test_normalized_mix_puts_layers_of_any_scale_on_one_footing() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 8)  # (B, T, L, D)
    scaled = x * torch.tensor([1.0, 3.0, 10.0, 100.0])[:, None]  # layer 3 is 100x larger
    ln = torch.nn.functional.layer_norm(x, (8,))
    for mode, expected in (("mean", ln.mean(2)), ("single", ln[:, :, 1])):
        mix = LayerMix(4, mode, 1, normalize=True)
        assert torch.allclose(mix(scaled), expected, atol=1e-4)  # the scale is gone
    last = LayerMix(4, "single", -1, normalize=True)  # negative index: the last layer
    assert torch.allclose(last(scaled), ln[:, :, 3], atol=1e-4)
    weighted = LayerMix(4, "weighted", normalize=True)
    assert torch.allclose(weighted(scaled), ln.mean(2), atol=1e-4)
    # per row: padding rows (zeros) stay zero and never change a real row
    padded = torch.cat([scaled, torch.zeros(2, 3, 4, 8)], dim=1)
    assert torch.allclose(weighted(padded)[:, :5], weighted(scaled), atol=1e-6)
    assert torch.equal(weighted(padded)[:, 5:], torch.zeros(2, 3, 8))
    assert not LayerMix(4, "mean").normalize  # off unless asked for (HeadConfig.layer_norm)


def test_input_dims_accept_speaker_width_in_any_form() -> None:
    for speaker in (192, (192,), (1, 192), [1, 192]):
        dims = InputDims(speech=[2, 32], speaker=speaker)
        assert dims.speaker == (1, 192) and dims.speech == (2, 32)
    assert dims.as_dict() == {"speech": [2, 32], "speaker": [1, 192]}
    with pytest.raises(EmofuseError, match="'text' stream"):
        dims.get("text")


def test_masked_pooling_ignores_padding() -> None:
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[-2.0], [-4.0], [-6.0]]])  # (2, 3, 1)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert masked_mean(x, mask).flatten().tolist() == [2.0, -4.0]
    assert masked_max(x, mask).flatten().tolist() == [3.0, -2.0]
    empty = masked_max(x, torch.zeros(2, 3, dtype=torch.bool))
    assert empty.abs().sum() == 0  # no real rows: zeros, not -inf
    assert avg_max_pool(x, mask).shape == (2, 2)


def test_config_overrides_parse_strings_and_typed_values() -> None:
    cfg = TDFNet.make_config(
        "small",
        {
            "use_mt": "false",
            "max_speech_len": "none",
            "speech_layers": "[3, 6,9]",
            "dropout": "0.2",
        },
    )
    assert cfg.use_mt is False and cfg.max_speech_len is None
    assert cfg.speech_layers == [3, 6, 9] and cfg.dropout == 0.2
    assert cfg.d_model == 64  # from the preset
    again = TDFNet.make_config(None, {"speech_layers": [1], "use_dst": False, "n_blocks": 1})
    assert again.speech_layers == [1] and again.use_dst is False and again.d_model == 768
    with pytest.raises(EmofuseError, match="no such option"):
        TDFNet.make_config("small", {"width": "3"})
    with pytest.raises(EmofuseError, match="n_blocks"):
        TDFNet.make_config("small", {"n_blocks": "two"})
    with pytest.raises(EmofuseError, match="use_mt"):
        TDFNet.make_config("small", {"use_mt": "maybe"})
    with pytest.raises(EmofuseError, match="layer_mix"):
        TDFNet.make_config("small", {"layer_mix": "max"})
    with pytest.raises(EmofuseError, match="unknown preset 'huge'"):
        TDFNet.make_config("huge")
