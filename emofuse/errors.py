"""User-facing errors.

Anything a user can cause (missing file, bad audio, wrong cache, bad option) is raised as an
``EmofuseError`` whose message is ONE line naming the file / utterance / option and what to do.
The CLI prints ``error: <message>`` and exits with status 2 — never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path


class EmofuseError(Exception):
    """A problem the user can fix; ``str(err)`` is the one-line message shown to them."""

    exit_code = 2


def check_out_path(out: str | os.PathLike, option: str = "--out") -> None:
    """One-line error when ``out`` cannot be created: a parent is a regular file, or not writable.

    Checks the nearest existing ancestor (nothing is created); a folder that exists already is
    checked itself.
    """
    _check_nearest_folder(Path(out), Path(out), option)


def _check_nearest_folder(out: Path, start: Path, option: str) -> None:
    """The nearest existing ancestor of ``start`` (itself included) must be a writable folder."""
    for link in (out, *out.parents):  # a link to nowhere: neither a parent file nor disk space
        # (a link to a path not made yet in a folder that exists is fine: it is written there)
        if link.is_symlink() and not Path(os.path.realpath(link)).parent.exists():
            raise EmofuseError(
                f"{option} {out}: {link} is a symbolic link to {os.readlink(link)}, whose folder "
                f"does not exist; fix or remove the link, or choose another {option}"
            )
    probe = start
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise EmofuseError(
            f"{option} {out}: {probe} is a regular file, not a folder; choose another {option}"
        )
    if probe.is_dir() and not _may(probe, os.W_OK | os.X_OK):
        if _read_only_mount(probe):  # access() says "no" there whatever the mode: chmod cannot help
            raise EmofuseError(
                f"{option} {out}: {probe} is on a file system mounted read-only; remount it "
                f"read-write, or choose another {option}"
            )
        fix = f"choose a writable {option}"
        with contextlib.suppress(OSError):
            if probe == out and any(probe.iterdir()):  # a run or store to resume: keep its work
                fix = f"make it writable (`chmod u+w {probe}`) to go on in it, or {fix}"
        raise EmofuseError(f"{option} {out}: cannot write in {probe} (permission denied); {fix}")


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def os_reason(err: BaseException) -> str:
    """What went wrong, in one line, for an ``OSError`` from the OS or from a library over it.

    The errno's own text when there is one ("No space left on device"): HDF5's error text is a
    paragraph (file descriptor, buffer address, offsets) with a ctime() time stamp that ends in a
    newline, so quoting it would break the one-line rule. Otherwise the text, whitespace collapsed.
    """
    code = getattr(err, "errno", None)
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    text = " ".join(str(getattr(err, "strerror", None) or err).split())
    return text or type(err).__name__


# errno of a write the file system refuses, and of a folder where a file goes
WRITE_ERRORS = (
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EIO,
    errno.EFBIG,
)
IN_THE_WAY = (errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY)


def in_the_way(err: OSError) -> str:
    """What to do about an ``IN_THE_WAY`` error: move away the file or folder it names."""
    what = "a file where a folder" if err.errno == errno.ENOTDIR else "a folder where a file"
    return f"move away what is in the way ({err.filename} is {what} goes)"


NAME_TOO_LONG = (
    "a file name there is longer than the file system allows (255 bytes a name, the side files "
    "NAME.lock and NAME.parts included); give a shorter name"
)


def from_stdout(err: BaseException) -> bool:
    """Whether ``err`` was raised writing standard output: click.echo to file descriptor 1 (every
    command prints through click.echo; a file it writes raises from its own code, not from here).
    A command's own write-error line must not blame its output file for it."""
    import click.utils

    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code is click.utils.echo.__code__:
            stream = frame.f_locals.get("file")
            try:
                return stream is sys.stdout or stream.fileno() == 1
            except (AttributeError, OSError, ValueError):  # a stream without a descriptor
                return False
        tb = tb.tb_next
    return False


def write_fix(err: BaseException, usual: str) -> str:
    """What to do about a failed write: ``usual`` (free disk space ...), except where more disk
    space cannot help: a per-file size limit (EFBIG), a read-only mount, too many open files or
    too little memory."""
    code = getattr(err, "errno", None)
    if code == errno.EFBIG:
        return (
            "the file system (e.g. FAT32's 4 GB) or the shell's `ulimit -f` limits one file's size: "
            "write to another file system or raise the limit"
        )
    if code == errno.EROFS:  # disk space is not the problem there
        return "the file system is mounted read-only: remount it read-write or write elsewhere"
    if code == errno.ENAMETOOLONG:
        return NAME_TOO_LONG
    if code in (errno.EMFILE, errno.ENFILE):  # open files, not disk space, ran out
        return (
            "the process ran out of open files (the shell's `ulimit -n`, or the system's limit): "
            "raise it (e.g. `ulimit -n 4096`)"
        )
    if code == errno.ENOMEM:
        return "the process ran out of memory (or the shell's `ulimit -v`): free memory or raise it"
    left = _inodes_left(getattr(err, "filename", None)) if code == errno.ENOSPC else None
    if left is not None and left < FEW_INODES:  # bytes may be free: files are what ran out
        return (
            f"{usual} — its file system has room for only {left} more files (`df -i`; a Zarr "
            "store is many files), so free some files there or write to another file system"
        )
    return usual


