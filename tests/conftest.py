"""Project-wide test settings (offline, headless) and fixtures every area uses."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.users import NOBODY

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# `--dtype auto` picks bf16 on CPUs with AMX / AVX-512 BF16: the suite computes in fp32 on every
# machine (tests/extract/test_extract_cli.py forces each branch where it tests the choice)
os.environ.setdefault("EMOFUSE_CPU_BF16", "0")


@pytest.fixture
def unprivileged():
    """Run the block as a user the permission bits apply to (root ignores them): nobody's
    effective uid while root, nothing otherwise. Imports happen before (the stdlib of this
    interpreter may not be readable by nobody)."""
    base = Path(tempfile.mkdtemp(prefix="emofuse-ro-"))
    base.chmod(0o777)

    @contextlib.contextmanager
    def as_user():
        if os.geteuid() != 0:
            yield
            return
        os.seteuid(NOBODY)
        try:
            yield
        finally:
            os.seteuid(0)

    yield base, as_user
    shutil.rmtree(base, ignore_errors=True)
