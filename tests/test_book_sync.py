"""operators/book_sync.py (the sync machine) and operators/book_sequencing.py (each venue's rule): unit tests.

Deltas are built by hand per venue, with each venue's wire fields mapped the way its parser maps them
(OKX seqId/prevSeqId; Binance u / U-1; Bybit u / none); expected books are written out literally."""

from __future__ import annotations

import pickle

import msgspec
import pytest

from operators.book_checksum import okx_checksum
from operators.book_sequencing import BINANCE, BYBIT, OKX, Verdict
from operators.book_sync import (
    BookSync,
    Disconnected,
    Failed,
    Fed,
    FetchSnapshot,
    Invalidated,
    Resubscribe,
    Resynced,
    SnapshotFetched,
    StateChanged,
    Subscribed,
    SyncConfig,
    Tick,
    Track,
    Untrack,
)
from operators.events import BookDelta, BookStatus, Level
from operators.orderbook import OrderBook
from tests.book_helpers import delta, snapshot

S = 1_000_000_000
A, B = "A-B", "C-D"
SYNCING, VALID, STALE, RESYNCING = BookStatus.SYNCING, BookStatus.VALID, BookStatus.STALE, BookStatus.RESYNCING


def okx_machine(**cfg: object) -> BookSync:
    m = BookSync(OKX, SyncConfig(**cfg))  # type: ignore[arg-type]
    m.feed(Track(A, 0, subscribed=True))
    m.feed(Track(B, 0, subscribed=True))
    assert m.drain() == [StateChanged(A, SYNCING, None), StateChanged(B, SYNCING, None)]
    return m


def at(d: BookDelta, now_s: float) -> BookDelta:
    return msgspec.structs.replace(d, recv_ns=int(now_s * S))


def sides(m: BookSync, inst: str = A) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    view = m.view(inst)
    return [(lv.price, lv.size) for lv in view.bids], [(lv.price, lv.size) for lv in view.asks]


SNAP = snapshot([("10", "1"), ("9", "2")], [("11", "1")], seq=100, prev=-1, inst=A)


# ----------------------------------------------------------------------------------------------------- OKX
def test_okx_snapshot_updates_heartbeat_reset_and_duplicates() -> None:
    m = okx_machine()
    assert m.on_delta(SNAP) is Fed.APPLIED
    assert m.drain() == [StateChanged(A, VALID, SYNCING)]
    u1 = delta([("10", "5")], seq=101, prev=100, inst=A)
    assert m.on_delta(u1) is Fed.APPLIED
    assert m.on_delta(u1) is Fed.SKIPPED  # the same update again
    assert m.on_delta(delta(seq=101, prev=101, inst=A)) is Fed.APPLIED  # heartbeat
    assert m.on_delta(delta([("9", "0")], seq=7, prev=101, inst=A)) is Fed.APPLIED  # a reset: seq < prev, chains
    assert m.on_delta(delta([("10", "9")], seq=101, prev=100, ts_ms=1_699_999_999_999, inst=A)) is Fed.SKIPPED
    assert sides(m) == ([("10", "5")], [("11", "1")]) and m.book(A).seq_id == 7  # type: ignore[union-attr]
    assert m.drain() == [] and dict(m.drain_counters()) == {"duplicate_frames": 2}


def test_okx_a_lost_reset_is_a_gap_not_a_replay() -> None:
    m = okx_machine()
    m.on_delta(SNAP)
    m.on_delta(delta([("10", "5")], seq=101, prev=100, ts_ms=1_700_000_000_001, inst=A))
    # the reset (seq 3, prev 101) was lost; its successor is older by seq but newer by exchange time
    assert m.on_delta(delta([("9", "1")], seq=4, prev=3, ts_ms=1_700_000_000_002, inst=A)) is Fed.FAILED


