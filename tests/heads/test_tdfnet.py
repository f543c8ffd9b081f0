"""TDFNet: shapes, padding invariance, overfitting, gradients, the shared GRU and the ablations."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

from emofuse.errors import EmofuseError
from emofuse.heads.base import InputDims, count_parameters
from emofuse.heads.tdfnet import TDFNet, halve_mask
from tests.helpers import DIMS, make_batch, max_padding_diff, overfit, params_without_grad

PAPER_DIMS = InputDims(speech=(1, 1024), text=(1, 768), speaker=192)


def small(**overrides) -> TDFNet:
    torch.manual_seed(0)
    return TDFNet(TDFNet.make_config("small", overrides), DIMS, 4)


@pytest.fixture(scope="module")
def paper_head() -> TDFNet:
    torch.manual_seed(0)
    return TDFNet(TDFNet.make_config("paper"), PAPER_DIMS, 4).eval()


def test_halve_mask_matches_the_conv_output_length() -> None:
    mask = torch.arange(7)[None, :] < torch.tensor([[7], [4], [1]])  # lengths 7, 4, 1
    halved = halve_mask(mask)
    conv = torch.nn.Conv1d(1, 1, 3, stride=2, padding=1)
    assert halved.shape[1] == conv(torch.zeros(1, 1, 7)).shape[-1] == 4
    assert halved.sum(1).tolist() == [4, 2, 1]  # ceil(len / 2): the rows computed from real input


def test_small_shapes_and_embedding(batch_mixed) -> None:
    head = small().eval()
    logits, emb = head(batch_mixed), head.embed(batch_mixed)
    assert logits.shape == (5, 4) and emb.shape == (5, head.cfg.fusion_dim)
    assert torch.isfinite(logits).all()


def _ablations():
    return {
        "full": {},
        "audio": {"paths": "audio"},
        "text": {"paths": "text"},
        "no_dst": {"use_dst": False},
        "no_mt": {"use_mt": False},
        "no_me": {"speech_stream": "fbank"},
        "one_block_mean": {"n_blocks": 1, "layer_mix": "mean"},
    }


@pytest.mark.parametrize("variant", list(_ablations()))
def test_padding_invariance_small_and_ablations(variant, batch_mixed) -> None:
    head = small(**_ablations()[variant])
    assert max_padding_diff(head, batch_mixed) <= 1e-5


def test_truncation_to_max_lengths_is_per_utterance() -> None:
    head = small(max_speech_len=8, max_text_len=3).eval()
    long = make_batch(DIMS, [20, 5], [9, 2], seed=3)
    cut = dict(long)
    cut["speech"], cut["speech_mask"] = long["speech"][:, :8], long["speech_mask"][:, :8]
    cut["text"], cut["text_mask"] = long["text"][:, :3], long["text_mask"][:, :3]
    with torch.no_grad():
        full, truncated, untouched = head(long), head(cut), small().eval()(long)
    assert torch.allclose(full, truncated, atol=1e-6)
    # the limits matter: without them the long utterance's logits differ
    assert not torch.allclose(untouched[0], small(max_speech_len=8, max_text_len=3).eval()(long)[0])


def test_paper_preset_shapes_and_padding_invariance(paper_head) -> None:
    batch = make_batch(PAPER_DIMS, [5, 17, 2], [4, 9, 1], seed=4)
    with torch.no_grad():
        assert paper_head(batch).shape == (3, 4)
        assert paper_head.embed(batch).shape == (3, 768)
    assert max_padding_diff(paper_head, batch) <= 1e-5


def _attn(w: int, ffn: int) -> int:  # q, kv, out projections; two LayerNorms; the FFN
    return 4 * w * w + 4 * w + 4 * w + 2 * w * ffn + ffn + w


def _gru(i: int, h: int) -> int:
    return 3 * h * (i + h) + 6 * h


def test_paper_parameter_count_follows_the_equations() -> None:
    """Count from the paper's structure (d=768, 12 heads, FFN 4096, N=2, f=192), built on meta."""
    with torch.device("meta"):
        head = TDFNet(TDFNet.make_config("paper"), PAPER_DIMS, 4)
    d, ffn, f, c, k = 768, 4096, 192, 4, 3
    me = 1024 * d + d + 768 * d + d
    dst = 2 * 2 * _attn(d, ffn)  # two global layers per modality
    for i in (1, 2):
        w_in, w = d // 2 ** (i - 1), d // 2**i
        dst += 2 * (w_in * w * k + w) + 2 * _attn(w, ffn) + _gru(w, 2 * w) + _gru(2 * w, w)
    mt = 4 * _attn(d, ffn)  # C_AT, C_TA, two layers over [A; T]
    o = 8 * d + (6 * d + f) + (2 * d + d)  # eq. 10: A,T,A',T' + U + D_1,H_1,D_2,H_2
    assert head.o_dim == o == 13248
    mfc = o * o + o * d + d
    assert count_parameters(head) == me + dst + mt + mfc + d * c + c
    print(f"tdfnet paper preset (1024/768/192 -> 4 classes): {count_parameters(head):,} parameters")


