"""The garbage collector of a long-running service process, set once startup is done.

Two things, both from the standard library's `gc`:

- **Freeze what startup built.** Routes, schemas, settings and pools live as long as the
  process; frozen, they are never walked again by a full collection.
- **Collect the young generation less often.** A batch of 500 events keeps some 30,000
  container objects (parsed events, rows, receipts) alive until it is committed. With the
  default threshold of 700 net new objects, the young generation is collected dozens of
  times during one batch, each collection walks the whole live batch again, and each
  promotes it to be walked again by the older generations. Measured in the benchmark's
  stack (two API processes, batches of 500 on four connections for 20 s, about 195,000
  events per process, time inside collections from `gc.callbacks`): 2.1 s of collections
  per process with the default, 0.06 s with a threshold of 100,000. Reference counting
  still frees everything that is not a cycle at once; cyclic garbage waits for at most
  `YOUNG_THRESHOLD` net new objects, a few MiB.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle_heap"]

YOUNG_THRESHOLD = 100_000


# --8<-- [start:settle-heap]
def settle_heap() -> None:
    """Freeze the objects startup made and raise the young generation's threshold."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


# --8<-- [end:settle-heap]