def test_okx_gap_resyncs_that_book_only_by_resubscribing_with_backoff() -> None:
    m = okx_machine()
    m.on_delta(at(SNAP, 1))
    m.on_delta(at(snapshot([("5", "1")], [("6", "1")], seq=1, prev=-1, inst=B), 1))
    m.drain()
    assert m.on_delta(at(delta([("9", "1")], seq=106, prev=105, inst=A), 2)) is Fed.FAILED
    out = m.drain()
    assert out == [Failed(A, "sequence_gap", "SequenceGap(expected=100, got=105)"), StateChanged(A, RESYNCING, VALID),
                   Resubscribe(A)]
    assert m.status(B) is VALID
    assert m.on_delta(at(delta([("9", "1")], seq=107, prev=106, inst=A), 2.1)) is Fed.REFUSED
    assert m.on_delta(at(SNAP, 2.2)) is Fed.APPLIED  # the snapshot after resubscribing
    assert m.drain() == [StateChanged(A, VALID, RESYNCING)]
    # a second failure within a second of the first resync waits for the tick after 1 s (then 2 s, 4 s ...)
    m.on_delta(at(delta([("9", "1")], seq=200, prev=199, inst=A), 2.5))
    assert Resubscribe(A) not in m.drain()
    m.feed(Tick(int(2.9 * S)))
    assert m.drain() == []
    m.feed(Tick(3 * S))
    assert m.drain() == [Resubscribe(A)]
    m.on_delta(at(SNAP, 3.1))
    m.on_delta(at(delta([("9", "1")], seq=300, prev=299, inst=A), 3.2))
    m.feed(Tick(int(4.9 * S)))
    assert Resubscribe(A) not in m.drain()
    m.feed(Tick(5 * S))
    assert m.drain() == [Resubscribe(A)]  # 2 s after the second
    assert dict(m.drain_counters()) == {"gaps": 3, "resyncs": 3}


def test_okx_backoff_is_forgotten_after_a_calm_period() -> None:
    m = okx_machine(backoff_max_ns=10 * S)
    m.on_delta(at(SNAP, 1))
    for t in (2, 3, 5):
        m.on_delta(at(delta(seq=900, prev=899, inst=A), t))
        m.feed(Tick(t * S))
        m.on_delta(at(SNAP, t + 0.5))
    m.drain()
    m.feed(Tick(30 * S))  # calm for longer than backoff_max after the last resync: failures forgotten
    m.on_delta(at(delta(seq=900, prev=899, inst=A), 31))
    assert Resubscribe(A) in m.drain()
    m.on_delta(at(SNAP, 31.5))
    m.on_delta(at(delta(seq=900, prev=899, inst=A), 32))  # 1 s after: waits again (1 s base, not 8 s)
    m.feed(Tick(33 * S))
    assert Resubscribe(A) in m.drain()


def test_okx_update_before_any_snapshot_bootstraps_from_a_fetched_snapshot() -> None:
    m = okx_machine()
    u1 = delta([("10", "5")], seq=101, prev=100, inst=A)
    u2 = delta([("8", "1")], seq=102, prev=101, inst=A)
    old = delta([("7", "1")], seq=99, prev=98, inst=A)
    assert [m.on_delta(old, "old"), m.on_delta(u1, "u1"), m.on_delta(u2, "u2")] == [Fed.BUFFERED] * 3
    assert m.drain() == [FetchSnapshot(A)]
    rest = snapshot([("10", "1")], [("11", "1")], seq=100, prev=-1, inst=A)
    m.feed(SnapshotFetched(A, 1, rest))
    assert m.drain() == [StateChanged(A, VALID, SYNCING), Resynced(A, rest, ("u1", "u2"))]
    assert sides(m) == ([("10", "5"), ("8", "1")], [("11", "1")]) and m.book(A).seq_id == 102  # type: ignore[union-attr]
    assert dict(m.drain_counters()) == {"rest_bootstraps": 1}


