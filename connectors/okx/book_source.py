"""The OKX order-book source: shards of ``books`` subscriptions, parsed and checked on the worker.

:func:`okx_books_source` builds a :class:`connectors.ws.source.WsShardSource` whose partitions each run a
:class:`connectors.ws.shard.ShardRunner` (OKX hooks, ``config:trading_pairs`` poller, REST fetcher) and an
:class:`OkxBookProcessor`. The processor runs in the partition's ``next_batch`` (the worker thread):

* parse (``connectors.okx.books``) -> apply to that instrument's :class:`operators.orderbook.OrderBook`;
* a failed check (gap, checksum, crossed) marks that one book ``resyncing`` and resubscribes that one
  instrument (the venue answers with a fresh snapshot); resyncs of a flapping book are spaced out (1 s doubling
  to 30 s);
* an update for a book that never had a snapshot, or a book waiting ``snapshot_wait`` s for one, is bootstrapped
  from REST (``operators.book_resync.SnapshotResync``: snapshot + the updates buffered meanwhile); a REST failure
  falls back to resubscribing;
* a dropped connection marks its books ``resyncing``; the reconnect resubscribes and every book re-syncs.

It emits typed items (:data:`CollectorItem`): a :class:`BookView` for each instrument changed in the batch
(coalesced: one per instrument per batch), :class:`BookState` when a book leaves ``valid`` or is removed,
:class:`BufferFrame` for each raw frame applied (a REST resync appears as a rendered snapshot frame), a
:class:`BookSample` at most every ``sample_interval`` s per instrument (InfluxDB), and :class:`ShardStats`
every ``stats_interval`` s. Bad input is counted per reason, logged once per reason with context, dropped.

Delivery: every valid book state reaches the hash (coalesced); raw frames are forwarded at most once.
Unit of parallelism: the shard (``ceil(max_trading_pairs / okx_pairs_per_connection)`` shards).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from connectors.okx.books import (
    OkxParseError,
    parse_books_frame,
    parse_rest_books,
    render_books_snapshot,
)
from connectors.okx.protocol import OkxHooks
from connectors.okx.rest import OkxBooksFetcher
from connectors.pairs import PairsPoller
from connectors.untrusted import RejectTally, rejected
from connectors.ws.events import (
    Connected,
    Disconnected,
    Fetched,
    Frame,
    Rejected,
    Subscribed,
    TopicsChecked,
    Unsubscribed,
    WsEvent,
)
from connectors.ws.shard import ShardRunner
from connectors.ws.source import ShardControl, WsShardSource
from cryptoflow.logs import get_logger
from cryptoflow.settings import Settings
from operators.book_resync import BufferOverflow, SnapshotResync
from operators.events import BookDelta, BookStatus, BookView
from operators.orderbook import Applied, BookCrossed, ChecksumMismatch, Heartbeat, OrderBook, SequenceGap

log = get_logger("connectors.okx.book_source")


# ----------------------------------------------------------------------------------------------- items
class BookState(msgspec.Struct, frozen=True):
    """A book left ``valid`` (``status``), or was removed from the set (``removed=True``)."""

    instrument: str
    status: BookStatus
    removed: bool = False


class BufferFrame(msgspec.Struct, frozen=True):
    """One raw OKX frame for the buffer list, exactly as received (or a rendered snapshot after REST).

    ``deltas`` are the frame already parsed, when the processor has them at hand, so a consumer in the same
    dataflow (``ORDERBOOK_SOURCE=ws``) does not parse it again; empty means "parse ``text``"."""

    text: str
    deltas: tuple[BookDelta, ...] = ()


class BookSample(msgspec.Struct, frozen=True):
    """A throttled book moment for InfluxDB ``orderbook_data``."""

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


CollectorItem = BookView | BookState | BufferFrame | BookSample | ShardStats


# ----------------------------------------------------------------------------------------- processor
@dataclass(slots=True)
class _Book:
    book: OrderBook
    since_ns: int  # when it entered its current syncing/resyncing phase
    last_frame_ns: int = 0
    rest: SnapshotResync | None = None
    held: list[str] = field(default_factory=list)  # raw frames buffered with `rest`
    failures: int = 0
    next_resync_ns: int = 0
    resync_due: bool = False
    last_sample_ns: int = 0


_RESYNC_BASE_NS = 1_000_000_000
_RESYNC_MAX_NS = 30_000_000_000


class OkxBookProcessor:
    """One shard's books (see module docstring)."""

    def __init__(self, shard: int, control: ShardControl, *, channel: str, depth: int = 400,
                 stale_after: float = 30.0, snapshot_wait: float = 3.0, sample_interval: float = 1.0,
                 sample_levels: int | None = None, stats_interval: float = 1.0, with_deltas: bool = False,
                 dataflow: str = "orderbook_collector") -> None:
        self.shard = shard
        # Rejections: rejected_<reason> and <dataflow>:rejected_<reason> in system:monitoring, logged once per reason
        self._rejects = RejectTally(log, dataflow, event="bad_message_dropped", shard=shard)
        # Parsed deltas ride along with each BufferFrame only for a consumer in the same dataflow (analysis
        # with ORDERBOOK_SOURCE=ws): keeping them alive costs the collector ~30 % at large batches (GC).
        self._with_deltas = with_deltas
        self._control = control
        self._channel = channel
        self._depth = depth
        self._stale_ns = int(stale_after * 1e9)
        self._wait_ns = int(snapshot_wait * 1e9)
        self._sample_ns = int(sample_interval * 1e9)
        self._sample_levels = sample_levels  # None: no InfluxDB, no samples
        self._points = 0
        self._lat_sum = 0
        self._lat_n = 0
        self._stats_ns = int(stats_interval * 1e9)
        self._next_stats = 0
        self._last_stats_ns = 0
        self._latency_ms = 0.0
        self._influx_rate = 0.0
        self._reported: tuple[int, int] = (-1, -1)  # (connections, active_pairs) in the last stats
        self._books: dict[str, _Book] = {}
        self._wanted: set[str] = set()
        self._subscribed: set[str] = set()
        self._counters: Counter[str] = Counter()
        self._messages = 0
        self._last_check_ms = 0

    # --- events -----------------------------------------------------------------------------------------
    def on_events(self, events: list[WsEvent]) -> list[CollectorItem]:
        out: list[CollectorItem] = []
        dirty: dict[str, _Book] = {}
        start = time.time_ns()
        lifecycle = False
        for ev in events:
            if type(ev) is Frame:
                self._messages += 1
                self._lat_sum += start - ev.recv_ns
                self._lat_n += 1
                self._on_frame(ev, out, dirty)
            else:
                lifecycle = True
                self._on_lifecycle(ev, out, dirty)
        if lifecycle and self._gauges() != self._reported:
            out.insert(0, self._stats(start, interval=False))  # ahead of this batch's book items
        now = time.time_ns()
        levels = self._sample_levels
        for inst, st in dirty.items():
            if self._books.get(inst) is not st or st.book.status is not BookStatus.VALID:
                continue  # removed, or failed later in the batch: its BookState went out, the hash keeps the
                # last verified levels (never the levels of a book that failed its check)
            view = st.book.view(self._depth)
            out.append(view)
            if levels is not None and now - st.last_sample_ns >= self._sample_ns:
                st.last_sample_ns = now
                self._points += min(levels, len(view.bids)) + min(levels, len(view.asks))
                out.append(BookSample(view, "snapshot" if view.action == "snapshot" else "incremental"))
        return out

    def _on_frame(self, frame: Frame, out: list[CollectorItem], dirty: dict[str, _Book]) -> None:
        res = parse_books_frame(frame.text, recv_ns=frame.recv_ns)
        if type(res) is not tuple:
            if isinstance(res, OkxParseError):
                self._rejects.add(res)
            else:
                self._counters["okx_messages_ignored"] += 1
            return
        pushed = False
        for delta in res:
            st = self._books.get(delta.instrument)
            if st is None:
                st = self._untracked(delta.instrument, frame, out)
                if st is None:
                    continue
            st.last_frame_ns = frame.recv_ns
            if st.rest is not None:
                if delta.action == "update":
                    self._buffer(st, delta, frame.text)
                    continue
                st.rest, st.held = None, []  # a WS snapshot makes the pending REST answer unnecessary
            was = st.book.status
            seq = delta.seq_id
            if seq is not None and seq == st.book.seq_id and delta.prev_seq_id != seq and delta.action == "update":
                self._counters["duplicate_frames"] += 1  # the same update again: already applied
                continue
            result = st.book.apply(delta)
            if type(result) is Applied or type(result) is Heartbeat:
                if not pushed:
                    out.append(BufferFrame(frame.text, res if self._with_deltas else ()))
                    pushed = True
                dirty[delta.instrument] = st
                if was is BookStatus.RESYNCING:
                    log.info("book_resynced", instrument=delta.instrument, via="websocket", shard=self.shard)
                continue
            if st.book.status is BookStatus.SYNCING and delta.action == "update":
                self._start_rest(st, delta, frame.text, out)  # no initial snapshot: bootstrap from REST
            elif st.book.status is BookStatus.RESYNCING and was is not BookStatus.RESYNCING:
                self._failed(st, result, out)

    def _untracked(self, inst: str, frame: Frame, out: list[CollectorItem]) -> _Book | None:
        """A frame of an instrument without a book: in flight after its removal (until the unsubscribe is
        answered), or wanted and subscribed without our having seen the ``Subscribed`` (removed and added back
        before its unsubscribe went out): then start its book now, else it would stay without one for good."""
        if inst in self._subscribed:
            if inst not in self._wanted:
                self._counters["frames_after_removal"] += 1  # expected, not bad input
                return None
            st = self._books[inst] = _Book(OrderBook(inst, "okx", self._depth), since_ns=frame.recv_ns)
            out.append(BookState(inst, BookStatus.SYNCING))
            return st
        self._rejects.add(rejected("unsubscribed_instrument", inst, frame.text))
        return None

    def _failed(self, st: _Book, result: object, out: list[CollectorItem]) -> None:
        kinds: dict[type, str] = {SequenceGap: "gaps", ChecksumMismatch: "checksum_errors",
                                  BookCrossed: "crossed_books"}
        self._counters[kinds.get(type(result), "invalid_levels")] += 1
        inst = st.book.instrument
        log.warning("book_integrity_failed", instrument=inst, result=repr(result), shard=self.shard)
        out.append(BookState(inst, BookStatus.RESYNCING))
        self._resync(st, time.time_ns())

    def _resync(self, st: _Book, now: int) -> None:
        st.book.mark_resyncing()
        st.since_ns = now
        st.rest, st.held = None, []
        if now < st.next_resync_ns:
            st.resync_due = True  # spaced out: on_tick resubscribes when it is time
            return
        st.resync_due = False
        st.failures += 1
        st.next_resync_ns = now + min(_RESYNC_MAX_NS, _RESYNC_BASE_NS * 2 ** min(st.failures - 1, 8))
        self._counters["resyncs"] += 1
        self._control.resubscribe(st.book.instrument)

    def _start_rest(self, st: _Book, delta: BookDelta | None, text: str | None,
                    out: list[CollectorItem]) -> None:
        inst = st.book.instrument
        st.rest, st.held = SnapshotResync(), []
        st.since_ns = time.time_ns()
        if delta is not None and text is not None:
            self._buffer(st, delta, text)
        self._counters["rest_bootstraps"] += 1
        log.info("book_rest_bootstrap", instrument=inst, shard=self.shard)
        self._control.fetch(inst)

    def _buffer(self, st: _Book, delta: BookDelta, text: str) -> None:
        assert st.rest is not None
        try:
            st.rest.add(delta)
            st.held.append(text)
        except BufferOverflow:
            self._resync(st, time.time_ns())

    def _on_fetched(self, ev: Fetched, out: list[CollectorItem], dirty: dict[str, _Book]) -> None:
        st = self._books.get(ev.topic)
        if st is None or st.rest is None:
            return
        snap = parse_rest_books(ev.body, instrument=ev.topic, recv_ns=ev.recv_ns) if ev.body is not None else None
        if not isinstance(snap, BookDelta):
            log.warning("book_rest_failed", instrument=ev.topic, error=ev.error or repr(snap), shard=self.shard)
            self._counters["rest_failures"] += 1
            self._resync(st, time.time_ns())
            return
        held, rest = st.held, st.rest
        st.rest, st.held = None, []
        outcome = rest.complete(st.book, snap)
        if type(outcome.result) is not Applied and type(outcome.result) is not Heartbeat:
            log.warning("book_rest_merge_failed", instrument=ev.topic, result=repr(outcome.result))
            self._resync(st, time.time_ns())
            return
        out.append(BufferFrame(render_books_snapshot(snap, channel=self._channel),
                               (snap,) if self._with_deltas else ()))
        if outcome.applied:
            out.extend(BufferFrame(t) for t in held[len(held) - outcome.applied :])
        dirty[ev.topic] = st
        log.info("book_resynced", instrument=ev.topic, via="rest", applied=outcome.applied, shard=self.shard)

    def _on_lifecycle(self, ev: WsEvent, out: list[CollectorItem], dirty: dict[str, _Book]) -> None:
        now = time.time_ns()
        if isinstance(ev, Subscribed):
            self._subscribed.add(ev.topic)
            if ev.topic in self._wanted and ev.topic not in self._books:
                self._books[ev.topic] = _Book(OrderBook(ev.topic, "okx", self._depth), since_ns=now)
                out.append(BookState(ev.topic, BookStatus.SYNCING))  # a hash left by an earlier run is not valid
            elif ev.topic in self._books:
                self._books[ev.topic].since_ns = now
        elif isinstance(ev, Unsubscribed):
            self._subscribed.discard(ev.topic)
        elif isinstance(ev, Disconnected):
            for topic in ev.topics:
                self._subscribed.discard(topic)
                st = self._books.get(topic)
                if st is not None and not ev.planned:
                    if st.book.status is not BookStatus.RESYNCING:
                        out.append(BookState(topic, BookStatus.RESYNCING))
                    st.book.mark_resyncing()
                    st.since_ns, st.rest, st.held, st.resync_due = now, None, [], False
            if not ev.planned:
                self._counters["disconnects"] += 1
            if ev.rejected:  # the socket refused a frame over its size limit (close 1009): counted like a parse
                self._rejects.add(rejected(ev.rejected, ev.reason, ""))
        elif isinstance(ev, TopicsChecked):
            self._last_check_ms = ev.ts_ms
            if ev.ok:
                self._wanted = set(ev.topics)
                self._counters["subscription_changes"] += len(ev.added) + len(ev.removed)
                for topic in ev.removed:
                    if self._books.pop(topic, None) is not None:
                        out.append(BookState(topic, BookStatus.SYNCING, removed=True))
        elif isinstance(ev, Rejected):
            self._counters["rejected_pairs"] += 1
            if self._books.pop(ev.topic, None) is not None:
                out.append(BookState(ev.topic, BookStatus.SYNCING, removed=True))
        elif isinstance(ev, Fetched):
            self._on_fetched(ev, out, dirty)
        elif isinstance(ev, Connected):
            pass

    # --- time-driven work ---------------------------------------------------------------------------------
    def on_tick(self, now_ns: int) -> list[CollectorItem]:
        out: list[CollectorItem] = []
        for inst, st in self._books.items():
            status = st.book.status
            if status is BookStatus.VALID and st.last_frame_ns and now_ns - st.last_frame_ns > self._stale_ns:
                st.book.mark_stale()
                out.append(BookState(inst, BookStatus.STALE))
                log.warning("book_stale", instrument=inst, silent_s=round((now_ns - st.last_frame_ns) / 1e9, 1))
            elif status is BookStatus.RESYNCING and st.resync_due and now_ns >= st.next_resync_ns:
                self._resync(st, now_ns)
            elif (status is BookStatus.SYNCING or status is BookStatus.RESYNCING) and st.rest is None \
                    and inst in self._subscribed and now_ns - st.since_ns > self._wait_ns and not st.resync_due:
                self._start_rest(st, None, None, out)  # subscribed, but no snapshot came
            elif status is BookStatus.VALID and st.failures and now_ns - st.next_resync_ns > _RESYNC_MAX_NS:
                st.failures = 0
        if now_ns >= self._next_stats:
            self._next_stats = now_ns + self._stats_ns
            out.append(self._stats(now_ns, interval=True))
        return out

    def _gauges(self) -> tuple[int, int]:
        return self._control.connections, len(self._subscribed & self._books.keys())

    def _stats(self, now_ns: int, *, interval: bool) -> ShardStats:
        """The gauges now and the counters since the last stats; ``interval``: latency and rate measured anew."""
        self._counters.update(self._rejects.drain())
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
                          self._latency_ms, self._influx_rate)


