"""A hypothesis stateful test of the book-sync machine against a naive venue, for OKX, Binance and Bybit rules.

The test is the venue: it keeps each instrument's true book as two plain dicts, writes each push with the
venue's sequence fields (OKX seqId/prevSeqId with heartbeats, resets and checksums; Binance U/u with a REST
lastUpdateId; Bybit u with u == 1 restarts), delivers it to the machine with faults (lost, duplicated, held
back and delivered late) and executes the machine's commands (a resubscribe answers with a WebSocket snapshot
where the venue sends one; a fetch is answered later, from any moment after the request, or fails).

Checked after every step: a ``valid``/``stale`` book equals the true book at the book's sequence number; only a
faulted instrument ever loses sync; commands are the venue's kind. Checked per delivery: an in-order push to a
book at the truth is applied, a duplicate is skipped, a push after a lost one is a failure. And a heal (faults
stop, time passes, commands are executed) always ends with every book valid and equal to the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from operators.book_checksum import okx_checksum
from operators.book_sequencing import BINANCE, BYBIT, OKX, Sequencing
from operators.book_sync import (
    BookSync,
    Disconnected,
    Failed,
    Fed,
    FetchSnapshot,
    Resubscribe,
    SnapshotFetched,
    Subscribed,
    SyncConfig,
    Tick,
    Track,
)
from operators.events import BookDelta, BookStatus, Level

S = 1_000_000_000
INSTS = ("A-B", "C-D")
Book = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]


@dataclass
class Truth:
    """One instrument's true book and pushes, written the obvious way."""

    bids: dict[int, str] = field(default_factory=dict)  # price -> size; bids 1..30, asks 101..130: never crossed
    asks: dict[int, str] = field(default_factory=dict)
    seq: int = 1_000_000
    ts_ms: int = 1_700_000_000_000
    resets: int = 0
    at_seq: dict[int, Book] = field(default_factory=dict)  # the book at each sequence number
    states: list[tuple[int, int, Book]] = field(default_factory=list)  # (seq, ts_ms, book) per push
    held: list[BookDelta] = field(default_factory=list)
    fetch_from: int | None = None  # index into states: the moment a fetch was asked for

    def book(self) -> Book:
        return (tuple((str(p), s) for p, s in sorted(self.bids.items(), reverse=True)),
                tuple((str(p), s) for p, s in sorted(self.asks.items())))

    def record(self) -> None:
        self.at_seq[self.seq] = self.book()
        self.states.append((self.seq, self.ts_ms, self.book()))