def test_okx_rest_snapshot_without_seq_ids_uses_exchange_time() -> None:
    m = okx_machine()
    m.on_delta(delta([("7", "1")], seq=50, prev=49, ts_ms=1000, inst=A), "older")
    m.on_delta(delta([("8", "1")], seq=51, prev=50, ts_ms=2000, inst=A), "same ms")
    m.on_delta(delta([("9", "1")], seq=52, prev=51, ts_ms=2001, inst=A), "newer")
    m.feed(SnapshotFetched(A, 1, snapshot([("10", "1")], [("11", "1")], ts_ms=2000, inst=A)))
    assert m.drain()[-1].refs == ("same ms", "newer")  # type: ignore[union-attr]
    assert sides(m)[0] == [("10", "1"), ("9", "1"), ("8", "1")]


def test_okx_a_snapshot_in_the_stream_makes_the_fetch_unnecessary_and_a_late_answer_is_ignored() -> None:
    m = okx_machine()
    m.on_delta(delta([("10", "5")], seq=101, prev=100, inst=A))
    m.on_delta(SNAP)
    m.drain()
    m.feed(SnapshotFetched(A, 1, snapshot([("1", "1")], [("2", "1")], seq=5, prev=-1, inst=A)))
    assert m.drain() == [] and sides(m) == ([("10", "1"), ("9", "2")], [("11", "1")])


