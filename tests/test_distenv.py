"""A stale or partial torchrun environment is one line in extract and train (round-15 extract side
rows 41-43: a KeyError traceback, a ValueError traceback, and a rank of 5 of 2 that waited for a
peer with a 48-hour rendezvous timeout)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from emofuse.distenv import DistEnv, dist_env
from tests.helpers import PYTHON, ROOT

FULL = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533"}


@pytest.mark.parametrize(
    "env, says",
    [
        (
            {"WORLD_SIZE": "2"},
            "WORLD_SIZE=2 is set but RANK, MASTER_ADDR, MASTER_PORT are not (a stale",
        ),
        (
            {"WORLD_SIZE": "2", "RANK": "0"},
            "WORLD_SIZE=2 is set but MASTER_ADDR, MASTER_PORT are not",
        ),
        (
            {"WORLD_SIZE": "0"},
            "environment variable WORLD_SIZE='0' is not a whole number 1 or more",
        ),
        ({"WORLD_SIZE": "abc"}, "environment variable WORLD_SIZE='abc' is not a whole number 1"),
        (
            {"WORLD_SIZE": "2", "RANK": "5", **FULL},
            "RANK='5' is not a whole number from 0 to 1 (a stale torchrun or Slurm setting?); unset WORLD_SIZE and RANK to run",
        ),
        ({"WORLD_SIZE": "2", "RANK": "x", **FULL}, "RANK='x' is not a whole number from 0 to 1"),
        ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "-1", **FULL}, "LOCAL_RANK='-1' is not"),
        (  # round-17 extract side row 1 and train side row 8: torch's rendezvous tracebacks
            {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "abc"},
            "MASTER_PORT='abc' is not a whole number from 1 to 65535",
        ),
        (
            {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "99999"},
            "MASTER_PORT='99999' is not a whole number from 1 to 65535",
        ),
    ],
)
def test_a_bad_torchrun_environment_is_one_line(monkeypatch, tmp_path, env, says) -> None:
    from emofuse.errors import EmofuseError

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(EmofuseError) as err:
        dist_env()
    assert str(err.value).startswith(says) or says in str(err.value), str(err.value)
    assert "torchrun" in str(err.value)
    from emofuse.extract.runtime import Dist
    from emofuse.train.run import train_run
    from tests.helpers import FakeCache

    with pytest.raises(EmofuseError, match="torchrun"):
        Dist.from_env()  # what extract reads before it loads a model
    with pytest.raises(EmofuseError, match="torchrun"):
        train_run(FakeCache(n_per_speaker=2), "audio", tmp_path / "r", "loso", progress=False)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, DistEnv()),
        ({"WORLD_SIZE": "1"}, DistEnv()),
        ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", **FULL}, DistEnv(1, 2, 1)),
    ],
)
def test_a_whole_torchrun_environment_is_read(monkeypatch, env, expected) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert dist_env() == expected


WAITER = """
import datetime, sys
sys.path.insert(0, {root!r})
from emofuse import distenv
from emofuse.errors import EmofuseError
distenv.NOTE_AFTER_S = 0.2
try:
    distenv.join_group("gloo", datetime.timedelta(seconds={timeout}), distenv.dist_env())
except EmofuseError as err:
    print("error:", err, file=sys.stderr, flush=True)
    sys.exit(2)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _waiter(timeout: float, host: str = "127.0.0.1") -> subprocess.Popen:
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": host,
           "MASTER_PORT": str(_free_port())}  # fmt: skip
    code = WAITER.format(root=str(ROOT), timeout=timeout)
    return subprocess.Popen(
        [PYTHON, "-c", code], env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )


def test_a_rank_waiting_for_peers_that_never_come_says_so_and_stops_on_sigterm() -> None:
    """Round-17 train side row 9: a stale but well-formed WORLD_SIZE=2 waited for rank 1 in
    silence, and SIGTERM or Ctrl-C could not stop it (only SIGKILL)."""
    proc = _waiter(timeout=3600)
    line = proc.stderr.readline()  # blocks until the note: the point the child reports
    assert line.startswith("note: rank 0 of 2 (WORLD_SIZE=2) is waiting for the other 1 "), line
    assert "press Ctrl-C and unset WORLD_SIZE to run in one process" in line, line
    proc.terminate()
    assert proc.wait(timeout=120) == -signal.SIGTERM
    proc.stderr.close()


def test_a_rendezvous_that_times_out_is_one_line() -> None:
    proc = _waiter(timeout=1)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(
        "error: rank 0 of 2 could not join the other processes at 127.0.0.1:"
    )
    assert lines[0].endswith(
        "check MASTER_ADDR and MASTER_PORT, or unset WORLD_SIZE to run in one process, or start emofuse with torchrun (which sets them all)"
    )


def test_a_master_addr_that_names_no_host_is_one_line() -> None:
    """Round-17 train side row 100: an unresolvable MASTER_ADDR retried for ever, printing only
    torch's C++ warnings (ten in 45 s), and no `error:` line."""
    proc = _waiter(timeout=3600, host="no.such.host.invalid")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in err and "[W" not in err, err
    line = err.strip()
    assert line.startswith(
        "error: environment variable MASTER_ADDR='no.such.host.invalid' names no host this "
        "machine can find ("  # the resolver's reason varies (no name, or no DNS at all)
    ), line
    assert line.endswith(
        "; a stale torchrun or Slurm setting?); fix it, or unset WORLD_SIZE to run in one "
        "process, or start emofuse with torchrun (which sets them all)"
    ), line
