"""Generated padded batches for head tests (no cache, no models: heads only see tensors)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emofuse.heads.base import InputDims

RAGGED = ("speech", "text", "phone", "syllable", "word", "fbank")

DIMS = InputDims(
    speech=(3, 32),
    text=(2, 24),
    speaker=16,
    phone=(3, 32),
    syllable=(3, 32),
    word=(3, 32),
    fbank=(1, 20),
    speech_mean=(3, 32),
    speech_std=(3, 32),
)


def make_batch(
    dims: InputDims,
    speech_lens: list[int],
    text_lens: list[int],
    seg_lens: list[int] | None = None,
    aligned: list[bool] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A padded batch whose padding is loud noise, so any leak of padding shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    b = len(speech_lens)
    seg_lens = seg_lens if seg_lens is not None else [max(1, n // 3) for n in speech_lens]
    aligned = aligned if aligned is not None else [True] * b
    lengths = {"speech": speech_lens, "fbank": speech_lens, "text": text_lens}
    for gran in ("phone", "syllable", "word"):
        lengths[gran] = seg_lens
    batch: dict[str, torch.Tensor] = {}
    for stream, lens in lengths.items():
        if getattr(dims, stream) is None:
            continue
        layers, width = dims.get(stream)
        t = max(max(lens), 1)
        mask = torch.arange(t)[None, :] < torch.tensor(lens)[:, None]  # (B, T)
        real = torch.randn(b, t, layers, width, generator=g)
        noise = 50.0 * torch.randn(b, t, layers, width, generator=g)
        batch[stream] = torch.where(mask[:, :, None, None], real, noise)
        batch[f"{stream}_mask"] = mask
    if dims.speaker is not None:
        batch["speaker"] = torch.randn(b, dims.speaker[1], generator=g)
    for stat in ("speech_mean", "speech_std"):  # fixed (B, L, D): no mask
        if getattr(dims, stat) is not None:
            batch[stat] = torch.randn(b, *dims.get(stat), generator=g).abs_()
    batch["aligned"] = torch.tensor(aligned)
    return batch


def single(batch: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Utterance i alone, cut to its real rows (what it looks like batched with nothing longer)."""
    out = {}
    for key, value in batch.items():
        if key in RAGGED:
            n = int(batch[f"{key}_mask"][i].sum())
            out[key] = value[i : i + 1, :n]
            out[f"{key}_mask"] = batch[f"{key}_mask"][i : i + 1, :n]
        elif not key.endswith("_mask"):
            out[key] = value[i : i + 1]
    return out


def max_padding_diff(head: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Largest |logit difference| between each utterance batched and alone (eval mode)."""
    head.eval()
    with torch.no_grad():
        together = head(batch)  # (B, C)
        b = together.shape[0]
        alone = torch.cat([head(single(batch, i)) for i in range(b)])  # (B, C)
    return float((together - alone).abs().max())


def overfit(
    head: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
    steps: int = 300,
    lr: float = 1e-3,
    target: float = 0.05,
) -> tuple[float, int]:
    """Train on one batch until the loss falls below ``target``; (last loss, steps used)."""
    head.train()
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    loss = torch.tensor(float("inf"))
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = F.cross_entropy(head(batch), labels)
        loss.backward()
        opt.step()
        if loss.item() < target:
            return loss.item(), step
    return loss.item(), steps


def params_without_grad(head: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[str]:
    """Names of trainable parameters that one backward pass leaves without a non-zero gradient."""
    head.train()
    head.zero_grad()
    logits = head(batch)
    F.cross_entropy(logits, torch.arange(logits.shape[0]) % logits.shape[1]).backward()
    return [
        name
        for name, p in head.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]


@pytest.fixture
def dims() -> InputDims:
    return DIMS


@pytest.fixture
def batch16() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """16 utterances of mixed lengths (a few unaligned) and balanced labels of 4 classes."""
    speech = [6 + (7 * i) % 23 for i in range(16)]
    text = [2 + (5 * i) % 9 for i in range(16)]
    segs = [0 if i % 5 == 4 else 1 + (3 * i) % 7 for i in range(16)]
    aligned = [s > 0 and i % 7 != 3 for i, s in enumerate(segs)]
    labels = torch.arange(16) % 4
    return make_batch(DIMS, speech, text, segs, aligned, seed=1), labels


@pytest.fixture
def batch_mixed() -> dict[str, torch.Tensor]:
    """5 utterances of very different lengths (incl. odd lengths and a 1-frame one) for invariance."""
    return make_batch(
        DIMS,
        speech_lens=[9, 31, 1, 14, 22],
        text_lens=[3, 11, 2, 7, 1],
        seg_lens=[2, 9, 0, 4, 6],
        aligned=[True, True, False, False, True],
        seed=2,
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny heads gain nothing from a second thread, and on a shared 2-core box the OpenMP threads
    of concurrent test runs fight (10x slower steps); restore the setting for other areas' tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
