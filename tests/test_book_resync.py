"""operators/book_resync.py: REST snapshot + buffered WebSocket updates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.okx.books import parse_books_frame
from operators.book_resync import BufferOverflow, SnapshotResync
from operators.events import BookDelta, BookStatus
from operators.orderbook import Applied, BookCrossed, Heartbeat, OrderBook, SequenceGap, is_failure
from tests.book_helpers import NaiveBook, delta, snapshot


def resyncing_book() -> OrderBook:
    book = OrderBook("BTC-USDT")
    book.apply(snapshot([("99", "1")], [("101", "1")], seq=1, prev=-1))
    book.mark_resyncing()
    return book


def test_drops_updates_contained_in_the_snapshot_and_applies_the_rest() -> None:
    book = resyncing_book()
    pending = SnapshotResync()
    pending.add(delta([("98", "1")], seq=10, prev=5))  # older than the snapshot
    pending.add(delta([("97", "1")], seq=20, prev=10))  # older: its seqId == snapshot seqId
    pending.add(delta([("96", "1")], seq=30, prev=20))  # chains on the snapshot
    pending.add(delta(seq=30, prev=30))  # heartbeat
    pending.add(delta([("96", "0")], seq=40, prev=30))
    assert len(pending) == 5
    assert book.apply(delta([("1", "1")], seq=50, prev=40)).kind == "not_synced"
    out = pending.complete(book, snapshot([("99", "2")], [("101", "1")], seq=20, prev=-1))
    assert (out.result, out.applied, out.dropped) == (Applied("update"), 3, 2)
    assert book.status is BookStatus.VALID and book.seq_id == 40 and len(pending) == 0
    assert [(lv.price, lv.size) for lv in book.view().bids] == [("99", "2")]
    assert book.apply(delta([("98.5", "1")], seq=41, prev=40)) == Applied("update")


def test_reset_after_the_snapshot_is_kept() -> None:
    book = resyncing_book()
    pending = SnapshotResync()
    pending.add(delta([("98", "1")], seq=100, prev=90))
    pending.add(delta([("97", "1")], seq=3, prev=100))  # reset: smaller seqId, but chains
    pending.add(delta([("96", "1")], seq=4, prev=3))
    out = pending.complete(book, snapshot([("99", "1")], [("101", "1")], seq=100, prev=-1))
    assert (out.result, out.applied, out.dropped) == (Applied("update"), 2, 1)
    assert book.seq_id == 4
    assert [lv.price for lv in book.view().bids] == ["99", "97", "96"]


def test_snapshot_newer_than_every_buffered_update() -> None:
    book = resyncing_book()
    pending = SnapshotResync()
    pending.add(delta([("98", "1")], seq=10, prev=5))
    out = pending.complete(book, snapshot([("99", "1")], [("101", "1")], seq=11, prev=-1))
    assert (out.result, out.applied, out.dropped) == (Applied("snapshot"), 0, 1)
    assert book.status is BookStatus.VALID


def test_heartbeat_last() -> None:
    book = resyncing_book()
    pending = SnapshotResync()
    pending.add(delta(seq=11, prev=11))
    out = pending.complete(book, snapshot([("99", "1")], [("101", "1")], seq=11, prev=-1))
    assert out.result == Heartbeat(11) and out.applied == 1


def test_snapshot_and_buffer_do_not_meet() -> None:
    book = resyncing_book()
    pending = SnapshotResync()
    pending.add(delta([("98", "1")], seq=30, prev=25))  # the buffer starts after the (too old) snapshot
    out = pending.complete(book, snapshot([("99", "1")], [("101", "1")], seq=20, prev=-1))
    assert out.result == SequenceGap(expected=20, got=25)
    assert book.status is BookStatus.RESYNCING


def test_failure_while_replaying_stops() -> None:
    book = resyncing_book()
    pending = SnapshotResync()
    pending.add(delta([("101", "1")], seq=30, prev=20))  # crosses
    pending.add(delta([("96", "1")], seq=40, prev=30))
    out = pending.complete(book, snapshot([("99", "1")], [("101", "1")], seq=20, prev=-1))
    assert (out.result, out.applied, out.dropped) == (BookCrossed("101", "101"), 0, 2)
    assert book.status is BookStatus.RESYNCING


def test_without_seq_ids_falls_back_to_timestamps() -> None:
    book = resyncing_book()
    pending = SnapshotResync()
    pending.add(delta([("98", "1")], ts_ms=1000))  # older: dropped
    pending.add(delta([("97", "1")], ts_ms=2000))  # same ms as the snapshot: re-applied (absolute sizes)
    pending.add(delta([("96", "1")], ts_ms=2001))
    out = pending.complete(book, snapshot([("99", "1")], [("101", "1")], ts_ms=2000))
    assert (out.result, out.applied, out.dropped) == (Applied("update"), 2, 1)
    assert [lv.price for lv in book.view().bids] == ["99", "97", "96"]


def test_bad_snapshot_drops_the_buffer() -> None:
    book = resyncing_book()
    pending = SnapshotResync()
    pending.add(delta([("98", "1")], seq=30, prev=20))
    out = pending.complete(book, snapshot([("99", "1")], [("101", "1")], seq=20, prev=-1, checksum=1))
    assert out.result.kind == "checksum_mismatch" and out.dropped == 1 and len(pending) == 0


def test_misuse_and_overflow() -> None:
    pending = SnapshotResync(max_buffered=2)
    with pytest.raises(ValueError, match="updates only"):
        pending.add(snapshot())
    pending.add(delta(seq=1, prev=0))
    pending.add(delta(seq=2, prev=1))
    with pytest.raises(BufferOverflow):
        pending.add(delta(seq=3, prev=2))
    with pytest.raises(ValueError, match="needs a snapshot"):
        pending.complete(OrderBook("X-Y"), delta())


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
    pending = SnapshotResync()
    for u in updates[start:]:
        if not with_seq:  # the older format: no seqId at all
            u = BookDelta(u.venue, u.instrument, u.action, u.bids, u.asks, u.ts_ms, u.recv_ns)
        pending.add(u)
    out = pending.complete(book, rest)
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
        pending: SnapshotResync | None = None
        lost_at, rest_at = mine[10], mine[10 + lag]
        verified = 0
        for i, d in enumerate(deltas):
            if d.instrument != victim:
                continue
            assert reference.apply(d) == Applied(d.action)
            if i == lost_at:
                book.mark_resyncing()
                pending = SnapshotResync()
            if pending is not None:
                pending.add(d)
                if i == rest_at:  # the REST answer shows the book after this update
                    view = reference.view()
                    rest = snapshot(
                        [(lv.price, lv.size) for lv in view.bids],
                        [(lv.price, lv.size) for lv in view.asks],
                        ts_ms=view.ts_ms,
                        inst=victim,
                    )
                    assert not is_failure(pending.complete(book, rest).result)
                    pending = None
                continue
            result = book.apply(d)
            assert result == Applied(d.action), (lag, i, result)
            verified += i > rest_at
        assert verified > 20
        assert book.view().bids == reference.view().bids and book.view().asks == reference.view().asks
