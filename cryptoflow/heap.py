"""The garbage collector, set for a long-running process: the service and every dataflow.

Objects here die by reference counting; the cyclic collector only finds cycles, and what it costs is what it
walks. Left as CPython starts it (a young collection every 700 net allocations of containers, a full one at most
every 100th of those):

* the service: each full collection walked the whole start-up heap (FastAPI, pydantic, SQLAlchemy, the app:
  about 120k objects), and the young ones came often: pauses of several ms, taken out of one unlucky request
  each (the paced p99 of ``benchmarks/bench_api.py``);
* a dataflow: a full collection walks every book's level lists, reading every level (400+400 per book) where
  it lies in memory: ~40 ms at 300 books, and it grows with the pairs; young collections walk each batch's
  fresh views (400+400 levels each) again. At 300 pairs that was ~6 % of the collector worker's time
  (benchmarks/RESULTS.md, issue 15, session 11), at 10 pairs ~0.

So once started: ``gc.freeze()`` moves the start-up heap into the permanent generation (never walked again;
it is never garbage), and the first threshold is raised to 50,000 so young collections (and with them the
full ones) come rarely: a steady process allocates and frees its containers, so its net count
seldom gets there. Cycles are still found, only later.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000  # CPython's default is 700 net allocations of containers


def settle() -> None:
    """Collect what start-up left, freeze the rest, space out young collections. Call once, started."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
