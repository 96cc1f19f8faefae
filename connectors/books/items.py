"""What the order-book sources emit (:data:`CollectorItem`), whatever the venue.

A :class:`operators.events.BookView` names its venue itself; the other items carry ``venue`` (default ``okx``,
the collector's first venue, so that OKX-only code reads as before).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from operators.events import BookDelta, BookStatus, BookView


class BookState(msgspec.Struct, frozen=True):
    """A book left ``valid`` (``status``), or was removed from the set (``removed=True``)."""

    instrument: str
    status: BookStatus
    removed: bool = False
    venue: str = "okx"


class BufferFrame(msgspec.Struct, frozen=True):
    """One raw OKX frame for the buffer list, exactly as received (or a rendered snapshot after REST).

    ``deltas`` are the frame already parsed, when the processor has them at hand, so a consumer in the same
    dataflow (``ORDERBOOK_SOURCE=ws``) does not parse it again; empty means "parse ``text``". Only OKX's
    books feed the buffer list: its consumers read OKX's frame format (README "Order books")."""

    text: str
    deltas: tuple[BookDelta, ...] = ()


class BookSample(msgspec.Struct, frozen=True):
    """A throttled book moment for InfluxDB ``orderbook_data`` (OKX's books only: the points carry no venue)."""

    view: BookView
    data_type: Literal["snapshot", "incremental"]


class ShardStats(msgspec.Struct, frozen=True):
    """One shard's gauges (now) and counters (since its previous stats).

    Emitted every ``stats_interval`` s, and at once (latency and rate as last measured) when a lifecycle
    event changed ``connections`` or ``active_pairs``, first in the output of that batch: the gauge reaches
    Redis no later than the books it counts, together with the counters of the events that moved it."""

    shard: int
    ts_ms: int
    connections: int
    active_pairs: int
    reconnects: int  # cumulative
    messages: int  # cumulative data frames
    counters: tuple[tuple[str, int], ...] = ()
    last_config_check_ms: int = 0
    latency_ms: float = 0.0  # mean frame receipt -> processed, over the last stats interval
    influx_rate: float = 0.0  # orderbook_data points handed on per second, over the last stats interval
    venue: str = "okx"


CollectorItem = BookView | BookState | BufferFrame | BookSample | ShardStats
