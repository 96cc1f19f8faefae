"""operators.bbo: the best bid/offer across venues, unit and property tests against a plain model."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.bbo import VENUE_ORDER, Bbo, BboState, VenueQuote
from operators.events import BookStatus, Level

MS = 1_000_000
INST = "ETH-USDT"


def quote(venue: str, bid: str | None, ask: str | None, at_ms: int) -> VenueQuote:
    return VenueQuote(venue, INST, BookStatus.VALID, Level(bid, "1") if bid else None,
                      Level(ask, "1") if ask else None, at_ms * MS)


def test_best_bid_and_ask_come_from_different_venues() -> None:
    s = BboState(INST, max_age_ms=5000)
    s.on_quote(quote("okx", "100.1", "100.5", 0), 0)
    s.on_quote(quote("binance", "100.20000000", "100.60000000", 0), 0)
    b = s.on_quote(quote("bybit", "99.9", "100.3", 0), 10 * MS)
    assert (b.bid, b.bid_venue, b.ask, b.ask_venue) == ("100.20000000", "binance", "100.3", "bybit")
    assert b.excluded == () and [n for n, _ in b.venues] == ["okx", "binance", "bybit"]
    assert dict(b.venues)["okx"].age_ms == 10 and b.ts_ms == 10


def test_a_tie_goes_to_the_first_venue_whatever_the_order_of_arrival() -> None:
    s = BboState(INST, 5000)
    s.on_quote(quote("bybit", "100", "101", 0), 0)
    b = s.on_quote(quote("okx", "100.0", "101.00", 0), 0)
    assert (b.bid_venue, b.ask_venue) == ("okx", "okx")


def test_a_silent_venue_is_left_out_at_its_deadline_and_taken_back_by_its_next_update() -> None:
    s = BboState(INST, 5000)
    s.on_quote(quote("okx", "100", "101", 0), 0)
    s.on_quote(quote("binance", "100.5", "100.9", 1000), 1000 * MS)
    assert s.deadline_ns() == 5000 * MS + 1  # okx: the first to turn too old
    assert s.on_time(5000 * MS) is None  # exactly max_age: still kept
    b = s.on_time(5000 * MS + 1)
    assert b is not None and b.excluded == ("okx",) and (b.bid_venue, b.ask_venue) == ("binance", "binance")
    assert s.deadline_ns() == 6000 * MS + 1
    b = s.on_time(6000 * MS + 1)
    assert b is not None and b.excluded == ("okx", "binance") and (b.bid, b.ask, b.bid_venue) == ("", "", "")
    assert s.deadline_ns() is None and s.on_time(10**12) is None
    b = s.on_quote(quote("okx", "99", "102", 7000), 7000 * MS)
    assert b.excluded == ("binance",) and (b.bid, b.bid_venue) == ("99", "okx")


def test_a_book_not_valid_is_left_out_at_once_and_its_status_shown() -> None:
    s = BboState(INST, 5000)
    s.on_quote(quote("okx", "100", "101", 0), 0)
    s.on_quote(quote("bybit", "100.5", "100.8", 0), 0)
    b = s.on_quote(VenueQuote("bybit", INST, BookStatus.RESYNCING, levels=False), 1 * MS)
    assert b.excluded == ("bybit",) and (b.bid_venue, b.ask_venue) == ("okx", "okx")
    assert dict(b.venues)["bybit"].status == "resyncing" and dict(b.venues)["bybit"].bid == "100.5"
    b = s.on_quote(quote("bybit", "100.4", "100.7", 2), 2 * MS)
    assert b.excluded == () and (b.bid_venue, b.ask_venue) == ("bybit", "bybit")


def test_a_venue_without_levels_yet_has_no_age() -> None:
    s = BboState(INST, 5000)
    b = s.on_quote(VenueQuote("binance", INST, BookStatus.SYNCING, levels=False), 10 * MS)
    assert dict(b.venues)["binance"].age_ms is None and b.excluded == ("binance",) and not b.removed


def test_removed_venues_leave_and_the_last_one_removes_the_hash() -> None:
    s = BboState(INST, 5000)
    s.on_quote(quote("okx", "100", "101", 0), 0)
    s.on_quote(quote("binance", "100", "101", 0), 0)
    b = s.on_quote(VenueQuote("binance", INST, BookStatus.SYNCING, levels=False, removed=True), 0)
    assert [n for n, _ in b.venues] == ["okx"] and not b.removed
    b = s.on_quote(VenueQuote("okx", INST, BookStatus.SYNCING, levels=False, removed=True), 0)
    assert b.removed and b.venues == ()


# ------------------------------------------------------------------------------------------------ properties
prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000"), places=2)
event = st.one_of(
    st.tuples(st.just("quote"), st.sampled_from(VENUE_ORDER), prices, prices,
              st.sampled_from(list(BookStatus)), st.integers(0, 3000)),
    st.tuples(st.just("wait"), st.integers(0, 4000)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(event, max_size=40), st.integers(100, 3000))
def test_result_matches_a_plain_model(events: list[tuple[object, ...]], max_age: int) -> None:
    """Whatever the quotes and waits: the result is the plain max/min over the venues that are valid and fresh,
    and time alone changes the kept set only at :meth:`BboState.deadline_ns` (never missed, never early)."""
    s = BboState(INST, max_age)
    model: dict[str, tuple[Decimal, Decimal, BookStatus, int]] = {}
    now = 0
    last: Bbo | None = None
    for ev in events:
        if ev[0] == "quote":
            _, venue, bid, ask, status, after = ev
            now += int(after) * MS  # type: ignore[call-overload]
            model[str(venue)] = (bid, ask, status, now)  # type: ignore[assignment]
            last = s.on_quote(VenueQuote(str(venue), INST, status, Level(str(bid), "1"), Level(str(ask), "1"),  # type: ignore[arg-type]
                                         now), now)
        else:
            target = now + int(ev[1]) * MS  # type: ignore[call-overload]
            while (d := s.deadline_ns()) is not None and d <= target:
                assert s.on_time(d - 1) is None  # nothing changes before the deadline
                now = d
                changed = s.on_time(now)
                assert changed is not None  # ...and something does at it
                last = changed
            now = target
            assert s.on_time(now) is None
        if last is None:
            continue
        kept = [v for v, (_, _, st_, at) in model.items() if st_ is BookStatus.VALID and now - at <= max_age * MS]
        assert set(last.excluded) == set(model) - set(kept)
        if kept:
            assert Decimal(last.bid) == max(model[v][0] for v in kept)
            assert Decimal(last.ask) == min(model[v][1] for v in kept)
            assert model[last.bid_venue][0] == Decimal(last.bid) and last.bid_venue in kept
        else:
            assert (last.bid, last.ask, last.bid_venue, last.ask_venue) == ("", "", "", "")
