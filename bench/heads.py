"""Training throughput of every head on IEMOCAP-shaped batches (not a test: prints figures).

Batches mimic the IEMOCAP 4-class set as cached by the default encoders: HuBERT-large frames
(50 Hz, 1024-d, lengths drawn around 4.5 s, capped at 20 s), BERT tokens (768-d, ~20 per utterance),
ECAPA vectors (192-d), segment streams at a third of the frame count. One cached layer per stream.
Figures: training utterances per second (forward + backward + AdamW step, batch 32, train mode),
and what that means for one fold (80 % of 5531 utterances x 20 epochs, the paper's schedule).

    .venv/bin/python bench/heads.py --preset small --device cpu
    .venv/bin/python bench/heads.py --preset paper --device cuda
    python3 bench/heads.py --preset paper --device cuda --amp --heads tdfnet --gru-compare
    .venv/bin/python bench/heads.py --step-check --heads tdfnet,audio --steps 21

``--amp`` runs the forward under bf16 autocast, as ``emofuse train`` does on CUDA. ``--gru-compare``
times TDFNet a second time with its shared GRU left inside autocast (bf16, the code before the GRU
was kept in fp32) and counts which RNN kernels ran: one ``_cudnn_rnn`` call per GRU, or a
per-time-step ``_thnn_fused_gru_cell`` (CUDA) / ``gru_cell`` path. ``--step-check`` times the
same step with and without the training loop's per-step finiteness check of the loss, in turn.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import Counter

import torch
import torch.nn.functional as F

from emofuse.heads.base import InputDims, count_parameters
from emofuse.heads.registry import get_head, list_heads
from emofuse.heads.tdfnet import SharedGRU

DIMS = InputDims(
    speech=(1, 1024), text=(1, 768), speaker=192, phone=(1, 1024), syllable=(1, 1024),
    word=(1, 1024), fbank=(1, 80),
)  # fmt: skip
FOLD_UTTERANCES = int(5531 * 0.8) * 20


def iemocap_like_batch(b: int, device: str, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    secs = (torch.randn(b, generator=g) * 3.0 + 4.5).clamp(0.6, 20.0)
    lengths = {
        "speech": (secs * 50).long(),
        "text": (secs * 4.5).long().clamp(min=3),
    }
    lengths["fbank"] = lengths["speech"] * 2  # 100 Hz log-mel
    for gran, per_s in (("phone", 12), ("syllable", 5), ("word", 3)):
        lengths[gran] = (secs * per_s).long().clamp(min=1)
    batch = {}
    for stream, lens in lengths.items():
        layers, dim = DIMS.get(stream)
        t = int(lens.max())
        mask = torch.arange(t)[None, :] < lens[:, None]
        batch[stream] = torch.randn(b, t, layers, dim, generator=g) * mask[:, :, None, None]
        batch[f"{stream}_mask"] = mask
    batch["speaker"] = torch.randn(b, 192, generator=g)
    batch["aligned"] = torch.ones(b, dtype=torch.bool)
    return {k: v.to(device) for k, v in batch.items()}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def gru_in_autocast(self: SharedGRU, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SharedGRU.forward as it was before the fp32 GRU: the GRUs run in autocast's dtype."""
    hidden, _ = self.gru1(x)
    out, _ = self.gru2(self.drop(hidden))
    return out * mask[..., None]


def rnn_ops(step) -> Counter:
    """Calls of the RNN operators in one training step, and of all operators, from the profiler."""
    with torch.profiler.profile() as prof:
        step()
    events = prof.key_averages()
    ops = Counter({e.key: e.count for e in events if "rnn" in e.key or "gru" in e.key})
    ops["all operators"] = sum(e.count for e in events)
    return ops


def time_head(name: str, args, batches, labels) -> tuple[int, float, float, Counter]:
    """(parameters, train utt/s, eval utt/s, RNN op calls of one step) for head ``name``."""
    cls = get_head(name)
    head = cls(cls.make_config(args.preset), DIMS, 4).to(args.device)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-4)
    amp = (
        (lambda: torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16))
        if args.amp
        else contextlib.nullcontext
    )

    def step(i: int) -> None:
        opt.zero_grad()
        with amp():
            logits = head(batches[i % 2])
        F.cross_entropy(logits.float(), labels).backward()
        opt.step()

    head.train()
    for i in range(args.steps + 1):
        if i == 1:  # the first step warms up allocators and kernels
            sync(args.device)
            start = time.perf_counter()
        step(i)
    sync(args.device)
    train_rate = args.batch * args.steps / (time.perf_counter() - start)
    ops = rnn_ops(lambda: step(0)) if args.gru_compare else Counter()
    head.eval()
    with torch.no_grad(), amp():
        head(batches[0])
        sync(args.device)
        start = time.perf_counter()
        for i in range(args.steps):
            head(batches[i % 2])
        sync(args.device)
    eval_rate = args.batch * args.steps / (time.perf_counter() - start)
    return count_parameters(head), train_rate, eval_rate, ops


