"""Unit tests of operators/orderbook.py: one test (or more) per integrity rule."""

from __future__ import annotations

import pickle

import pytest

from operators.book_checksum import okx_checksum
from operators.book_results import (
    Applied,
    BookCrossed,
    ChecksumMismatch,
    Heartbeat,
    InvalidLevel,
    NotSynced,
    SequenceGap,
    is_failure,
)
from operators.events import BookStatus, Level
from operators.orderbook import OrderBook
from tests.book_helpers import delta, naive_checksum, snapshot

BIDS = [("100.5", "1"), ("100.4", "2"), ("99", "3")]
ASKS = [("100.6", "1.5"), ("101", "0.25"), ("102.75", "7")]


def synced(seq: int | None = 10, **kw: object) -> OrderBook:
    book = OrderBook("BTC-USDT", **kw)  # type: ignore[arg-type]
    assert book.apply(snapshot(BIDS, ASKS, seq=seq, prev=-1 if seq is not None else None)) == Applied("snapshot")
    return book


def sides(book: OrderBook) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    v = book.view()
    return [(lv.price, lv.size) for lv in v.bids], [(lv.price, lv.size) for lv in v.asks]


def test_new_book_is_syncing_and_refuses_updates() -> None:
    book = OrderBook("BTC-USDT")
    assert book.status is BookStatus.SYNCING
    assert book.apply(delta([("1", "1")], seq=2, prev=1)) == NotSynced(BookStatus.SYNCING)
    assert len(book) == 0
    assert book.best_bid() is None and book.best_ask() is None


def test_snapshot_replaces_book_best_first_with_exact_strings() -> None:
    book = synced()
    assert book.status is BookStatus.VALID
    assert sides(book) == (BIDS, ASKS)
    assert book.best_bid() == Level("100.5", "1")
    assert book.best_ask() == Level("100.6", "1.5")
    assert book.seq_id == 10
    book.apply(snapshot([("50", "1")], [("60", "2")], seq=3, prev=-1))
    assert sides(book) == ([("50", "1")], [("60", "2")])
    assert book.seq_id == 3


def test_update_sets_and_size_zero_removes() -> None:
    book = synced()
    result = book.apply(delta([("100.5", "0"), ("100.45", "9")], [("101", "0.000"), ("100.7", "1")], seq=11, prev=10))
    assert result == Applied("update")
    assert sides(book) == (
        [("100.45", "9"), ("100.4", "2"), ("99", "3")],
        [("100.6", "1.5"), ("100.7", "1"), ("102.75", "7")],
    )
    assert book.seq_id == 11
    # removing a level that is not there changes nothing
    assert book.apply(delta([("1", "0")], seq=12, prev=11)) == Applied("update")
    assert len(book) == 6


def test_prices_compare_by_value_not_text() -> None:
    book = OrderBook("X-Y")
    book.apply(snapshot([("9.99", "1"), ("10", "1"), ("9.5", "1"), ("10.001", "1")], [("100", "1"), ("11", "1")]))
    bids, asks = sides(book)
    assert [p for p, _ in bids] == ["10.001", "10", "9.99", "9.5"]
    assert [p for p, _ in asks] == ["11", "100"]


def test_finer_price_rescales_existing_levels() -> None:
    book = synced()
    assert book.apply(delta([("100.55", "4"), ("100.5000001", "1")], seq=11, prev=10)) == Applied("update")
    assert [p for p, _ in sides(book)[0]] == ["100.55", "100.5000001", "100.5", "100.4", "99"]
    assert book.apply(delta([("100.5", "0")], seq=12, prev=11)) == Applied("update")
    assert [p for p, _ in sides(book)[0]] == ["100.55", "100.5000001", "100.4", "99"]


def test_sequence_gap_marks_resyncing_until_next_snapshot() -> None:
    book = synced()
    assert book.apply(delta([("100", "1")], seq=13, prev=12)) == SequenceGap(expected=10, got=12)
    assert book.status is BookStatus.RESYNCING
    assert book.apply(delta([("100", "1")], seq=11, prev=10)) == NotSynced(BookStatus.RESYNCING)
    assert book.status is BookStatus.RESYNCING
    assert book.apply(snapshot(BIDS, ASKS, seq=20, prev=-1)) == Applied("snapshot")
    assert book.status is BookStatus.VALID
    assert book.apply(delta([("100", "1")], seq=21, prev=20)) == Applied("update")


def test_heartbeat_keeps_book_and_seq() -> None:
    book = synced()
    book.mark_stale()
    assert book.status is BookStatus.STALE
    assert book.apply(delta(seq=10, prev=10, ts_ms=1_700_000_000_500)) == Heartbeat(10)
    assert book.status is BookStatus.VALID
    assert book.ts_ms == 1_700_000_000_500
    assert sides(book) == (BIDS, ASKS)
    assert book.seq_id == 10


def test_heartbeat_that_does_not_chain_is_a_gap() -> None:
    book = synced()
    assert book.apply(delta(seq=9, prev=9)) == SequenceGap(10, 9)


def test_reset_with_smaller_seq_is_accepted_when_it_chains() -> None:
    book = synced(seq=1000)
    assert book.apply(delta([("100", "1")], seq=5, prev=1000)) == Applied("update")
    assert book.seq_id == 5
    assert book.apply(delta([("100", "2")], seq=6, prev=5)) == Applied("update")
    assert book.apply(delta([("100", "3")], seq=7, prev=1000)) == SequenceGap(6, 1000)


