"""Extraction throughput against the machine's limit and against a naive per-utterance loop.

CPU mode (default), in ONE run on the same utterances:
  * the machine: CPU model and the flags that matter (avx2, avx512f, avx512_bf16, amx_bf16), load;
  * the compute dtype `--dtype auto` picks here, and the GEMM rate in it: a matmul of the model's
    own shapes (a 30 s window's 1500 frames x d_model -> FFN) and a large square one (2048^3);
  * the Whisper encoder's FLOP per audio second, counted from its config and the clips' lengths
    (convs, projections, FFN, attention), so the roofline = GEMM rate / FLOP per audio second;
  * the speech encoder alone (`load_speech_encoder(...).encode`, all clips, the auto dtype);
  * `emofuse extract` as a user runs it (a subprocess: start-up, model loading, decoding, the cache
    write and consolidation all counted), Whisper-base encoder + MiniLM, all layers stored;
  * the loop peers write (EmoBox-style): for each utterance read the file, WhisperFeatureExtractor
    with Hugging Face defaults (padding to 30 s), the encoder on that one utterance with all hidden
    states, the text model on its transcript, one .npy per utterance.
All report audio seconds per wall second; the fractions of the roofline and the ratio to the naive
loop are taken from this run. The CPU seconds (all threads) of the extract and of the encoder alone,
and of the imports in a fresh interpreter, bound the end-to-end rate from above: no overlap of the
stages makes the job take less than its CPU work divided by the cores.

GPU mode (`--synthetic-hours H --arch-config hubert-large`): a HuBERT-large-sized model built from
its real config (random weights) over H hours of generated audio, fp16, reporting audio-s/s and the
achieved TFLOP/s (conv front end + transformer, counted analytically) against the device's peak.

    .venv/bin/python bench/extract.py --limit 240
    .venv/bin/python bench/extract.py --synthetic-hours 1 --arch-config hubert-large --device cuda
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data" / "ravdess-dev"
WHISPER = SHARED / "models" / "whisper-base-encoder"
MINILM = SHARED / "models" / "minilm-l6-h384"
# dense fp16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, for the "against the limit"
# ("H100 80GB HBM3" is the name torch reports for the SXM part)
PEAKS = {"H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0,
         "H200": 989.4, "A100": 312.0}  # fmt: skip


def _subset_manifest(src: Path, limit: int | None, folder: Path) -> tuple[Path, list[dict]]:
    rows = list(csv.DictReader(open(src, newline="")))[:limit]
    for r in rows:  # absolute audio paths: the subset manifest lives elsewhere
        r["audio"] = str((src.parent / r["audio"]).resolve())
    out = folder / "manifest.csv"
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out, rows


def _audio_seconds(rows: list[dict]) -> float:
    import soundfile as sf

    return sum(sf.info(r["audio"]).duration for r in rows)


def run_emofuse(manifest: Path, out: Path, args, speech: str, text: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all threads) of `emofuse extract` as a user runs it."""
    cmd = [
        sys.executable, "-m", "emofuse", "extract", "--corpus", "manifest",
        "--manifest", str(manifest), "--out", str(out),
        "--speech-model", speech, "--text-model", text, "--speaker-model", "none",
        "--layers", args.layers, "--device", args.device, "--dtype", args.dtype,
        "--batch-seconds", str(args.batch_seconds), "--quiet",
    ]  # fmt: skip
    print("$", " ".join(cmd), flush=True)
    before = _child_cpu()
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    print(proc.stdout.strip(), proc.stderr.strip()[-2000:], sep="\n", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"emofuse extract failed with exit code {proc.returncode}")
    return wall, _child_cpu() - before


