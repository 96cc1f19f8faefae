"""Each venue's continuity rule for its order-book stream: a small pure policy the sync machine asks. No I/O.

A policy answers one question, for an *update* to a book that has had a snapshot (``valid`` or ``stale``),
or for a buffered update replayed after a fetched snapshot: what to do with it (:class:`Verdict`). It also
says how the venue re-syncs one book (``resync_by``) and whether subscribing brings a snapshot
(``ws_snapshots``). Everything else (states, buffering, dedupe counters, backoff, staleness, commands) is
:mod:`operators.book_sync`'s.

Sequence numbers travel in :class:`~operators.events.BookDelta`'s ``seq_id``/``prev_seq_id``; each venue's
parser maps its fields onto them:

========  ====================================  ===========================================================
venue     ``seq_id`` / ``prev_seq_id``           rule (``last``: the book's ``seq_id``)
========  ====================================  ===========================================================
OKX       ``seqId`` / ``prevSeqId``              ``prev == last`` (heartbeat ``seq == prev``, reset
                                                ``seq < prev`` included); the checksum is verified by the
                                                book (:func:`operators.book_checksum.okx_checksum`)
Binance   ``u`` / ``U - 1``                      after a snapshot (REST ``lastUpdateId`` = ``last``): drop
                                                ``u <= last``, the first applied has ``U <= last+1 <= u``;
                                                then ``U == previous u + 1``
Bybit     ``u`` / ``None``                       ``u == last + 1``; ``u <= last`` is already applied; a
                                                snapshot (``u == 1`` after a venue restart) replaces the book
========  ====================================  ===========================================================
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal, Protocol

from operators.events import BookDelta
from operators.orderbook import OrderBook

ResyncBy = Literal["resubscribe", "fetch", "none"]


class Verdict(IntEnum):
    APPLY = 0  # apply it to the book (the book still checks levels, checksum, crossing)
    BRIDGE = 1  # apply it, as the successor of the book's seq_id (the first update that overlaps a snapshot)
    SKIP = 2  # already contained in the book (a duplicate, a replay, older than the snapshot): drop it
    GAP = 3  # something is missing between the book and this update: re-sync


class Sequencing(Protocol):
    """A venue's continuity rule (see the module docstring)."""

    @property
    def venue(self) -> str: ...

    @property
    def resync_by(self) -> ResyncBy: ...

    @property
    def ws_snapshots(self) -> bool: ...

    def classify(self, book: OrderBook, delta: BookDelta) -> Verdict: ...


class OkxSequencing:
    """OKX v5 ``books``: ``prevSeqId`` chains on the last ``seqId``.

    An update applies when ``prev == last`` (heartbeats and resets included). One that does not chain is
    skipped when the book already holds it: older by exchange time (a replay; or, after a snapshot, an update
    the snapshot contains), or of the same millisecond and older by seqId (``seq <= last`` and ``prev < last``,
    or a reset frame ``seq < prev``): the exact last update again is one. Anything newer that does not chain is
    a gap (a lost frame, a lost reset). Without seqIds (older frames, or an OKX REST snapshot, which has none):
    updates older than the snapshot by exchange time are skipped, the rest are applied and the checksum is the
    proof (``checksum == 0``: best effort, which is why a WebSocket snapshot, by resubscribing, is preferred).
    That boundary keeps updates of the snapshot's own millisecond on purpose: OKX updates carry absolute sizes,
    so re-applying, in order, one the snapshot already holds is harmless, while skipping one it does not hold
    would leave the book silently wrong.
    """

    venue = "okx"
    resync_by: ResyncBy = "resubscribe"
    ws_snapshots = True

    def classify(self, book: OrderBook, delta: BookDelta) -> Verdict:
        last, seq, prev = book.seq_id, delta.seq_id, delta.prev_seq_id
        if last is None or seq is None or prev is None:
            if book.last_action == "snapshot" and delta.ts_ms < book.ts_ms:
                return Verdict.SKIP
            return Verdict.APPLY
        if prev == last:
            return Verdict.APPLY
        ts, book_ts = delta.ts_ms, book.ts_ms
        if ts < book_ts:
            return Verdict.SKIP  # older than the book by exchange time: a replay, or held by the snapshot
        if ts == book_ts and seq <= last and (prev < last or seq < prev):
            return Verdict.SKIP  # the same millisecond and older by seqId (a reset frame: seq < prev)
        return Verdict.GAP  # newer, and it does not chain

    def __reduce__(self) -> str:
        return "OKX"


class BinanceSequencing:
    """Binance spot ``depth@100ms`` + REST ``/api/v3/depth``: ``U``/``u`` against ``lastUpdateId``.

    The stream sends no snapshots: each book is bootstrapped (and re-synced) from REST while its updates are
    buffered. A gap re-syncs that symbol alone with a new REST snapshot (the stream goes on)."""

    venue = "binance"
    resync_by: ResyncBy = "fetch"
    ws_snapshots = False

    def classify(self, book: OrderBook, delta: BookDelta) -> Verdict:
        last, seq, prev = book.seq_id, delta.seq_id, delta.prev_seq_id
        if last is None or seq is None or prev is None:
            return Verdict.GAP  # nothing to line it up with
        if seq <= last:
            return Verdict.SKIP
        if prev == last:
            return Verdict.APPLY
        if book.last_action == "snapshot" and prev < last:
            return Verdict.BRIDGE  # U <= lastUpdateId + 1 <= u
        return Verdict.GAP

    def __reduce__(self) -> str:
        return "BINANCE"


class BybitSequencing:
    """Bybit v5 ``orderbook.{depth}``: ``u`` counts the pushes of one topic; a snapshot replaces the book
    (``u == 1``: the venue restarted its sequence). A gap re-syncs by resubscribing that topic."""

    venue = "bybit"
    resync_by: ResyncBy = "resubscribe"
    ws_snapshots = True

    def classify(self, book: OrderBook, delta: BookDelta) -> Verdict:
        last, seq = book.seq_id, delta.seq_id
        if last is None or seq is None:
            return Verdict.GAP if last is not None else Verdict.APPLY
        if seq == last + 1:
            return Verdict.APPLY
        return Verdict.SKIP if seq <= last else Verdict.GAP

    def __reduce__(self) -> str:
        return "BYBIT"


OKX = OkxSequencing()
BINANCE = BinanceSequencing()
BYBIT = BybitSequencing()
SEQUENCING: dict[str, Sequencing] = {"okx": OKX, "binance": BINANCE, "bybit": BYBIT}
