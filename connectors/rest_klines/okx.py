"""OKX v5 ``GET /api/v5/market/history-candles`` (wire shape: tests/data/rest_klines/okx_history_candles.json).

Newest first, ``after``/``before`` exclusive (older than ``after``, newer than ``before``), up to 100 per
request, 20 requests per 2 s (per IP). Over the limit: HTTP 429 with ``{"code": "50011"}`` and no
``Retry-After``. Other errors: HTTP 200 with a non-zero ``code`` (``51001``: unknown instrument). Rows:
``[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]``; ``confirm`` ``"0"`` is the open candle (skipped).
OKX gives no trade count (the points carry none). The daily timeframe is ``1Dutc`` (``1D`` is Hong Kong's day).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

import msgspec

from connectors.rest_klines.budget import Budget
from connectors.rest_klines.venue import Answer, RateLimited, Row, VenueRefused, checked_rows, interval_of, retry_after
from connectors.untrusted import Rejected, decode

INTERVALS = {"1m": "1m", "5m": "5m", "15m": "15m", "1h": "1H", "4h": "4H", "1d": "1Dutc"}
RATE_LIMITED = "50011"


class OkxCandle(msgspec.Struct, frozen=True, array_like=True):
    ts: str
    open: str
    high: str
    low: str
    close: str
    volume: str
    volume_ccy: str
    volume_quote: str
    confirm: str


class OkxCandles(msgspec.Struct, frozen=True):
    code: str
    msg: str = ""
    data: list[OkxCandle] = []


_candles = msgspec.json.Decoder(OkxCandles)


def parse_okx_candles(body: bytes, *, inst: str, timeframe: str) -> Answer:
    frame = decode(_candles, body)
    if isinstance(frame, Rejected):
        return frame
    if frame.code == RATE_LIMITED:
        return RateLimited(200, None, frame.msg)
    if frame.code != "0":
        return VenueRefused(200, frame.code, frame.msg)
    rows: list[Row] = [(c.ts, (c.open, c.high, c.low, c.close, c.volume, c.volume_quote), 0)
                       for c in frame.data if c.confirm == "1"]
    return checked_rows("okx", inst, timeframe, rows, body)


class OkxKlines:
    name = "okx"
    page_limit = 100
    request_weight = 1
    default_budget = Budget(10, 2.0)  # half of the venue's 20 per 2 s

    def page_url(self, base_url: str, inst: str, timeframe: str, start_ms: int, end_ms: int) -> str:
        query = {"instId": inst, "bar": interval_of(INTERVALS, self.name, timeframe), "after": end_ms,
                 "before": start_ms - 1, "limit": self.page_limit}
        return f"{base_url.rstrip('/')}/api/v5/market/history-candles?{urlencode(query)}"

    def read(self, status: int, headers: Mapping[str, str], body: bytes, *, inst: str, timeframe: str) -> Answer:
        if status == 429:
            return RateLimited(status, retry_after(headers), body[:200].decode(errors="replace"))
        return parse_okx_candles(body, inst=inst, timeframe=timeframe)

    def pause_after(self, headers: Mapping[str, str]) -> float | None:
        return None  # no "left in this window" header