def test_overfits_a_batch_of_16(batch16) -> None:
    batch, labels = batch16
    head = small(dropout=0.0)
    loss, steps = overfit(head, batch, labels, steps=300)
    assert loss < 0.05, f"loss {loss:.3f} after {steps} steps"


@pytest.mark.parametrize("variant", ["full", "no_me", "audio"])
def test_gradient_reaches_every_parameter(variant, batch16) -> None:
    head = small(**_ablations()[variant])
    assert params_without_grad(head, batch16[0]) == []


def test_gru_is_one_module_shared_by_both_paths(batch_mixed) -> None:
    head = small()
    grus = [m for m in head.modules() if isinstance(m, torch.nn.GRU)]
    assert len(grus) == 2 * head.cfg.n_blocks  # GRU_1, GRU_2 per block, not per modality
    used: dict[str, set[int]] = {"speech": set(), "text": set()}
    current = []
    hooks = [g.register_forward_hook(lambda m, i, o: used[current[-1]].add(id(m))) for g in grus]
    seqs = head.inputs(batch_mixed)
    gru_params = [p for g in grus for p in g.parameters()]
    for modality in ("speech", "text"):
        current.append(modality)
        head.zero_grad()
        _, levels = head.dst.path(modality, *seqs[modality])
        levels[-1][0].sum().backward(retain_graph=True)
        # every GRU weight gets a gradient from this path alone
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gru_params), modality
        other = "text" if modality == "speech" else "speech"
        assert all(p.grad is None for p in head.dst.convs[0][other].parameters())
    for h in hooks:
        h.remove()
    assert used["speech"] == used["text"] == {id(g) for g in grus}


def _component(name: str) -> str:
    """Group parameters by module; DST parts by modality, its GRUs on their own."""
    if name.startswith("dst."):
        for part in (".speech.", ".text."):
            if part in name:
                return "dst" + part.rstrip(".")
        return "dst.gru"
    return name.split(".")[0]


def _components(head: TDFNet) -> Counter:
    counts: Counter = Counter()
    for name, p in head.named_parameters():
        counts[_component(name)] += p.numel()
    return counts