def step_check_cost(name: str, args, batches, labels) -> tuple[float, float, float]:
    """(median plain step s, median checked step s, median ratio) over pairs run in turn: the
    same training step with and without the loop's per-step CPU finiteness check of the loss
    (``bool(torch.isfinite(loss))`` before backward, emofuse.train.loop since a2e6a77)."""
    cls = get_head(name)
    head = cls(cls.make_config(args.preset), DIMS, 4).to(args.device).train()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-4)

    def step(i: int, check: bool) -> float:
        start = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(head(batches[i % 2]).float(), labels)
        if check and not bool(torch.isfinite(loss)):
            raise RuntimeError("non-finite loss")
        loss.backward()
        opt.step()
        sync(args.device)
        return time.perf_counter() - start

    step(0, False)  # warm-up
    plain, checked = [], []
    for i in range(args.steps):
        first = i % 2 == 0  # alternate which goes first in a pair
        a = step(i, not first)
        b = step(i, first)
        plain.append(b if first else a)
        checked.append(a if first else b)
    ratios = sorted(c / p for c, p in zip(checked, plain, strict=True))
    mid = len(ratios) // 2
    return sorted(plain)[mid], sorted(checked)[mid], ratios[mid]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--heads", default=",".join(list_heads()))
    parser.add_argument(
        "--amp", action="store_true", help="bf16 autocast, as emofuse train on CUDA"
    )
    parser.add_argument("--gru-compare", action="store_true", help="TDFNet GRU fp32 vs bf16")
    parser.add_argument(
        "--step-check", action="store_true", help="cost of the per-step finiteness check"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    batches = [iemocap_like_batch(args.batch, args.device, s) for s in range(2)]
    labels = torch.arange(args.batch, device=args.device) % 4
    print(f"preset={args.preset} device={args.device} batch={args.batch} steps={args.steps} "
          f"threads={torch.get_num_threads()} amp={'bf16' if args.amp else 'off'} "
          f"torch={torch.__version__} cudnn={torch.backends.cudnn.version()}")  # fmt: skip
    if args.step_check:
        loss, calls = torch.tensor(1.25), 100_000  # a CPU scalar, as the loss is
        start = time.perf_counter()
        for _ in range(calls):
            bool(torch.isfinite(loss))
        alone = (time.perf_counter() - start) / calls
        print(f"the check alone: {alone * 1e6:.2f} us a call ({calls:,} calls)")
        for name in args.heads.split(","):
            plain, checked, ratio = step_check_cost(name, args, batches, labels)
            print(f"{name}: step {plain * 1e3:.1f} ms plain, {checked * 1e3:.1f} ms with the "
                  f"finiteness check; checked/plain per pair, median of {args.steps}: {ratio:.4f};"
                  f" the check alone is {alone / plain:.1e} of a plain step")  # fmt: skip
        return
    print(f"{'head':<18}{'params':>13}{'train utt/s':>13}{'min/fold':>10}{'eval utt/s':>12}")
    rates = {}
    runs = [(name, False) for name in args.heads.split(",")]
    if args.gru_compare and "tdfnet" in args.heads.split(","):
        runs.append(("tdfnet", True))
    for name, bf16_gru in runs:
        fp32_forward = SharedGRU.forward
        if bf16_gru:
            SharedGRU.forward = gru_in_autocast
        try:
            params, train_rate, eval_rate, ops = time_head(name, args, batches, labels)
        finally:
            SharedGRU.forward = fp32_forward
        label = f"{name}{' (bf16 GRU)' if bf16_gru else ''}"
        rates[label] = train_rate
        minutes = FOLD_UTTERANCES / train_rate / 60
        print(f"{label:<18}{params:>13,}{train_rate:>13.1f}{minutes:>10.1f}{eval_rate:>12.1f}")
        if ops:
            print(f"  RNN op calls in one training step: {dict(ops)}")
    if "tdfnet" in rates and "audio" in rates:
        print(f"tdfnet costs {rates['audio'] / rates['tdfnet']:.1f}x the audio probe per utterance")
    if "tdfnet (bf16 GRU)" in rates:
        ratio = rates["tdfnet"] / rates["tdfnet (bf16 GRU)"]
        print(f"tdfnet with the GRU in fp32 trains {ratio:.2f}x as fast as with it in bf16")


if __name__ == "__main__":
    main()
