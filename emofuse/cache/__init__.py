"""The feature cache: one schema, HDF5 (.h5) and Zarr v3 (.zarr) backends, crash-safe writer.

```python
w = CacheWriter(path, settings=settings, streams=specs, rank=0, world_size=1)  # fingerprint: of settings
w.done_ids(); w.add(meta_row, {stream: {array: ndarray}}); w.skip(uid, reason); w.close(order=ids)
c = open_cache(path); values, offsets = c.load("speech", "data", layers=[12], ids=None)
```
"""

from emofuse.cache.consolidate import consolidate
from emofuse.cache.reader import Cache, open_cache
from emofuse.cache.schema import (
    FORMAT_VERSION,
    ArrayInfo,
    ArraySpec,
    StreamInfo,
    StreamSpec,
    fingerprint_of,
    fixed,
    ragged,
)
from emofuse.cache.verify import VerifyResult, verify_cache
from emofuse.cache.writer import CacheWriter

__all__ = [
    "FORMAT_VERSION",
    "ArrayInfo",
    "ArraySpec",
    "Cache",
    "CacheWriter",
    "StreamInfo",
    "StreamSpec",
    "VerifyResult",
    "consolidate",
    "fingerprint_of",
    "fixed",
    "open_cache",
    "ragged",
    "verify_cache",
]
