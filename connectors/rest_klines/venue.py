"""What every venue's REST kline client provides (:class:`KlineVenue`) and the outcomes of one answer.

A venue module turns a page request into a URL, and an answer (status, headers, body) into exactly one of:
the page's klines (oldest first), :class:`RateLimited` (wait and ask again), :class:`VenueRefused` (the request
itself is wrong: unknown symbol, unsupported interval; asking again will not help) or a
:class:`connectors.untrusted.Rejected` body (not the venue's shape; counted and retried like a transient error).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

import msgspec

from connectors.market.frames import MAX_EPOCH_MS, InvalidField, to_decimal
from connectors.rest_klines.budget import Budget
from connectors.untrusted import Rejected, rejected
from operators.events import Kline
from operators.klines import TIMEFRAME_MS


class RateLimited(msgspec.Struct, frozen=True):
    """The venue refused for too many requests; ``retry_after_s`` when it said how long to wait."""

    status: int
    retry_after_s: float | None
    detail: str
    banned: bool = False


class VenueRefused(msgspec.Struct, frozen=True):
    """The venue refused the request itself (e.g. unknown symbol): fatal for this backfill."""

    status: int
    code: str
    detail: str


class UnsupportedTimeframe(ValueError):
    """The venue has no kline interval for this timeframe."""


Answer = list[Kline] | RateLimited | VenueRefused | Rejected


class KlineVenue(Protocol):
    name: str
    page_limit: int  # klines per request at most
    request_weight: int  # what one request costs against the venue's limit
    default_budget: Budget  # what this client allows itself (a fraction of the venue's limit)

    def page_url(self, base_url: str, inst: str, timeframe: str, start_ms: int, end_ms: int) -> str:
        """The request for the klines whose open time is in ``[start_ms, end_ms)`` (at most ``page_limit``)."""
        ...

    def read(self, status: int, headers: Mapping[str, str], body: bytes, *, inst: str, timeframe: str) -> Answer:
        ...

    def pause_after(self, headers: Mapping[str, str]) -> float | None:
        """Seconds to send nothing more, when the answer's headers say the venue's window is used up (the IP's
        limit is shared with other clients, which this client's own budget cannot see)."""
        ...


def interval_of(table: Mapping[str, str], venue: str, timeframe: str) -> str:
    try:
        return table[timeframe]
    except KeyError:
        msg = f"{venue} has no kline interval for timeframe {timeframe!r}; expected one of {sorted(table)}"
        raise UnsupportedTimeframe(msg) from None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (the venues send a number), or ``None`` when absent or unreadable. Any length
    is believed (a Binance 418 ban lasts up to 3 days): the client gives up on a wait over its ``max_wait_s``
    instead of asking again, which would only lengthen a ban."""
    text = headers.get("Retry-After")
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value < math.inf else None


Row = tuple[int | str, tuple[str, str, str, str, str, str], int]  # open time, OHLCV + quote volume, trades


def _open_ms(value: int | str) -> int:
    """An open time in epoch ms from the body (a number, or a string of ASCII digits); raises
    :class:`InvalidField` otherwise."""
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit() and len(value) <= 15):
            msg = f"kline time {value[:40]!r} is not epoch ms"
            raise InvalidField(msg, "invalid_number")
        value = int(value)
    if not 0 <= value < MAX_EPOCH_MS:
        msg = f"kline time {value} is not epoch ms"
        raise InvalidField(msg, "invalid_number")
    return value


def make_kline(venue: str, inst: str, timeframe: str, row: Row) -> Kline:
    """A closed venue kline from one row of the body; raises :class:`InvalidField` on a bad time or number."""
    open_ms, ohlcv, trades = _open_ms(row[0]), row[1], row[2]
    o, h, low, c, volume, quote = (to_decimal(x) for x in ohlcv)
    if not low <= min(o, c) <= max(o, c) <= h or volume < 0 or quote < 0:
        msg = f"kline {open_ms} is not a kline: open {o} high {h} low {low} close {c} volume {volume}"
        raise InvalidField(msg, "invalid_kline")
    return Kline(venue, inst, timeframe, open_ms, open_ms + TIMEFRAME_MS[timeframe], o, h, low, c, volume, quote,
                 trades, closed=True, source="venue", complete=True)


def checked_rows(venue: str, inst: str, timeframe: str, rows: list[Row], body: bytes) -> list[Kline] | Rejected:
    """Rows as klines, oldest first, or one typed rejection (the first bad row's)."""
    try:
        klines = sorted((make_kline(venue, inst, timeframe, row) for row in rows), key=lambda k: k.open_ms)
    except InvalidField as err:
        return rejected(err.reason, str(err), body)
    span = TIMEFRAME_MS[timeframe]
    if any(k.open_ms % span for k in klines) or len({k.open_ms for k in klines}) != len(klines):
        return rejected("invalid_kline", f"open times not aligned to {timeframe} or repeated", body)
    return klines
