"""The parts journal under a live writer: removed by another process, it is named."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_a_journal_removed_under_a_live_writer_is_named_not_called_a_full_disk(tmp_path):
    """Round-17 extract side row 30: with the journal removed (another extract finished the store
    after the lock was deleted by hand) the late writer said "free disk space … nothing was
    committed yet", though it had committed a part."""
    import shutil

    from emofuse.cache import CacheWriter
    from emofuse.errors import EmofuseError
    from tests.cache.cache_synth import all_utterances, specs

    out = tmp_path / "c.h5"
    writer = CacheWriter(out, settings={"run": 1}, streams=specs(), flush_s=0.0, progress=False)
    rows = list(all_utterances(4))
    writer.add(*rows[0])  # flush_s 0: each add commits a part
    assert len(list(Path(f"{out}.parts").glob("rank*"))) == 1
    shutil.rmtree(f"{out}.parts")
    with pytest.raises(EmofuseError) as err:
        writer.add(*rows[1])
    assert str(err.value) == (
        f"{out}.parts, the journal of {out}, vanished while this extract wrote it (another "
        f"extract finished or removed this store?); check {out} with `emofuse verify`, or rerun "
        "the same command to extract what it lacks"
    )