FEW_INODES = 1000  # free inodes below which a full disk may be one of files, not bytes


def _inodes_left(filename: str | os.PathLike | None) -> int | None:
    """Files (inodes) the file system holding ``filename`` can still make; None: not known."""
    if not filename:
        return None
    folder = Path(filename).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    return int(stat.f_favail) if stat.f_files > 0 else None  # f_files 0: no count kept


def cannot_write(err: OSError, target: str | os.PathLike, then: str) -> EmofuseError:
    """The one line for a write the file system refused (full disk, size limit, read-only):
    which file, why, what to do about it, and ``then`` (how the rerun goes on)."""
    if from_stdout(err):  # not the file's doing: the command line's own handler says so
        raise err
    name = err.filename or target
    usual = f"free disk space or make {Path(name).parent} writable"
    return EmofuseError(f"cannot write {name} ({os_reason(err)}): {write_fix(err, usual)}, {then}")


def check_out_file(out: str | os.PathLike, option: str = "--out") -> None:
    """One-line error when the output FILE ``out`` cannot be written: it is a folder, a parent is
    a regular file, or the nearest existing folder is not writable (nothing is created)."""
    out = Path(out)
    if out.is_dir():
        raise EmofuseError(f"{option} {out} is a folder; give a file name in it or elsewhere")
    _check_nearest_folder(
        out, out.parent, option
    )  # an existing file is replaced: its folder counts


MAKE_READABLE = "make it readable (`chmod u+r` it, or ask its owner)"  # a permission, not damage
RERUN = "then rerun the same command"


def cannot_read(path: str | os.PathLike, err: OSError) -> EmofuseError:
    """One line for a file a command only reads and may not open: its mode, never "cannot write"
    or "damaged" (an intact file, perhaps)."""
    denied = err.errno in (errno.EACCES, errno.EPERM)
    closed = closed_folder(path) if denied else None
    if closed is not None:  # the file may be fine: a folder above it cannot be entered
        return EmofuseError(
            f"{path} cannot be read ({os_reason(err)}): the folder {closed} cannot be entered; "
            f"{make_enterable(closed)}, {RERUN}"
        )
    fix = MAKE_READABLE if denied else "check the file and disk"
    return EmofuseError(f"{path} cannot be read ({os_reason(err)}); {fix}, {RERUN}")


def _may(path: Path, mode: int) -> bool:
    """This process may access ``path`` in ``mode``: its effective uid decides (os.access
    checks the real one by default)."""
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def readable_file(path: Path) -> bool:
    """This process may open ``path`` for reading."""
    return _may(path, os.R_OK)


def closed_folder(path: str | os.PathLike) -> Path | None:
    """The outermost folder above ``path`` this process may not enter (search), or None."""
    for folder in reversed(Path(os.path.abspath(path)).parents):
        if folder.is_dir() and not _may(folder, os.X_OK):
            return folder
    return None


def make_enterable(folder: str | os.PathLike) -> str:
    """The fix for a folder this process may not enter (the advice every message gives)."""
    return f"make it accessible (`chmod u+rwx {folder}`, or ask its owner)"


def readable_folder(folder: Path) -> bool:
    """This process may list and enter ``folder``."""
    return _may(folder, os.R_OK | os.X_OK)


LOOPS = (
    "is a symbolic link that loops back on itself (directly or through another link); fix or "
    "remove the link"
)


MEMORY_ADVICE = (
    "the process ran out of memory or address space (the shell's `ulimit -v`, a cluster job's "
    "memory limit): free memory or raise the limit (PyTorch's libraries alone map several GB; "
    "`ulimit -v unlimited`)"
)
_MEMORY_WORDS = (
    "cannot allocate memory",
    "unable to mmap",
    "failed to map segment",
    "out of memory",
)


def out_of_memory(exc: BaseException) -> bool:
    """``exc`` (or what caused it) says memory or address space ran out, not that a file is bad."""
    seen = 0
    while exc is not None and seen < 8:
        text = str(exc).lower()
        if isinstance(exc, MemoryError) or any(w in text for w in _MEMORY_WORDS):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
