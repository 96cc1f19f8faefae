"""One shard's books, any venue: parse -> the book-sync machine -> its commands. Runs on the Bytewax worker.

:class:`BookProcessor` is the venue-agnostic half of a collector source partition (the other half, the I/O,
is a :class:`connectors.ws.shard.ShardRunner`); a small :class:`VenueBooks` adapter in the venue's package
says how that venue's frames and REST snapshots parse and how its books are sequenced
(``connectors/<venue>/book_source.py``). One book-sync path for every venue:

* parse -> feed the shard's :class:`operators.book_sync.BookSync` (the venue's rules,
  :mod:`operators.book_sequencing`) -> execute its commands through the shard control: ``Resubscribe`` one
  topic (OKX, Bybit: unsubscribe + subscribe on its connection), ``FetchSnapshot`` (OKX, Binance: REST in the
  I/O thread while updates keep coming; the machine buffers them) -> its states become items. The machine
  does the rest: a failed check marks that one book ``resyncing`` and re-syncs it (spaced out: 1 s doubling
  to 30 s); duplicates are skipped; ``stale_after`` s without a frame marks it ``stale``; a dropped
  connection marks its books ``resyncing`` and the reconnect re-syncs them.

It emits typed items (:data:`connectors.books.items.CollectorItem`): a :class:`BookView` for each instrument
changed in the batch (coalesced: one per instrument per batch), :class:`BookState` when a book leaves
``valid`` or is removed, :class:`BufferFrame` for each raw frame applied (OKX only: a REST resync appears as a
rendered snapshot frame), a :class:`BookSample` at most every ``sample_interval`` s per instrument (when
``sample_levels`` is set), and :class:`ShardStats` every ``stats_interval`` s. Bad input is counted per
reason, logged once per reason with context, dropped.

Delivery: every valid book state reaches the hash (coalesced); raw frames are forwarded at most once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from connectors.books.items import BookSample, BookState, BufferFrame, CollectorItem, ShardStats
from connectors.untrusted import Rejected, RejectTally, rejected
from connectors.ws.events import (
    Disconnected,
    Fetched,
    Frame,
    Subscribed,
    TopicsChecked,
    Unsubscribed,
    WsEvent,
    book_by_book,
)
from connectors.ws.events import (
    Rejected as TopicRejected,
)
from connectors.ws.source import ShardControl
from cryptoflow.logs import get_logger
from operators.book_sequencing import Sequencing
from operators.book_sync import (
    COUNTER_OF,
    BookSync,
    Failed,
    Fed,
    FetchSnapshot,
    Resubscribe,
    Resynced,
    SnapshotFetched,
    StateChanged,
    SyncConfig,
    Tick,
    Track,
    Untrack,
)
from operators.book_sync import Disconnected as SyncDisconnected
from operators.book_sync import Subscribed as SyncSubscribed
from operators.book_sync import Unsubscribed as SyncUnsubscribed
from operators.events import BookDelta, BookStatus

log = get_logger("connectors.books.processor")
_INTEGRITY = frozenset(COUNTER_OF)


class VenueBooks(Protocol):
    """What :class:`BookProcessor` needs to know of a venue (one per shard: it may keep a symbol map)."""

    @property
    def venue(self) -> str: ...

    @property
    def sequencing(self) -> Sequencing: ...

    @property
    def book_depth(self) -> int:
        """Levels the book keeps (the REST snapshot's or the topic's depth)."""
        ...

    @property
    def fetch_missing(self) -> bool:
        """An update before any snapshot fetches one over REST (False: no REST; wait, or resubscribe)."""
        ...

    @property
    def buffers(self) -> bool:
        """Raw frames go to the buffer list (OKX)."""
        ...

    def frame_key(self, text: str) -> str:
        """The instrument a raw frame is about, without decoding (a grouping hint only)."""
        ...

    def parse(self, text: str, recv_ns: int) -> BookDelta | tuple[BookDelta, ...] | Rejected | None:
        """The frame's delta, or its deltas; a rejection (bad input); ``None``: a frame with no book data
        (ignored). A single delta is returned bare: no tuple built per frame."""
        ...

    def parse_snapshot(self, body: str, instrument: str, recv_ns: int) -> BookDelta | str:
        """A REST body -> a snapshot, or why not."""
        ...

    def render_snapshot(self, snapshot: BookDelta) -> str:
        """A REST snapshot as a frame for the buffer list (only called when ``buffers``)."""
        ...

    def know(self, instruments: Iterable[str]) -> None:
        """These instruments may appear in frames (adds to the symbol map; never shrinks it)."""
        ...


class BookProcessor:
    """One shard's books: parse -> feed the sync machine -> execute its commands (see module docstring)."""

    def __init__(self, shard: int, control: ShardControl, venue: VenueBooks, *, view_levels: int = 400,
                 stale_after: float = 30.0, snapshot_wait: float = 3.0, sample_interval: float = 1.0,
                 sample_levels: int | None = None, stats_interval: float = 1.0, with_deltas: bool = False,
                 dataflow: str = "orderbook_collector") -> None:
        self.shard = shard
        self.venue = venue
        self._name = venue.venue
        # Rejections: rejected_<reason> and <dataflow>:rejected_<reason> in system:monitoring, logged once per reason
        self._rejects = RejectTally(log, dataflow, event="bad_message_dropped", shard=shard, venue=venue.venue)
        # Parsed deltas ride along with each BufferFrame only for a consumer in the same dataflow (analysis
        # with ORDERBOOK_SOURCE=ws): keeping them alive costs the collector ~30 % at large batches (GC).
        self._with_deltas = with_deltas
        self._control = control
        self._depth = min(view_levels, venue.book_depth)
        self._sync = BookSync(venue.sequencing, SyncConfig(
            depth=venue.book_depth, stale_after_ns=int(stale_after * 1e9), snapshot_wait_ns=int(snapshot_wait * 1e9),
            fetch_missing=venue.fetch_missing))
        self._sample_ns = int(sample_interval * 1e9)
        self._sample_levels = sample_levels  # None: no InfluxDB, no samples
        self._last_sample: dict[str, int] = {}
        self._points = 0
        self._lat_sum = 0
        self._lat_n = 0
        self._stats_ns = int(stats_interval * 1e9)
        self._next_stats = 0
        self._last_stats_ns = 0
        self._latency_ms = 0.0
        self._influx_rate = 0.0
        self._reported: tuple[int, int] = (-1, -1)  # (connections, active_pairs) in the last stats
        self._wanted: set[str] = set()
        self._subscribed: set[str] = set()
        self._counters: Counter[str] = Counter()
        self._messages = 0
        self._messages_counted = 0  # of _messages, already reported as the frames_received counter
        self._last_check_ms = 0

    @property
    def sync(self) -> BookSync:
        return self._sync

    # --- events -----------------------------------------------------------------------------------------
    def on_events(self, events: list[WsEvent]) -> list[CollectorItem]:
        out: list[CollectorItem] = []
        dirty: dict[str, None] = {}  # instruments changed in this batch, in order
        start = time.time_ns()
        lifecycle = False
        # The per-frame path is inlined here, its lookups bound once per batch and its counters summed once per
        # batch: it runs for every update (RESULTS.md, issue 14, "session 9: the processor's own work")
        parse = self.venue.parse
        sync = self._sync
        on_delta = sync.on_delta
        pending = sync.pending  # the machine's outputs not yet drained: the same list for its whole life
        applied, unknown = Fed.APPLIED, Fed.UNKNOWN
        buffers = self.venue.buffers
        frames = recv_sum = 0
        for ev in book_by_book(events, self.venue.frame_key):  # one book after another: its memory stays in cache
            if type(ev) is not Frame:
                lifecycle = True
                self._on_lifecycle(ev, out, dirty)
                continue
            frames += 1
            recv_sum += ev.recv_ns
            text = ev.text
            res = parse(text, ev.recv_ns)
            if isinstance(res, BookDelta):
                deltas: tuple[BookDelta, ...] = (res,)  # Binance, Bybit: one per frame
            elif isinstance(res, tuple):
                deltas = res  # OKX: one per data entry
            else:
                if isinstance(res, Rejected):
                    self._rejects.add(res)
                else:
                    self._counters[f"{self._name}_messages_ignored"] += 1
                continue
            pushed = not buffers  # the frame's raw text goes to the buffer list once
            for delta in deltas:
                fed = on_delta(delta, text)
                if fed is unknown:
                    if not self._untracked(delta.instrument, ev, out):
                        continue
                    fed = on_delta(delta, text)
                if fed is applied:
                    if not pushed:
                        out.append(BufferFrame(text, deltas if self._with_deltas else ()))
                        pushed = True
                    dirty[delta.instrument] = None
                if pending:
                    self._execute(out, dirty, via="websocket")
        self._messages += frames
        self._lat_sum += frames * start - recv_sum
        self._lat_n += frames
        if lifecycle and self._gauges() != self._reported:
            out.insert(0, self._stats(start, interval=False))  # ahead of this batch's book items
        now = time.time_ns()
        levels = self._sample_levels
        for inst in dirty:
            if sync.status(inst) is not BookStatus.VALID:
                continue  # removed, or failed later in the batch: its BookState went out, the hash keeps the
                # last verified levels (never the levels of a book that failed its check)
            view = sync.view(inst, self._depth)
            out.append(view)
            if levels is not None and now - self._last_sample.get(inst, 0) >= self._sample_ns:
                self._last_sample[inst] = now
                self._points += min(levels, len(view.bids)) + min(levels, len(view.asks))
                out.append(BookSample(view, "snapshot" if view.action == "snapshot" else "incremental"))
        return out

    def _untracked(self, inst: str, frame: Frame, out: list[CollectorItem]) -> bool:
        """A frame of an instrument without a book: in flight after its removal (until the unsubscribe is
        answered), or wanted and subscribed without our having seen the ``Subscribed`` (removed and added back
        before its unsubscribe went out): then start its book now, else it would stay without one for good."""
        if inst in self._subscribed:
            if inst not in self._wanted:
                self._counters["frames_after_removal"] += 1  # expected, not bad input
                return False
            self._sync.feed(Track(inst, frame.recv_ns, subscribed=True))
            self._execute(out, {}, via="websocket")
            return True
        self._rejects.add(rejected("unsubscribed_instrument", inst, frame.text))
        return False

    def _execute(self, out: list[CollectorItem], dirty: dict[str, None], *, via: str) -> None:
        """The machine's outputs: states become items, commands go to the shard, results are logged."""
        shard, venue = self.shard, self._name
        for o in self._sync.drain():
            if type(o) is StateChanged:
                if o.status is not BookStatus.VALID:
                    out.append(BookState(o.instrument, o.status, venue=venue))
                    if o.status is BookStatus.STALE:
                        log.warning("book_stale", venue=venue, instrument=o.instrument, shard=shard)
                elif o.was is BookStatus.RESYNCING and via == "websocket":
                    log.info("book_resynced", venue=venue, instrument=o.instrument, via=via, shard=shard)
            elif type(o) is Resubscribe:
                self._control.resubscribe(o.instrument)
            elif type(o) is FetchSnapshot:
                log.info("book_rest_bootstrap", venue=venue, instrument=o.instrument, shard=shard)
                self._control.fetch(o.instrument)
            elif type(o) is Resynced:
                if self.venue.buffers:
                    snap = o.snapshot
                    out.append(BufferFrame(self.venue.render_snapshot(snap), (snap,) if self._with_deltas else ()))
                    out.extend(BufferFrame(text) for text in o.refs if isinstance(text, str))
                dirty[o.instrument] = None
                log.info("book_resynced", venue=venue, instrument=o.instrument, via="rest", applied=len(o.refs),
                         shard=shard)
            elif type(o) is Failed:
                if o.reason in _INTEGRITY:
                    log.warning("book_integrity_failed", venue=venue, instrument=o.instrument, result=o.detail,
                                shard=shard)
                elif o.reason == "fetch_failed":
                    log.warning("book_rest_failed", venue=venue, instrument=o.instrument, error=o.detail, shard=shard)
                else:
                    log.warning("book_resync_failed", venue=venue, instrument=o.instrument, reason=o.reason,
                                detail=o.detail, shard=shard)

    def _on_lifecycle(self, ev: WsEvent, out: list[CollectorItem], dirty: dict[str, None]) -> None:
        now = time.time_ns()
        sync = self._sync
        if isinstance(ev, Subscribed):
            self._subscribed.add(ev.topic)
            if ev.topic in sync:
                sync.feed(SyncSubscribed(ev.topic, now))
            elif ev.topic in self._wanted:
                sync.feed(Track(ev.topic, now, subscribed=True))  # a hash left by an earlier run is not valid
        elif isinstance(ev, Unsubscribed):
            self._subscribed.discard(ev.topic)
            sync.feed(SyncUnsubscribed(ev.topic))
        elif isinstance(ev, Disconnected):
            for topic in ev.topics:
                self._subscribed.discard(topic)
                sync.feed(SyncUnsubscribed(topic) if ev.planned else SyncDisconnected(topic, now))
            if not ev.planned:
                self._counters["disconnects"] += 1
            if ev.rejected:  # the socket refused a frame over its size limit (close 1009): counted like a parse
                self._rejects.add(rejected(ev.rejected, ev.reason, ""))
        elif isinstance(ev, TopicsChecked):
            self._last_check_ms = ev.ts_ms
            if ev.ok:
                self._wanted = set(ev.topics)
                self.venue.know(ev.topics)
                self._counters["subscription_changes"] += len(ev.added) + len(ev.removed)
                for topic in ev.removed:
                    self._remove(topic, out)
        elif isinstance(ev, TopicRejected):
            self._counters["rejected_pairs"] += 1
            self._remove(ev.topic, out)
        elif isinstance(ev, Fetched):
            snap = self.venue.parse_snapshot(ev.body, ev.topic, ev.recv_ns) if ev.body is not None else None
            if isinstance(snap, BookDelta):
                sync.feed(SnapshotFetched(ev.topic, now, snap))
            else:
                sync.feed(SnapshotFetched(ev.topic, now, None, ev.error or str(snap)))
        self._execute(out, dirty, via="rest")

    def _remove(self, topic: str, out: list[CollectorItem]) -> None:
        if topic in self._sync:
            self._sync.feed(Untrack(topic))
            self._last_sample.pop(topic, None)
            out.append(BookState(topic, BookStatus.SYNCING, removed=True, venue=self._name))

    # --- time-driven work ---------------------------------------------------------------------------------
    def on_tick(self, now_ns: int) -> list[CollectorItem]:
        out: list[CollectorItem] = []
        self._sync.feed(Tick(now_ns))
        self._execute(out, {}, via="rest")
        if now_ns >= self._next_stats:
            self._next_stats = now_ns + self._stats_ns
            out.append(self._stats(now_ns, interval=True))
        return out

    def _gauges(self) -> tuple[int, int]:
        sync = self._sync
        return self._control.connections, sum(1 for topic in self._subscribed if topic in sync)

    def _stats(self, now_ns: int, *, interval: bool) -> ShardStats:
        """The gauges now and the counters since the last stats; ``interval``: latency and rate measured anew."""
        self._counters.update(self._rejects.drain())
        self._counters.update(self._sync.drain_counters())
        if self._messages > self._messages_counted:  # system:monitoring frames_received (the monitor's frames/s)
            self._counters["frames_received"] += self._messages - self._messages_counted
            self._messages_counted = self._messages
        counters = tuple(sorted(self._counters.items()))
        self._counters.clear()
        if interval:
            self._latency_ms = self._lat_sum / self._lat_n / 1e6 if self._lat_n else 0.0
            elapsed = (now_ns - self._last_stats_ns) / 1e9 if self._last_stats_ns else 0.0
            self._influx_rate = self._points / elapsed if elapsed > 0 else 0.0
            self._lat_sum = self._lat_n = self._points = 0
            self._last_stats_ns = now_ns
        self._reported = self._gauges()
        return ShardStats(self.shard, now_ns // 1_000_000, self._reported[0], self._reported[1],
                          self._control.reconnects, self._messages, counters, self._last_check_ms,
                          self._latency_ms, self._influx_rate, venue=self._name)
