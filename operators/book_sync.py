"""The book-sync machine: one venue's books kept in sync, as a pure state machine. No I/O, no clock.

Events in (time comes in on them): book deltas (:meth:`BookSync.on_delta`, the hot path; ``recv_ns`` is the
time unless ``now_ns`` is given) and small frozen structs through :meth:`BookSync.feed` — :class:`Track`,
:class:`Subscribed`, :class:`Unsubscribed`, :class:`Disconnected`, :class:`SnapshotFetched`,
:class:`Invalidated`, :class:`Untrack`, :class:`Tick`. Outputs (drained with :meth:`BookSync.drain`):
:class:`StateChanged` (every change of a book's status), the commands :class:`Resubscribe` and
:class:`FetchSnapshot`, :class:`Resynced` (a fetched snapshot and the buffered updates applied after it) and
:class:`Failed` (why a book lost sync); these types live in :mod:`operators.book_sync_events`.
:meth:`BookSync.view` is a book's published view; ``counters`` count what happened (``gaps``,
``checksum_errors``, ``crossed_books``, ``invalid_levels``, ``resyncs``, ``duplicate_frames``,
``rest_bootstraps``, ``rest_failures``).

The venue supplies only its continuity rule (:mod:`operators.book_sequencing`); the rest is here:

* states ``syncing`` (no snapshot yet) -> ``valid`` <-> ``stale`` (no frame for ``stale_after``), and
  ``resyncing`` after a failure (gap, checksum, crossed book, invalid level) or a disconnect;
* an update before any snapshot (on a stream without snapshots, also the first after a disconnect), or a
  subscribed book without a snapshot after ``snapshot_wait``, asks for a snapshot (:class:`FetchSnapshot`)
  and buffers the book's updates until it comes (a WebSocket snapshot meanwhile makes it unnecessary); the
  snapshot plus the buffered updates that follow it (the venue's rule
  decides which) make the book ``valid``;
* a failure re-syncs that one book the venue's way (``resubscribe``; ``fetch``: a new snapshot, updates
  buffered meanwhile; ``none``: wait for a snapshot in the stream), spaced out per book: the first at once,
  then 1 s doubling to 30 s (``backoff_*``), the spacing forgotten after a calm ``backoff_max``;
* updates the book already contains (duplicates, replays) are skipped and counted (``duplicate_frames``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import msgspec

from operators.book_results import Applied, Heartbeat, IntegrityResult, SequenceGap, is_failure
from operators.book_sequencing import ResyncBy, Sequencing, Verdict
from operators.book_sync_events import (
    Disconnected,
    Failed,
    Fed,
    FetchSnapshot,
    Invalidated,
    ReplayOutcome,
    Resubscribe,
    Resynced,
    SnapshotFetched,
    StateChanged,
    Subscribed,
    SyncConfig,
    SyncEvent,
    SyncOutput,
    Tick,
    Track,
    Unsubscribed,
    Untrack,
)
from operators.events import BookDelta, BookStatus, BookView
from operators.orderbook import OrderBook

__all__ = [
    "COUNTER_OF", "BookSync", "Disconnected", "Failed", "Fed", "FetchSnapshot", "Invalidated", "ReplayOutcome",
    "Resubscribe", "Resynced", "SnapshotFetched", "StateChanged", "Subscribed", "SyncConfig", "SyncEvent",
    "SyncOutput", "Tick", "Track", "Unsubscribed", "Untrack", "replay",
]

COUNTER_OF = {"sequence_gap": "gaps", "checksum_mismatch": "checksum_errors", "book_crossed": "crossed_books",
              "invalid_level": "invalid_levels"}


def _gap(book: OrderBook, delta: BookDelta) -> SequenceGap:
    got = delta.prev_seq_id
    if got is None:
        got = delta.seq_id - 1 if delta.seq_id is not None else -1
    return SequenceGap(book.seq_id if book.seq_id is not None else -1, got)


def replay(book: OrderBook, snapshot: BookDelta, buffered: list[tuple[BookDelta, object]],
           sequencing: Sequencing) -> ReplayOutcome:
    """Apply ``snapshot``, then the buffered ``(update, ref)`` pairs from the first one the venue's rule lets
    follow the snapshot (those before it are held by the snapshot), in order; the first gap or failure stops
    (the book is ``resyncing``). When none follows: valid at the snapshot if the rule skips them all, else a
    gap (the snapshot is older than the buffer). ``ValueError`` if ``snapshot`` is an update."""
    if snapshot.action != "snapshot":
        msg = f"replay() needs a snapshot, got an {snapshot.action}"
        raise ValueError(msg)
    result = book.apply(snapshot)
    if is_failure(result):
        return ReplayOutcome(result, 0, len(buffered))
    refs: list[object] = []
    classify = sequencing.classify
    start: int | None = None
    first_gap: int | None = None
    for i, (d, _) in enumerate(buffered):  # as the successors of the snapshot, up to the first that follows it
        verdict = classify(book, d)
        if verdict is Verdict.APPLY or verdict is Verdict.BRIDGE:
            start = i
            break
        if verdict is Verdict.GAP and first_gap is None:
            first_gap = i
    if start is None:  # nothing follows the snapshot: it holds every buffered update, or they do not meet
        if first_gap is None:
            return ReplayOutcome(result, 0, len(buffered))
        gap = _gap(book, buffered[first_gap][0])
        book.mark_resyncing()
        return ReplayOutcome(gap, 0, len(buffered))
    for delta, ref in buffered[start:]:
        verdict = classify(book, delta)
        if verdict is Verdict.SKIP:
            continue
        if verdict is Verdict.GAP:
            gap = _gap(book, delta)
            book.mark_resyncing()
            return ReplayOutcome(gap, len(refs), len(buffered) - len(refs), tuple(refs))
        if verdict is Verdict.BRIDGE:
            delta = msgspec.structs.replace(delta, prev_seq_id=book.seq_id)
        result = book.apply(delta)
        if is_failure(result):
            return ReplayOutcome(result, len(refs), len(buffered) - len(refs), tuple(refs))
        refs.append(ref)
    return ReplayOutcome(result, len(refs), len(buffered) - len(refs), tuple(refs))


@dataclass(slots=True)
class _Slot:
    book: OrderBook
    status: BookStatus  # as last published
    since_ns: int  # when the current syncing/resyncing phase began
    subscribed: bool = False
    last_ns: int = 0  # last delta
    pending: list[tuple[BookDelta, object]] | None = None  # buffering until a snapshot
    failures: int = 0
    next_resync_ns: int = 0
    resync_due: bool = False


_SYNCING, _VALID, _STALE, _RESYNCING = BookStatus.SYNCING, BookStatus.VALID, BookStatus.STALE, BookStatus.RESYNCING


class BookSync:
    """One venue's books (see the module docstring). Picklable."""

    def __init__(self, sequencing: Sequencing, config: SyncConfig | None = None) -> None:
        self.sequencing = sequencing
        self.config = config or SyncConfig()
        self.resync_by: ResyncBy = self.config.resync_by or sequencing.resync_by
        self.counters: Counter[str] = Counter()
        self._books: dict[str, _Slot] = {}
        self._out: list[SyncOutput] = []

    # --- reading --------------------------------------------------------------------------------------------
    def __contains__(self, instrument: object) -> bool:
        return instrument in self._books

    def __len__(self) -> int:
        return len(self._books)

    def instruments(self) -> list[str]:
        return list(self._books)

    def book(self, instrument: str) -> OrderBook | None:
        slot = self._books.get(instrument)
        return None if slot is None else slot.book

    def status(self, instrument: str) -> BookStatus | None:
        slot = self._books.get(instrument)
        return None if slot is None else slot.book.status

    def view(self, instrument: str, levels: int = 400) -> BookView:
        return self._books[instrument].book.view(levels)

    def has_output(self) -> bool:
        return bool(self._out)

    @property
    def pending(self) -> list[SyncOutput]:
        """The outputs not yet drained, read-only: the same list for the machine's life (:meth:`drain` empties
        it in place), so a caller feeding updates in a loop can test it without a call per update."""
        return self._out

    def drain(self) -> list[SyncOutput]:
        out = self._out.copy()
        self._out.clear()
        return out

    def drain_counters(self) -> Counter[str]:
        counters, self.counters = self.counters, Counter()
        return counters

    # --- events ---------------------------------------------------------------------------------------------
    def feed(self, event: SyncEvent) -> None:
        if type(event) is Tick:
            self._tick(event.now_ns)
        elif type(event) is SnapshotFetched:
            self._fetched(event)
        elif type(event) is Track:
            self.track(event.instrument, event.now_ns, subscribed=event.subscribed)
        elif type(event) is Untrack:
            self._books.pop(event.instrument, None)
        else:
            slot = self._books.get(event.instrument)  # type: ignore[union-attr]
            if slot is not None:
                self._lifecycle(slot, event)

    def track(self, instrument: str, now_ns: int, *, subscribed: bool = False, book: OrderBook | None = None) -> None:
        """:class:`Track`, optionally adopting an existing ``book`` (its status is kept; one that lost sync is
        re-synced, as nothing else would)."""
        if instrument in self._books:
            return
        if book is None:  # not `book or ...`: an OrderBook without levels is falsy (__len__)
            book = OrderBook(instrument, self.sequencing.venue, self.config.depth)
        slot = self._books[instrument] = _Slot(book, book.status, now_ns)
        self._out.append(StateChanged(instrument, book.status, None))
        if book.status is _RESYNCING:
            slot.subscribed = subscribed
            self._resync(slot, now_ns)
        elif subscribed:
            self._subscribed(slot, now_ns)

    def on_delta(self, delta: BookDelta, ref: object = None, now_ns: int | None = None) -> Fed:
        """One snapshot or update; ``ref`` comes back in :class:`Resynced` if it is buffered and applied."""
        slot = self._books.get(delta.instrument)
        if slot is None:
            return Fed.UNKNOWN
        now = delta.recv_ns if now_ns is None else now_ns
        slot.last_ns = now
        book = slot.book
        if delta.action == "update":
            if slot.pending is not None:
                self._buffer(slot, delta, ref, now)
                return Fed.BUFFERED
            status = book.status
            if status is _SYNCING or status is _RESYNCING:
                if self.config.fetch_missing and not slot.resync_due and self.resync_by != "none" and (
                        status is _SYNCING or not self.sequencing.ws_snapshots):
                    self._fetch(slot, now, bootstrap=True)  # no snapshot yet: bootstrap
                    self._buffer(slot, delta, ref, now)
                    return Fed.BUFFERED
                return Fed.REFUSED
            verdict = self.sequencing.classify(book, delta)
            if verdict is Verdict.SKIP:
                self.counters["duplicate_frames"] += 1
                return Fed.SKIPPED
            if verdict is Verdict.GAP:
                self._fail(slot, _gap(book, delta), now)
                return Fed.FAILED
            if verdict is Verdict.BRIDGE:
                delta = msgspec.structs.replace(delta, prev_seq_id=book.seq_id)
        elif slot.pending is not None:
            slot.pending = None  # a snapshot in the stream makes the fetched one unnecessary
        result = book.apply(delta)
        if type(result) is Applied or type(result) is Heartbeat:
            if book.status is not slot.status:
                slot.resync_due = False
                self._publish(slot)
            return Fed.APPLIED
        if is_failure(result):
            self._fail(slot, result, now)
            return Fed.FAILED
        return Fed.REFUSED  # NotSynced: not reached (checked above)

    # --- internals ------------------------------------------------------------------------------------------
    def _publish(self, slot: _Slot) -> None:
        status = slot.book.status
        if status is not slot.status:
            self._out.append(StateChanged(slot.book.instrument, status, slot.status))
            slot.status = status

    def _subscribed(self, slot: _Slot, now: int) -> None:
        # A stream without snapshots (Binance) is not fetched for here: its first update does it (on_delta),
        # as the venue documents (buffer the stream, then fetch). A snapshot fetched before any update could
        # not be checked against the stream: one older than the stream would be published valid.
        slot.subscribed = True
        slot.since_ns = now

    def _lifecycle(self, slot: _Slot, event: SyncEvent) -> None:
        book = slot.book
        if type(event) is Subscribed:
            self._subscribed(slot, event.now_ns)
        elif type(event) is Unsubscribed:
            slot.subscribed = False
        elif type(event) is Disconnected:
            slot.subscribed = False
            book.mark_resyncing()
            slot.since_ns, slot.pending, slot.resync_due = event.now_ns, None, False
            self._publish(slot)
        elif type(event) is Invalidated:
            if event.status is _STALE:
                book.mark_stale()
            elif event.status is not _VALID:
                book.mark_resyncing()
                slot.since_ns, slot.pending = event.now_ns, None
            self._publish(slot)

    def _buffer(self, slot: _Slot, delta: BookDelta, ref: object, now: int) -> None:
        pending = slot.pending
        assert pending is not None
        if len(pending) >= self.config.max_buffered:
            self._out.append(Failed(delta.instrument, "buffer_overflow", f"more than {len(pending)} updates"))
            slot.pending = None
            self._resync(slot, now)
            return
        pending.append((delta, ref))

    def _fetch(self, slot: _Slot, now: int, *, bootstrap: bool) -> None:
        if slot.pending is None:
            slot.pending = []
        slot.since_ns = now
        if bootstrap:
            self.counters["rest_bootstraps"] += 1
        self._out.append(FetchSnapshot(slot.book.instrument))

    def _fail(self, slot: _Slot, result: IntegrityResult, now: int) -> None:
        self.counters[COUNTER_OF.get(result.kind, "invalid_levels")] += 1
        self._out.append(Failed(slot.book.instrument, result.kind, repr(result)))
        self._resync(slot, now)

    def _resync(self, slot: _Slot, now: int) -> None:
        """Re-sync one book the configured way, spaced out (see the module docstring)."""
        slot.book.mark_resyncing()
        slot.since_ns = now
        by = self.resync_by
        if by == "fetch":
            if slot.pending is None:
                slot.pending = []  # buffer from now on: the snapshot will be newer than some of it
        else:
            slot.pending = None
        self._publish(slot)
        if by == "none":
            return
        if now < slot.next_resync_ns:
            slot.resync_due = True  # _tick does it when it is time
            return
        slot.resync_due = False
        slot.failures += 1
        cfg = self.config
        slot.next_resync_ns = now + min(cfg.backoff_max_ns, cfg.backoff_base_ns * 2 ** min(slot.failures - 1, 8))
        self.counters["resyncs"] += 1
        if by == "resubscribe":
            self._out.append(Resubscribe(slot.book.instrument))
        else:
            self._fetch(slot, now, bootstrap=False)

    def _fetched(self, event: SnapshotFetched) -> None:
        slot = self._books.get(event.instrument)
        if slot is None or slot.pending is None:
            return  # not waiting for one (a snapshot in the stream came first, or the book was removed)
        inst, now = event.instrument, event.now_ns
        if event.snapshot is None:
            self.counters["rest_failures"] += 1
            self._out.append(Failed(inst, "fetch_failed", event.error))
            self._resync(slot, now)
            return
        buffered, slot.pending = slot.pending, None
        outcome = replay(slot.book, event.snapshot, buffered, self.sequencing)
        if is_failure(outcome.result):
            self._out.append(Failed(inst, "fetch_merge_failed", repr(outcome.result)))
            self._resync(slot, now)
            return
        slot.resync_due = False
        self._publish(slot)
        self._out.append(Resynced(inst, event.snapshot, outcome.refs))

    def _tick(self, now: int) -> None:
        cfg = self.config
        stale, wait = cfg.stale_after_ns, cfg.snapshot_wait_ns
        for slot in self._books.values():
            status = slot.book.status
            if status is _VALID and stale is not None and slot.last_ns and now - slot.last_ns > stale:
                slot.book.mark_stale()
                self._publish(slot)
            elif status is _RESYNCING and slot.resync_due and now >= slot.next_resync_ns:
                self._resync(slot, now)
            elif (status is _SYNCING or status is _RESYNCING) and slot.pending is None and slot.subscribed \
                    and wait is not None and now - slot.since_ns > wait and not slot.resync_due \
                    and cfg.fetch_missing and self.resync_by != "none":
                self._fetch(slot, now, bootstrap=True)  # subscribed, but no snapshot came
            elif status is _VALID and slot.failures and now - slot.next_resync_ns > cfg.backoff_max_ns:
                slot.failures = 0

