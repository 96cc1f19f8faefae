"""Bybit v5 spot market-data wire models and parsers -> domain events. Pure, no I/O, never raises (every decode
bounded by :func:`connectors.untrusted.decode`; junk -> :class:`~connectors.market.frames.ParseError`).

Wire shapes (fixtures: ``tests/data/bybit_market_frames.jsonl`` and the real ``orderbook.1`` frames of
``tests/data/bybit/bybit-2025-06-13-orderbook1.jsonl``):

* ``{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":..,"data":[{"i","T","p","v","S":"Buy"|"Sell","s"}]}``
* ``{"topic":"tickers.BTCUSDT","ts":..,"type":"snapshot","data":{"symbol","lastPrice","highPrice24h",
  "lowPrice24h","prevPrice24h","volume24h","turnover24h","price24hPcnt"}}`` — spot tickers carry no bid/ask
  (the dataflow takes them from ``orderbook.1``); ``price24hPcnt`` is a fraction (0.0123 = 1.23 %).
* ``{"topic":"kline.1.BTCUSDT","data":[{"start","end","interval":"1","open","close","high","low",
  "volume","turnover","confirm"}]}`` — ``confirm`` true: the kline is closed; ``end`` is inclusive.
* ``{"topic":"orderbook.1.BTCUSDT","type":"snapshot","ts":..,"data":{"s","b":[[p,s]],"a":[[p,s]],"u","seq"}}``
  -> :class:`BestQuote` (skipped while a side is empty).
* ``{"success":true,"op":"subscribe",...}``, pongs (``{"op":"pong"}`` on spot, ``ret_msg":"pong"``) -> the
  machinery's control types (:func:`connectors.bybit.protocol.op_answer`: ``success:false`` -> ``Reject``;
  ``Pong``); klines of an interval we do not take, a one-sided ``orderbook.1`` -> ``Ignored``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from connectors import untrusted
from connectors.bybit.protocol import op_answer
from connectors.market.frames import (
    EpochMs,
    InvalidField,
    MarketItem,
    SymbolMap,
    decode_field,
    parse_error,
    rejection,
    sane,
)
from connectors.untrusted import Rejected
from connectors.ws.hooks import Ignored, Pong
from operators.events import BestQuote, Kline, Ticker, Trade
from operators.klines import TIMEFRAME_MS

VENUE = "bybit"
KLINE_INTERVALS: dict[str, str] = {"1m": "1", "5m": "5", "15m": "15", "1h": "60", "4h": "240", "1d": "D"}
_TIMEFRAME_OF_INTERVAL = {v: k for k, v in KLINE_INTERVALS.items()}


class BybitTrade(msgspec.Struct, frozen=True):
    i: str
    T: EpochMs
    p: Decimal
    v: Decimal
    S: str
    s: str


class BybitTicker(msgspec.Struct, frozen=True):
    symbol: str
    lastPrice: Decimal
    highPrice24h: Decimal
    lowPrice24h: Decimal
    volume24h: Decimal
    price24hPcnt: Decimal


class BybitKline(msgspec.Struct, frozen=True):
    start: EpochMs
    end: EpochMs
    interval: str
    open: Decimal
    close: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal
    turnover: Decimal
    confirm: bool


class BybitBook1(msgspec.Struct, frozen=True):
    s: str
    b: list[tuple[Decimal, Decimal]]
    a: list[tuple[Decimal, Decimal]]


class BybitFrame(msgspec.Struct, frozen=True):
    topic: str = ""
    ts: EpochMs = 0
    data: msgspec.Raw = msgspec.Raw()
    op: str = ""
    success: bool | None = None
    ret_msg: str = ""


_frame = msgspec.json.Decoder(BybitFrame)
_trades = msgspec.json.Decoder(list[BybitTrade])
_ticker = msgspec.json.Decoder(BybitTicker)
_klines = msgspec.json.Decoder(list[BybitKline])
_book1 = msgspec.json.Decoder(BybitBook1)


def parse_bybit_frame(raw: bytes | str, *, recv_ns: int, symbols: SymbolMap) -> list[MarketItem]:
    """Parse one Bybit v5 public text frame."""
    frame = untrusted.decode(_frame, raw)
    if isinstance(frame, Rejected):
        return [rejection(VENUE, frame)]
    if not frame.topic:
        if frame.op in ("pong", "ping") or frame.ret_msg == "pong":
            return [Pong()]
        if frame.op:
            return [op_answer(frame.op[:60], frame.success, frame.ret_msg[:160])]
        return [parse_error(VENUE, "unknown_message", "expected a 'topic' or an 'op' answer", raw)]
    channel, _, rest = frame.topic.partition(".")
    try:
        return _convert(channel, rest, frame, raw, recv_ns, symbols)
    except InvalidField as err:
        return [parse_error(VENUE, err.reason, f"{channel[:60]} data: {err}", raw)]


def _inst(symbol: str, symbols: SymbolMap) -> str:
    inst = symbols.get(symbol.upper())
    if inst is None:
        msg = f"symbol {symbol[:60]!r} is not subscribed"
        raise InvalidField(msg, "not_subscribed")
    return inst


def _finite(*values: Decimal) -> None:
    if not sane(*values):
        msg = "expected finite numbers"
        raise InvalidField(msg, "invalid_number")


def _convert(channel: str, rest: str, frame: BybitFrame, raw: Any, recv_ns: int,
             symbols: SymbolMap) -> list[MarketItem]:
    if channel == "publicTrade":
        out: list[MarketItem] = []
        for t in decode_field(_trades, frame.data):
            _finite(t.p, t.v)
            if t.S not in ("Buy", "Sell"):
                msg = f"expected side Buy/Sell, found {t.S[:60]!r}"
                raise InvalidField(msg, "invalid_value")
            # no seq: Bybit's trade ids are not contiguous (no trade-id gap check, operators/trade_ids.py)
            out.append(Trade(VENUE, _inst(t.s, symbols), t.i, t.p, t.v, "buy" if t.S == "Buy" else "sell",
                             t.T, recv_ns))
        return out
    if channel == "tickers":
        tk = decode_field(_ticker, frame.data)
        _finite(tk.lastPrice, tk.highPrice24h, tk.lowPrice24h, tk.volume24h, tk.price24hPcnt)
        return [Ticker(VENUE, _inst(tk.symbol, symbols), tk.lastPrice, None, None, tk.volume24h,
                       tk.price24hPcnt * 100, tk.highPrice24h, tk.lowPrice24h, frame.ts)]
    if channel == "kline":
        interval, _, symbol = rest.partition(".")
        tf = _TIMEFRAME_OF_INTERVAL.get(interval)
        if tf is None:
            return [Ignored(f"kline interval {interval[:20]}")]
        inst = _inst(symbol, symbols)
        klines: list[MarketItem] = []
        for k in decode_field(_klines, frame.data):
            _finite(k.open, k.high, k.low, k.close, k.volume, k.turnover)
            klines.append(Kline(VENUE, inst, tf, k.start, k.start + TIMEFRAME_MS[tf], k.open, k.high, k.low,
                                k.close, k.volume, k.turnover, 0, k.confirm, "venue"))
        return klines
    if channel == "orderbook":
        book = decode_field(_book1, frame.data)
        if not book.b or not book.a:
            return [Ignored(f"one-sided orderbook.1 {book.s[:60]}")]
        _finite(book.b[0][0], book.a[0][0])
        return [BestQuote(VENUE, _inst(book.s, symbols), book.b[0][0], book.a[0][0], frame.ts)]
    return [parse_error(VENUE, "unknown_channel", f"unsupported topic {frame.topic[:60]!r}", raw)]
