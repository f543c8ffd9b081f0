"""`emofuse extract` end to end on the synthetic corpus with tiny models of the real classes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from emofuse import faults
from emofuse.cache import open_cache
from emofuse.cli import cli
from emofuse.encoders import common, load_speech_encoder
from emofuse.encoders.fbank import FbankEncoder
from emofuse.extract import length_batches, shard_batches
from emofuse.segments import tier_to_spans
from tests.helpers import LIMIT, PYTHON, extract_args

ROOT = Path(__file__).resolve().parents[2]


def _digest(path: Path) -> str:
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("digest: "))
    return line.split()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    env.pop(faults.ENV, None)
    # same intra-op thread count as the in-process reference: CPU kernels split work by thread,
    # which moves last bits (torchrun would otherwise default every worker to 1 thread)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return env


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus_root, tiny) -> Path:
    """One uninterrupted single-process run with every stream (in process, via CliRunner)."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    result = CliRunner().invoke(cli, extract_args(corpus_root, tiny, out))
    assert result.exit_code == 0, result.output
    assert "digest: " in result.output and f"stored {LIMIT} utterances" in result.output
    return out


# the subprocess tests (kill/resume, torchrun) run speech + fbank only: loading SpeechBrain and the
# text model in every process would triple their time; the in-process tests cover those streams
LIGHT = ("--text-model", "none", "--speaker-model", "none")


@pytest.fixture(scope="module")
def light_reference(tmp_path_factory, corpus_root, tiny) -> Path:
    out = tmp_path_factory.mktemp("ref-light") / "ref.h5"
    result = CliRunner().invoke(cli, extract_args(corpus_root, tiny, out, *LIGHT))
    assert result.exit_code == 0, result.output
    return out


