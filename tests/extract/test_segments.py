"""Alignment tiers → frame spans → pooled segment embeddings (emofuse.segments)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emofuse.segments import clean_symbol, is_filler, pool_spans, pool_utterances, tier_to_spans


def _sphinx_tier(rows: list[tuple[int, int, str]]) -> list[tuple[float, float, str]]:
    """Sphinx rows (SFrm, EFrm inclusive, symbol) as the reader stores them: seconds, 2-frame delay."""
    return [((s + 2) / 100, (e + 1 + 2) / 100, sym) for s, e, sym in rows]


ROWS = [
    (0, 40, "<s>"),
    (41, 72, "WHAT(2)"),
    (73, 73, "A"),  # a single 10 ms frame
    (74, 99, "++LAUGHTER++"),
    (100, 132, "<sil>"),
    (133, 146, "WELL"),
    (147, 169, "SIL"),
    (170, 199, "</s>"),
]


def test_50hz_mapping_matches_the_iemocap_rule() -> None:
    """At 50 Hz a 10 ms segment [s, e] (after the delay) covers frames [s//2, e//2]."""
    out = tier_to_spans(_sphinx_tier(ROWS), 50.0, n_frames=1000, keep_fillers=True)
    expected = [((s + 2) // 2, (e + 2) // 2 + 1) for s, e, _ in ROWS]
    assert out.spans.tolist() == [list(x) for x in expected]
    assert out.spans.dtype == np.int32


@pytest.mark.parametrize("rate,step", [(100.0, 1), (25.0, 4)])
def test_mapping_generalises_to_other_frame_rates(rate: float, step: int) -> None:
    out = tier_to_spans(_sphinx_tier(ROWS), rate, n_frames=1000, keep_fillers=True)
    expected = [((s + 2) // step, (e + 2) // step + 1) for s, e, _ in ROWS]
    assert out.spans.tolist() == [list(x) for x in expected]


def test_spans_clipped_to_true_frames_and_never_empty() -> None:
    tier = [(0.0, 0.5, "A"), (0.5, 0.51, "B"), (0.9, 1.3, "C"), (2.0, 2.5, "D")]
    out = tier_to_spans(tier, 50.0, n_frames=46)
    assert out.spans.tolist() == [[0, 25], [25, 26], [45, 46], [45, 46]]
    assert ((out.spans[:, 1] - out.spans[:, 0]) >= 1).all()
    assert (out.spans[:, 1] <= 46).all()


def test_fillers_dropped_by_default_and_kept_on_request() -> None:
    tier = _sphinx_tier(ROWS)
    dropped = tier_to_spans(tier, 50.0, n_frames=1000)
    assert dropped.symbols == ["WHAT", "A", "WELL"]
    kept = tier_to_spans(tier, 50.0, n_frames=1000, keep_fillers=True)
    assert kept.symbols == [clean_symbol(s) for _, _, s in ROWS]
    assert len(kept.spans) == len(ROWS)
    for sym in ("<s>", "</s>", "<sil>", "SIL", "++BREATHING++", "+LIPSMACK+", "SIL b"):
        assert is_filler(sym), sym
    for sym in ("WHAT(2)", "AH(HH,L) b", "S", "+"):
        assert not is_filler(sym), sym
    assert clean_symbol("WHAT(2)") == "WHAT" and clean_symbol("WELL") == "WELL"


def test_unaligned_or_all_filler_gives_zero_rows() -> None:
    assert tier_to_spans([], 50.0, 100).spans.shape == (0, 2)
    only_sil = tier_to_spans([(0.0, 1.0, "<sil>")], 50.0, 100)
    assert only_sil.spans.shape == (0, 2) and only_sil.symbols == []
    frames = torch.randn(10, 3, 4)
    assert pool_spans(frames, only_sil.spans).shape == (0, 3, 4)


def test_pooled_segments_equal_direct_mean_over_spans() -> None:
    gen = torch.Generator().manual_seed(0)
    frames = torch.randn(120, 5, 16, generator=gen, dtype=torch.float64)  # (T, L, D)
    tier = _sphinx_tier(ROWS)
    spans = tier_to_spans(tier, 50.0, n_frames=frames.shape[0], keep_fillers=True).spans
    pooled = pool_spans(frames, spans)  # (S, L, D)
    assert pooled.shape == (len(spans), 5, 16)
    for (a, b), row in zip(spans.tolist(), pooled, strict=True):
        torch.testing.assert_close(row, frames[a:b].mean(0), rtol=0, atol=1e-12)


def test_pool_utterances_equals_per_utterance_pooling() -> None:
    gen = torch.Generator().manual_seed(1)
    frames = [torch.randn(t, 2, 8, generator=gen) for t in (30, 7, 55)]
    spans = [
        np.array([[0, 10], [9, 30]]),
        np.zeros((0, 2), np.int32),  # an unaligned utterance in the middle of a batch
        np.array([[3, 4], [4, 50], [50, 55]]),
    ]
    together = pool_utterances(frames, spans)
    assert [p.shape[0] for p in together] == [2, 0, 3]
    for f, s, p in zip(frames, spans, together, strict=True):
        for (a, b), row in zip(s.tolist(), p, strict=True):
            torch.testing.assert_close(row, f[a:b].mean(0), rtol=1e-6, atol=1e-6)
