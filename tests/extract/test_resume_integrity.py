"""A resumed or repeated `emofuse extract` never trusts stored bytes it has not checked.

A committed part records the size and CRC-32 of every file it wrote; the resume checks them before
anything is encoded and sets a damaged part aside (its utterances are encoded again, so the cache
ends equal to an uninterrupted run's), and consolidation checks them again. A rerun into a finished
store verifies its checksums before calling it complete.
"""

from __future__ import annotations

import json
import signal
import subprocess
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from emofuse import faults
from emofuse.cache.consolidate import consolidate
from emofuse.cli import cli
from emofuse.errors import EmofuseError
from tests.extract.test_faults_extract import (
    N_CLIPS,
    child_env,
    error_line,
    manifest_args,
    write_manifest,
)
from tests.helpers import PYTHON


@pytest.fixture
def clips() -> dict[str, tuple[np.ndarray, int]]:
    """The clips of test_faults_extract (six noise clips of 0.4-0.9 s)."""
    rng = np.random.default_rng(1)
    return {
        f"u{i}.wav": ((0.1 * rng.standard_normal(int(16000 * (0.4 + 0.1 * i)))), 16000)
        for i in range(N_CLIPS)
    }


def digest_of(path: Path) -> str:
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 0, result.output
    return next(x for x in result.output.splitlines() if x.startswith("digest: ")).split()[1]


def killed_after_two_parts(tiny, manifest: Path, out: Path) -> Path:
    """The extract SIGKILLs itself right after its 2nd committed part (one utterance each)."""
    cmd = [PYTHON, "-m", "emofuse", *manifest_args(manifest, tiny, out, "--flush-seconds", "0")]
    run = subprocess.run(
        cmd, env=child_env(**{faults.ENV: "part-committed:2"}), capture_output=True, text=True
    )
    assert run.returncode == -signal.SIGKILL, run.stdout + run.stderr
    parts = Path(f"{out}.parts")
    assert sorted(p.name for p in parts.glob("rank*")) == ["rank000-000000", "rank000-000001"]
    assert not out.exists()
    return parts