def test_checksum_verified_when_non_zero() -> None:
    book = synced()
    after_bids = [("100.5", "1"), ("100.4", "2"), ("99", "3")]
    after_asks = [("100.6", "2"), ("101", "0.25"), ("102.75", "7")]
    good = naive_checksum(after_bids, after_asks)
    assert book.apply(delta(asks=[("100.6", "2")], seq=11, prev=10, checksum=good)) == Applied("update")
    assert book.checksum == good
    assert book.computed_checksum() == good
    assert book.apply(delta(asks=[("100.6", "3")], seq=12, prev=11, checksum=good)) == ChecksumMismatch(
        expected=good, computed=naive_checksum(after_bids, [("100.6", "3"), *after_asks[1:]])
    )
    assert book.status is BookStatus.RESYNCING


def test_checksum_zero_means_none() -> None:
    book = synced()
    assert book.apply(delta(asks=[("100.6", "9")], seq=11, prev=10, checksum=0)) == Applied("update")


def test_frames_without_seq_are_validated_by_checksum_alone() -> None:
    book = synced(seq=None)
    assert book.seq_id is None
    bad = naive_checksum(BIDS, ASKS) + 1
    assert book.apply(delta([("100.5", "2")], checksum=naive_checksum([("100.5", "2"), *BIDS[1:]], ASKS))) == (
        Applied("update")
    )
    assert isinstance(book.apply(delta([("100.5", "2")], checksum=bad)), ChecksumMismatch)


def test_snapshot_checksum_is_verified_too() -> None:
    book = OrderBook("BTC-USDT")
    assert isinstance(book.apply(snapshot(BIDS, ASKS, checksum=1)), ChecksumMismatch)
    assert book.status is BookStatus.RESYNCING
    assert book.apply(snapshot(BIDS, ASKS, checksum=naive_checksum(BIDS, ASKS))) == Applied("snapshot")


def test_crossed_book_is_a_failure() -> None:
    book = synced()
    assert book.apply(delta([("100.6", "1")], seq=11, prev=10)) == BookCrossed(best_bid="100.6", best_ask="100.6")
    assert book.status is BookStatus.RESYNCING
    assert is_failure(BookCrossed("1", "1"))
    assert not is_failure(Applied("update"))


def test_crossed_snapshot_is_a_failure() -> None:
    book = OrderBook("BTC-USDT")
    assert book.apply(snapshot([("101", "1")], [("100", "1")])) == BookCrossed("101", "100")


def test_invalid_price_is_a_failure_not_an_exception() -> None:
    book = synced()
    assert book.apply(delta([("1e5", "1")], seq=11, prev=10)) == InvalidLevel("1e5", "1")
    assert book.status is BookStatus.RESYNCING
    for bad in ("-1", "", "1.2.3", " 1", "١٢", "1_0", "+1"):
        fresh = OrderBook("BTC-USDT")
        assert fresh.apply(snapshot([(bad, "1")], [])) == InvalidLevel(bad, "1")


def test_invalid_price_after_a_rescale_is_still_a_typed_failure() -> None:
    book = synced()
    result = book.apply(delta([("100.123", "1"), ("x.5", "1")], seq=11, prev=10))
    assert result == InvalidLevel("x.5", "1")
    assert book.status is BookStatus.RESYNCING


def test_depth_truncation() -> None:
    book = OrderBook("BTC-USDT", depth=3)
    book.apply(snapshot([(str(p), "1") for p in range(90, 100)], [(str(p), "1") for p in range(110, 100, -1)]))
    assert sides(book) == ([("99", "1"), ("98", "1"), ("97", "1")], [("101", "1"), ("102", "1"), ("103", "1")])
    book.apply(delta([("99.5", "1")], [("100", "1")]))
    assert sides(book) == ([("99.5", "1"), ("99", "1"), ("98", "1")], [("100", "1"), ("101", "1"), ("102", "1")])
    with pytest.raises(ValueError, match="depth"):
        OrderBook("BTC-USDT", depth=0)


def test_view_limits_levels_and_carries_metadata() -> None:
    book = synced()
    v = book.view(levels=2)
    assert v.bids == (Level("100.5", "1"), Level("100.4", "2"))
    assert v.asks == (Level("100.6", "1.5"), Level("101", "0.25"))
    assert (v.instrument, v.venue, v.status, v.seq_id, v.action) == (
        "BTC-USDT",
        "okx",
        BookStatus.VALID,
        10,
        "snapshot",
    )
    assert v.ts_ms == 1_700_000_000_000


def test_mark_resyncing_and_stale() -> None:
    book = OrderBook("BTC-USDT")
    book.mark_stale()
    assert book.status is BookStatus.SYNCING  # stale only applies to a valid book
    book = synced()
    book.mark_resyncing()
    assert book.apply(delta([("1", "1")], seq=11, prev=10)) == NotSynced(BookStatus.RESYNCING)
    book = synced()
    book.mark_stale()
    assert book.apply(delta([("1", "1")], seq=11, prev=10)) == Applied("update")
    assert book.status is BookStatus.VALID


def test_pickle_round_trip_keeps_everything() -> None:
    book = synced()
    book.apply(delta([("100.45", "9")], seq=11, prev=10))
    clone = pickle.loads(pickle.dumps(book))
    assert clone.view() == book.view()
    assert clone.computed_checksum() == book.computed_checksum()
    assert clone.apply(delta([("100.44", "1")], seq=12, prev=11)) == Applied("update")
    assert clone.seq_id == 12 and book.seq_id == 11


def test_okx_checksum_example_from_okx_docs_shape() -> None:
    # More bids than asks: the remaining bids follow once the asks run out.
    bids = [Level("3366.1", "7"), Level("3366", "6"), Level("3365", "1")]
    asks = [Level("3366.8", "9")]
    text = "3366.1:7:3366.8:9:3366:6:3365:1"
    import zlib

    crc = zlib.crc32(text.encode())
    assert okx_checksum(bids, asks) == (crc - 2**32 if crc >= 2**31 else crc)
    assert okx_checksum([], []) == 0
