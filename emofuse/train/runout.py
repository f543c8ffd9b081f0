"""The run folder as an output: what ``--out`` may be, its creation, and a write the file system
refuses while a run is written (one line: the finished folds are kept, the same command resumes)."""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Any

from emofuse.errors import (
    IN_THE_WAY,
    WRITE_ERRORS,
    EmofuseError,
    check_out_path,
    from_stdout,
    in_the_way,
    os_reason,
    write_fix,
)
from emofuse.fileio import remove_temporaries
from emofuse.train.outdir import check_outside_runs, check_run_out, is_fused_folder
from emofuse.train.rundir import finished_folds

OUT_OF = (errno.EMFILE, errno.ENFILE, errno.ENOMEM)  # open files or memory: write_fix names them


def check_out(out: Path, cache_path: str | Path | None) -> None:
    """One-line errors for an ``--out`` that cannot be a run folder: a file, a path under a regular
    file, or a place inside the cache (a Zarr cache is a folder; ``.parts`` is its journal)."""
    if out.exists() and not out.is_dir():
        raise EmofuseError(f"--out {out} is a file, not a folder; give a folder for the run")
    check_out_path(out)  # a parent that is a regular file, or not writable
    from emofuse.cache.store import check_outside_caches

    check_outside_caches(out, "a run folder", [cache_path] if cache_path is not None else [])
    check_run_out(out, "emofuse train")  # a folder of the user's files is never written into
    check_outside_runs(out, "a folder for the run")
    from emofuse.train.outdir import config_missing_error

    if (out / "folds.json").is_file() and any(out.glob("fold_*/checkpoint.pt")):
        if refusal := config_missing_error(out):  # trained folds, their settings lost
            raise refusal
    if is_fused_folder(out):
        raise EmofuseError(
            f"--out {out} is a late-fusion run folder (made by `emofuse fuse`), not a train run: "
            "emofuse train cannot resume it; give a new --out"
        )


def prepare_out(out: Path) -> None:
    """Create the run folder ``out``; what the file system refuses is a one-line error."""
    if out.exists() and not out.is_dir():
        raise EmofuseError(f"--out {out} is a file, not a folder; give a folder for the run")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise EmofuseError(
            f"--out {out}: a parent is a regular file, not a folder; choose another --out"
        ) from None
    except OSError as err:
        raise EmofuseError(
            f"cannot create the run folder {out} ({os_reason(err)}); choose a writable --out"
        ) from None


@contextlib.contextmanager
def writes_into(out: Path) -> Any:
    """A write that the file system refuses (disk full, read-only, no permission) is one line
    saying that the finished folds are kept and the same command resumes."""
    try:
        yield
    except OSError as err:
        if err.errno not in (*WRITE_ERRORS, *IN_THE_WAY, *OUT_OF) or from_stdout(err):
            raise
        remove_temporaries(out)
        where = f" writing {err.filename}" if err.filename else ""
        if err.errno in IN_THE_WAY:
            fix = in_the_way(err)
        elif err.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = write_fix(err, "free disk space")
        else:
            fix = write_fix(err, "make it writable (or choose another --out)")
        kept = len(finished_folds(out)) if out.is_dir() else 0
        raise EmofuseError(
            f"cannot write the run folder {out} ({os_reason(err)}{where}); {fix}, then rerun the "
            f"same command: its {kept} finished fold(s) are kept and only the rest is trained"
        ) from None