def levels(pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> tuple[Level, ...]:
    return tuple(Level(p, s) for p, s in pairs)


class SyncAgainstVenue(RuleBasedStateMachine):
    rule_set: Sequencing = OKX

    @initialize(snapshot_on_subscribe=st.lists(st.booleans(), min_size=2, max_size=2))
    def start(self, snapshot_on_subscribe: list[bool]) -> None:
        self.now = 10 * S
        self.m = BookSync(self.rule_set, SyncConfig(stale_after_ns=30 * S, snapshot_wait_ns=3 * S))
        self.truth = {inst: Truth() for inst in INSTS}
        self.faulted: set[str] = set()
        for inst, t in self.truth.items():
            t.bids, t.asks = {10: "1", 9: "2"}, {101: "1", 102: "3"}
            t.record()
            self.m.feed(Track(inst, self.now, subscribed=True))
            if snapshot_on_subscribe[INSTS.index(inst)]:
                self.ws_snapshot(inst)
        self.execute()

    # --- the venue ------------------------------------------------------------------------------------------
    def venue(self) -> str:
        return self.rule_set.venue

    def snapshot_delta(self, inst: str, state: tuple[int, int, Book] | None = None) -> BookDelta:
        t = self.truth[inst]
        seq, ts, (bids, asks) = state or t.states[-1]
        checksum = okx_checksum(levels(bids), levels(asks)) if self.venue() == "okx" else 0
        prev = -1 if self.venue() == "okx" else None
        return BookDelta(self.venue(), inst, "snapshot", levels(bids), levels(asks), ts, self.now, checksum, seq,
                         prev)

    def ws_snapshot(self, inst: str) -> None:
        if self.rule_set.ws_snapshots:
            self.deliver(self.snapshot_delta(inst))

    def push(self, inst: str, changes: list[tuple[bool, int, str]], kind: str, step: int, dt: int) -> BookDelta:
        """The venue's next push for ``inst`` (the truth moves)."""
        t = self.truth[inst]
        t.ts_ms += dt
        venue, last = self.venue(), t.seq
        if venue == "bybit" and kind == "restart":
            t.seq = 1
            t.at_seq.clear()
            for is_bid, p, size in changes:
                (t.bids if is_bid else t.asks)[p if is_bid else 100 + p] = size
            t.bids = {p: s for p, s in t.bids.items() if s != "0"}
            t.asks = {p: s for p, s in t.asks.items() if s != "0"}
            t.record()
            return self.snapshot_delta(inst)
        if venue == "okx" and kind == "heartbeat":
            t.record()
            return BookDelta(venue, inst, "update", (), (), t.ts_ms, self.now,
                             okx_checksum(levels(t.book()[0]), levels(t.book()[1])), last, last)
        bids, asks = [], []
        for is_bid, p, size in changes:
            side, price = (t.bids, p) if is_bid else (t.asks, 100 + p)
            if size == "0":
                side.pop(price, None)
            else:
                side[price] = size
            (bids if is_bid else asks).append((str(price), size))
        if venue == "okx" and kind == "reset":
            t.resets += 1
            t.seq = 500_000 - 10_000 * t.resets
        else:
            t.seq = last + (1 if venue == "bybit" else step)
        t.record()
        checksum = okx_checksum(levels(t.book()[0]), levels(t.book()[1])) if venue == "okx" else 0
        prev = None if venue == "bybit" else last
        return BookDelta(venue, inst, "update", levels(bids), levels(asks), t.ts_ms, self.now, checksum, t.seq, prev)

    def deliver(self, d: BookDelta) -> Fed:
        return self.m.on_delta(d, now_ns=self.now)

    def execute(self) -> None:
        """The machine's outputs: commands executed (a resubscribe at once), failures checked."""
        for out in self.m.drain():
            if isinstance(out, Failed) and out.reason != "fetch_failed":
                assert out.instrument in self.faulted, out
            elif isinstance(out, Resubscribe):
                assert self.m.resync_by == "resubscribe"
                self.m.feed(Subscribed(out.instrument, self.now))
                self.ws_snapshot(out.instrument)
            elif isinstance(out, FetchSnapshot):
                self.truth[out.instrument].fetch_from = len(self.truth[out.instrument].states) - 1

    # --- rules ----------------------------------------------------------------------------------------------
    @rule(inst=st.sampled_from(INSTS),
          changes=st.lists(st.tuples(st.booleans(), st.integers(1, 30), st.sampled_from(["0", "1", "2.5", "7"])),
                           min_size=1, max_size=4),
          kind=st.sampled_from(["normal"] * 6 + ["heartbeat", "reset", "restart"]),
          fault=st.sampled_from(["none"] * 5 + ["drop", "duplicate", "hold"]),
          step=st.integers(1, 3), dt=st.integers(0, 2))
    def market_moves(self, inst: str, changes: list[tuple[bool, int, str]], kind: str, fault: str, step: int,
                     dt: int) -> None:
        t = self.truth[inst]
        book = self.m.book(inst)
        assert book is not None
        was_valid = book.status in (BookStatus.VALID, BookStatus.STALE)
        book_seq, book_ts = book.seq_id, book.ts_ms
        at_truth = was_valid and book_seq == t.seq and self.book_of(inst) == t.book()
        behind = was_valid and book_seq in t.at_seq and book_seq != t.seq
        if kind == "reset":
            dt = max(dt, 1)  # a reset in the very millisecond of a snapshot cannot be told from a replay
        d = self.push(inst, changes, kind, step, dt)
        if d.action == "snapshot":  # a Bybit restart
            fault = "none"  # the socket loses nothing: "drop" is a venue's gap in its sequence
            t.held = []  # pushes of the old sequence do not come after the new one's snapshot
        heartbeat = d.action == "update" and d.seq_id == d.prev_seq_id
        if fault == "drop":
            if not heartbeat:
                self.faulted.add(inst)
        elif fault == "hold":
            t.held.append(d)
            self.faulted.add(inst)
        else:
            fed = self.deliver(d)
            if at_truth and d.action == "update":
                assert fed is Fed.APPLIED, (fed, d)  # no false alarm on a clean stream
            if behind and d.action == "update":
                assert book_seq is not None and d.seq_id is not None
                same_ms_replay = (self.venue() == "okx" and d.ts_ms == book_ts and d.prev_seq_id is not None
                                  and d.prev_seq_id < book_seq and d.seq_id <= book_seq)  # a known blind spot
                if not same_ms_replay:
                    assert fed is Fed.FAILED, (fed, d)  # after a lost push
            if fault == "duplicate":
                again = self.deliver(d)
                if fed is Fed.APPLIED and not heartbeat:
                    assert again is Fed.SKIPPED, (again, d)
            for late in t.held:
                self.deliver(late)
            t.held = []
        self.execute()

    @rule(inst=st.sampled_from(INSTS), data=st.data(), fail=st.booleans())
    def answer_fetch(self, inst: str, data: st.DataObject, fail: bool) -> None:
        t = self.truth[inst]
        if t.fetch_from is None:
            return
        index = data.draw(st.integers(t.fetch_from, len(t.states) - 1), label="snapshot taken after push")
        t.fetch_from = None
        if fail:
            self.m.feed(SnapshotFetched(inst, self.now, None, "HTTP 503"))
        else:
            self.m.feed(SnapshotFetched(inst, self.now, self.snapshot_delta(inst, t.states[index])))
        self.execute()

    @rule(seconds=st.sampled_from([0.5, 2, 5, 31]))
    def time_passes(self, seconds: float) -> None:
        self.now += int(seconds * S)
        self.m.feed(Tick(self.now))
        self.execute()

    @rule(inst=st.sampled_from(INSTS))
    def connection_drops(self, inst: str) -> None:
        self.m.feed(Disconnected(inst, self.now))
        assert self.m.status(inst) is BookStatus.RESYNCING
        self.m.feed(Subscribed(inst, self.now))  # the reconnect resubscribes
        self.ws_snapshot(inst)
        self.execute()

    @rule()
    def heal(self) -> None:
        for t in self.truth.values():
            t.held = []  # lost for good
        for _ in range(8):
            self.now += 31 * S
            self.m.feed(Tick(self.now))
            self.execute()
            for inst, t in self.truth.items():
                if t.fetch_from is not None:
                    t.fetch_from = None
                    self.m.feed(SnapshotFetched(inst, self.now, self.snapshot_delta(inst)))
                    self.execute()
                self.deliver(self.push(inst, [(True, 5, "4")], "normal", 1, 1))
                self.execute()
        for inst, t in self.truth.items():
            assert self.m.status(inst) is BookStatus.VALID, inst
            assert self.book_of(inst) == t.book()
        self.faulted.clear()

    # --- invariants -----------------------------------------------------------------------------------------
    def book_of(self, inst: str) -> Book:
        view = self.m.view(inst)
        return (tuple((lv.price, lv.size) for lv in view.bids), tuple((lv.price, lv.size) for lv in view.asks))

    @invariant()
    def a_synced_book_is_the_true_book_at_its_sequence_number(self) -> None:
        if not hasattr(self, "m"):
            return
        for inst, t in self.truth.items():
            book = self.m.book(inst)
            assert book is not None
            if book.status in (BookStatus.VALID, BookStatus.STALE):
                assert book.seq_id in t.at_seq, (inst, book.seq_id)
                assert self.book_of(inst) == t.at_seq[book.seq_id], inst


class OkxAgainstVenue(SyncAgainstVenue):
    rule_set = OKX


class BinanceAgainstVenue(SyncAgainstVenue):
    rule_set = BINANCE


class BybitAgainstVenue(SyncAgainstVenue):
    rule_set = BYBIT


_settings = settings(max_examples=75, stateful_step_count=30, deadline=None)
TestOkx = OkxAgainstVenue.TestCase
TestOkx.settings = _settings
TestBinance = BinanceAgainstVenue.TestCase
TestBinance.settings = _settings
TestBybit = BybitAgainstVenue.TestCase
TestBybit.settings = _settings
