"""operators.book_sync.replay (OKX rules): a REST snapshot + the WebSocket updates buffered while it was fetched.

Once the tests of ``operators/book_resync.py`` (``SnapshotResync``, a front to ``replay`` that nothing else used);
its buffer limit is now the machine's ``max_buffered`` (``test_book_sync.test_buffer_overflow_starts_again``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.okx.books import parse_books_frame
from operators.book_results import Applied, BookCrossed, Heartbeat, SequenceGap, is_failure
from operators.book_sequencing import OKX
from operators.book_sync import ReplayOutcome, replay
from operators.events import BookDelta, BookStatus
from operators.orderbook import OrderBook
from tests.book_helpers import NaiveBook, delta, snapshot


def complete(book: OrderBook, snap: BookDelta, pending: list[BookDelta]) -> ReplayOutcome:
    return replay(book, snap, [(u, None) for u in pending], OKX)


def resyncing_book() -> OrderBook:
    book = OrderBook("BTC-USDT")
    book.apply(snapshot([("99", "1")], [("101", "1")], seq=1, prev=-1))
    book.mark_resyncing()
    return book


def test_drops_updates_contained_in_the_snapshot_and_applies_the_rest() -> None:
    book = resyncing_book()
    pending: list[BookDelta] = []
    pending.append(delta([("98", "1")], seq=10, prev=5))  # older than the snapshot
    pending.append(delta([("97", "1")], seq=20, prev=10))  # older: its seqId == snapshot seqId
    pending.append(delta([("96", "1")], seq=30, prev=20))  # chains on the snapshot
    pending.append(delta(seq=30, prev=30))  # heartbeat
    pending.append(delta([("96", "0")], seq=40, prev=30))
    assert len(pending) == 5
    assert book.apply(delta([("1", "1")], seq=50, prev=40)).kind == "not_synced"
    out = complete(book, snapshot([("99", "2")], [("101", "1")], seq=20, prev=-1), pending)
    assert (out.result, out.applied, out.dropped) == (Applied("update"), 3, 2)
    assert book.status is BookStatus.VALID and book.seq_id == 40
    assert [(lv.price, lv.size) for lv in book.view().bids] == [("99", "2")]
    assert book.apply(delta([("98.5", "1")], seq=41, prev=40)) == Applied("update")


def test_reset_after_the_snapshot_is_kept() -> None:
    book = resyncing_book()
    pending: list[BookDelta] = []
    pending.append(delta([("98", "1")], seq=100, prev=90))
    pending.append(delta([("97", "1")], seq=3, prev=100))  # reset: smaller seqId, but chains
    pending.append(delta([("96", "1")], seq=4, prev=3))
    out = complete(book, snapshot([("99", "1")], [("101", "1")], seq=100, prev=-1), pending)
    assert (out.result, out.applied, out.dropped) == (Applied("update"), 2, 1)
    assert book.seq_id == 4
    assert [lv.price for lv in book.view().bids] == ["99", "97", "96"]


def test_snapshot_newer_than_every_buffered_update() -> None:
    book = resyncing_book()
    pending: list[BookDelta] = []
    pending.append(delta([("98", "1")], seq=10, prev=5))
    out = complete(book, snapshot([("99", "1")], [("101", "1")], seq=11, prev=-1), pending)
    assert (out.result, out.applied, out.dropped) == (Applied("snapshot"), 0, 1)
    assert book.status is BookStatus.VALID


def test_heartbeat_last() -> None:
    book = resyncing_book()
    pending: list[BookDelta] = []
    pending.append(delta(seq=11, prev=11))
    out = complete(book, snapshot([("99", "1")], [("101", "1")], seq=11, prev=-1), pending)
    assert out.result == Heartbeat(11) and out.applied == 1


def test_snapshot_and_buffer_do_not_meet() -> None:
    book = resyncing_book()
    pending: list[BookDelta] = []
    pending.append(delta([("98", "1")], seq=30, prev=25))  # the buffer starts after the (too old) snapshot
    out = complete(book, snapshot([("99", "1")], [("101", "1")], seq=20, prev=-1), pending)
    assert out.result == SequenceGap(expected=20, got=25)
    assert book.status is BookStatus.RESYNCING


def test_failure_while_replaying_stops() -> None:
    book = resyncing_book()
    pending: list[BookDelta] = []
    pending.append(delta([("101", "1")], seq=30, prev=20))  # crosses
    pending.append(delta([("96", "1")], seq=40, prev=30))
    out = complete(book, snapshot([("99", "1")], [("101", "1")], seq=20, prev=-1), pending)
    assert (out.result, out.applied, out.dropped) == (BookCrossed("101", "101"), 0, 2)
    assert book.status is BookStatus.RESYNCING


def test_without_seq_ids_falls_back_to_timestamps() -> None:
    book = resyncing_book()
    pending: list[BookDelta] = []
    pending.append(delta([("98", "1")], ts_ms=1000))  # older: dropped
    pending.append(delta([("97", "1")], ts_ms=2000))  # same ms as the snapshot: re-applied (absolute sizes)
    pending.append(delta([("96", "1")], ts_ms=2001))
    out = complete(book, snapshot([("99", "1")], [("101", "1")], ts_ms=2000), pending)
    assert (out.result, out.applied, out.dropped) == (Applied("update"), 2, 1)
    assert [lv.price for lv in book.view().bids] == ["99", "97", "96"]


def test_bad_snapshot_drops_the_buffer() -> None:
    book = resyncing_book()
    pending: list[BookDelta] = []
    pending.append(delta([("98", "1")], seq=30, prev=20))
    out = complete(book, snapshot([("99", "1")], [("101", "1")], seq=20, prev=-1, checksum=1), pending)
    assert out.result.kind == "checksum_mismatch" and out.dropped == 1


def test_replay_needs_a_snapshot() -> None:
    """(``SnapshotResync.add``'s refusals are the machine's now: a snapshot in the stream drops the buffer,
    ``test_book_sync.test_okx_a_snapshot_in_the_stream_makes_the_fetch_unnecessary...``; a full buffer re-syncs,
    ``test_book_sync.test_buffer_overflow_starts_again``.)"""
    book = OrderBook("X-Y")
    with pytest.raises(ValueError, match="needs a snapshot"):
        replay(book, delta(), [(delta(seq=1, prev=0), None)], OKX)
    assert book.seq_id is None  # nothing applied


level_changes = st.lists(
    st.tuples(st.booleans(), st.integers(1, 30), st.sampled_from(["0", "1", "2.5", "0.001", "7"])),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(
    initial=level_changes,
    steps=st.lists(st.tuples(level_changes, st.integers(0, 2)), min_size=1, max_size=12),
    data=st.data(),
    with_seq=st.booleans(),
)
def test_rest_snapshot_plus_buffer_rebuilds_the_true_book(
    initial: list[tuple[bool, int, str]],
    steps: list[tuple[list[tuple[bool, int, str]], int]],
    data: st.DataObject,
    with_seq: bool,
) -> None:
    """A true stream (snapshot + chained updates, ms timestamps that may repeat); the WS buffer starts at some
    update, the REST snapshot shows the book after some update at or after the one before the buffer's start.
    Whatever the overlap, the merged book equals the true book at the end."""

    def sides(changes: list[tuple[bool, int, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        bids = [(str(100 - p), s) for is_bid, p, s in changes if is_bid]  # bids < 100 < asks: never crossed
        asks = [(str(100 + p), s) for is_bid, p, s in changes if not is_bid]
        return bids, asks

    truth = NaiveBook()
    first = snapshot(*sides(initial), seq=1000, prev=-1, ts_ms=5000)
    truth.apply(first)
    states = [(dict(truth.bids), dict(truth.asks), 1000, 5000)]
    updates = []
    seq, ts = 1000, 5000
    for changes, dt in steps:
        ts += dt
        updates.append(delta(*sides(changes), seq=seq + 3, prev=seq, ts_ms=ts))
        seq += 3
        truth.apply(updates[-1])
        states.append((dict(truth.bids), dict(truth.asks), seq, ts))

    start = data.draw(st.integers(0, len(updates) - 1), label="buffer starts at update")
    at = data.draw(st.integers(start, len(updates)), label="snapshot after update")  # states[at]
    snap_bids, snap_asks, snap_seq, snap_ts = states[at]
    rest = snapshot(
        [snap_bids[k] for k in sorted(snap_bids, reverse=True)],
        [snap_asks[k] for k in sorted(snap_asks)],
        seq=snap_seq if with_seq else None,
        prev=-1 if with_seq else None,
        ts_ms=snap_ts,
    )
    book = OrderBook("BTC-USDT")
    book.apply(first)
    book.mark_resyncing()
    pending: list[BookDelta] = []
    for u in updates[start:]:
        if not with_seq:  # the older format: no seqId at all
            u = BookDelta(u.venue, u.instrument, u.action, u.bids, u.asks, u.ts_ms, u.recv_ns)
        pending.append(u)
    out = complete(book, rest, pending)
    assert not is_failure(out.result), out
    assert book.status is BookStatus.VALID
    assert [(lv.price, lv.size) for lv in book.view().bids] == truth.sorted_bids()
    assert [(lv.price, lv.size) for lv in book.view().asks] == truth.sorted_asks()


def test_rest_resync_in_the_middle_of_a_real_recording() -> None:
    """Real tick-by-tick frames (no seqId: the timestamp rule). One instrument loses sync; its updates are
    buffered while a "REST" snapshot is taken at different moments; after the merge every later checksum of
    the recording verifies and the book equals the one that never lost sync."""
    path = Path(__file__).parent / "data" / "okx" / "okx-2021-07-22-books-l2-tbt.jsonl"
    deltas: list[BookDelta] = []
    with path.open() as f:
        for line in f:
            out = parse_books_frame(json.loads(line)["data"], recv_ns=0)
            if isinstance(out, tuple):
                deltas.extend(out)
    victim = "BTC-USDT-SWAP" if any(d.instrument == "BTC-USDT-SWAP" for d in deltas) else deltas[-1].instrument
    mine = [i for i, d in enumerate(deltas) if d.instrument == victim and d.action == "update"]
    assert len(mine) > 40
    for lag in (0, 1, 5, 20):  # how many buffered updates the snapshot already contains
        reference, book = OrderBook(victim), OrderBook(victim)
        pending: list[BookDelta] | None = None
        lost_at, rest_at = mine[10], mine[10 + lag]
        verified = 0
        for i, d in enumerate(deltas):
            if d.instrument != victim:
                continue
            assert reference.apply(d) == Applied(d.action)
            if i == lost_at:
                book.mark_resyncing()
                pending = []
            if pending is not None:
                pending.append(d)
                if i == rest_at:  # the REST answer shows the book after this update
                    view = reference.view()
                    rest = snapshot(
                        [(lv.price, lv.size) for lv in view.bids],
                        [(lv.price, lv.size) for lv in view.asks],
                        ts_ms=view.ts_ms,
                        inst=victim,
                    )
                    assert not is_failure(complete(book, rest, pending).result)
                    pending = None
                continue
            result = book.apply(d)
            assert result == Applied(d.action), (lag, i, result)
            verified += i > rest_at
        assert verified > 20
        assert book.view().bids == reference.view().bids and book.view().asks == reference.view().asks