def _child_cpu() -> float:
    """CPU seconds (user + system, all threads) of the finished child processes."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def import_cpu() -> float:
    """CPU seconds a fresh interpreter spends importing what extract imports (torch, transformers'
    Whisper and BERT modules, the cache backends): work done before any audio is touched."""
    before = _child_cpu()
    code = (
        "import emofuse.cli, emofuse.extract.pipeline, emofuse.encoders.whisper, "
        "emofuse.encoders.text, emofuse.cache"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    return _child_cpu() - before


def run_naive(rows: list[dict], out: Path, speech: str, text: str) -> float:
    """The per-utterance loop peers write, with Hugging Face defaults."""
    import soundfile as sf
    import torch
    from transformers import AutoModel, AutoTokenizer, WhisperFeatureExtractor, WhisperModel

    start = time.perf_counter()
    fe = WhisperFeatureExtractor.from_pretrained(speech)
    enc = WhisperModel.from_pretrained(speech, dtype=torch.float32).encoder.eval()
    tok = AutoTokenizer.from_pretrained(text)
    txt = AutoModel.from_pretrained(text, dtype=torch.float32).eval()
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for r in rows:
            wav, rate = sf.read(r["audio"], dtype="float32")
            feats = fe(wav, sampling_rate=rate, return_tensors="pt").input_features  # (1, 80, 3000)
            hs = enc(feats, output_hidden_states=True).hidden_states  # L x (1, 1500, D)
            n = int(len(wav) / rate * 50)  # keep the real frames
            speech_states = torch.stack(hs, 1)[0, :n].half().numpy()  # (T, L, D)
            ids = tok(r["text"], return_tensors="pt", truncation=True)
            t_states = torch.stack(txt(**ids, output_hidden_states=True).hidden_states, 2)[0]
            np.save(out / f"{r['id']}.speech.npy", speech_states)
            np.save(out / f"{r['id']}.text.npy", t_states.half().numpy())
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# the machine's limit

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def machine() -> str:
    import platform

    from emofuse.encoders.common import cpu_flags

    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    have = cpu_flags()
    flags = " ".join(f"{f}={'yes' if f in have else 'no'}" for f in FLAGS)
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"CPU {model}, {os.cpu_count()} logical cores; {flags}; load {load}"


def gemm_rate(dtype, m: int, k: int, n: int, seconds: float = 2.0) -> float:
    """Sustained FLOP/s of (m x k) @ (k x n) in ``dtype`` (best of repeated timed blocks)."""
    import torch

    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    flop, best = 2.0 * m * k * n, 0.0
    torch.matmul(a, b)  # warm-up (oneDNN picks and caches its kernel)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        reps, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < 0.2:
            torch.matmul(a, b)
            reps += 1
        best = max(best, reps * flop / elapsed)
    return best


def whisper_flops(n_samples: int, cfg) -> float:
    """Forward FLOP (2 per multiply-add) of a Whisper encoder on one clip, real frames only (what
    emofuse runs: no 30 s padding), windows of 30 s encoded on their own."""
    window = cfg.max_source_positions * 2 * 160  # samples per 30 s window
    total, left = 0.0, int(n_samples)
    d, f, mels = cfg.d_model, cfg.encoder_ffn_dim, cfg.num_mel_bins
    while left > 0:
        m = (min(left, window) // 160) // 2 * 2  # mel frames kept (even)
        t = m // 2  # output frames
        total += 2.0 * m * mels * d * 3 + 2.0 * t * d * d * 3  # conv1 (stride 1), conv2 (stride 2)
        per_layer = 2.0 * t * (4 * d * d + 2 * d * f) + 2.0 * 2 * t * t * d  # proj + FFN, attention
        total += cfg.encoder_layers * per_layer
        left -= window
    return total


def roofline(speech: Path, clips: list[int], dtype) -> dict:
    """GEMM rates in ``dtype``, the encoder's FLOP per audio second and the limit they imply."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(speech)
    flop = sum(whisper_flops(n, cfg) for n in clips)
    seconds = sum(clips) / 16000
    model_shape = gemm_rate(dtype, 1500, cfg.d_model, cfg.encoder_ffn_dim)
    square = gemm_rate(dtype, 2048, 2048, 2048)
    return {
        "flop_per_audio_s": flop / seconds,
        "gemm_model": model_shape,
        "gemm_square": square,
        "limit": model_shape / (flop / seconds),  # audio-s/s at the model-shape GEMM rate
    }


