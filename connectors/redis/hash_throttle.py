"""A minimum interval per instrument for the full ``orderbook:{inst}`` hash (``ORDERBOOK_HASH_INTERVAL``).

Each write of the hash carries both sides' 400 levels as JSON (~12 KB for a 400+400 book), so its volume is
pairs x writes/s x ~12 KB: 1,000 pairs at OKX's 10 updates/s would be ~120 MB/s into one Redis. With an interval
``I > 0`` the collector's sink writes an instrument's levels at most once every ``I`` seconds; the buffer list
and the push streams are not throttled (they still get every frame and every batch's view).

Rules (:meth:`HashThrottle.take`, called once per sink batch with the batch's plans, newest state per
instrument):

* a plan that deletes the hash, changes only the status, or carries a status different from the last one
  written goes out at once (merged with what was held: status is never late);
* an instrument's first write goes out at once;
* otherwise levels go out when ``I`` has passed since that instrument's last write, else they are held (the
  newest replaces the older) and go out with the first batch after ``I`` has passed: the last update of a burst
  is always written. The collector's shards report every second, so a held state reaches Redis at most about
  ``I`` + 1 s after it was applied, even when its instrument falls silent.

Plans are keyed by the book's Redis key (``orderbook:{inst}``, ``orderbook:{exchange}:{inst}``): "instrument"
above means one venue's book of it. ``I = 0`` (the default) writes every batch, as before. Not thread-safe; one
per sink partition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# instrument -> (delete the hash first, fields to set): the sink's plan for one instrument. The values are
# opaque here but for ``status`` (a str); the sink keeps its levels unencoded under ``asks`` until written.
Plan = tuple[bool, dict[str, Any]]


def merge(older: Plan, newer: Plan) -> Plan:
    """Two plans for one instrument as one: a newer delete starts over, newer fields win."""
    if newer[0]:
        return newer
    return older[0], {**older[1], **newer[1]}


class HashThrottle:
    """See the module docstring."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval_s
        self._clock = clock
        self._held: dict[str, Plan] = {}
        self._written_at: dict[str, float] = {}  # last write of levels, per instrument
        self._status: dict[str, str] = {}  # last status written, per instrument

    @property
    def held(self) -> int:
        """Instruments whose newest levels are held back."""
        return len(self._held)

    def take(self, plans: dict[str, Plan]) -> dict[str, Plan]:
        """This batch's plans -> the plans to write now (this batch's and held ones that are due)."""
        if self._interval <= 0:
            return plans
        now = self._clock()
        due_before = now - self._interval
        out: dict[str, Plan] = {}
        held = self._held
        for inst, plan in plans.items():
            if inst in held:
                plan = merge(held.pop(inst), plan)
            delete, fields = plan
            status = fields.get("status")
            if (delete or "asks" not in fields or status != self._status.get(inst)
                    or self._written_at.get(inst, -1e18) <= due_before):
                out[inst] = plan
            else:
                held[inst] = plan
        for inst in [i for i in held if self._written_at.get(i, -1e18) <= due_before]:
            out[inst] = held.pop(inst)
        for inst, (delete, fields) in out.items():
            if delete and not fields:
                self._written_at.pop(inst, None)
                self._status.pop(inst, None)
                continue
            if "asks" in fields:
                self._written_at[inst] = now
            if "status" in fields:
                self._status[inst] = fields["status"]
        return out
