"""Bybit v5 ``GET /v5/market/kline`` (spot; wire shape: tests/data/rest_klines/bybit_kline.json).

Newest first, ``start``/``end`` inclusive, up to 1,000 per request, 600 requests per 5 s per IP. Over the limit:
HTTP 403 with ``retCode`` 10006 and ``X-Bapi-Limit-Reset-Timestamp`` (epoch ms when the window resets); other
errors: HTTP 200 with a non-zero ``retCode``. Rows: ``[startTime, open, high, low, close, volume, turnover]``;
no trade count. Bybit includes the open kline: the caller only asks for intervals that have closed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from urllib.parse import urlencode

import msgspec

from connectors.rest_klines.budget import Budget
from connectors.rest_klines.venue import Answer, RateLimited, Row, VenueRefused, checked_rows, interval_of, retry_after
from connectors.untrusted import Rejected, decode
from operators.instruments import venue_symbol

INTERVALS = {"1m": "1", "5m": "5", "15m": "15", "1h": "60", "4h": "240", "1d": "D"}
RATE_LIMITED = 10006


class BybitKline(msgspec.Struct, frozen=True, array_like=True):
    start: str
    open: str
    high: str
    low: str
    close: str
    volume: str
    turnover: str


class BybitKlineResult(msgspec.Struct, frozen=True):
    rows: list[BybitKline] = msgspec.field(default_factory=list, name="list")


class BybitKlineAnswer(msgspec.Struct, frozen=True):
    ret_code: int = msgspec.field(name="retCode")
    ret_msg: str = msgspec.field(default="", name="retMsg")
    result: BybitKlineResult = BybitKlineResult()


_answer = msgspec.json.Decoder(BybitKlineAnswer)


def _reset_in(headers: Mapping[str, str]) -> float | None:
    """Seconds until ``X-Bapi-Limit-Reset-Timestamp`` (ms), else ``Retry-After``."""
    text = headers.get("X-Bapi-Limit-Reset-Timestamp", "")
    if text.isdigit() and len(text) < 16:
        return min(60.0, max(0.0, int(text) / 1000 - time.time()) + 0.05)
    return retry_after(headers)


def parse_bybit_klines(answer: BybitKlineAnswer, body: bytes, *, inst: str, timeframe: str) -> Answer:
    """The klines of an answer decoded once by :meth:`BybitKlines.read` (``body`` for a rejection's sample)."""
    if answer.ret_code != 0:
        return VenueRefused(200, str(answer.ret_code), answer.ret_msg)
    rows: list[Row] = [(r.start, (r.open, r.high, r.low, r.close, r.volume, r.turnover), 0)
                       for r in answer.result.rows]
    return checked_rows("bybit", inst, timeframe, rows, body)


class BybitKlines:
    name = "bybit"
    page_limit = 1000
    request_weight = 1
    default_budget = Budget(100, 5.0)  # a sixth of the venue's 600 per 5 s

    def page_url(self, base_url: str, inst: str, timeframe: str, start_ms: int, end_ms: int) -> str:
        query = {"category": "spot", "symbol": venue_symbol(inst),
                 "interval": interval_of(INTERVALS, self.name, timeframe), "start": start_ms, "end": end_ms - 1,
                 "limit": self.page_limit}
        return f"{base_url.rstrip('/')}/v5/market/kline?{urlencode(query)}"

    def read(self, status: int, headers: Mapping[str, str], body: bytes, *, inst: str, timeframe: str) -> Answer:
        answer = decode(_answer, body)
        limited = status in (200, 403) and isinstance(answer, BybitKlineAnswer) and answer.ret_code == RATE_LIMITED
        if status == 403 or limited:
            return RateLimited(status, _reset_in(headers), body[:200].decode(errors="replace"))
        if status != 200:
            return VenueRefused(status, str(status), body[:200].decode(errors="replace"))
        if isinstance(answer, Rejected):
            return answer
        return parse_bybit_klines(answer, body, inst=inst, timeframe=timeframe)

    def pause_after(self, headers: Mapping[str, str]) -> float | None:
        left = headers.get("X-Bapi-Limit-Status", "")
        return _reset_in(headers) if left == "0" else None
