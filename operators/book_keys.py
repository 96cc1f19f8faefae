"""The order book's price -> key step: a level's price text as an integer at the book's scale (its ticks).

:func:`exact_key` is the exact path and the judge: it refuses junk (:class:`BadPrice`) and asks for a finer
scale (:class:`Rescale`). ``fast_key`` and ``locate`` are the C step (:mod:`operators._book_keys`, built by the
install; why in C: README "Written by hand, and why"), which answers the common case (a plain ASCII decimal at
most at the book's scale, its key within 63 bits) without touching any object but the text and the side's
int64 keys, and returns None for anything else, so that the exact path decides. Without a C compiler at install
time both are None and the book takes the exact path for every level (slower, the same book:
``tests/test_book_keys.py``). No I/O.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence

from operators.events import Level

_FastKey = Callable[[str, int, int], "int | None"]
_Locate = Callable[["array[int]", str, int, int], "int | None"]


def _c_step() -> tuple[_FastKey | None, _Locate | None]:
    try:
        from operators._book_keys import key, locate
    except ImportError:  # built without a C compiler: the exact Python path for every level (slower)
        return None, None
    return key, locate


fast_key, locate = _c_step()

MAX_DECIMALS = 20  # a price with more decimals is junk (real ones have <= 10), not a reason to rescale
MAX_PRICE_CHARS = 40  # likewise; also keeps int() far from CPython's 4300-digit limit


class Rescale(Exception):
    """A price with more decimals than the book's scale: rescale to ``scale``."""

    def __init__(self, scale: int) -> None:
        self.scale = scale


class BadPrice(Exception):
    """Not a plain decimal price (or too long): the level is refused."""

    def __init__(self, level: Level) -> None:
        self.level = level


def exact_key(level: Level, scale: int, sign: int) -> int:
    """The key of ``level.price`` at ``scale`` decimals (``sign`` -1 for asks): the exact path, and the one that
    raises for a finer price (:class:`Rescale`) or junk (:class:`BadPrice`)."""
    price = level.price
    whole, _, frac = price.partition(".")
    n = len(frac)
    digits = whole + frac
    if not (digits.isdigit() and digits.isascii() and len(price) <= MAX_PRICE_CHARS and n <= MAX_DECIMALS):
        raise BadPrice(level)
    if n > scale:
        raise Rescale(n)
    if n < scale:
        digits += "0" * (scale - n)
    return sign * int(digits)


def exact_locate(keys: Sequence[int], level: Level, scale: int, sign: int) -> int:
    """What ``locate`` answers, by the exact path, for any ascending keys: ``r >= 0`` the key is at ``r``,
    ``r < 0`` it belongs at ``-r - 1`` (raises as :func:`exact_key`)."""
    k = exact_key(level, scale, sign)
    i = bisect_left(keys, k)
    return i if i < len(keys) and keys[i] == k else -i - 1


def level_key(level: Level, scale: int, sign: int) -> int:
    """The key of ``level.price``: by the C step when it answers, else exactly (raising as :func:`exact_key`)."""
    k = fast_key(level.price, scale, sign) if fast_key is not None else None
    return exact_key(level, scale, sign) if k is None else k


def key_store(keys: list[int]) -> array[int] | list[int]:
    """A side's keys as contiguous int64, or the list itself when one does not fit (prices of ~19 digits)."""
    try:
        return array("q", keys)
    except OverflowError:
        return keys
