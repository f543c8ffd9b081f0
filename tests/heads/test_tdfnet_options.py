"""TDFNet's readings of the paper (issue 18): gate, classifier, dst_layers, max_fbank_len, paper
preset; every parameter count recomputed from the equations (eqs. 1-11) and the implementation
details (d = 768, 12 heads, FFN 4096, N = 2, f = 192)."""

from __future__ import annotations

import pytest
import torch

from emofuse.cli.heads import head_table
from emofuse.heads.base import InputDims, count_parameters
from emofuse.heads.tdfnet import TDFNet
from tests.helpers import DIMS, make_batch, max_padding_diff, overfit

PAPER_DIMS = InputDims(speech=(1, 1024), text=(1, 768), speaker=192, fbank=(1, 80))


def _attn(w: int, ffn: int) -> int:  # q, kv, out projections; two LayerNorms; the FFN
    return 4 * w * w + 4 * w + 4 * w + 2 * w * ffn + ffn + w


def _gru(i: int, h: int) -> int:
    return 3 * h * (i + h) + 6 * h


def equations(
    gate="full", classifier="mlp", dst_layers=1, paths="both", use_dst=True, use_mt=True,
    use_speaker=True, speech_stream="speech",
) -> tuple[int, int]:  # fmt: skip
    """(|O|, parameters) of the paper-sized head with 4 classes, from the equations alone."""
    d, ffn, f, c, k, n_blocks, fusion = 768, 4096, 192, 4, 3, 2, 768
    speech_in = 80 if speech_stream == "fbank" else 1024
    mods = {"both": [speech_in, 768], "audio": [speech_in], "text": [768]}[paths]
    m = len(mods)
    total = sum(x * d + d for x in mods)  # ME projections
    groups = [2 * d] * m  # Pool(A), Pool(T)
    if use_dst:
        total += m * 2 * _attn(d, ffn)  # two global layers per modality -> A', T'
        for i in range(1, n_blocks + 1):
            w_in, w = d // 2 ** (i - 1), d // 2**i
            total += m * (w_in * w * k + w + dst_layers * _attn(w, ffn))  # conv, eq. 5 layers
            total += _gru(w, 2 * w) + _gru(2 * w, w)  # one shared GRU pair (eqs. 1-2)
        groups += [2 * d] * m  # Pool(A'), Pool(T')
    if use_speaker and paths != "text":
        groups.append(f)  # S
    if use_mt and paths == "both":
        total += 4 * _attn(d, ffn)  # C_AT, C_TA, two layers over [A; T] (eqs. 6-8)
        groups += [2 * d] * 3
    if use_dst:
        groups += [2 * d // 2**i for i in range(1, n_blocks + 1)] * m  # Pool(D_i), Pool(H_i)
    o = sum(groups)
    total += {"full": o * o, "group": o * len(groups), "diag": o}[gate]  # W_alpha (eq. 11)
    if classifier == "literal":
        total += o * c + c  # P = GELU(W (alpha * O) + b) in R^4: the logits
    else:
        total += o * fusion + fusion + fusion * c + c  # P in R^768, then the classifier
    return o, total


VARIANTS = {"full": {}, **TDFNet.variants}  # every reading `emofuse heads --json` counts


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parameter_counts_equal_the_equations(variant) -> None:
    with torch.device("meta"):
        head = TDFNet(TDFNet.make_config("paper", VARIANTS[variant]), PAPER_DIMS, 4)
    o, total = equations(**VARIANTS[variant])
    assert head.o_dim == o
    assert count_parameters(head) == total


def test_numbers_the_issue_quotes() -> None:
    assert equations()[1] == 274_498_180 and equations()[0] ** 2 == 175_509_504  # full gate
    assert equations(use_mt=False)[0] ** 2 == 74_649_600  # the gate shrinks with the ablation
    o, group = equations(gate="group")
    assert group < 100e6 and equations(gate="group", use_mt=False)[1] < group


def test_heads_json_lists_every_variant_with_its_count() -> None:
    issue_rows = {"gate=group", "gate=diag", "classifier=literal", "dst_layers=2", "audio path"}
    issue_rows |= {"text path", "w/o DST", "w/o MT", "w/o MT, w/o S", "w/o ME"}
    assert issue_rows <= set(TDFNet.variants)
    rows = head_table(1024, 768, 192, 1, 1, 4)
    paper = next(r for r in rows if r["head"] == "tdfnet" and r["preset"] == "paper")
    assert paper["parameters"] == equations()[1]
    for name, overrides in VARIANTS.items():
        if name != "full":
            assert paper["variants"][name] == equations(**overrides)[1], name


def test_group_gate_has_one_score_per_feature_group() -> None:
    head = TDFNet(TDFNet.make_config("small", {"gate": "group"}), DIMS, 4)
    d, f = head.cfg.d_model, DIMS.get("speaker")[1]
    # A, T, A', T', S, C, C_AT, C_TA, D_1, D_2, H_1, H_2
    assert head.groups == [2 * d] * 4 + [f] + [2 * d] * 3 + [d, d // 2] * 2
    assert head.mfc.gate.weight.shape == (12, head.o_dim)
    assert torch.bincount(head.mfc.group_of).tolist() == head.groups


@pytest.mark.parametrize(
    "overrides",
    [{"gate": "group"}, {"gate": "diag"}, {"classifier": "literal"}, {"dst_layers": 2}],
)
def test_variants_stay_padding_invariant_and_learn(overrides, batch_mixed, batch16) -> None:
    torch.manual_seed(0)
    head = TDFNet(TDFNet.make_config("small", overrides), DIMS, 4)
    assert max_padding_diff(head, batch_mixed) <= 1e-5
    if overrides.get("classifier") == "literal":
        assert head.eval().embed(batch_mixed).shape == (5, 4)  # P is the logits
    torch.manual_seed(0)
    head = TDFNet(TDFNet.make_config("small", {**overrides, "dropout": 0.0}), DIMS, 4)
    loss, _ = overfit(head, *batch16, steps=300)
    # P as logits: a class whose pre-activation goes far negative sits in GELU's flat tail
    # (gradient ~0); on this batch the literal reading plateaus at 0.315 (chance: log 4 = 1.39)
    assert loss < (0.5 if overrides.get("classifier") == "literal" else 0.1)


def test_max_fbank_len_keeps_the_seconds_of_the_speech_input() -> None:
    from transformers import HubertConfig

    from emofuse.encoders.fbank import FbankEncoder

    hubert_rate = 16000 / torch.tensor(HubertConfig().conv_stride).prod().item()  # 50 frames/s
    cfg = TDFNet.make_config("paper")
    assert cfg.max_fbank_len / FbankEncoder().frame_rate == cfg.max_speech_len / hubert_rate
    assert cfg.max_fbank_len / FbankEncoder().frame_rate == pytest.approx(10.24)
    # the head cuts log-mel frames at max_fbank_len, not max_speech_len
    head = TDFNet(TDFNet.make_config("small", {"speech_stream": "fbank", "max_fbank_len": 8,
                                                "max_speech_len": 3}), DIMS, 4).eval()  # fmt: skip
    assert TDFNet.max_lengths(head.cfg)["fbank"] == 8
    long = make_batch(DIMS, [20, 5], [4, 2], seed=3)
    cut = {**long, "fbank": long["fbank"][:, :8], "fbank_mask": long["fbank_mask"][:, :8]}
    shorter = {**long, "fbank": long["fbank"][:, :7], "fbank_mask": long["fbank_mask"][:, :7]}
    with torch.no_grad():
        assert torch.allclose(head(long), head(cut), atol=1e-6)
        assert not torch.allclose(head(long)[0], head(shorter)[0])
    # a run saved before the field cut log-mel frames at max_speech_len: it reloads that way
    saved = {**TDFNet.make_config("small").__dict__, "max_speech_len": 300}
    del saved["max_fbank_len"]
    assert TDFNet.config_from_saved(saved).max_fbank_len == 300


def test_paper_preset_reads_the_last_cached_layer() -> None:
    dims = InputDims(speech=(3, 16), text=(2, 12), speaker=8)
    cfg = TDFNet.make_config("paper", {"d_model": 32, "heads": 4, "ffn": 32, "fusion_dim": 8})
    head = TDFNet(cfg, dims, 4).eval()
    assert head.speech_mix.mode == "single" and head.speech_mix.index == -1
    batch = make_batch(dims, [6, 4], [3, 2], seed=1)
    changed = dict(batch)
    changed["speech"] = batch["speech"].clone()
    changed["speech"][:, :, :2] = 0.0  # the earlier layers do not reach the output
    with torch.no_grad():
        assert torch.equal(head(batch), head(changed))
