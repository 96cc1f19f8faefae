"""Outages of a feed, from its shards' periodic gauges: which interval a reconnect may have lost.

A shard reports ``connections`` (now) and ``reconnects`` (cumulative) about once a second. While it holds as
many connections as it ever held, its data is taken to flow ("healthy"). When ``reconnects`` grows, the
interval since its last healthy report may have lost trades: :meth:`OutageTracker.observe` returns it as an
:class:`Outage`, for the caller to fetch that interval's klines from the venue (:func:`repair_range`). One
network blip drops every shard of a venue at once: :func:`covers` says which of their outages one fetch
serves. Pure: no clock, no I/O.
"""

from __future__ import annotations

import msgspec

from operators.klines import MINUTE_MS, window_start


class Outage(msgspec.Struct, frozen=True):
    venue: str
    start_ms: int  # the shard's last healthy report before the reconnect
    end_ms: int  # the report that showed the reconnect


class _Shard(msgspec.Struct):
    reconnects: int
    most_connections: int
    healthy_ms: int


class OutageTracker:
    """Per shard (venue, source, shard number): the last healthy report and the reconnect count."""

    def __init__(self) -> None:
        self._shards: dict[tuple[str, str, int], _Shard] = {}

    def observe(self, venue: str, source: str, shard: int, ts_ms: int, connections: int,
                reconnects: int) -> Outage | None:
        key = (venue, source, shard)
        state = self._shards.get(key)
        if state is None:
            self._shards[key] = _Shard(reconnects, connections, ts_ms)
            return None
        outage = None
        if reconnects > state.reconnects:
            outage = Outage(venue, state.healthy_ms, ts_ms)
            state.reconnects = reconnects
        state.most_connections = max(state.most_connections, connections)
        if connections >= state.most_connections > 0:
            state.healthy_ms = ts_ms
        return outage


def repair_range(outage: Outage, max_back_ms: int) -> tuple[int, int]:
    """``[start, end)`` to fetch for ``outage``: from its last healthy report (at most ``max_back_ms`` before the
    reconnect) to the end of the reconnect's minute (the minute cut in two is fetched whole, once closed)."""
    return max(outage.start_ms, outage.end_ms - max_back_ms), window_start(outage.end_ms, MINUTE_MS) + MINUTE_MS


def covers(repair: Outage, other: Outage, max_back_ms: int) -> bool:
    """Whether repairing ``repair`` fetches every whole minute that repairing ``other`` would (same venue, no
    earlier start minute, no later end): then ``other`` needs no repair of its own."""
    if other.venue != repair.venue:
        return False
    (a_start, a_end), (b_start, b_end) = repair_range(repair, max_back_ms), repair_range(other, max_back_ms)
    return window_start(b_start, MINUTE_MS) >= window_start(a_start, MINUTE_MS) and b_end <= a_end
