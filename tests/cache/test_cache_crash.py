"""Crash safety and sharding: SIGKILLed writers resume to the same content; 2 ranks = 1 process."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from emofuse import faults
from emofuse.cache import CacheWriter, open_cache, verify_cache
from tests.cache.cache_synth import N_UTTS, SETTINGS, order, specs, write_cache
from tests.helpers import ROOT

CHILD = Path(__file__).parent / "cache_child.py"


def child_env() -> dict[str, str]:
    """This environment minus any planned fault, with the repository on the path (tests.*)."""
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def start_child(path: Path, rank: int = 0, world: int = 1, fault: str = "") -> subprocess.Popen:
    """The child writer; ``fault`` (EMOFUSE_FAULT) makes it SIGKILL itself at a point it reaches."""
    args = [sys.executable, str(CHILD), str(path), str(N_UTTS), "0", str(rank), str(world)]
    env = child_env()
    if fault:
        env[faults.ENV] = fault
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=CHILD.parent, env=env)


def run_child(path: Path, fault: str = "", rank: int = 0, world: int = 1) -> tuple[int, str]:
    child = start_child(path, rank, world, fault)
    out, _ = child.communicate(timeout=600)
    return child.returncode, out


@pytest.mark.subprocess
def test_sigkill_after_k_commits_then_resume_gives_same_digest(tmp_path, reference, suffix):
    """Each run kills itself right after its k-th committed part (flush_mb=0: one per utterance),
    so what survives is known exactly, on any machine, however fast."""
    _ref_path, ref_digest = reference
    path = tmp_path / f"crash{suffix}"
    rng = random.Random(7 if suffix == ".h5" else 8)
    progress, expected = [], 0
    for _ in range(3):
        k = rng.randint(1, 4)
        code, out = run_child(path, f"part-committed:{k}")
        assert code == -signal.SIGKILL, out
        assert "flushed" not in out  # it died in the middle of its work
        expected += k
        progress.append(len(CacheWriter(path, settings=SETTINGS, streams=specs()).done_ids()))
    assert not path.exists()  # never reported complete after a kill
    assert progress[-1] == expected < N_UTTS  # exactly the committed parts survive, nothing more
    with open_cache(path, allow_incomplete=True) as partial:  # "read what is done"
        assert not partial.complete and len(partial.ids) + len(partial.skipped) == progress[-1]
        values, offsets = partial.load("speech")
        assert len(offsets) == len(partial.ids) + 1 and len(values) == offsets[-1]
    digest = write_cache(path)  # resume in a fresh writer, then consolidate
    assert digest == ref_digest
    assert verify_cache(path).digest == ref_digest
    assert not Path(str(path) + ".parts").exists()


@pytest.mark.subprocess
def test_sigkill_mid_part_write_leaves_no_torn_part(tmp_path, reference, suffix):
    """A kill with a part's files written under their temporary name (not yet renamed) leaves only
    whole parts; the resume drops the temp folder and writes that part again."""
    _ref_path, ref_digest = reference
    path = tmp_path / f"torn{suffix}"
    code, _ = run_child(path, "part-unrenamed:3")  # two parts committed, the third not renamed
    assert code == -signal.SIGKILL
    assert [p.name[:4] for p in Path(str(path) + ".parts").glob(".tmp-*")] == [".tmp"]
    assert len(CacheWriter(path, settings=SETTINGS, streams=specs()).done_ids()) == 2
    assert write_cache(path) == ref_digest


@pytest.mark.subprocess
@pytest.mark.parametrize("stage", ["consolidate-written", "consolidate-renamed"])
def test_sigkill_during_consolidation_then_rerun(tmp_path, reference, suffix, stage):
    """Killed with the temp store written (not verified), or renamed but its parts not yet removed:
    the rerun finishes to the reference digest and leaves neither temp files nor the parts folder."""
    _ref_path, ref_digest = reference
    path = tmp_path / f"cons{suffix}"
    code, out = run_child(path)  # all parts committed, not consolidated
    assert code == 0 and out.strip().endswith("flushed")
    env = child_env()
    script = (
        "import sys; from tests.cache.cache_synth import *; "
        "from emofuse.cache import CacheWriter; "
        "CacheWriter(sys.argv[1], settings=SETTINGS, streams=specs()).close(order=order(N_UTTS))"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        cwd=CHILD.parent,
        env={**env, faults.ENV: f"{stage}:1"},
    )
    assert killed.returncode == -signal.SIGKILL
    parts = Path(str(path) + ".parts")
    if stage == "consolidate-written":
        assert not path.exists() and parts.is_dir()  # never reported complete
        assert list(path.parent.glob(f".{path.name}.tmp-*"))  # the half-done store is there
    else:
        assert path.exists() and parts.is_dir()
    assert write_cache(path) == ref_digest  # resume: consolidate again / find it complete
    assert verify_cache(path).digest == ref_digest
    assert not parts.exists() and not list(path.parent.glob(f".{path.name}.tmp-*"))


@pytest.mark.subprocess
def test_two_ranks_consolidate_to_the_single_process_digest(tmp_path, reference, suffix):
    _ref_path, ref_digest = reference
    path = tmp_path / f"sharded{suffix}"
    children = [start_child(path, rank, 2) for rank in (0, 1)]  # concurrently, like torchrun
    for child in children:
        out, _ = child.communicate(timeout=600)
        assert child.returncode == 0 and out.strip().endswith("flushed")
    parts = sorted(p.name for p in Path(str(path) + ".parts").iterdir() if p.is_dir())
    assert any(p.startswith("rank000") for p in parts) and any(
        p.startswith("rank001") for p in parts
    )
    w = CacheWriter(path, settings=SETTINGS, streams=specs(), rank=0, world_size=2)
    assert len(w.done_ids()) == N_UTTS  # rank 0 sees every rank's work
    assert w.close(order=order(N_UTTS)) == ref_digest
    assert verify_cache(path).digest == ref_digest


@pytest.mark.subprocess
def test_disk_full_during_consolidation_is_one_line_and_the_rerun_finishes(
    tmp_path, reference, suffix, monkeypatch
):
    """ENOSPC while the consolidated store is written: one line, the temporary store removed,
    the parts kept; once there is space again the same close() finishes to the reference."""
    from emofuse.errors import EmofuseError

    _ref_path, ref_digest = reference
    path = tmp_path / f"full{suffix}"
    code, out = run_child(path)  # all parts committed, not consolidated
    assert code == 0 and out.strip().endswith("flushed")
    monkeypatch.setenv(faults.ENV, "consolidate-write:1:enospc")
    faults.reset()
    with pytest.raises(EmofuseError, match="No space left on device") as err:
        CacheWriter(path, settings=SETTINGS, streams=specs()).close(order=order(N_UTTS))
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "rerun" in message
    from emofuse.cache.consolidate import room_needed
    from emofuse.cache.layout import StoreLayout

    need = room_needed(StoreLayout(Path(f"{path}.parts"), order(N_UTTS)))
    assert f"(the store needs up to {need / 1e6:.1f} MB)" in message, message  # as the check says
    assert not path.exists() and not list(path.parent.glob(f".{path.name}.tmp-*"))
    assert (Path(str(path) + ".parts") / "manifest.json").is_file()
    monkeypatch.delenv(faults.ENV)
    faults.reset()
    assert write_cache(path) == ref_digest
    assert not Path(str(path) + ".parts").exists()


@pytest.mark.parametrize("stage", ["part-write", "consolidate-write"])
def test_too_many_open_files_is_named_not_called_a_full_disk(tmp_path, monkeypatch, stage):
    """EMFILE (`ulimit -n 12`) at consolidation said "free disk space (the store needs …)",
    which cannot help: the rerun failed the same way (round-13 extract side row 75)."""
    from emofuse.errors import EmofuseError

    monkeypatch.setenv(faults.ENV, f"{stage}:1:emfile")
    faults.reset()
    path = tmp_path / "fds.h5"
    with pytest.raises(EmofuseError) as err:
        write_cache(path)
    message = str(err.value)
    assert message.startswith(f"cannot write {path} (Too many open files): the process ran out "
                              "of open files (the shell's `ulimit -n`"), message  # fmt: skip
    assert "free disk space" not in message and "rerun the same command" in message
    monkeypatch.delenv(faults.ENV)
    faults.reset()
    assert write_cache(path)  # the advice followed (the limit lifted): the same call finishes


@pytest.mark.parametrize("stage", ["part-write", "consolidate-write"])
def test_a_file_size_limit_is_named_not_called_a_full_disk(tmp_path, monkeypatch, stage):
    """EFBIG (`ulimit -f`, FAT32's 4 GB) while writing a part or the store: the advice was 'free
    disk space', which cannot lift a per-file limit (fourth audit round, row 54)."""
    from emofuse.errors import EmofuseError

    monkeypatch.setenv(faults.ENV, f"{stage}:1:efbig")
    faults.reset()
    path = tmp_path / "big.h5"
    with pytest.raises(EmofuseError) as err:
        write_cache(path)
    message = str(err.value)
    assert message.startswith(f"cannot write {path} (File too large): the file system"), message
    assert "`ulimit -f` limits one file's size" in message and "free disk space" not in message
    assert "\n" not in message and "rerun the same command" in message
