"""The dataflows run on jemalloc when the machine has it (Debian's ``libjemalloc2``).

Why: under glibc malloc a long-running collector's RSS keeps creeping up (+1.3 to +2.1 MB per 10 minutes in
30-minute soaks) although its Python heap is flat (tracemalloc): the growth is in glibc's per-thread arenas,
where the WebSocket thread allocates frame strings that the Bytewax worker thread frees, interleaved with
long-lived book strings — retained, fragmented free memory, not live objects (an smaps diff shows it in the
two 64 MB thread arenas). jemalloc's size-classed thread caches return it; the same code is flat on it
(benchmarks/RESULTS.md, "Trust (issue 10)"). ``CRYPTOFLOW_ALLOCATOR=glibc`` opts out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

JEMALLOC_PATHS = (
    Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
    Path("/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"),
    Path("/usr/lib/libjemalloc.so.2"),
)


def jemalloc() -> Path | None:
    """The jemalloc shared library, or None when it is not installed."""
    return next((p for p in JEMALLOC_PATHS if p.is_file()), None)


def with_allocator(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with jemalloc preloaded, unless opted out or not installed."""
    out = dict(os.environ if env is None else env)
    lib = jemalloc()
    if lib is None or out.get("CRYPTOFLOW_ALLOCATOR", "jemalloc") == "glibc":
        return out
    preload = out.get("LD_PRELOAD", "")
    if str(lib) not in preload.split():
        out["LD_PRELOAD"] = f"{lib} {preload}".strip()
    return out
