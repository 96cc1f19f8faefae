"""operators._book_keys (C) against the book's exact Python path, and the book with and without it.

The C step may only ever answer what the exact path (``operators.book_keys.exact_key`` + ``bisect``) would: the same
key, the same place; where it answers None the book asks the exact path, which rescales, refuses junk or keeps a
key past 63 bits in a list. The book built without the extension takes that path for every level."""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import book_keys
from operators.book_keys import MAX_DECIMALS
from operators.events import Level
from operators.orderbook import OrderBook
from tests.book_helpers import delta, snapshot

INT64_MAX = 2**63 - 1

digits = st.text(alphabet="0123456789", max_size=24)
price_texts = st.one_of(
    st.builds(lambda w, f: f"{w}.{f}", digits, digits),
    digits,
    st.text(alphabet="0123456789.+-_ e٣", max_size=12),  # junk the exact path refuses
    st.builds(lambda z, w: "0" * z + w, st.integers(30, 45), st.text(alphabet="123456789", min_size=1, max_size=3)),
)


def exact(price: str, scale: int, sign: int) -> int | None:
    """The exact path's key, or None where it refuses the text or asks for a rescale."""
    try:
        return book_keys.exact_key(Level(price, "1"), scale, sign)
    except (book_keys.BadPrice, book_keys.Rescale):
        return None


def test_the_extension_is_built() -> None:
    # `make test` installs the project, which compiles it: without a C compiler this fails, and says so here.
    assert book_keys.locate is not None and book_keys.fast_key is not None


@settings(max_examples=2000, deadline=None)
@given(price=price_texts, scale=st.integers(0, MAX_DECIMALS), sign=st.sampled_from([1, -1]))
def test_key_is_the_exact_key_or_none(price: str, scale: int, sign: int) -> None:
    assert book_keys.fast_key is not None
    fast, want = book_keys.fast_key(price, scale, sign), exact(price, scale, sign)
    if fast is not None:
        assert fast == want
    else:  # left to the exact path: it refuses, rescales, or the key is past 63 bits
        assert want is None or abs(want) > INT64_MAX


@settings(max_examples=1000, deadline=None)
@given(keys=st.lists(st.integers(-(10**12), 10**12), max_size=60, unique=True), price=price_texts,
       scale=st.integers(0, 8), sign=st.sampled_from([1, -1]))
def test_locate_is_bisect_over_the_exact_key(keys: list[int], price: str, scale: int, sign: int) -> None:
    assert book_keys.locate is not None
    keys.sort()
    r, want = book_keys.locate(array("q", keys), price, scale, sign), exact(price, scale, sign)
    if r is None:
        assert want is None or abs(want) > INT64_MAX
        return
    assert want is not None
    i = bisect_left(keys, want)
    assert r == (i if i < len(keys) and keys[i] == want else -i - 1)


def test_locate_refuses_anything_but_an_int64_array() -> None:
    assert book_keys.locate is not None
    with pytest.raises(TypeError):
        book_keys.locate([1, 2], "1", 0, 1)
    with pytest.raises(TypeError):
        book_keys.locate(array("i", [1, 2]), "1", 0, 1)
    with pytest.raises(ValueError, match="sign"):
        book_keys.locate(array("q"), "1", 0, 2)


@contextmanager
def exact_path_only() -> Iterator[None]:
    saved = book_keys.locate, book_keys.fast_key
    book_keys.locate = book_keys.fast_key = None
    try:
        yield
    finally:
        book_keys.locate, book_keys.fast_key = saved


prices = st.builds(lambda units, scale: f"{units / 10**scale:.{scale}f}", st.integers(1, 10**6), st.integers(0, 4))
sizes = st.sampled_from(["0", "1", "2.5", "0.000", "17"])
side = st.lists(st.tuples(prices, sizes), max_size=15)


@settings(max_examples=200, deadline=None)
@given(snap=side, updates=st.lists(side, max_size=10))
def test_the_book_without_the_extension_is_the_same_book(
    snap: list[tuple[str, str]], updates: list[list[tuple[str, str]]]
) -> None:
    # Asks only, above the one bid: the deltas rescale, insert, update and delete; each book must agree.
    deltas = [snapshot([("0.0001", "1")], snap, seq=1, prev=-1)]
    deltas += [delta([], asks, seq=2 + i, prev=1 + i) for i, asks in enumerate(updates)]
    fast, slow = OrderBook("X-Y", depth=20), OrderBook("X-Y", depth=20)
    for d in deltas:
        got = fast.apply(d)
        with exact_path_only():
            want = slow.apply(d)
        assert got == want
        assert fast.view() == slow.view()
        assert fast.computed_checksum() == slow.computed_checksum()
