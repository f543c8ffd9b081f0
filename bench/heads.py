"""Training throughput of every head on IEMOCAP-shaped batches (not a test: prints figures).

Batches mimic the IEMOCAP 4-class set as cached by the default encoders: HuBERT-large frames
(50 Hz, 1024-d, lengths drawn around 4.5 s, capped at 20 s), BERT tokens (768-d, ~20 per utterance),
ECAPA vectors (192-d), segment streams at a third of the frame count. One cached layer per stream.
Figures: training utterances per second (forward + backward + AdamW step, batch 32, train mode),
and what that means for one fold (80 % of 5531 utterances x 20 epochs, the paper's schedule).

    .venv/bin/python bench/heads.py --preset small --device cpu
    .venv/bin/python bench/heads.py --preset paper --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from emofuse.heads.base import InputDims, count_parameters
from emofuse.heads.registry import get_head, list_heads

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--heads", default=",".join(list_heads()))
    args = parser.parse_args()
    torch.manual_seed(0)
    batches = [iemocap_like_batch(args.batch, args.device, s) for s in range(2)]
    labels = torch.arange(args.batch, device=args.device) % 4
    print(f"preset={args.preset} device={args.device} batch={args.batch} steps={args.steps} "
          f"threads={torch.get_num_threads()}")  # fmt: skip
    print(f"{'head':<12}{'params':>13}{'train utt/s':>13}{'min/fold':>10}{'eval utt/s':>12}")
    rates = {}
    for name in args.heads.split(","):
        cls = get_head(name)
        head = cls(cls.make_config(args.preset), DIMS, 4).to(args.device)
        opt = torch.optim.AdamW(head.parameters(), lr=1e-4)
        head.train()
        for step in range(args.steps + 1):
            if step == 1:  # the first step warms up allocators and kernels
                sync(args.device)
                start = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(head(batches[step % 2]), labels).backward()
            opt.step()
        sync(args.device)
        train_rate = args.batch * args.steps / (time.perf_counter() - start)
        head.eval()
        with torch.no_grad():
            head(batches[0])
            sync(args.device)
            start = time.perf_counter()
            for step in range(args.steps):
                head(batches[step % 2])
            sync(args.device)
        eval_rate = args.batch * args.steps / (time.perf_counter() - start)
        rates[name] = train_rate
        minutes = FOLD_UTTERANCES / train_rate / 60
        print(f"{name:<12}{count_parameters(head):>13,}{train_rate:>13.1f}{minutes:>10.1f}"
              f"{eval_rate:>12.1f}")  # fmt: skip
    if "tdfnet" in rates and "audio" in rates:
        print(f"tdfnet costs {rates['audio'] / rates['tdfnet']:.1f}x the audio probe per utterance")


if __name__ == "__main__":
    main()
