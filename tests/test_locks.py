"""The output lock: one writer per output, stale locks taken over, never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from emofuse.errors import EmofuseError
from emofuse.locks import lock_path, output_lock

HOLDER = """
import sys
from emofuse.locks import output_lock
with output_lock(sys.argv[1], "extract"):
    print("held", flush=True)
    sys.stdin.readline()
"""


@pytest.mark.subprocess
def test_a_live_holder_refuses_a_second_writer_in_one_line(tmp_path):
    out = tmp_path / "cache.h5"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "held"  # the child reports the lock is taken
        with pytest.raises(EmofuseError) as err, output_lock(out, "extract"):
            pass
        message = str(err.value)
        assert "\n" not in message and str(out) in message and f"pid {child.pid}" in message
    finally:
        child.communicate("done\n")
    assert child.returncode == 0 and not lock_path(out).exists()  # released by its holder
    with output_lock(out, "extract"):  # free again
        assert json.loads(lock_path(out).read_text())["command"] == "extract"


@pytest.mark.subprocess
def test_a_stale_lock_is_taken_over_and_a_foreign_hosts_lock_is_not(tmp_path, capsys):
    out = tmp_path / "run"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True)  # fmt: skip
    host = socket.gethostname()
    lock_path(out).write_text(json.dumps({"pid": int(dead.stdout), "host": host}))
    with output_lock(out, "train"):
        assert json.loads(lock_path(out).read_text())["pid"] != int(dead.stdout)
    assert "stale lock" in capsys.readouterr().err and not lock_path(out).exists()
    lock_path(out).write_text("{torn")  # a holder killed while writing its lock: stale
    with output_lock(out, "train"):
        pass
    lock_path(out).write_text(json.dumps({"pid": 1, "host": host + "-elsewhere"}))
    with pytest.raises(EmofuseError, match="being written by.*elsewhere"), output_lock(out, "x"):
        pass
    assert lock_path(out).exists()  # someone else's lock is never removed


def test_the_lock_is_released_on_an_error_and_bad_parents_are_one_line(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), output_lock(out, "train"):
        raise RuntimeError("boom")
    assert not lock_path(out).exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EmofuseError, match="regular file"), output_lock(blocker / "out", "train"):
        pass


@pytest.mark.subprocess
def test_a_symlink_or_dotdot_path_to_a_held_output_is_refused(tmp_path):
    """The lock was named after the path string: a symlink to a run folder (or a/../run) took a
    second lock, and two trainings wrote one run."""
    real = tmp_path / "run"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "a").mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(real)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "held"
        for other in (tmp_path / "link", tmp_path / "a" / ".." / "run", f"{real}/"):
            assert lock_path(other) == lock_path(real)
            with pytest.raises(EmofuseError, match=f"pid {child.pid}"), output_lock(other, "x"):
                pass
    finally:
        child.communicate("done\n")
    assert child.returncode == 0 and not lock_path(real).exists()
    assert not (tmp_path / "link.lock").exists()


def test_a_folder_where_the_lock_file_goes_is_named(tmp_path, capsys):
    """Round-7 audit: `mkdir out.h5.lock` gave "note: removing stale lock … (its process is
    gone)" (nothing was removed) and then "cannot write in <folder> (Is a directory)" of a
    writable folder."""
    out = tmp_path / "out.h5"
    (tmp_path / "out.h5.lock").mkdir()
    with pytest.raises(EmofuseError) as err:
        with output_lock(out, "extract"):
            pass
    assert str(err.value) == (
        f"{tmp_path / 'out.h5.lock'} is in the way of the lock file emofuse keeps beside {out} "
        "(it is a folder or a special file); move it away and rerun"
    )
    assert "removing stale lock" not in capsys.readouterr().err


def test_a_lock_whose_pid_now_belongs_to_a_later_process_is_stale(tmp_path, capsys):
    """Round-8 audit: a lock left by a run killed days ago whose pid another program now has
    (after a reboot) was taken as a live writer: "is being written by another emofuse extract
    (pid 1 …)". The process started after the lock was taken, so it cannot be its holder."""
    import os
    import time

    out = tmp_path / "out.h5"
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": "extract"}
    lock = tmp_path / "out.h5.lock"
    lock.write_text(json.dumps({**record, "started": "2020-01-01T00:00:00"}))  # before this test
    with output_lock(out, "extract"):
        pass
    assert "removing stale lock" in capsys.readouterr().err
    lock.write_text(json.dumps({**record, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    with pytest.raises(EmofuseError, match="being written by another emofuse extract"):
        with output_lock(out, "extract"):
            pass


def test_a_lock_file_never_appears_without_its_holder(tmp_path, monkeypatch):
    """Round-11 row 119: between the exclusive create and the write of its record a lock file
    was empty, and a second writer read an empty lock as stale, removed it and ran alongside.
    The record is written under a temporary name and hard-linked to the lock's name."""
    import os

    from emofuse import locks

    out = tmp_path / "out.csv"
    seen = []
    real_link = os.link

    def link(src, dst):  # the moment the lock's name appears, its record is already there
        seen.append(json.loads(open(src).read()))
        real_link(src, dst)

    monkeypatch.setattr(locks.os, "link", link)
    with output_lock(out, "align"):
        assert seen and seen[0]["pid"] == os.getpid() and seen[0]["command"] == "align"
        assert json.loads(lock_path(out).read_text()) == seen[0]
        assert [p.name for p in tmp_path.iterdir()] == [lock_path(out).name]  # no temporary left
    assert not lock_path(out).exists()

    def no_links(src, dst):  # a file system without hard links: an exclusive create instead
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(locks.os, "link", no_links)
    with output_lock(out, "align"):
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_where_the_lock_goes_says_to_free_space_and_leaves_no_temporary(
    tmp_path, monkeypatch
):
    """A full disk when the lock was written said "choose a writable --out" of a writable folder
    and left a 0-byte `.x.h5.lock.….tmp` behind, even after the rerun (round-13 extract side
    row 68)."""
    import errno

    from emofuse import locks

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(locks.os, "fsync", full)
    out = tmp_path / "x.h5"
    with pytest.raises(EmofuseError) as err, output_lock(out, "extract"):
        pass
    assert str(err.value) == (
        f"cannot write in {tmp_path} (No space left on device); free disk space there and rerun "
        "the same command (or choose a writable --out)"
    )
    assert list(tmp_path.iterdir()) == []  # no lock, no temporary


def test_a_lock_this_process_may_not_read_is_never_taken_as_stale(unprivileged):
    """Round-17 extract side row 87: a live writer's lock at mode 000 (another user's, umask 077)
    read as torn, so it was removed as stale and a second writer went ahead beside the first."""
    from emofuse.locks import live_holder

    base, as_user = unprivileged
    out = base / "c.h5"
    lock = lock_path(out)
    with output_lock(out, "extract"):  # held by this (root) process, alive
        lock.chmod(0)
        with as_user():
            with pytest.raises(EmofuseError) as err, output_lock(out, "extract"):
                pass
            assert live_holder(out) is not None  # readers see it held too
        assert lock.exists()
    assert str(err.value) == (
        f"{out} is locked by {lock}, which this process may not read (Permission denied): "
        f"another user's emofuse may be writing it; ask them, or if no emofuse is running on it, "
        f"delete {lock}"
    )
