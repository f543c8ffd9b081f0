"""Benchmark the frozen speech encoders (emofuse.encoders), one run, ratios from the same run.

cpu: a real Whisper encoder on real clips: emofuse's encoder (real frames only, batched) against the
     naive per-utterance loop peers use (Hugging Face defaults: 30 s padding, batch 1).
     python bench/encoders.py cpu --data ../shared/data/ravdess-dev --model ../shared/models/whisper-base-encoder
gpu: a HuBERT-large-sized model (the real architecture from its config, random weights) in fp16 over
     synthetic audio (≥ 1 h by default), all 25 hidden states returned to the host.
     python bench/encoders.py gpu --hours 1
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

import numpy as np
import torch
from tqdm import tqdm

from emofuse.encoders import load_speech_encoder

SR = 16_000


def load_clips(data: str, limit: int) -> list[np.ndarray]:
    import soundfile as sf

    files = sorted(glob.glob(os.path.join(data, "audio", "*", "*.flac")))
    step = max(1, len(files) // limit)
    clips = []
    for path in files[::step][:limit]:
        wav, sr = sf.read(path, dtype="float32")
        assert sr == SR and wav.ndim == 1, path
        clips.append(wav)
    return clips


def bench_cpu(args) -> None:
    from transformers import WhisperFeatureExtractor, WhisperModel

    clips = load_clips(args.data, args.limit)
    audio_s = sum(len(c) for c in clips) / SR
    print(f"{len(clips)} clips, {audio_s:.1f} s of audio, torch threads {torch.get_num_threads()}")

    # naive: HF defaults, 30 s padding, one utterance at a time
    fe = WhisperFeatureExtractor.from_pretrained(args.model)
    hf = WhisperModel.from_pretrained(args.model, dtype=torch.float32).get_encoder().eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for clip in tqdm(clips, desc="naive HF", unit="utt"):
            feats = fe(clip, sampling_rate=SR, return_tensors="pt").input_features  # (1, 80, 3000)
            hf(feats, output_hidden_states=True)
    naive = audio_s / (time.perf_counter() - start)

    enc = load_speech_encoder(args.model)
    start = time.perf_counter()
    for i in tqdm(range(0, len(clips), args.batch), desc="emofuse", unit="batch"):
        enc.encode(clips[i : i + args.batch])
    ours = audio_s / (time.perf_counter() - start)
    print(f"naive HF per-utterance (30 s padding): {naive:.1f} audio-s/s")
    print(f"emofuse Whisper encoder (real frames, batch {args.batch}): {ours:.1f} audio-s/s")
    print(f"speed-up: {ours / naive:.1f}x")


def bench_gpu(args) -> None:
    from extract import hubert_large_config  # bench/extract.py: one definition of the architecture
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    assert torch.cuda.is_available(), "gpu mode needs CUDA"
    folder = tempfile.mkdtemp(prefix="hubert-large-random-")
    config = hubert_large_config()  # facebook/hubert-large-ll60k's architecture
    torch.manual_seed(0)
    HubertModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    enc = load_speech_encoder(folder, device="cuda", dtype=torch.float16)
    params = sum(p.numel() for p in enc.model.parameters())
    print(
        f"HuBERT-large-sized: {params / 1e6:.0f} M params, {enc.num_layers} hidden states, "
        f"attention {enc.model.config._attn_implementation}, {torch.cuda.get_device_name()}"
    )

    rng = np.random.default_rng(0)
    lengths, total = [], 0
    while total < args.hours * 3600 * SR:  # IEMOCAP-like clip lengths: 1.5 - 12 s
        n = int(rng.uniform(1.5, 12.0) * SR)
        lengths.append(n)
        total += n
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    audio_s = total / SR
    # the pipeline's batching: length-sorted batches under a seconds budget
    order = sorted(range(len(clips)), key=lambda i: -lengths[i])
    batches, cur, cur_max = [], [], 0
    for i in order:
        cur_max = max(cur_max, lengths[i])
        if cur and (len(cur) + 1) * cur_max > args.batch_seconds * SR:
            batches.append(cur)
            cur, cur_max = [], lengths[i]
        cur.append(i)
    batches.append(cur)
    enc.encode([clips[i] for i in batches[-1]], out_dtype=torch.float16)  # warm-up
    torch.cuda.synchronize()
    for out_dtype in (torch.float16, torch.float32):
        start = time.perf_counter()
        frames = 0
        for batch in tqdm(batches, desc=f"encode -> {out_dtype}", unit="batch"):
            frames += sum(s.shape[0] for s in enc.encode([clips[i] for i in batch], out_dtype))
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
        print(
            f"{len(clips)} clips, {audio_s / 3600:.2f} h audio, {frames} frames, out {out_dtype}: "
            f"{wall:.1f} s wall, {audio_s / wall:.0f} audio-s/s"
        )
    # compute limit: 2 FLOP per parameter per frame for the transformer + the conv front end's
    # multiply-adds, at the dense fp16 peak measured on this machine class (~790 TFLOP/s)
    conv_flops = 0
    n_out, c_in = SR, 1
    for c_out, k, s in zip(config.conv_dim, config.conv_kernel, config.conv_stride, strict=True):
        n_out = (n_out - k) // s + 1
        conv_flops += 2 * n_out * c_out * c_in * k
        c_in = c_out
    transformer = sum(
        p.numel() for n, p in enc.model.named_parameters() if "feature_extractor" not in n
    )
    flop_per_s = conv_flops + 2 * transformer * 50
    limit = args.peak_tflops * 1e12 / flop_per_s
    print(
        f"compute: {flop_per_s / 1e9:.1f} GFLOP per audio second -> compute limit "
        f"{limit:.0f} audio-s/s at {args.peak_tflops:.0f} TFLOP/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    cpu = sub.add_parser("cpu")
    cpu.add_argument("--data", default="../shared/data/ravdess-dev")
    cpu.add_argument("--model", default="../shared/models/whisper-base-encoder")
    cpu.add_argument("--limit", type=int, default=24)
    cpu.add_argument("--batch", type=int, default=8)
    gpu = sub.add_parser("gpu")
    gpu.add_argument("--hours", type=float, default=1.0)
    gpu.add_argument("--batch-seconds", type=float, default=300.0)
    gpu.add_argument("--peak-tflops", type=float, default=790.0)
    args = parser.parse_args()
    bench_cpu(args) if args.mode == "cpu" else bench_gpu(args)


if __name__ == "__main__":
    main()
