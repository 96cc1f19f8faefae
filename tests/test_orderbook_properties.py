"""Hypothesis property and stateful tests: OrderBook against the naive reference model (tests/book_helpers.py)."""

from __future__ import annotations

import pickle
from decimal import Decimal

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from operators.book_checksum import okx_checksum
from operators.events import BookDelta, Level
from operators.orderbook import OrderBook
from tests.book_helpers import NaiveBook, delta, naive_checksum

# Prices on a grid around 1000 with 0..6 decimals, written the way a venue would (no trailing zeros), so
# finer prices arrive mid-stream and force rescaling; sizes likewise, with "0" meaning delete.
decimals = st.integers(min_value=0, max_value=6)


@st.composite
def prices(draw: st.DrawFn, low: int = 1, high: int = 2000) -> str:
    scale = draw(decimals)
    units = draw(st.integers(min_value=low * 10**scale, max_value=high * 10**scale))
    text = format(Decimal(units).scaleb(-scale), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@st.composite
def sizes(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(["0", "0.0", "0.000"]))
    return draw(prices(low=0, high=50)).replace("0", "1", 1) if draw(st.booleans()) else str(draw(st.integers(1, 99)))


def side_levels(low: int, high: int, max_size: int = 30) -> st.SearchStrategy[list[tuple[str, str]]]:
    return st.lists(st.tuples(prices(low, high), sizes()), max_size=max_size)


BAD_PRICES = st.sampled_from(["", ".", "1.2.3", "-5", "1e5", " 7", "1_0", "x.5", "1." + "0" * 21, "9" * 41, "١٢"])


@st.composite
def with_bad_price(draw: st.DrawFn, low: int, high: int) -> list[tuple[str, str]]:
    good = draw(side_levels(low, high, 10))
    at = draw(st.integers(0, len(good)))
    return [*good[:at], (draw(BAD_PRICES), draw(sizes())), *good[at:]]


def as_pairs(levels: tuple[Level, ...]) -> list[tuple[str, str]]:
    return [(lv.price, lv.size) for lv in levels]


@settings(max_examples=200, deadline=None)
@given(bids=side_levels(1, 1000, 60), asks=side_levels(1000, 2000, 60))
def test_checksum_matches_naive(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> None:
    model = NaiveBook()
    snap = delta(bids, asks, action="snapshot")
    model.apply(snap)
    book = OrderBook("X-Y")
    book.apply(snap)
    assert as_pairs(book.view().bids) == model.sorted_bids()
    assert as_pairs(book.view().asks) == model.sorted_asks()
    assert book.computed_checksum() == model.checksum()
    v = book.view()
    assert okx_checksum(v.bids, v.asks) == naive_checksum(model.sorted_bids(), model.sorted_asks())


@settings(max_examples=100, deadline=None)
@given(bids=side_levels(1, 1000), asks=side_levels(1001, 2000))
def test_pickle_round_trip(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> None:
    book = OrderBook("X-Y", depth=20)
    book.apply(delta(bids, asks, action="snapshot", seq=5, prev=-1))
    clone = pickle.loads(pickle.dumps(book))
    assert clone.view() == book.view()
    assert clone.status == book.status and clone.seq_id == 5
    assert clone.computed_checksum() == book.computed_checksum()


class BookMachine(RuleBasedStateMachine):
    """Random snapshots/updates/heartbeats/gaps with good, zero and wrong checksums; the book and the model
    must agree on every result kind, status, level (exact strings, best first) and checksum."""

    @initialize(depth=st.sampled_from([5, 25, 30, 400]))
    def start(self, depth: int) -> None:
        self.book = OrderBook("X-Y", depth=depth)
        self.model = NaiveBook(depth=depth)
        self.seq = 100

    def _run(self, d: BookDelta) -> None:
        expected = self.model.apply(d)
        got = self.book.apply(d)
        assert got.kind == expected, (got, expected)
        event(got.kind)

    def _checksum(self, d: BookDelta, mode: str) -> BookDelta:
        if mode == "zero":
            return d
        good = self.model.would_be(d).checksum()
        cs = good if mode == "good" else (good + 1 if good < 2**31 - 1 else good - 1)
        return BookDelta(
            d.venue, d.instrument, d.action, d.bids, d.asks, d.ts_ms, d.recv_ns, cs, d.seq_id, d.prev_seq_id
        )

    @rule(
        bids=side_levels(1, 1000, 40),
        asks=side_levels(1000, 2000, 40),
        with_seq=st.booleans(),
        mode=st.sampled_from(["good", "zero", "zero", "bad"]),
    )
    def snapshot(self, bids: list[tuple[str, str]], asks: list[tuple[str, str]], with_seq: bool, mode: str) -> None:
        self.seq += 7
        seq = self.seq if with_seq else None
        self._run(self._checksum(delta(bids, asks, action="snapshot", seq=seq, prev=-1 if with_seq else None), mode))

    @rule(
        bids=side_levels(1, 1001, 15),
        asks=side_levels(999, 2000, 15),
        chain=st.sampled_from(["next"] * 6 + ["reset", "gap", "none"]),
        mode=st.sampled_from(["good"] * 5 + ["zero", "bad"]),
    )
    def update(self, bids: list[tuple[str, str]], asks: list[tuple[str, str]], chain: str, mode: str) -> None:
        last = self.model.seq if self.model.seq is not None else self.seq
        seq: int | None
        prev: int | None
        if chain == "next":
            seq, prev = last + 3, last
        elif chain == "reset":
            seq, prev = max(1, last // 2), last
        elif chain == "gap":
            seq, prev = last + 9, last + 4
        else:
            seq = prev = None
        self._run(self._checksum(delta(bids, asks, seq=seq, prev=prev), mode))

    @rule(
        bids=side_levels(1, 1000, 5) | with_bad_price(1, 1000),
        asks=with_bad_price(1000, 2000),
        snap=st.booleans(),
    )
    def bad_price(self, bids: list[tuple[str, str]], asks: list[tuple[str, str]], snap: bool) -> None:
        last = self.model.seq if self.model.seq is not None else self.seq
        if snap:
            self._run(delta(bids, asks, action="snapshot", seq=last + 1, prev=-1))
        else:
            self._run(delta(bids, asks, seq=last + 1, prev=last))

    @precondition(lambda self: self.model.seq is not None)
    @rule()
    def heartbeat(self) -> None:
        seq = self.model.seq
        self._run(delta(seq=seq, prev=seq))

    @rule()
    def stale(self) -> None:
        self.book.mark_stale()
        if self.model.status == "valid":
            self.model.status = "stale"

    @rule()
    def resync(self) -> None:
        self.book.mark_resyncing()
        self.model.status = "resyncing"

    @rule()
    def roundtrip_pickle(self) -> None:
        self.book = pickle.loads(pickle.dumps(self.book))

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "book"):
            return
        assert self.book.status.value == self.model.status
        view = self.book.view()
        assert as_pairs(view.bids) == self.model.sorted_bids()
        assert as_pairs(view.asks) == self.model.sorted_asks()
        assert self.book.computed_checksum() == self.model.checksum()
        best_bid, best_ask = self.book.best_bid(), self.book.best_ask()
        assert (best_bid.price if best_bid else None) == (view.bids[0].price if view.bids else None)
        assert (best_ask.price if best_ask else None) == (view.asks[0].price if view.asks else None)
        if self.model.seq is not None:
            assert self.book.seq_id == self.model.seq


BookMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestBookMachine = BookMachine.TestCase
