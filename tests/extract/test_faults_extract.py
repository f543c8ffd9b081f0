"""Issue 13, extract side: every user-caused failure is one `error:` line (exit 2), never a traceback,
never a store reported complete when it is not, never silent data loss."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import soundfile as sf
from click.testing import CliRunner

from emofuse import faults
from emofuse.cache import open_cache
from emofuse.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def error_line(output: str) -> str:
    """The one `error:` line of a failed command (and nothing that looks like a traceback)."""
    assert "Traceback" not in output and "Usage:" not in output, output
    lines = [x for x in output.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    env.pop(faults.ENV, None)
    env["OMP_NUM_THREADS"] = "1"
    return {**env, **extra}


def write_manifest(folder: Path, clips: dict[str, tuple[np.ndarray, int]], **cols) -> Path:
    """A manifest over `clips` (name -> (samples, rate)), one utterance per clip."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (wav, rate) in clips.items():
        sf.write(folder / name, wav, rate, subtype="PCM_16")
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "audio", "text", "label", "speaker"])
        for name in clips:
            w.writerow([Path(name).stem, name, "hello there", cols.get("label", "neu"), "spk1"])
    return path


def tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def manifest_args(manifest: Path, tiny, out: Path, *extra: str) -> list[str]:
    return [
        "extract", "--corpus", "manifest", "--manifest", str(manifest), "--out", str(out),
        "--speech-model", str(tiny.speech["wav2vec2-group"]), "--text-model", "none",
        "--speaker-model", "none", "--quiet", *extra,
    ]  # fmt: skip


# --- case 14: click's usage errors are one line ------------------------------------------------


def test_bad_granularity_is_one_error_line(tmp_path) -> None:
    result = CliRunner().invoke(
        cli, ["extract", "--root", str(tmp_path), "--out", str(tmp_path / "x.h5"),
              "--granularity", "foo"]
    )  # fmt: skip
    assert result.exit_code == 2
    line = error_line(result.output)
    assert "--granularity" in line and "frame" in line
    assert len([x for x in result.output.splitlines() if x.strip()]) == 1


# --- cases 5 and 16: truncated WAV, absurd sample rate ------------------------------------------


def test_truncated_wav_is_skipped_and_reported(tmp_path, tiny) -> None:
    manifest = write_manifest(tmp_path / "c", {"good.wav": (tone(1.0), 16000),
                                               "cut.wav": (tone(1.0), 16000)})  # fmt: skip
    cut = tmp_path / "c" / "cut.wav"
    cut.write_bytes(cut.read_bytes()[: 44 + 16000])  # the header still claims 32000 bytes
    out = tmp_path / "trunc.h5"
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert result.exit_code == 0, result.output
    assert "skipped 1 utterances for bad audio" in result.output
    assert "  cut: truncated audio cut.wav" in result.output
    c = open_cache(out)
    assert c.ids == ["good"]
    assert [s["id"] for s in c.skipped] == ["cut"] and "truncated" in c.skipped[0]["reason"]


def test_sample_rate_below_the_floor_is_refused_naming_the_file(tmp_path, tiny) -> None:
    manifest = write_manifest(
        tmp_path / "c",
        {
            "good.wav": (tone(1.0), 16000),
            "slow.wav": (0.1 * np.random.default_rng(0).random(100), 1),
        },
    )  # 100 samples at 1 Hz: a "100 s" utterance
    out = tmp_path / "slow.h5"
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert result.exit_code == 2, result.output
    line = error_line(result.output)
    assert "slow.wav" in line and "1 Hz" in line and "4000" in line
    assert not out.exists() and not Path(str(out) + ".parts").exists()