def test_every_stream_is_stored_and_consistent(reference, utterances, tiny) -> None:
    c = open_cache(reference)
    assert c.complete and c.ids == [u.id for u in utterances]  # corpus order, nothing lost
    assert set(c.streams) == {
        "speech", "speech_mean", "speech_std", "phone", "syllable", "word", "text", "speaker",
        "fbank",
    }  # fmt: skip
    enc = load_speech_encoder(tiny.speech["hubert"])
    samples = [sf.info(str(u.audio)).frames for u in utterances]
    # frames per utterance follow the model's own length formula, in the table and the stream
    frames, off = c.load("speech", "data")
    assert frames.shape[1:] == (enc.num_layers, enc.dim) and frames.dtype == np.float16
    assert np.diff(off).tolist() == [enc.n_frames(n) for n in samples]
    assert c.table["n_frames"].tolist() == [enc.n_frames(n) for n in samples]
    # pooled mean over every layer equals the mean of the stored frames
    mean, _ = c.load("speech_mean", "data")
    for i in (0, LIMIT // 2, LIMIT - 1):
        direct = frames[off[i] : off[i + 1]].astype(np.float32).mean(0)
        np.testing.assert_allclose(mean[i], direct, atol=2e-3, rtol=2e-3)
    # segments: spans follow the tiers, embeddings are the mean of their frames
    for tier in ("phone", "syllable", "word"):
        seg, soff = c.load(tier, "data")
        spans, _ = c.load(tier, "spans")
        symbols, _ = c.load(tier, "symbols")
        for i, u in enumerate(utterances):
            a, b = soff[i], soff[i + 1]
            if not u.aligned:  # kept with frame-level features, zero segment rows
                assert b == a
                continue
            want = tier_to_spans(u.tiers[tier], enc.frame_rate, int(np.diff(off)[i]))
            assert spans[a:b].tolist() == want.spans.tolist(), (tier, u.id)
            assert list(symbols[a:b]) == want.symbols
            assert b > a  # every synthetic utterance has words
            utt = frames[off[i] : off[i + 1]].astype(np.float32)
            for row, (s, e) in zip(seg[a:b], want.spans, strict=True):
                np.testing.assert_allclose(row, utt[s:e].mean(0), atol=2e-3, rtol=2e-3)
    assert all("SIL" not in s and "<s>" not in s for s in c.load("word", "symbols")[0])
    # text: word ids index the normalised words; speaker: one finite vector each; fbank at 100 Hz
    word_ids, toff = c.load("text", "word_ids")
    for i, norm in enumerate(c.table["text_norm"]):
        ids = word_ids[toff[i] : toff[i + 1]]
        assert ids.max() == len(str(norm).split()) - 1 and (ids == -1).sum() == 2  # CLS, SEP
    spk, _ = c.load("speaker", "data")
    assert spk.shape[0] == LIMIT and np.isfinite(spk).all() and np.abs(spk).sum(1).min() > 0
    _, foff = c.load("fbank", "data")
    assert np.diff(foff).tolist() == [FbankEncoder().n_frames(n) for n in samples]
    assert c.table["aligned"].tolist() == [u.aligned for u in utterances] and c.skipped == []
    fp = c.settings["fingerprint"]
    assert fp["speech_model"]["revision"].startswith("sha256:") and fp["layers"] == list(
        range(enc.num_layers)
    )


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigkill_then_resume_gives_the_same_digest(
    tmp_path, light_reference, corpus_root, tiny
) -> None:
    out = tmp_path / "killed.h5"
    cmd = [
        PYTHON,
        "-m",
        "emofuse",
        *extract_args(corpus_root, tiny, out, *LIGHT, "--flush-seconds", "0"),
    ]
    # the run SIGKILLs itself right after its third committed part: a point it reaches, on any CPU
    killed = subprocess.run(
        cmd, env={**_env(), faults.ENV: "part-committed:3"}, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    parts = Path(str(out) + ".parts")
    assert len([p for p in parts.iterdir() if p.name.startswith("rank")]) == 3
    assert not out.exists()  # never reported complete
    resumed = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "already there" in resumed.stdout  # it resumed, it did not start over
    assert _digest(out) == _digest(light_reference)


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_process_torchrun_matches_single_process(tmp_path, light_reference, corpus_root, tiny):
    out = tmp_path / "ddp.zarr"  # the other backend: the digest is backend-independent
    torchrun = Path(PYTHON).with_name("torchrun")
    cmd = [str(torchrun), "--nproc-per-node", "2", "-m", "emofuse",
           *extract_args(corpus_root, tiny, out, *LIGHT)]  # fmt: skip
    run = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count(f"stored {LIMIT} utterances") == 1  # rank 0 reports the whole run
    assert _digest(out) == _digest(light_reference)


def test_resume_with_other_settings_is_refused_without_writing(tmp_path, corpus_root, tiny):
    out = tmp_path / "fp.h5"
    base = extract_args(corpus_root, tiny, out, "--text-model", "none", "--speaker-model", "none")
    first = CliRunner().invoke(cli, [*base, "--limit", "5"])
    assert first.exit_code == 0, first.output
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    again = CliRunner().invoke(cli, [*base, "--layers", "last"])
    assert again.exit_code == 2
    assert "was extracted with --layers 'all', this run has --layers 'last'" in again.output, (
        again.output
    )  # names the option
    assert "Traceback" not in again.output
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before
    assert not Path(str(out) + ".parts").exists()


def test_a_finished_limit_store_asked_to_grow_is_refused_before_any_work(
    tmp_path, corpus_root, tiny
):
    """Round-6 row 40: the rerun without --limit printed "resuming: 4 already stored" and then
    "already complete; choose another output name to add 'u5'", naming neither the --limit nor
    how many were missing. Now one line before anything is encoded, the store left as it was."""
    out = tmp_path / "lim.h5"
    base = extract_args(corpus_root, tiny, out, "--text-model", "none", "--speaker-model", "none")
    assert CliRunner().invoke(cli, [*base, "--limit", "3"]).exit_code == 0
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    again = CliRunner().invoke(cli, [*base, "--limit", "5"])
    assert again.exit_code == 2 and "resuming" not in again.output, again.output
    lines = [x for x in again.output.splitlines() if x.startswith("error: ")]
    assert lines == [
        f"error: {out} is a finished store of 3 utterances (an earlier run's corpus, e.g. a smaller"
        f" --limit); this corpus has 2 more (first {lines[0].split('(first ')[1].split(')')[0]})"
        f" and a finished store cannot grow: choose another --out, or delete {out} and rerun to"
        " extract them all"
    ], again.output
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before


def test_a_finished_store_rerun_on_a_smaller_corpus_says_it_holds_more(tmp_path, corpus_root, tiny):
    """Round-7 audit: `--limit 5` on a finished `--limit 10` store said "5 were already there"
    and printed the digest of all 10, as if it were the store of those 5."""
    out = tmp_path / "big.h5"
    base = extract_args(corpus_root, tiny, out, "--text-model", "none", "--speaker-model", "none")
    assert CliRunner().invoke(cli, [*base, "--limit", "5"]).exit_code == 0
    again = CliRunner().invoke(cli, [*base, "--limit", "3"])
    assert again.exit_code == 0, again.output
    notes = [x for x in again.output.splitlines() if x.startswith("note: ")]
    assert len(notes) == 1 and notes[0].startswith(f"note: {out} holds 2 utterances beyond this "
                                                   "corpus (first "), again.output  # fmt: skip
    assert notes[0].endswith("choose another --out for a store of this corpus alone")


def test_an_iemocap_wav_skipped_as_bad_is_listed_and_named_once_repaired(
    tmp_path, corpus_root, tiny
):
    """Round-8 audit: an empty sentence wav was skipped by the IEMOCAP reader but not listed in
    the cache; once repaired, the rerun called the store "a finished store of an earlier run's
    corpus, e.g. a smaller --limit"."""
    import shutil

    root = tmp_path / "corp"
    shutil.copytree(corpus_root, root)
    wav = next(root.glob("Session1/sentences/wav/*/*.wav"))
    good = wav.read_bytes()
    wav.write_bytes(b"")
    out = tmp_path / "ie.h5"
    base = extract_args(root, tiny, out, "--text-model", "none", "--speaker-model", "none")
    first = CliRunner().invoke(cli, base)
    assert first.exit_code == 0, first.output
    assert [s["id"] for s in open_cache(out).skipped] == [wav.stem]
    wav.write_bytes(good)
    again = CliRunner().invoke(cli, base)
    assert again.exit_code == 2, again.output
    line = next(x for x in again.output.splitlines() if x.startswith("error: "))
    assert line.startswith(f"error: utterance {wav.stem} was skipped in {out} (") and (
        f"reads now; delete {out}" in line
    ), line


def test_dtype_auto_computes_in_bf16_only_where_the_cpu_has_native_bf16(
    tmp_path, corpus_root, tiny, monkeypatch
):
    caches = {}
    for native in ("1", "0"):  # forced detection: an AMX / AVX-512 BF16 CPU, then any other
        monkeypatch.setenv(common.BF16_ENV, native)
        out = tmp_path / f"auto-{native}.h5"
        args = extract_args(corpus_root, tiny, out, *LIGHT, "--limit", "6", "--dtype", "auto")
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        caches[native] = open_cache(out)
    bf16, fp32 = caches["1"], caches["0"]
    assert bf16.settings["fingerprint"]["dtype"] == "bfloat16"
    assert fp32.settings["fingerprint"]["dtype"] == "float32"
    assert bf16.fingerprint != fp32.fingerprint  # the compute dtype is part of what was stored
    for stream in ("speech", "fbank"):
        a = bf16.load(stream)[0].astype(np.float32)
        b = fp32.load(stream)[0].astype(np.float32)
        assert a.shape == b.shape
        # stated tolerance: bf16 keeps 8 mantissa bits (relative rounding 2**-9 per op); per
        # layer the error's RMS stays under 3 % of the fp32 features' RMS (fbank runs in fp32)
        for layer in range(b.shape[1]):
            err = float(np.sqrt(np.mean((a[:, layer] - b[:, layer]) ** 2)))
            assert err <= 0.03 * float(np.sqrt(np.mean(b[:, layer] ** 2))) + 1e-6
    monkeypatch.setenv(common.BF16_ENV, "yes")
    bad = CliRunner().invoke(cli, extract_args(corpus_root, tiny, tmp_path / "x.h5", *LIGHT))
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert [x for x in bad.output.splitlines() if x.startswith("error:")] == [
        f"error: {common.BF16_ENV}='yes': set it to 1 or 0, or unset it"
    ]


def test_batches_are_length_bucketed_and_shards_balanced() -> None:
    rng = np.random.default_rng(0)
    durations = rng.uniform(0.5, 12.0, 200).tolist()
    batches = length_batches(durations, 30.0)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:  # padded seconds within budget unless alone
        assert len(b) == 1 or max(durations[i] for i in b) * len(b) <= 30.0
    shards = [shard_batches(batches, durations, r, 3) for r in range(3)]
    assert sorted(i for s in shards for b in s for i in b) == list(range(200))
    loads = [sum(durations[i] for b in s for i in b) for s in shards]
    assert max(loads) - min(loads) <= 30.0  # within one batch (longest-first greedy)
    assert shards == [shard_batches(batches, durations, r, 3) for r in range(3)]  # deterministic
    assert json.dumps(length_batches(durations, 30.0)) == json.dumps(batches)


@pytest.mark.parametrize("models", ["speech", "fbank", "text"])
def test_the_size_estimate_is_of_the_streams_extracted(tmp_path, corpus_root, tiny, models):
    """With --speech-model none the estimate was 0 B whatever else was extracted (round-10 row
    126, extract side); it is now within a factor of three of the store written."""
    only = {
        "speech": ["--text-model", "none", "--speaker-model", "none"],
        "fbank": [
            "--speech-model",
            "none",
            "--text-model",
            "none",
            "--speaker-model",
            "none",
            "--fbank",
        ],  # fmt: skip
        "text": ["--speech-model", "none", "--speaker-model", "none"],
    }[models]
    out = tmp_path / "sized.h5"
    result = CliRunner().invoke(cli, extract_args(corpus_root, tiny, out, *only))
    assert result.exit_code == 0, result.output
    said = re.search(r"estimated size ([\d.]+) (B|KB|MB|GB)", result.output)
    assert said, result.output
    estimate = float(said.group(1)) * 1000 ** ["B", "KB", "MB", "GB"].index(said.group(2))
    assert out.stat().st_size / 3 <= estimate <= out.stat().st_size * 3, (estimate, out.stat())
    # the parts and the store are both on disk while it is built (round-17 extract side row 31:
    # a disk sized from the estimate ran out)
    assert "(twice that on disk at the end, when the store is built beside its parts)" in (
        result.output
    )


def test_a_finished_store_of_another_corpus_is_named_as_such(tmp_path, corpus_root, tiny):
    """Round-10 row 132: a store of another corpus (no id in common) was called "an earlier
    run's corpus, e.g. a smaller --limit" and the advice was to delete it and rerun."""
    wav = next(corpus_root.rglob("*.wav"))
    manifest = tmp_path / "other.csv"
    manifest.write_text(f"id,audio,text,label,speaker\nelsewhere1,{wav},hello there,neu,s1\n")
    out = tmp_path / "other.h5"
    first = CliRunner().invoke(cli, [
        "extract", "--corpus", "manifest", "--manifest", str(manifest), "--out", str(out),
        "--speech-model", str(tiny.speech["hubert"]), "--text-model", "none",
        "--speaker-model", "none", "--fbank", "--batch-seconds", "4", "--quiet",
    ])  # fmt: skip
    assert first.exit_code == 0, first.output
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    base = extract_args(corpus_root, tiny, out, "--text-model", "none", "--speaker-model", "none")
    again = CliRunner().invoke(cli, [*base, "--limit", "3"])
    assert again.exit_code == 2, again.output
    lines = [x for x in again.output.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {out} is a finished store of another corpus: none of its 1 utterances is in "
        "this one (its first 'elsewhere1', this corpus's first "
    ), again.output
    assert lines[0].endswith("choose another --out") and "delete" not in lines[0]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before