# ---------------------------------------------------------------------------------------------- wiring
def shard_count(settings: Settings) -> int:
    return max(1, math.ceil(settings.max_trading_pairs / settings.okx_pairs_per_connection))


def okx_books_source(settings: Settings, *, shards: int | None = None, with_deltas: bool = False,
                     dataflow: str = "orderbook_collector") -> WsShardSource[CollectorItem]:
    """The source of the order-book collector, configured from ``settings``; ``with_deltas``: each
    :class:`BufferFrame` also carries its parsed deltas (for the analysis dataflow's ws mode); ``dataflow``
    names the rejection counters (``<dataflow>:rejected_<reason>``)."""
    count = shards or shard_count(settings)
    channel = settings.okx_book_channel.value

    def runner(index: int, total: int, emit: object) -> ShardRunner:
        hooks = OkxHooks(str(settings.okx_ws_url), channel=channel, ping_interval=settings.ws_ping_interval,
                         pong_timeout=settings.ws_pong_timeout)
        poller = PairsPoller(str(settings.redis_url), settings.redis_trading_pairs_key,
                             limit=settings.max_trading_pairs, interval=settings.trading_pairs_poll_interval,
                             venue="okx", announce=index == 0)
        return ShardRunner(index=index, shards=total, hooks=hooks, source=poller, emit=emit,  # type: ignore[arg-type]
                           per_connection=settings.okx_pairs_per_connection,
                           backoff_initial=settings.ws_backoff_initial, backoff_max=settings.ws_backoff_max,
                           fetcher=lambda: OkxBooksFetcher(str(settings.okx_rest_url)))

    def processor(index: int, control: ShardControl) -> OkxBookProcessor:
        return OkxBookProcessor(index, control, channel=channel, stale_after=settings.ws_stale_after,
                                sample_interval=settings.influx_book_interval,
                                sample_levels=settings.influx_book_levels if settings.influx_enabled else None,
                                with_deltas=with_deltas, dataflow=dataflow)

    return WsShardSource(count, runner, processor)
