"""A writer process for the crash and sharding tests: ``cache_child.py PATH N SEED RANK WORLD``.

Writes this rank's utterances that are not done yet, printing "added i" after each (flush_mb=0:
every add is committed before the line is printed), then flushes and exits without closing.
"""

import sys

from emofuse.cache import CacheWriter
from tests.cache.cache_synth import SETTINGS, feed, specs

path, n, seed, rank, world = sys.argv[1], *map(int, sys.argv[2:6])
w = CacheWriter(path, settings=SETTINGS, streams=specs(), rank=rank, world_size=world, flush_mb=0)
feed(w, n, seed, rank, world, on_each=lambda i: print(f"added {i}", flush=True))
w.flush()
print("flushed", flush=True)
