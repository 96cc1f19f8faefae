"""What the order-book analysis reads, turned into its book inputs (``dataflows/orderbook_analysis.py``).

Input (``ORDERBOOK_SOURCE``):

* ``redis`` (default): the buffer list ``ORDERBOOK_BUFFER_KEY`` (raw OKX v5 ``books`` frames, LPUSHed by the
  collector or any external producer, consumed FIFO) through ONE reliable partition of
  :class:`connectors.redis.list_source.ReliableRedisListSource` in ``recovery`` mode: a frame taken from the list
  sits in a processing list until a committed snapshot covers it, and frames consumed after the last committed
  snapshot are delivered again on resume. With recovery on: no frame lost after ``kill -9``, every frame
  counted exactly once in the analysis state, outputs at-least-once (alerts deduplicated by id). Each frame goes
  through :func:`parse_frame`. A book that cannot go on (no snapshot yet after a start without recovery state, or
  a gap in the list) is re-synced from the collector's ``orderbook:{inst}`` hash
  (:mod:`connectors.redis.book_snapshots`); frames older than the book are skipped.
* ``ws``: the OKX WebSocket directly, through the collector's OKX books source
  (:func:`connectors.okx.book_source.okx_books_source`: subscriptions from ``config:trading_pairs``, integrity
  checks and re-syncs); the raw frames it applied feed our analyzers, its status changes mark their books
  (:func:`from_collector`). At-most-once (a crash loses the frames in flight; the books re-sync from fresh
  snapshots on restart).

Frames are parsed (``connectors.okx.books.parse_books_frame``, bounded: a frame that cannot be used becomes a
typed rejection, counted by the Redis sink as ``rejected_<reason>`` / ``orderbook_analysis:rejected_<reason>`` in
``system:monitoring`` and logged once per reason; the next frames go on).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from connectors.market.frames import ParseError
from connectors.okx.book_source import BookState, BufferFrame, ShardStats
from connectors.okx.books import parse_books_frame
from connectors.redis.analysis_sink import RejectCounts
from connectors.redis.lists import ListItem
from connectors.untrusted import Rejected
from operators.analysis.step import BookInput, StatusReport
from operators.events import BookDelta, BookStatus

Parsed = BookInput | Rejected | RejectCounts


def parse_frame(item: ListItem | bytes | str) -> Iterable[BookDelta | Rejected]:
    """One raw frame -> its book deltas; protocol chatter is dropped; a frame that cannot be used -> its typed
    rejection (the Redis sink counts it and logs it once per reason). Never raises on the frame's content."""
    raw = item.raw if isinstance(item, ListItem) else item
    parsed = parse_books_frame(raw, recv_ns=time.time_ns())
    if isinstance(parsed, tuple):
        return parsed
    if isinstance(parsed, ParseError):
        return (parsed,)
    return ()


def from_collector(item: object) -> Iterable[Parsed]:
    """``ORDERBOOK_SOURCE=ws``: the collector source's applied raw frames (REST re-syncs arrive as rendered
    snapshot frames) become deltas for our analyzers' books; its status changes mark them; the rejections its
    processor counted go to the Redis sink."""
    if isinstance(item, BufferFrame):
        return item.deltas or parse_frame(item.text)
    if isinstance(item, BookState):
        return (StatusReport(item.instrument, BookStatus.STALE if item.removed else item.status),)
    if isinstance(item, ShardStats):
        rejected = tuple(kv for kv in item.counters if "rejected_" in kv[0] and kv[0] != "rejected_pairs")
        return (RejectCounts(rejected),) if rejected else ()
    return ()


def is_rejection(item: Parsed) -> bool:
    return isinstance(item, Rejected | RejectCounts)
