"""The service's garbage collector, set for a request loop.

A request's objects die by reference counting; the cyclic collector only finds cycles. Left as CPython starts
it, the collector walks the whole start-up heap (FastAPI, pydantic, SQLAlchemy, the app: about 120k objects)
in each full collection, and the young objects often: pauses of several ms, taken out of one unlucky
request each (the paced p99 of ``benchmarks/bench_api.py``). So once the service has started:
``gc.freeze()`` moves the start-up heap into the permanent generation (never walked again; it is never
garbage), and the first threshold is raised so young collections come less often (each then finds what
few cycles a burst of requests left).
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000  # CPython's default is 700 allocations


def settle() -> None:
    """Collect what start-up left, freeze the rest, space out young collections. Call once, started."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