def truncate(file: Path) -> None:
    with open(file, "r+b") as fh:
        fh.truncate(file.stat().st_size // 2)


def flip_middle(file: Path, n: int = 32) -> None:
    raw = bytearray(file.read_bytes())
    mid = len(raw) // 2 + 64  # past the .npy header: the values themselves
    raw[mid : mid + n] = bytes(b ^ 0xFF for b in raw[mid : mid + n])
    file.write_bytes(bytes(raw))


@pytest.mark.subprocess
@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
@pytest.mark.parametrize("damage", ["truncated", "flipped", "index-edited"])
def test_a_damaged_committed_part_is_set_aside_and_encoded_again(
    tmp_path, tiny, clips, suffix, damage
):
    """A part's speech.data.npy truncated (the resume used to crash with numpy's ValueError
    traceback) or 32 bytes flipped in its values (the resume used to keep them, and the final
    checksums, computed from the part, blessed them: verify ok, another digest), or a value in its
    index.json edited (its table row: the same silent change). Now the resume
    names the part and why, sets it aside and encodes its utterance again: the digest equals an
    uninterrupted run's."""
    manifest = write_manifest(tmp_path / "c", clips)
    ref = tmp_path / f"ref{suffix}"
    assert CliRunner().invoke(cli, manifest_args(manifest, tiny, ref)).exit_code == 0
    out = tmp_path / f"out{suffix}"
    parts = killed_after_two_parts(tiny, manifest, out)
    victim = parts / "rank000-000000" / "speech.data.npy"
    if damage == "index-edited":  # still valid JSON, one table value changed
        index = json.loads((victim.parent / "index.json").read_text())
        index["meta"][0]["duration"] += 1.0
        (victim.parent / "index.json").write_text(json.dumps(index))
    else:
        (truncate if damage == "truncated" else flip_middle)(victim)
    if damage == "truncated":  # info names it (sizes only: a flip needs the resume's CRC read)
        info = CliRunner().invoke(cli, ["info", str(out)])
        assert info.exit_code == 0, info.output
        assert "DAMAGED: part rank000-000000 damaged (speech.data.npy: " in info.output
        assert "(truncated)); rerun the same `emofuse extract`" in info.output
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 0, again.output
    assert "Traceback" not in again.output
    warning = [x for x in again.output.splitlines() if x.startswith("warning: ")]
    assert len(warning) == 1, again.output
    why = {"truncated": "truncated", "flipped": "content changed", "index-edited": "changed"}[
        damage
    ]
    file = "index.json" if damage == "index-edited" else "speech.data.npy"
    assert warning[0].startswith(f"warning: {parts / 'rank000-000000'} is damaged ({file}: ")
    assert why in warning[0] and "its 1 utterance(s) are encoded again" in warning[0]
    assert "resuming: 1 already stored" in again.output, again.output
    assert f"stored {N_CLIPS - 1} utterances" in again.output
    assert digest_of(out) == digest_of(ref)
    assert not parts.exists()


@pytest.mark.parametrize("recorded", ["row-crcs", "older-part"])
def test_consolidation_refuses_a_part_damaged_after_the_resume_checked_it(
    tmp_path, tiny, clips, recorded
):
    """The final store's checksums are computed from the parts, so a part damaged after the
    resume checked it would be blessed. A part records each utterance's CRC-32s at commit and the
    copy checks every piece against them (one read of the parts); a part written before that
    (no ``row_crc32``) is re-read against its file CRC-32 first. Either way: one line naming the
    part (and the utterance), no temporary store left, the parts kept for the rerun."""
    from emofuse.cache.parts import INDEX_CRC
    from emofuse.cache.schema import canonical_json

    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "late.h5"
    parts = killed_after_two_parts(tiny, manifest, out)
    victim = parts / "rank000-000001"
    index = json.loads((victim / "index.json").read_text())
    assert set(index["row_crc32"]) >= {"speech.data", "speech_mean.data", "phone.data"}
    if recorded == "older-part":
        del index["row_crc32"], index[INDEX_CRC]
        index[INDEX_CRC] = zlib.crc32(canonical_json(index))
        (victim / "index.json").write_text(json.dumps(index))
    flip_middle(victim / "speech.data.npy")
    with pytest.raises(EmofuseError) as err:
        consolidate(out, progress=False)
    msg = str(err.value)
    if recorded == "row-crcs":
        uid = index["ids"][0]
        assert msg.startswith(f"{victim} is damaged (speech.data.npy: the rows of {uid} changed ")
    else:
        assert msg.startswith(f"{victim} is damaged (speech.data.npy: CRC-32 ")
    assert "rerun the same `emofuse extract` command" in msg and "\n" not in msg
    assert not out.exists() and len(list(parts.glob("rank*"))) == 2
    assert not list(tmp_path.glob(".late.h5.tmp-*"))  # the half-written store is removed
    # the advice works; both runs in a child with the killed run's thread count (the count moves
    # the last bits of CPU kernels, and one utterance of ``out`` was encoded by the killed child)
    said = []
    for target in (out, tmp_path / "ref.h5"):
        run = subprocess.run(
            [PYTHON, "-m", "emofuse", *manifest_args(manifest, tiny, target)],
            env=child_env(), capture_output=True, text=True,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        said.append(run.stderr)
    assert f"warning: {victim} is damaged (speech.data.npy: CRC-32 " in said[0], said[0]
    assert digest_of(out) == digest_of(tmp_path / "ref.h5")


def _flip_h5(path: Path, name: str, n: int = 16) -> None:
    with h5py.File(path, "r+") as f:
        data = f[name][...]
        raw = data.view(np.uint8).reshape(-1)
        mid = raw.size // 2
        raw[mid : mid + n] ^= 0xFF
        f[name][...] = data


def _flip_zarr(path: Path, name: str, n: int = 16) -> None:
    import zarr

    arr = zarr.open_array(str(path / name), mode="r+")
    data = arr[...]
    raw = data.view(np.uint8).reshape(-1)
    mid = raw.size // 2
    raw[mid : mid + n] ^= 0xFF
    arr[...] = data


def _delete_h5(path: Path, name: str) -> None:
    with h5py.File(path, "r+") as f:
        del f[name]


def _delete_zarr_chunk(path: Path, name: str) -> None:
    chunks = sorted((path / name / "c").rglob("*"))
    files = [c for c in chunks if c.is_file()]
    assert files
    files[-1].unlink()


@pytest.mark.parametrize(
    ("suffix", "damage"),
    [
        (".h5", _delete_h5),
        (".h5", _flip_h5),
        (".zarr", _delete_zarr_chunk),
        (".zarr", _flip_zarr),
    ],
    ids=["h5-dataset-deleted", "h5-bytes-flipped", "zarr-chunk-deleted", "zarr-bytes-flipped"],
)
def test_a_rerun_into_a_damaged_complete_store_says_it_is_damaged(
    tmp_path, tiny, clips, suffix, damage
):
    """The same command on a finished store that was damaged afterwards used to say every
    utterance was "already there", print the intact digest and exit 0 while `verify` said
    FAILED. It verifies the store first and says, in one line, that it is damaged."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / f"done{suffix}"
    assert CliRunner().invoke(cli, manifest_args(manifest, tiny, out)).exit_code == 0
    same = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert same.exit_code == 0 and f"{N_CLIPS} were already there" in same.output, same.output
    damage(out, "streams/speech/data")
    assert "verify: FAILED" in CliRunner().invoke(cli, ["verify", str(out)]).output
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 2, again.output
    line = error_line(again.output)
    assert line.startswith(f"error: {out} is damaged (stream 'speech'"), line
    assert line.endswith("): delete it and rerun to re-extract"), line
    assert "already there" not in again.output and "digest:" not in again.output