def encoder_alone(
    speech: Path, wavs: list[np.ndarray], dtype, batch_seconds: float
) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) of ``load_speech_encoder(...).encode`` over the clips
    (loading not counted)."""
    import torch

    from emofuse.encoders import load_speech_encoder
    from emofuse.encoders.common import pack_batches

    enc = load_speech_encoder(speech, dtype=dtype, max_batch_seconds=batch_seconds)
    order = sorted(range(len(wavs)), key=lambda i: len(wavs[i]))  # as extract batches: by length
    batches = pack_batches([len(wavs[i]) for i in order], int(batch_seconds * 16000))
    start, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        enc.encode([wavs[order[i]] for i in batch], out_dtype=torch.float16)
    return time.perf_counter() - start, time.process_time() - cpu


def cpu_mode(args) -> None:
    import soundfile as sf
    import torch

    from emofuse.encoders.common import as_dtype, auto_dtype

    threads = torch.get_num_threads()
    dtype = auto_dtype(torch.device("cpu")) if args.dtype == "auto" else as_dtype(args.dtype)
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        tmp = Path(tmp)
        manifest, rows = _subset_manifest(args.data / "manifest.csv", args.limit, tmp)
        seconds = _audio_seconds(rows)
        naive_rows = rows[: args.naive_limit] if args.naive_limit else rows
        naive_seconds = _audio_seconds(naive_rows)
        print(
            f"{len(rows)} utterances, {seconds:.1f} s of audio; naive loop on {len(naive_rows)}"
            f" ({naive_seconds:.1f} s); torch threads {threads}",
            flush=True,
        )
        wavs = [sf.read(r["audio"], dtype="float32")[0] for r in rows]
        limit = roofline(args.speech, [len(w) for w in wavs], dtype)
        name = str(dtype).removeprefix("torch.")
        print(
            f"compute dtype {name} (--dtype {args.dtype}); GEMM {name}, {threads} threads: model "
            f"shape 1500x512x2048 {limit['gemm_model'] / 1e9:.0f} GFLOP/s, square 2048^3 "
            f"{limit['gemm_square'] / 1e9:.0f} GFLOP/s; encoder {limit['flop_per_audio_s'] / 1e9:.2f}"
            f" GFLOP per audio second -> roofline {limit['limit']:.0f} audio-s/s",
            flush=True,
        )
        enc_wall, enc_cpu = encoder_alone(args.speech, wavs, dtype, args.batch_seconds)
        print(f"encoder alone: {seconds / enc_wall:.1f} audio-s/s", flush=True)
        start_cpu = import_cpu()
        wall, cpu = run_emofuse(manifest, tmp / "bench.h5", args, str(args.speech), str(args.text))
        size = (tmp / "bench.h5").stat().st_size
        naive_wall = run_naive(naive_rows, tmp / "naive", str(args.speech), str(args.text))
    ours, naive, enc = seconds / wall, naive_seconds / naive_wall, seconds / enc_wall
    print(
        f"emofuse extract: {seconds:.1f} audio-s in {wall:.1f} s = {ours:.1f} audio-s/s"
        f" ({ours:.1f}x real time), cache {size / 1e6:.1f} MB"
    )
    print(
        f"naive per-utterance loop: {naive_seconds:.1f} audio-s in {naive_wall:.1f} s"
        f" = {naive:.1f} audio-s/s"
    )
    print(
        f"of the {name} roofline ({limit['limit']:.0f} audio-s/s): end to end "
        f"{100 * ours / limit['limit']:.0f} %, encoder alone {100 * enc / limit['limit']:.0f} %"
        f" (target >= 50 % end to end)"
    )
    print(f"speed-up: {ours / naive:.1f}x the naive loop (target >= 8x)")
    cores = min(threads, os.cpu_count() or threads)
    floor = cpu / cores  # no schedule of this much work on these cores takes less wall time
    print(
        f"CPU work: emofuse extract {cpu:.1f} CPU-s over {wall:.1f} s ({cpu / wall:.2f} cores busy "
        f"of {cores}); the encoder alone {enc_cpu:.1f} CPU-s ({enc_cpu / enc_wall:.2f} cores busy), "
        f"imports {start_cpu:.1f} CPU-s, everything else {cpu - enc_cpu - start_cpu:.1f} CPU-s"
    )
    print(
        f"so with today's kernels the job can take no less than {floor:.1f} s on {cores} cores: at "
        f"most {seconds / floor:.1f} audio-s/s = {100 * seconds / floor / limit['limit']:.0f} % of "
        "the roofline end to end, however well the stages overlap"
    )
    print(machine())


# ---------------------------------------------------------------------------------------------
# GPU mode: HuBERT-large-sized model, synthetic audio


def hubert_large_config():
    """HuBERT-large (ll60k) architecture: 24 layers, 1024 hidden, 16 heads, FFN 4096, stable LN."""
    from transformers import HubertConfig

    return HubertConfig(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        conv_dim=(512,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
    )


def hubert_flops(n_samples: int, cfg) -> float:
    """Forward FLOPs (2 per multiply-add) for one utterance: conv front end + transformer."""
    flops, length, c_in = 0.0, n_samples, 1
    for c_out, k, s in zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride, strict=True):
        length = (length - k) // s + 1
        flops += 2.0 * length * c_in * c_out * k
        c_in = c_out
    t, d, f = length, cfg.hidden_size, cfg.intermediate_size
    flops += 2.0 * t * c_in * d  # feature projection
    flops += 2.0 * t * d * (d // cfg.num_conv_pos_embedding_groups) * cfg.num_conv_pos_embeddings
    per_layer = (
        2.0 * t * (4 * d * d + 2 * d * f) + 2.0 * 2 * t * t * d
    )  # projections+FFN, attention
    return flops + cfg.num_hidden_layers * per_layer


def gpu_mode(args) -> None:
    import soundfile as sf
    import torch
    from transformers import HubertModel

    if args.arch_config != "hubert-large":
        raise SystemExit("--arch-config: only hubert-large is defined")
    cfg = hubert_large_config()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-extract-gpu-") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        HubertModel(cfg).save_pretrained(tmp / "hubert-large-random")
        rows, total, flops = [], 0.0, 0.0
        (tmp / "audio").mkdir()
        while total < args.synthetic_hours * 3600:  # IEMOCAP-like lengths: 1.5-15 s
            dur = float(np.clip(rng.lognormal(np.log(3.6), 0.6), 1.5, 15.0))
            n = int(dur * 16000)
            t = np.arange(n) / 16000
            f0 = rng.uniform(90, 250)
            wav = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.02 * rng.standard_normal(n)
            path = tmp / "audio" / f"u{len(rows):05d}.wav"
            sf.write(path, wav.astype(np.float32), 16000, subtype="PCM_16")
            rows.append({"id": path.stem, "audio": str(path), "text": "", "label": "x",
                         "speaker": f"s{len(rows) % 10}"})  # fmt: skip
            total += n / 16000
            flops += hubert_flops(n, cfg)
        with open(tmp / "manifest.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(
            f"{len(rows)} synthetic utterances, {total / 3600:.2f} h, "
            f"{flops / 1e15:.3f} PFLOP of HuBERT-large forward",
            flush=True,
        )
        wall = run_emofuse(tmp / "manifest.csv", tmp / "bench.h5", args,
                           str(tmp / "hubert-large-random"), "none")  # fmt: skip
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAKS.items() if k in name), None)
    achieved = flops / wall / 1e12
    print(
        f"device {name}: {total:.0f} audio-s in {wall:.1f} s = {total / wall:.0f} audio-s/s;"
        f" {achieved:.1f} TFLOP/s achieved end to end"
        + (f" = {100 * achieved / peak:.1f}% of the {peak:.0f} TFLOP/s fp16 peak" if peak else "")
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--speech", type=Path, default=WHISPER)
    p.add_argument("--text", type=Path, default=MINILM)
    p.add_argument("--limit", type=int, default=None, help="first N utterances of the manifest")
    p.add_argument(
        "--naive-limit",
        type=int,
        default=None,
        help="time the naive loop on the first N of those (default: all)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--layers", default="all")
    p.add_argument("--batch-seconds", type=float, default=120.0)
    p.add_argument("--synthetic-hours", type=float, default=None)
    p.add_argument("--arch-config", default="hubert-large")
    p.add_argument("--peak-tflops", type=float, default=None)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.synthetic_hours:
        gpu_mode(args)
    else:
        cpu_mode(args)


if __name__ == "__main__":
    main()
