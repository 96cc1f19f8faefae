"""Binance spot ``GET /api/v3/klines`` (wire shape: tests/data/rest_klines/binance_klines.json).

Oldest first, ``startTime``/``endTime`` inclusive, up to 1,000 per request, weight 2 against 6,000 per minute
(per IP). Over the limit: HTTP 429 with ``Retry-After``; asking again before that time is over: HTTP 418, an IP
ban. Errors: ``{"code": -1121, "msg": "Invalid symbol."}`` with HTTP 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

import msgspec

from connectors.rest_klines.budget import Budget
from connectors.rest_klines.venue import Answer, RateLimited, VenueRefused, checked_rows, interval_of, retry_after
from connectors.untrusted import Rejected, decode
from operators.instruments import venue_symbol

INTERVALS = {"1m": "1m", "5m": "5m", "15m": "15m", "1h": "1h", "4h": "4h", "1d": "1d"}


class BinanceRestKline(msgspec.Struct, frozen=True, array_like=True):
    open_ms: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    close_ms: int
    quote_volume: str
    trades: int
    taker_buy_base: str
    taker_buy_quote: str
    ignore: str


class BinanceError(msgspec.Struct, frozen=True):
    code: int
    msg: str


_klines = msgspec.json.Decoder(list[BinanceRestKline])
_error = msgspec.json.Decoder(BinanceError)


def parse_binance_klines(body: bytes, *, inst: str, timeframe: str) -> Answer:
    rows = decode(_klines, body)
    if isinstance(rows, Rejected):
        return rows
    return checked_rows("binance", inst, timeframe, [
        (r.open_ms, (r.open, r.high, r.low, r.close, r.volume, r.quote_volume), r.trades) for r in rows], body)


class BinanceKlines:
    name = "binance"
    page_limit = 1000
    request_weight = 2
    default_budget = Budget(1200, 60.0)  # a fifth of the venue's 6,000 weight per minute: live clients share it

    def page_url(self, base_url: str, inst: str, timeframe: str, start_ms: int, end_ms: int) -> str:
        query = {"symbol": venue_symbol(inst), "interval": interval_of(INTERVALS, self.name, timeframe),
                 "startTime": start_ms, "endTime": end_ms - 1, "limit": self.page_limit}
        return f"{base_url.rstrip('/')}/api/v3/klines?{urlencode(query)}"

    def read(self, status: int, headers: Mapping[str, str], body: bytes, *, inst: str, timeframe: str) -> Answer:
        if status in (418, 429):
            return RateLimited(status, retry_after(headers), body[:200].decode(errors="replace"), banned=status == 418)
        if status != 200:
            err = decode(_error, body)
            if isinstance(err, Rejected):
                return err
            return VenueRefused(status, str(err.code), err.msg)
        return parse_binance_klines(body, inst=inst, timeframe=timeframe)

    def pause_after(self, headers: Mapping[str, str]) -> float | None:
        return None  # no "left in this window" header (Binance's used weight lacks the limit it counts against)
