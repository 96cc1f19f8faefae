"""The book's level store (operators/orderbook.py): a key array and a parallel level list per side.

What the other order-book tests do not reach: prices far outside their range (up to 40 characters and 20
decimals, ticks past 64 bits, where a side leaves its ``array('q')`` keys for a list), with rescaling inside the delta,
and views that stay as they were while the book moves on (a view is a copy of the level lists, not a window)."""

from __future__ import annotations

import pickle
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.book_results import Applied
from operators.events import Level
from operators.orderbook import OrderBook
from tests.book_helpers import NaiveBook, delta, naive_checksum, snapshot


@st.composite
def wide_prices(draw: st.DrawFn) -> str:
    """Plain decimals from 1 to ~1e19 with 0..20 decimals: at the book's scale many ticks pass 2**63."""
    scale = draw(st.integers(min_value=0, max_value=20))
    whole = draw(st.integers(min_value=0, max_value=19))
    units = draw(st.integers(min_value=1, max_value=10 ** (whole + scale)))
    text = format(Decimal(units).scaleb(-scale), "f")
    return text[:40]


sizes = st.sampled_from(["0", "1", "2.5", "0.000", "17"])
wide_side = st.lists(st.tuples(wide_prices(), sizes), max_size=12)


def pairs(levels: tuple[Level, ...]) -> list[tuple[str, str]]:
    return [(lv.price, lv.size) for lv in levels]


@settings(max_examples=150, deadline=None)
@given(snap=wide_side, updates=st.lists(wide_side, max_size=8))
def test_wide_prices_agree_with_the_naive_book(
    snap: list[tuple[str, str]], updates: list[list[tuple[str, str]]]
) -> None:
    # Wide prices on the asks only (on both sides they would mostly cross); the one bid is below every ask.
    book, model = OrderBook("X-Y", depth=10), NaiveBook(depth=10)
    deltas = [snapshot([("0", "1")], snap, seq=1, prev=-1)]
    deltas += [delta([], asks, seq=2 + i, prev=1 + i) for i, asks in enumerate(updates)]
    for d in deltas:
        assert book.apply(d).kind == model.apply(d)
        assert pairs(book.view().asks) == model.sorted_asks()
        assert pairs(book.view().bids) == model.sorted_bids()
        assert book.computed_checksum() == model.checksum()
        clone = pickle.loads(pickle.dumps(book))
        assert clone.view() == book.view()


def test_a_tick_past_64_bits_mid_update_then_a_finer_price_in_the_same_delta() -> None:
    # 9223372036854775808 is 2**63; then "10.5" makes the whole delta be applied again at one decimal: each
    # level must be there once.
    book = OrderBook("X-Y")
    assert book.apply(snapshot([("1", "1")], [("10", "1")], seq=1, prev=-1)) == Applied("snapshot")
    d = delta([], [("9223372036854775808", "2"), ("11", "3"), ("10.5", "4")], seq=2, prev=1)
    assert book.apply(d) == Applied("update")
    assert pairs(book.view().asks) == [("10", "1"), ("10.5", "4"), ("11", "3"), ("9223372036854775808", "2")]
    assert book.apply(delta([], [("9223372036854775808", "0"), ("10", "0")], seq=3, prev=2)) == Applied("update")
    assert pairs(book.view().asks) == [("10.5", "4"), ("11", "3")]
    assert len(book) == 3


def test_a_rescale_that_pushes_ticks_past_64_bits() -> None:
    book = OrderBook("X-Y")
    book.apply(snapshot([("900000000000000000", "1")], [("900000000000000001", "1")], seq=1, prev=-1))
    assert book.apply(delta([("899999999999999999.5", "2")], seq=2, prev=1)) == Applied("update")
    assert pairs(book.view().bids) == [("900000000000000000", "1"), ("899999999999999999.5", "2")]
    assert book.apply(delta([], [("900000000000000000.5", "3")], seq=3, prev=2)) == Applied("update")
    assert pairs(book.view().asks) == [("900000000000000000.5", "3"), ("900000000000000001", "1")]


def test_a_view_does_not_change_when_the_book_does() -> None:
    book = OrderBook("X-Y")
    book.apply(snapshot([("100", "1"), ("99", "2")], [("101", "1"), ("102", "2")], seq=1, prev=-1))
    before = book.view()
    book.apply(delta([("100", "0"), ("99.5", "7")], [("101", "5"), ("100.5", "1")], seq=2, prev=1))
    assert pairs(before.bids) == [("100", "1"), ("99", "2")]
    assert pairs(before.asks) == [("101", "1"), ("102", "2")]
    assert pairs(book.view().bids) == [("99.5", "7"), ("99", "2")]
    assert pairs(book.view().asks) == [("100.5", "1"), ("101", "5"), ("102", "2")]
    assert book.view(1).asks == (Level("100.5", "1"),)


def test_a_book_without_checksums_checks_the_first_one_it_gets() -> None:
    # Binance and Bybit send no checksum, so the book keeps no top strings until a frame carries one; the sides
    # are kept best last, so a deeper snapshot is cut at its worst levels and a delete at the top moves none.
    book = OrderBook("X-Y", venue="binance", depth=3)
    bids = [("100", "1"), ("99", "2"), ("98", "1"), ("97", "1")]
    assert book.apply(snapshot(bids, [("101", "1"), ("102", "4")], seq=1, prev=-1)) == Applied("snapshot")
    assert pairs(book.view().bids) == [("100", "1"), ("99", "2"), ("98", "1")]
    assert (book.best_bid(), book.best_ask()) == (Level("100", "1"), Level("101", "1"))
    good = naive_checksum([("99.5", "3"), ("99", "2"), ("98", "1")], [("101", "1"), ("102", "4")])
    assert book.apply(delta([("100", "0"), ("99.5", "3")], seq=2, prev=1, checksum=good)) == Applied("update")
    assert book.computed_checksum() == good
    assert pairs(book.view(2).bids) == [("99.5", "3"), ("99", "2")]  # 97 was cut at the snapshot: gone
    bad = book.apply(delta([], [("101", "0")], seq=3, prev=2, checksum=good))
    assert bad.kind == "checksum_mismatch"
