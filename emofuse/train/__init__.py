"""Training from the cache: fold plans, metrics, in-memory batches, the loop, reports, late fusion."""
