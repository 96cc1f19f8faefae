"""operators/book_resync.py: REST snapshot + buffered WebSocket updates."""

from __future__ import annotations

import pytest

from operators.book_resync import BufferOverflow, SnapshotResync
from operators.events import BookStatus
from operators.orderbook import Applied, BookCrossed, Heartbeat, OrderBook, SequenceGap
from tests.book_helpers import delta, snapshot


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
    pending.add(delta([("98", "1")], ts_ms=1000))
    pending.add(delta([("97", "1")], ts_ms=2000))
    pending.add(delta([("96", "1")], ts_ms=2001))
    out = pending.complete(book, snapshot([("99", "1")], [("101", "1")], ts_ms=2000))
    assert (out.result, out.applied, out.dropped) == (Applied("update"), 1, 2)
    assert [lv.price for lv in book.view().bids] == ["99", "96"]


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