def test_okx_failed_fetch_and_a_fetch_that_does_not_meet_the_buffer_resubscribe() -> None:
    m = okx_machine()
    m.on_delta(delta([("10", "5")], seq=101, prev=100, inst=A))
    m.feed(SnapshotFetched(A, 1, None, "HTTP 503"))
    assert m.drain() == [FetchSnapshot(A), Failed(A, "fetch_failed", "HTTP 503"), StateChanged(A, RESYNCING, SYNCING),
                         Resubscribe(A)]
    m.on_delta(SNAP)
    m.drain()
    m.on_delta(delta(seq=109, prev=108, inst=A), now_ns=S // 2)  # a gap within 1 s: waits for the backoff
    m.feed(Tick(S // 2 + 1))
    assert Resubscribe(A) not in m.drain()
    m.feed(Tick(S + 1))
    assert m.drain() == [Resubscribe(A)]
    assert dict(m.drain_counters()) == {"rest_bootstraps": 1, "rest_failures": 1, "resyncs": 2, "gaps": 1}
    m2 = okx_machine()
    m2.on_delta(delta([("10", "5")], seq=131, prev=130, inst=A))
    m2.feed(SnapshotFetched(A, 1, snapshot([("10", "1")], [("11", "1")], seq=100, prev=-1, inst=A)))
    out = m2.drain()
    assert Failed(A, "fetch_merge_failed", "SequenceGap(expected=100, got=130)") in out and out[-1] == Resubscribe(A)


def test_snapshot_wait_staleness_disconnect_and_invalidation() -> None:
    m = okx_machine(stale_after_ns=S, snapshot_wait_ns=S // 2)
    m.feed(Tick(S // 2))
    assert m.drain() == []
    m.feed(Tick(S // 2 + 1))
    assert m.drain() == [FetchSnapshot(A), FetchSnapshot(B)]  # subscribed, no snapshot came
    m.on_delta(at(SNAP, 1))
    m.feed(Tick(2 * S))
    assert m.drain() == [StateChanged(A, VALID, SYNCING)]  # 1 s silent: not yet
    m.feed(Tick(2 * S + 1))
    assert m.drain() == [StateChanged(A, STALE, VALID)]
    m.on_delta(at(delta([("10", "2")], seq=101, prev=100, inst=A), 3))
    assert m.drain() == [StateChanged(A, VALID, STALE)]
    m.feed(Disconnected(A, 4 * S))
    assert m.drain() == [StateChanged(A, RESYNCING, VALID)]  # no command: the reconnect resubscribes
    m.feed(Tick(10 * S))
    assert m.drain() == []  # not subscribed: no fetch
    m.feed(Subscribed(A, 10 * S))
    m.on_delta(at(SNAP, 10))
    m.feed(Invalidated(A, STALE, 11 * S))
    m.feed(Invalidated(A, RESYNCING, 11 * S))
    assert m.drain() == [StateChanged(A, VALID, RESYNCING), StateChanged(A, STALE, VALID),
                         StateChanged(A, RESYNCING, STALE)]
    m.feed(Untrack(A))
    assert A not in m and m.on_delta(SNAP) is Fed.UNKNOWN


def test_buffer_overflow_starts_again() -> None:
    m = okx_machine(max_buffered=2)
    for seq in (101, 102, 103):
        m.on_delta(delta([("10", "5")], seq=seq, prev=seq - 1, inst=A))
    out = m.drain()
    assert out[:2] == [FetchSnapshot(A), Failed(A, "buffer_overflow", "more than 2 updates")]
    assert out[2:] == [StateChanged(A, RESYNCING, SYNCING), Resubscribe(A)]


def test_resync_by_none_only_waits_for_a_snapshot() -> None:
    m = BookSync(OKX, SyncConfig(resync_by="none"))
    m.feed(Track(A, 0))
    m.on_delta(delta([("10", "5")], seq=101, prev=100, inst=A))
    assert m.drain() == [StateChanged(A, SYNCING, None)]  # no bootstrap either
    m.on_delta(SNAP)
    m.on_delta(delta(seq=109, prev=108, inst=A))
    assert [type(o) for o in m.drain()] == [StateChanged, Failed, StateChanged]


def test_an_adopted_book_and_pickling() -> None:
    book = OrderBook(A)
    book.apply(SNAP)
    m = BookSync(OKX)
    m.track(A, 0, book=book)
    assert m.drain() == [StateChanged(A, VALID, None)] and m.book(A) is book
    m.on_delta(delta([("8", "1")], seq=101, prev=100, inst=A), "ref")
    copy = pickle.loads(pickle.dumps(m))
    assert copy.sequencing is OKX and sides(copy) == sides(m)
    u = delta([("7", "1")], seq=102, prev=101, inst=A)
    assert copy.on_delta(u) is m.on_delta(u) is Fed.APPLIED and sides(copy) == sides(m)


def test_an_adopted_book_without_levels_is_kept_and_one_that_lost_sync_is_resynced() -> None:
    book = OrderBook(A, depth=50)  # no levels yet: len(book) == 0
    book.mark_resyncing()
    m = BookSync(OKX)
    m.track(A, 0, book=book)
    assert m.book(A) is book and m.status(A) is RESYNCING
    assert m.drain() == [StateChanged(A, RESYNCING, None), Resubscribe(A)]  # nothing else would re-sync it
    m2 = BookSync(OKX, SyncConfig(resync_by="fetch"))
    m2.track(A, 0, book=book)
    assert m2.drain() == [StateChanged(A, RESYNCING, None), FetchSnapshot(A)]
    assert m2.on_delta(delta([("9", "1")], seq=101, prev=100, inst=A)) is Fed.BUFFERED


def test_okx_checksum_is_verified_by_the_book() -> None:
    m = okx_machine()
    good = okx_checksum([Level("10", "1"), Level("9", "2")], [Level("11", "1")])
    assert m.on_delta(msgspec.structs.replace(SNAP, checksum=good)) is Fed.APPLIED
    assert m.on_delta(delta([("10", "3")], seq=101, prev=100, checksum=good, inst=A)) is Fed.FAILED
    assert dict(m.drain_counters()) == {"checksum_errors": 1, "resyncs": 1}


# ------------------------------------------------------------------------------------------------- Binance
def bn(first: int, last: int, bids: list[tuple[str, str]] | None = None, inst: str = A) -> BookDelta:
    """A depthUpdate with U=first, u=last, as the Binance parser maps it (seq_id=u, prev_seq_id=U-1)."""
    return BookDelta("binance", inst, "update", tuple(Level(p, s) for p, s in bids or [("10", str(last))]), (),
                     1_700_000_000_000, 0, 0, last, first - 1)


def bn_snap(last_update_id: int, inst: str = A) -> BookDelta:
    return BookDelta("binance", inst, "snapshot", (Level("10", "1"), Level("9", "1")), (Level("11", "1"),),
                     1_700_000_000_000, 0, 0, last_update_id, None)


def test_binance_buffers_drops_what_the_snapshot_holds_and_bridges_on_u() -> None:
    m = BookSync(BINANCE)
    m.feed(Track(A, 0, subscribed=True))
    assert m.drain() == [StateChanged(A, SYNCING, None)]  # Binance's order: buffer the stream, then fetch
    for first, last in ((95, 99), (100, 104), (105, 110), (111, 111)):
        assert m.on_delta(bn(first, last, [("8", str(last))]), (first, last)) is Fed.BUFFERED
    assert m.drain() == [FetchSnapshot(A)]  # asked for by the first update
    m.feed(SnapshotFetched(A, 1, bn_snap(102)))
    out = m.drain()
    assert out == [StateChanged(A, VALID, SYNCING), Resynced(A, bn_snap(102), ((100, 104), (105, 110), (111, 111)))]
    assert sides(m)[0] == [("10", "1"), ("9", "1"), ("8", "111")]
    assert m.on_delta(bn(112, 115)) is Fed.APPLIED and m.on_delta(bn(112, 115)) is Fed.SKIPPED
    assert m.on_delta(bn(120, 121)) is Fed.FAILED  # U != previous u + 1
    assert m.drain() == [Failed(A, "sequence_gap", "SequenceGap(expected=115, got=119)"),
                         StateChanged(A, RESYNCING, VALID), FetchSnapshot(A)]  # re-synced by REST, not resubscribed
    assert m.on_delta(bn(122, 125), "buffered") is Fed.BUFFERED
    m.feed(SnapshotFetched(A, 2, bn_snap(123)))
    assert m.drain()[-1] == Resynced(A, bn_snap(123), ("buffered",)) and m.book(A).seq_id == 125  # type: ignore[union-attr]


def test_binance_first_live_event_after_an_empty_buffer_bridges() -> None:
    # A quiet symbol: no update within snapshot_wait, so the tick fetches with nothing buffered.
    m = BookSync(BINANCE)
    m.feed(Track(A, 0, subscribed=True))
    m.feed(Tick(4 * S))
    assert m.drain()[-1] == FetchSnapshot(A)
    m.feed(SnapshotFetched(A, 4 * S, bn_snap(102)))
    assert m.on_delta(bn(101, 101)) is Fed.SKIPPED
    assert m.on_delta(bn(100, 106)) is Fed.APPLIED and m.on_delta(bn(107, 107)) is Fed.APPLIED
    m2 = BookSync(BINANCE)
    m2.feed(Track(A, 0, subscribed=True))
    m2.feed(Tick(4 * S))
    m2.feed(SnapshotFetched(A, 4 * S, bn_snap(102)))
    assert m2.on_delta(bn(104, 106)) is Fed.FAILED  # U > lastUpdateId + 1: the snapshot is too old


def test_binance_after_a_disconnect_the_first_update_fetches_and_a_stale_snapshot_is_never_valid() -> None:
    m = BookSync(BINANCE)
    m.feed(Track(A, 0, subscribed=True))
    assert m.on_delta(bn(100, 104)) is Fed.BUFFERED
    m.feed(SnapshotFetched(A, 1, bn_snap(102)))
    assert m.status(A) is VALID
    m.feed(Disconnected(A, 2))
    m.feed(Subscribed(A, 3))
    m.drain()
    assert not m.has_output()  # no fetch before the stream has shown where it is
    assert m.on_delta(bn(150, 152), "first") is Fed.BUFFERED and m.drain() == [FetchSnapshot(A)]
    m.feed(SnapshotFetched(A, 4, bn_snap(120)))  # older than the stream: a gap, never published valid
    assert m.status(A) is RESYNCING
    out = m.drain()
    assert out[0] == Failed(A, "fetch_merge_failed", "SequenceGap(expected=120, got=149)") and FetchSnapshot(A) in out
    assert m.on_delta(bn(153, 155), "next") is Fed.BUFFERED
    m.feed(SnapshotFetched(A, 5, bn_snap(153)))  # U <= 153 + 1 <= u: bridges
    assert m.status(A) is VALID and m.book(A).seq_id == 155  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------------- Bybit
def bb(u: int, action: str = "update", bids: list[tuple[str, str]] | None = None) -> BookDelta:
    """A Bybit v5 orderbook push as its parser maps it (seq_id=u, no prev_seq_id)."""
    return BookDelta("bybit", A, action, tuple(Level(p, s) for p, s in bids or [("10", str(u))]),  # type: ignore[arg-type]
                     (Level("11", "1"),) if action == "snapshot" else (), 1_700_000_000_000, 0, 0, u, None)


def test_bybit_u_continuity_duplicates_restart_and_resubscribe() -> None:
    m = BookSync(BYBIT)
    m.feed(Track(A, 0, subscribed=True))
    assert m.on_delta(bb(500, "snapshot")) is Fed.APPLIED
    assert [m.on_delta(bb(u)) for u in (501, 502, 502, 501)] == [Fed.APPLIED, Fed.APPLIED, Fed.SKIPPED, Fed.SKIPPED]
    assert m.on_delta(bb(1, "snapshot", [("9", "1")])) is Fed.APPLIED  # u == 1: the venue restarted
    assert m.on_delta(bb(2)) is Fed.APPLIED and sides(m) == ([("10", "2"), ("9", "1")], [("11", "1")])
    assert m.on_delta(bb(4)) is Fed.FAILED
    assert m.drain()[-2:] == [StateChanged(A, RESYNCING, VALID), Resubscribe(A)]


@pytest.mark.parametrize(("rule", "last", "after_snapshot", "first", "seq", "verdict"), [
    (OKX, 100, False, 100, 101, Verdict.APPLY),
    (OKX, 100, False, 99, 100, Verdict.SKIP),
    (OKX, 100, False, 101, 102, Verdict.GAP),
    (OKX, 100, True, 95, 100, Verdict.SKIP),
    (OKX, 100, True, 100, 3, Verdict.APPLY),
    (BINANCE, 100, True, 95, 105, Verdict.BRIDGE),
    (BINANCE, 100, False, 95, 105, Verdict.GAP),
    (BINANCE, 100, False, 100, 100, Verdict.SKIP),
    (BYBIT, 100, False, 0, 101, Verdict.APPLY),
    (BYBIT, 100, False, 0, 100, Verdict.SKIP),
    (BYBIT, 100, False, 0, 103, Verdict.GAP),
])
def test_rules_table(rule: object, last: int, after_snapshot: bool, first: int, seq: int, verdict: Verdict) -> None:
    book = OrderBook(A)
    book.apply(snapshot([("1", "1")], [("2", "1")], seq=last, prev=-1, inst=A))
    if not after_snapshot:
        book.apply(delta(seq=last, prev=last, inst=A))  # a heartbeat keeps it "after a snapshot" on OKX
        book.last_action = "update"
    assert rule.classify(book, delta(seq=seq, prev=first, inst=A)) is verdict  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------- the analysis side
def test_the_analyzer_runs_the_same_machine_and_its_step_executes_the_fetch() -> None:
    """orderbook_analysis: a gap asks for a snapshot (``wants_snapshot``), the updates met meanwhile are buffered
    and replayed after the answer; an empty answer is asked again only after the machine's backoff."""
    from decimal import Decimal

    from operators.analysis import AnalysisParams, InstrumentAnalyzer

    params = AnalysisParams(bin_width=Decimal("1"))
    a = InstrumentAnalyzer(A, OrderBook(A), params, fetch_snapshots=True)
    assert a.on_delta(SNAP, params, now_ns=S).analysed and not a.wants_snapshot
    out = a.on_delta(delta([("9", "5")], seq=105, prev=104, inst=A), params, now_ns=S)  # a gap
    assert not out.analysed and out.result.book_status is RESYNCING and a.wants_snapshot
    out = a.on_snapshot(None, params, now_ns=S)  # nothing to be had
    assert a.book.status is RESYNCING and not a.wants_snapshot
    a.on_delta(delta([("8", "1")], seq=106, prev=105, inst=A), params, now_ns=S)  # buffered
    a.on_tick(int(1.5 * S))
    assert not a.wants_snapshot  # spaced out: 1 s after the first retry
    a.on_tick(int(2.1 * S))
    assert a.wants_snapshot
    out = a.on_snapshot(snapshot([("10", "1"), ("9", "5")], [("11", "1")], seq=105, prev=-1, inst=A), params, 2 * S)
    assert out.analysed and out.result.book_status is VALID
    assert sides(a.sync)[0] == [("10", "1"), ("9", "5"), ("8", "1")]  # the buffered update replayed
    assert a.on_delta(delta([("8", "1")], seq=106, prev=105, inst=A), params).analysed is False  # a replay


def test_an_analyzer_pickled_before_the_machine_resumes() -> None:
    from decimal import Decimal

    from operators.analysis import AnalysisParams, InstrumentAnalyzer

    params = AnalysisParams(bin_width=Decimal("1"))
    a = InstrumentAnalyzer(A, OrderBook(A), params)
    a.on_delta(SNAP, params)
    state = a.__getstate__()
    old = {k: v for k, v in state.items() if k not in ("sync", "wants_snapshot")} | {"book": a.book}
    b = InstrumentAnalyzer.__new__(InstrumentAnalyzer)
    b.__setstate__(old)
    assert b.book is a.book and b.book.status is VALID
    assert b.on_delta(delta([("10", "2")], seq=101, prev=100, inst=A), params).analysed


def test_a_resumed_analyzer_resyncs_the_way_its_step_can() -> None:
    """An analyzer pickled before the machine (or under the other book source) resumes in the step's mode: with
    a snapshot provider, a gap (or a book pickled while re-syncing) asks the provider, as before the machine."""
    import pickle
    from decimal import Decimal

    from operators.analysis import AnalysisParams, InstrumentAnalyzer
    from operators.analysis.step import AnalyseLogic

    params = AnalysisParams(bin_width=Decimal("1"))
    answers = {"snap": snapshot([("10", "1"), ("9", "5")], [("11", "1")], seq=105, prev=-1, inst=A)}

    class Provider:
        def fetch(self, instrument: str) -> BookDelta | None:
            return answers.pop("snap", None)

    def legacy(book_status: BookStatus) -> bytes:
        a = InstrumentAnalyzer(A, OrderBook(A), params)
        a.on_delta(SNAP, params)
        if book_status is RESYNCING:
            a.book.mark_resyncing()
        old = InstrumentAnalyzer.__new__(InstrumentAnalyzer)
        old.__dict__.update({k: v for k, v in a.__getstate__().items() if k not in ("sync", "wants_snapshot")})
        old.__dict__["book"] = a.book
        return pickle.dumps(old)

    step = AnalyseLogic(params, legacy(VALID), Provider())
    out, _ = step.on_batch([delta([("9", "5")], seq=106, prev=104, inst=A)])  # a gap
    assert [o.result.book_status for o in out] == [VALID] and not answers  # the provider was asked
    assert step.analyzer is not None and sides(step.analyzer.sync)[0] == [("10", "1"), ("9", "5")]

    answers["snap"] = snapshot([("10", "2")], [("11", "1")], seq=105, prev=-1, inst=A)
    step = AnalyseLogic(params, legacy(RESYNCING), Provider())
    out, _ = step.on_batch([delta([("9", "7")], seq=106, prev=105, inst=A)])  # buffered, replayed after
    assert [o.result.book_status for o in out] == [VALID] and not answers
    assert step.analyzer is not None and sides(step.analyzer.sync)[0] == [("10", "2"), ("9", "7")]

    step = AnalyseLogic(params, legacy(RESYNCING), None)  # no provider: it waits for a snapshot in its input
    out, _ = step.on_batch([delta([("9", "7")], seq=106, prev=105, inst=A)])
    assert [o.result.book_status for o in out] == [RESYNCING]