@pytest.mark.parametrize(
    "variant, removed, o_removed",
    [
        # o_removed in units of (d, f, sum of level pools 2*d/2^i per modality)
        ("no_mt", {"mt"}, (6, 0, 0)),
        ("no_dst", {"dst.speech", "dst.text", "dst.gru"}, (4, 0, 2)),
        ("audio", {"text_mix", "text_proj", "dst.text", "mt"}, (2 + 2 + 6, 0, 1)),
        ("text", {"speech_mix", "speech_proj", "dst.speech", "mt"}, (2 + 2 + 6, 1, 1)),
        ("no_me", set(), (0, 0, 0)),
    ],
)
def test_each_ablation_removes_exactly_its_module(variant, removed, o_removed) -> None:
    # the weighted layer mix has a parameter per modality, so every module shows in the counts
    mix = {"layer_mix": "weighted"}
    full, ablated = small(**mix), small(**mix, **_ablations()[variant])
    cfg = full.cfg
    d, fd, f = cfg.d_model, cfg.fusion_dim, DIMS.get("speaker")[1]
    levels = sum(2 * d // 2**i for i in range(1, cfg.n_blocks + 1))
    full_c, abl_c = _components(full), _components(ablated)
    assert removed <= set(full_c) and not removed & set(abl_c)
    changed = {"mfc"}
    if variant == "no_me":  # the speech projection now reads 80-d-like fbank rows, one layer
        changed |= {"speech_proj", "speech_mix"}
        (sl, sd), (_, fb) = DIMS.get("speech"), DIMS.get("fbank")
        assert full_c["speech_proj"] - abl_c["speech_proj"] == (sd - fb) * d
        assert full_c["speech_mix"] == sl and "speech_mix" not in abl_c
    for comp in set(full_c) - removed - changed:
        assert abl_c[comp] == full_c[comp], comp
    o = full.o_dim - (o_removed[0] * d + o_removed[1] * f + o_removed[2] * levels)
    assert ablated.o_dim == o
    assert abl_c["mfc"] == o * o + o * fd + fd
    assert (
        TDFNet.required_streams(ablated.cfg)
        == {
            "no_mt": {"speech", "text", "speaker"},
            "no_dst": {"speech", "text", "speaker"},
            "audio": {"speech", "speaker"},
            "text": {"text"},
            "no_me": {"fbank", "text", "speaker"},
        }[variant]
    )


def test_ablated_text_path_ignores_speech(batch_mixed) -> None:
    head = small(paths="text").eval()
    other = dict(batch_mixed)
    other["speech"] = torch.randn_like(batch_mixed["speech"])
    other["speaker"] = torch.randn_like(batch_mixed["speaker"])
    with torch.no_grad():
        assert torch.equal(head(batch_mixed), head(other))


def test_config_errors_name_the_option() -> None:
    with pytest.raises(EmofuseError, match="paths"):
        TDFNet.make_config("small", {"paths": "video"})
    with pytest.raises(EmofuseError, match="d_model"):
        TDFNet.make_config("small", {"d_model": "60"})
    with pytest.raises(EmofuseError, match="speech_stream"):
        TDFNet.make_config(None, {"speech_stream": "mfcc"})
    for key, value in (("heads", "0"), ("d_model", "-4"), ("ffn", "0"), ("fusion_dim", "0")):
        with pytest.raises(EmofuseError, match=f"--set {key}={value}: must be a positive"):
            TDFNet.make_config("small", {key: value})  # was a ZeroDivisionError / RuntimeError
    with pytest.raises(EmofuseError, match="'speaker' stream"):
        TDFNet(TDFNet.make_config("small"), dataclasses.replace(DIMS, speaker=None), 4)


def test_max_lengths_report_the_truncating_streams() -> None:
    def limits(**overrides) -> dict[str, int]:
        return TDFNet.max_lengths(TDFNet.make_config("small", overrides))

    assert limits() == {"speech": 512, "text": 128}
    # log-mel frames ("w/o ME") are cut at max_fbank_len: the same 10.24 s as 512 HuBERT frames
    assert limits(speech_stream="fbank", max_text_len="none") == {"fbank": 1024}
    assert limits(speech_stream="fbank", max_fbank_len=300) == {"fbank": 300, "text": 128}
    assert limits(paths="text", max_text_len=64) == {"text": 64}


def test_joint_gru_call_equals_running_each_path_alone(batch_mixed) -> None:
    head = small().eval()
    with torch.no_grad():
        seqs = head.inputs(batch_mixed)
        joint = head.dst(seqs)
        for modality in ("speech", "text"):
            alone_global, alone_levels = head.dst.path(modality, *seqs[modality])
            assert torch.equal(joint[modality][0], alone_global)
            for (h, m), (h2, m2) in zip(joint[modality][1], alone_levels, strict=True):
                assert torch.equal(m, m2)
                assert (h - h2)[m].abs().max() <= 1e-5


def test_shared_gru_runs_in_fp32_under_bf16_autocast() -> None:
    # cuDNN has bf16 RNNs only in torch builds against cuDNN >= 9.13; elsewhere a bf16 GRU is a
    # per-time-step loop. The GRU therefore leaves autocast: same numbers as a plain fp32 call.
    head = small().eval()
    gru = head.dst.grus[0]
    torch.manual_seed(1)
    x = torch.randn(3, 9, 32).bfloat16()  # what a Conv1d gives under bf16 autocast
    mask = torch.arange(9)[None, :] < torch.tensor([9, 4, 1])[:, None]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        inside = gru(x, mask)  # (B, T, w)
    with torch.no_grad():
        plain = gru(x.float(), mask)
    assert inside.dtype == torch.float32
    assert torch.equal(inside, plain)
