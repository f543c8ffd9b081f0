"""A stale or partial torchrun environment is one line in extract and train (round-15 extract side
rows 41-43: a KeyError traceback, a ValueError traceback, and a rank of 5 of 2 that waited for a
peer with a 48-hour rendezvous timeout)."""

from __future__ import annotations

import pytest

from emofuse.distenv import DistEnv, dist_env

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
