"""Training data path benchmark: `emofuse train`'s in-memory batches vs a naive per-item DataLoader.

    .venv/bin/python bench/train.py [--scale 0.2] [--head concat] [--preset small] [--epochs 2]

Writes a synthetic IEMOCAP-shaped cache (scale 1.0 = 5,531 utterances, lognormal durations with
IEMOCAP's 4.55 s mean at 50 frames/s, one 1024-d speech layer, ~20 768-d text tokens, a 192-d
speaker vector; random fp16) and times, in one run, training epochs of the same head on the same
batches (same order, same batch size) two ways:

- emofuse: ``TrainData.from_cache`` (bulk load once, timed separately) + vectorised gather by index,
  i.e. exactly the loop of ``emofuse train`` (the cache memory-mapped; the same with the streams read
  into memory, ``mmap=False``, is timed too, load and batches);
- naive: a ``torch.utils.data.Dataset`` that reads each utterance from the HDF5 store with h5py
  (one read per stream per utterance) and a ``DataLoader`` with ``pad_sequence`` collation.

Reports utterances per second (forward + backward + AdamW step included) and the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from emofuse.cache import CacheWriter, fixed, open_cache, ragged
from emofuse.heads import get_head
from emofuse.train.checkpoints import make_dims
from emofuse.train.data import TrainData

D, D_TEXT, F = 1024, 768, 192
LABELS = ("ang", "hap", "neu", "sad")


def write_cache(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal(1 << 24).astype(np.float16)
    sigma = 0.65
    dur = rng.lognormal(np.log(4.55) - sigma**2 / 2, sigma, n).clip(0.6, 35.0)
    specs = [
        ragged("speech", {"data": ("float16", (1, D))}, layers=[0], dim=D, frame_rate=50.0),
        ragged("text", {"data": ("float16", (1, D_TEXT)), "word_ids": ("int32", ())}, layers=[0]),
        fixed("speaker", {"data": ("float16", (F,))}),
    ]
    w = CacheWriter(path, settings={"bench": "train", "n": n, "seed": seed}, streams=specs)

    def take(i: int, rows: int, dim: int) -> np.ndarray:
        start = (i * 7919 * dim) % (len(pool) - rows * dim)
        return pool[start : start + rows * dim].reshape(rows, 1, dim)

    for i, d in enumerate(dur):
        t, tokens = int(d * 50), min(int(d * 2.5) + 4, 128)
        ses = f"Ses0{i % 5 + 1}"  # 5 sessions x 2 speakers, so every split (lopo too) applies
        meta = {"id": f"utt{i:05d}", "label": LABELS[i % 4], "speaker": f"{ses}_{'FM'[i // 5 % 2]}",
                "session": ses, "duration": float(d), "aligned": True}  # fmt: skip
        w.add(
            meta,
            {
                "speech": {"data": take(i, t, D)},
                "text": {
                    "data": take(i, tokens, D_TEXT),
                    "word_ids": np.arange(tokens, dtype=np.int32),
                },
                "speaker": {"data": take(i, 1, F)[0, 0]},
            },
        )
    w.close()


class NaiveItems(Dataset):
    """One utterance per __getitem__, read from the store with h5py (what peers' loaders do)."""

    def __init__(self, path: Path, labels: torch.Tensor) -> None:
        self.f = h5py.File(path, "r")
        self.off = {s: self.f[f"streams/{s}/offsets"][:] for s in ("speech", "text")}
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        out = {}
        for s in ("speech", "text"):
            a, b = self.off[s][i], self.off[s][i + 1]
            out[s] = torch.from_numpy(self.f[f"streams/{s}/data"][:, a:b]).transpose(
                0, 1
            )  # (T, L, D)
        out["speaker"] = torch.from_numpy(self.f["streams/speaker/data"][i])
        out["label"] = self.labels[i]
        return out


def collate(items: list[dict]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    batch = {}
    for s in ("speech", "text"):
        seqs = [it[s].float() for it in items]
        batch[s] = pad_sequence(seqs, batch_first=True)  # (B, T, L, D)
        lens = torch.tensor([len(x) for x in seqs])
        batch[f"{s}_mask"] = torch.arange(batch[s].shape[1])[None] < lens[:, None]  # (B, T)
    batch["speaker"] = torch.stack([it["speaker"].float() for it in items])  # (B, F)
    return batch, torch.stack([it["label"] for it in items])


def step(model, opt, batch, labels) -> None:
    loss = torch.nn.functional.cross_entropy(model(batch), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.2, help="1.0 = IEMOCAP 4-class size")
    ap.add_argument("--head", default="concat")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--tmp", default=None)
    ap.add_argument(
        "--device", default="cpu", help="cpu or cuda (the emofuse path keeps data there)"
    )
    args = ap.parse_args()
    n = int(5531 * args.scale)
    tmp = Path(tempfile.mkdtemp(dir=args.tmp))
    try:
        path = tmp / "bench.h5"
        t0 = time.perf_counter()
        write_cache(path, n)
        print(f"cache: {n} utterances written in {time.perf_counter() - t0:.1f} s")
        head_cls = get_head(args.head)
        cfg = head_cls.make_config(args.preset, {})
        t0 = time.perf_counter()
        data = TrainData.from_cache(
            open_cache(path), head_cls.required_streams(cfg), cfg, args.device
        )
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()  # the same streams read into memory instead of mapped
        copied = TrainData.from_cache(
            open_cache(path), head_cls.required_streams(cfg), cfg, args.device, mmap=False
        )
        copy_load_s = time.perf_counter() - t0
        dims = make_dims(data)
        dev = data.device

        def sync():
            if dev.type == "cuda":
                torch.cuda.synchronize()

        def naive_batches(batches):
            loader = DataLoader(
                naive, batch_sampler=[b.tolist() for b in batches], collate_fn=collate
            )
            for batch, labels in loader:
                yield {k: v.to(dev) for k, v in batch.items()}, labels.to(dev)

        naive = NaiveItems(path, data.labels.cpu())
        gen = torch.Generator().manual_seed(0)
        epochs = [
            data.train_batches(torch.arange(n), args.batch_size, gen) for _ in range(args.epochs)
        ]

        def fresh():
            torch.manual_seed(0)
            model = head_cls(cfg, dims, len(LABELS)).to(dev).train()
            return model, torch.optim.AdamW(model.parameters(), lr=1e-4)

        # data path alone: build every batch of one epoch
        t0 = time.perf_counter()
        for b in epochs[0]:
            data.batch(b)
        sync()
        fast_data_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for b in epochs[0]:
            copied.batch(b)
        sync()
        copy_data_s = time.perf_counter() - t0
        del copied
        t0 = time.perf_counter()
        for _ in naive_batches(epochs[0]):
            pass
        sync()
        naive_data_s = time.perf_counter() - t0

        model, opt = fresh()
        t0 = time.perf_counter()
        for batches in epochs:
            for b in batches:
                step(model, opt, data.batch(b), data.labels[b.to(data.labels.device)])
        sync()
        fast_s = time.perf_counter() - t0

        model, opt = fresh()
        t0 = time.perf_counter()
        for batches in epochs:
            for batch, labels in naive_batches(batches):
                step(model, opt, batch, labels)
        sync()
        naive_s = time.perf_counter() - t0

        seen = n * args.epochs
        print(f"head {args.head} (preset {args.preset}), {args.epochs} epochs × {n} utterances, "
              f"batch {args.batch_size}, {torch.get_num_threads()} threads")  # fmt: skip
        print(f"device {dev}; emofuse load once: {load_s:.2f} s mapped (default), "
              f"{copy_load_s:.2f} s read into memory (mmap=False)")  # fmt: skip
        print(f"data path of the in-memory copy: {n / copy_data_s:8.1f} utt/s "
              f"(mapped / copy: {copy_data_s / fast_data_s:.2f}x)")  # fmt: skip
        print(f"data path only (1 epoch of batches): emofuse {n / fast_data_s:8.1f} utt/s, "
              f"naive {n / naive_data_s:8.1f} utt/s, speed-up {naive_data_s / fast_data_s:.1f}x")  # fmt: skip
        print("data path + forward/backward/AdamW step:")
        print(f"emofuse train:  {seen / fast_s:8.1f} utt/s  ({fast_s:.1f} s)")
        print(f"naive loader:   {seen / naive_s:8.1f} utt/s  ({naive_s:.1f} s)")
        print(f"speed-up: {naive_s / fast_s:.1f}x (epochs only); "
              f"{naive_s / (fast_s + load_s):.1f}x including the one-off load")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
