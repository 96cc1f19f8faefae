"""The best bid and offer across venues for one instrument (``bbo:{inst}``): pure state, no I/O, no clock.

Each venue's book reaches it as a :class:`VenueQuote` (its best levels, its status, when it last changed);
:class:`BboState` answers with a :class:`Bbo`: the highest bid and the lowest ask over the venues it keeps,
every venue's line (``bid``, ``ask``, ``age_ms``, ``status``) and the venues it leaves out. A venue is left
out while its book is not ``valid``, or when its last change is older than ``max_age_ms`` (a feed that
stopped: its quote is no longer a price anyone can trade on). Because a stopped feed sends nothing, time
itself must move the state: :meth:`BboState.deadline_ns` is the next moment a kept venue turns too old,
and :meth:`BboState.on_time` at or after it leaves that venue out (the caller schedules the wake-up:
``connectors.books.bbo_step``). A venue's next change takes it back at once.

Ties go to the venue first in :data:`VENUE_ORDER` (then by name), so the result does not depend on arrival
order. Prices are compared as decimals of the strings the venues sent, and published as those strings.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from operators.events import BookStatus, Level

VENUE_ORDER = ("okx", "binance", "bybit")


class VenueQuote(msgspec.Struct, frozen=True):
    """One venue's book for the BBO: best levels (``None``: empty side), status, last change (``at_ns``).

    ``levels=False``: a status change alone (the levels and ``at_ns`` stay as they were); ``removed``: the
    venue no longer books this instrument."""

    venue: str
    instrument: str
    status: BookStatus
    bid: Level | None = None
    ask: Level | None = None
    at_ns: int = 0
    levels: bool = True
    removed: bool = False


class VenueLine(msgspec.Struct, frozen=True):
    """A venue's line in ``venues`` (``bid``/``ask`` price strings, ``""`` when unknown; ``age_ms`` ``None``
    before the venue's first levels)."""

    bid: str
    ask: str
    age_ms: int | None
    status: str


class Bbo(msgspec.Struct, frozen=True):
    """The ``bbo:{inst}`` hash: best bid/ask and their venues (``""`` when no kept venue has one)."""

    instrument: str
    bid: str
    bid_venue: str
    ask: str
    ask_venue: str
    venues: tuple[tuple[str, VenueLine], ...]
    excluded: tuple[str, ...]
    ts_ms: int
    removed: bool = False  # no venue left: the hash goes


class _Venue(msgspec.Struct):
    status: BookStatus
    bid: Level | None
    ask: Level | None
    at_ns: int | None  # None: no levels yet


def _rank(venue: str) -> tuple[int, str]:
    return (VENUE_ORDER.index(venue) if venue in VENUE_ORDER else len(VENUE_ORDER), venue)


class BboState:
    """One instrument's venues (see the module docstring)."""

    def __init__(self, instrument: str, max_age_ms: int) -> None:
        self.instrument = instrument
        self.max_age_ns = max_age_ms * 1_000_000
        self._venues: dict[str, _Venue] = {}
        self._kept: tuple[str, ...] = ()  # venues in the last result

    def __len__(self) -> int:
        return len(self._venues)

    def on_quote(self, quote: VenueQuote, now_ns: int) -> Bbo:
        """Take ``quote`` into account; the result as of ``now_ns``."""
        if quote.removed:
            self._venues.pop(quote.venue, None)
        else:
            v = self._venues.get(quote.venue)
            if v is None:
                v = self._venues[quote.venue] = _Venue(quote.status, None, None, None)
            v.status = quote.status
            if quote.levels:
                v.bid, v.ask, v.at_ns = quote.bid, quote.ask, quote.at_ns
        return self.result(now_ns)

    def kept(self, now_ns: int) -> tuple[str, ...]:
        """The venues the BBO uses at ``now_ns``: ``valid`` and changed within ``max_age_ms``."""
        limit = self.max_age_ns
        return tuple(sorted((name for name, v in self._venues.items() if v.status is BookStatus.VALID
                             and v.at_ns is not None and now_ns - v.at_ns <= limit), key=_rank))

    def deadline_ns(self) -> int | None:
        """The next time a kept venue turns too old (``None``: no kept venue)."""
        times = [at + self.max_age_ns + 1 for name in self._kept
                 if name in self._venues and (at := self._venues[name].at_ns) is not None]
        return min(times) if times else None

    def on_time(self, now_ns: int) -> Bbo | None:
        """A new result if the kept venues changed by the passing of time alone, else ``None``."""
        return self.result(now_ns) if self.kept(now_ns) != self._kept else None

    def result(self, now_ns: int) -> Bbo:
        kept = self._kept = self.kept(now_ns)
        bid = ask = None
        bid_venue = ask_venue = ""
        for name in kept:  # in rank order: a tie keeps the first
            v = self._venues[name]
            if v.bid is not None and (bid is None or Decimal(v.bid.price) > bid):
                bid, bid_venue = Decimal(v.bid.price), name
            if v.ask is not None and (ask is None or Decimal(v.ask.price) < ask):
                ask, ask_venue = Decimal(v.ask.price), name
        lines = tuple(
            (name, VenueLine(v.bid.price if v.bid else "", v.ask.price if v.ask else "",
                             None if v.at_ns is None else max(0, (now_ns - v.at_ns) // 1_000_000), v.status.value))
            for name, v in sorted(self._venues.items(), key=lambda kv: _rank(kv[0])))
        excluded = tuple(name for name, _ in lines if name not in kept)
        return Bbo(self.instrument, self._price(bid_venue, bid=True), bid_venue, self._price(ask_venue, bid=False),
                   ask_venue, lines, excluded, now_ns // 1_000_000, removed=not self._venues)

    def _price(self, venue: str, *, bid: bool) -> str:
        if not venue:
            return ""
        v = self._venues[venue]
        level = v.bid if bid else v.ask
        return level.price if level is not None else ""
