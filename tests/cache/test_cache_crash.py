"""Crash safety and sharding: SIGKILLed writers resume to the same content; 2 ranks = 1 process."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from cache_synth import N_UTTS, SETTINGS, order, specs, write_cache

from emofuse.cache import CacheWriter, open_cache, verify_cache

CHILD = Path(__file__).parent / "cache_child.py"


def start_child(path: Path, rank: int = 0, world: int = 1) -> subprocess.Popen:
    args = [sys.executable, str(CHILD), str(path), str(N_UTTS), "0", str(rank), str(world)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=CHILD.parent)


def test_sigkill_at_random_points_then_resume_gives_same_digest(tmp_path, reference, suffix):
    _ref_path, ref_digest = reference
    path = tmp_path / f"crash{suffix}"
    rng = random.Random(7 if suffix == ".h5" else 8)
    progress = []
    for _ in range(3):
        child = start_child(path)
        for _line in range(rng.randint(1, 4)):  # let it commit a few, then kill mid-flight
            if not child.stdout.readline():
                break
        time.sleep(rng.uniform(0.0, 0.02))
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        progress.append(len(CacheWriter(path, settings=SETTINGS, streams=specs()).done_ids()))
    assert not path.exists()  # never reported complete after a kill
    assert 0 < progress[0] <= progress[-1] < N_UTTS  # the kills really interrupted the work
    with open_cache(path, allow_incomplete=True) as partial:  # "read what is done"
        assert not partial.complete and len(partial.ids) + len(partial.skipped) == progress[-1]
        values, offsets = partial.load("speech")
        assert len(offsets) == len(partial.ids) + 1 and len(values) == offsets[-1]
    digest = write_cache(path)  # resume in a fresh writer, then consolidate
    assert digest == ref_digest
    assert verify_cache(path).digest == ref_digest
    assert not Path(str(path) + ".parts").exists()


def test_two_ranks_consolidate_to_the_single_process_digest(tmp_path, reference, suffix):
    _ref_path, ref_digest = reference
    path = tmp_path / f"sharded{suffix}"
    children = [start_child(path, rank, 2) for rank in (0, 1)]  # concurrently, like torchrun
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0 and out.strip().endswith("flushed")
    parts = sorted(p.name for p in Path(str(path) + ".parts").iterdir() if p.is_dir())
    assert any(p.startswith("rank000") for p in parts) and any(
        p.startswith("rank001") for p in parts
    )
    w = CacheWriter(path, settings=SETTINGS, streams=specs(), rank=0, world_size=2)
    assert len(w.done_ids()) == N_UTTS  # rank 0 sees every rank's work
    assert w.close(order=order(N_UTTS)) == ref_digest
    assert verify_cache(path).digest == ref_digest
