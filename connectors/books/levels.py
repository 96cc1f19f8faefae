"""The level checks every venue's book parser makes before a level reaches a book. Pure, no I/O.

A level keeps the venue's exact strings (:class:`operators.events.Level`); what may pass is a plain
non-negative decimal in ASCII digits (``12``, ``0.5``, ``2683.80000000``) within the order book's limits
(:data:`operators.book_keys.MAX_PRICE_CHARS`, ``MAX_DECIMALS``). The fast path (:func:`levels_look_ok`) is
one ``isdigit`` per string plus a small cache of prices already seen; the slow path
(:func:`level_problem`) names the first bad level as ``(reason, detail)``. A frame whose text holds
non-ASCII or JSON escapes (``\\u0661`` is a digit to ``str.isdigit``) must take the slow path
(:func:`plain_text`).

Used by the OKX, Binance and Bybit book parsers. A negative size is its own reason where the venue's
vocabulary has one (OKX ``negative_size``), else ``invalid_number``.
"""

from __future__ import annotations

from operators.book_keys import MAX_DECIMALS, MAX_PRICE_CHARS
from operators.events import Level

_GOOD_PRICES: set[str] = set()  # prices that passed (books revisit the same prices a lot); cleared when full
# Sized for what it buys: a miss costs ~0.3 us; 16k covers the live levels of 20 books of 400+400. At 100k it
# kept filling for ~10 minutes of a moving market (~8 MB) and showed as RSS growth.
_GOOD_PRICES_MAX = 16_384


def plain_text(raw: bytes | str) -> bool:
    """ASCII without backslashes: the fast path's ``isdigit`` cannot be fooled by a non-ASCII digit."""
    return raw.isascii() and (b"\\" not in raw if isinstance(raw, bytes) else "\\" not in raw)


def price_in_bounds(price: str) -> bool:
    return len(price) <= MAX_PRICE_CHARS and len(price.partition(".")[2]) <= MAX_DECIMALS


def levels_look_ok(levels: tuple[Level, ...]) -> bool:
    """Every price and size is digits with at most one dot, prices within bounds (text checked plain)."""
    good = _GOOD_PRICES
    for lv in levels:
        if not lv.size.replace(".", "", 1).isdigit():
            return False
        price = lv.price
        if price not in good:
            if not (price.replace(".", "", 1).isdigit() and price_in_bounds(price)):
                return False
            if len(good) >= _GOOD_PRICES_MAX:
                good.clear()
            good.add(price)
    return True


def _bad_number(text: str) -> bool:
    return not (text.replace(".", "", 1).isdigit() and text.isascii())


def level_problem(levels: tuple[Level, ...], *, negative_reason: str = "invalid_number") -> tuple[str, str] | None:
    """The first bad level as ``(reason, detail)``: ``negative_reason`` for a size below zero, else
    ``"invalid_number"``; ``None`` when all are good."""
    for lv in levels:
        size = lv.size
        if _bad_number(size):
            if size.startswith("-") and not _bad_number(size[1:]):
                return negative_reason, f"negative size {size[:60]!r} at price {lv.price[:60]!r}"
            return "invalid_number", f"size {size[:60]!r} at price {lv.price[:60]!r}"
        if _bad_number(lv.price) or not price_in_bounds(lv.price):
            return "invalid_number", f"price {lv.price[:60]!r}"
    return None


def check_sides(bids: tuple[Level, ...], asks: tuple[Level, ...], plain: bool, *,
                negative_reason: str = "invalid_number") -> tuple[str, str] | None:
    """Both sides of one delta: ``None`` when every level may go to a book."""
    if plain and levels_look_ok(bids) and levels_look_ok(asks):
        return None
    return level_problem(bids, negative_reason=negative_reason) or level_problem(asks, negative_reason=negative_reason)
