"""OKX v5 market-data wire models and parsers: ``trades``, ``tickers`` (``/ws/v5/public``) and ``candle*``
(``/ws/v5/business``) -> domain events. Pure, no I/O; never raises on what the wire brings (every decode
bounded by :func:`connectors.untrusted.decode`; junk -> :class:`~connectors.market.frames.ParseError`).

Wire shapes (fixtures: ``tests/data/okx/okx-2022-05-13-books-trades-tickers.jsonl`` for trades/tickers,
``tests/data/okx_market_frames.jsonl`` for candles):

* ``{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId","tradeId","px","sz","side","ts",
  "count"?}]}`` — ``count`` (newer OKX) is the number of trades aggregated into one push;
* ``{"arg":{"channel":"tickers",...},"data":[{"last","askPx","bidPx","open24h","high24h","low24h",
  "vol24h","ts",...}]}`` — ``askPx``/``bidPx`` may be ``""``; ``change_24h`` = (last - open24h) / open24h;
* ``{"arg":{"channel":"candle1m","instId":...},"data":[["ts","o","h","l","c","vol","volCcy",
  "volCcyQuote","confirm"]]}`` — ``confirm == "1"``: the candle is closed. ``vol`` is in base currency for
  spot (contracts for derivatives), ``volCcyQuote`` in quote currency. The daily candle is ``candle1Dutc``
  (OKX's plain ``candle1D`` follows Hong Kong time); ``candle4H`` is already UTC-aligned (Hong Kong midnight
  is 16:00 UTC) and OKX has no ``candle4Hutc`` (its ``...utc`` channels are 6H, 12H, 1D and longer).
* events (``subscribe``/``error``/``notice``) and the text ``pong`` -> the machinery's control types
  (:func:`connectors.okx.protocol.event_control`: ``Ack``, ``Reject``, ``Notice``; ``Pong``); a book channel's
  push -> :class:`~connectors.ws.hooks.Ignored`.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from connectors import untrusted
from connectors.market.frames import (
    MAX_EPOCH_MS,
    InvalidField,
    MarketItem,
    change_percent,
    decode_field,
    optional_decimal,
    parse_error,
    rejection,
    to_decimal,
)
from connectors.okx.protocol import OkxArg, event_control
from connectors.untrusted import Rejected
from connectors.ws.hooks import Ignored, Pong
from operators.events import Kline, Ticker, Trade
from operators.klines import TIMEFRAME_MS

VENUE = "okx"
CANDLE_CHANNELS: dict[str, str] = {
    "1m": "candle1m",
    "5m": "candle5m",
    "15m": "candle15m",
    "1h": "candle1H",
    "4h": "candle4H",
    "1d": "candle1Dutc",
}
_TIMEFRAME_OF_CHANNEL = {ch: tf for tf, ch in CANDLE_CHANNELS.items()}


class OkxTradeData(msgspec.Struct, frozen=True):
    instId: str
    tradeId: str
    px: str
    sz: str
    side: str
    ts: str
    count: str = "1"


class OkxTickerData(msgspec.Struct, frozen=True):
    instId: str
    last: str
    open24h: str
    high24h: str
    low24h: str
    vol24h: str
    ts: str
    askPx: str = ""
    bidPx: str = ""


class OkxMarketFrame(msgspec.Struct, frozen=True):
    """A data push (``arg`` + ``data``) or an event (``event``...)."""

    arg: OkxArg | None = None
    data: msgspec.Raw = msgspec.Raw()
    event: str = ""
    code: str = ""
    msg: str = ""


_frame = msgspec.json.Decoder(OkxMarketFrame)
_trades = msgspec.json.Decoder(list[OkxTradeData])
_tickers = msgspec.json.Decoder(list[OkxTickerData])
_candles = msgspec.json.Decoder(list[list[str]])


def parse_okx_market_frame(raw: bytes | str, *, recv_ns: int) -> list[MarketItem]:
    """Parse one OKX text frame of the trades/tickers/candle channels."""
    if raw in ("pong", b"pong"):
        return [Pong()]
    frame = untrusted.decode(_frame, raw)
    if isinstance(frame, Rejected):
        return [rejection(VENUE, frame)]
    if frame.event:
        ctl = event_control(raw, single_channel=False)  # topics "<channel>:<instId>", as this source's hooks
        return [rejection(VENUE, ctl) if isinstance(ctl, Rejected) else ctl]
    if frame.arg is None or not frame.data:
        return [parse_error(VENUE, "unknown_message", "expected 'arg' and 'data' or an 'event'", raw)]
    channel = frame.arg.channel
    try:
        if channel == "trades":
            return [_trade(d, recv_ns) for d in decode_field(_trades, frame.data)]
        if channel == "tickers":
            return [_ticker(d) for d in decode_field(_tickers, frame.data)]
        if channel in _TIMEFRAME_OF_CHANNEL:
            tf = _TIMEFRAME_OF_CHANNEL[channel]
            return [_candle(row, frame.arg.instId, tf) for row in decode_field(_candles, frame.data)]
    except InvalidField as err:
        return [parse_error(VENUE, err.reason, f"{channel[:60]} data: {err}", raw)]
    if channel.startswith("books") or channel == "bbo-tbt":
        return [Ignored(channel)]
    return [parse_error(VENUE, "unknown_channel", f"unsupported channel {channel[:60]!r}", raw)]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError as err:
        msg = f"expected an integer string, found {text[:60]!r}"
        raise InvalidField(msg, "invalid_number") from err


def _ts(text: str) -> int:
    value = _int(text)
    if not 0 <= value < MAX_EPOCH_MS:
        msg = f"expected epoch milliseconds, found {text[:60]!r}"
        raise InvalidField(msg, "invalid_number")
    return value


def _trade(d: OkxTradeData, recv_ns: int) -> Trade:
    if d.side not in ("buy", "sell"):
        msg = f"expected side buy/sell, found {d.side[:60]!r}"
        raise InvalidField(msg, "invalid_value")
    count = _int(d.count or "1")
    if count < 1:
        msg = f"expected count >= 1, found {count}"
        raise InvalidField(msg, "invalid_value")
    # tradeId: contiguous per instrument, the last id of an aggregated push (operators/trade_ids.py)
    seq = int(d.tradeId) if d.tradeId.isascii() and d.tradeId.isdigit() and len(d.tradeId) < 19 else None
    return Trade(VENUE, d.instId, d.tradeId, to_decimal(d.px), to_decimal(d.sz),
                 "buy" if d.side == "buy" else "sell", _ts(d.ts), recv_ns, count, seq)


def _ticker(d: OkxTickerData) -> Ticker:
    last = to_decimal(d.last)
    open24 = to_decimal(d.open24h)
    return Ticker(VENUE, d.instId, last, optional_decimal(d.bidPx), optional_decimal(d.askPx),
                  to_decimal(d.vol24h), change_percent(last, open24), to_decimal(d.high24h),
                  to_decimal(d.low24h), _ts(d.ts))


def _candle(row: list[str], inst: str, tf: str) -> Kline:
    if len(row) < 6:
        msg = f"expected a candle of at least 6 fields, found {len(row)}"
        raise InvalidField(msg, "wrong_type")
    start = _ts(row[0])
    quote = to_decimal(row[7]) if len(row) > 7 and row[7] else Decimal(0)
    closed = len(row) > 8 and row[8] == "1"
    o, h, lo, c, v = (to_decimal(x) for x in row[1:6])
    return Kline(VENUE, inst, tf, start, start + TIMEFRAME_MS[tf], o, h, lo, c, v, quote, 0, closed, "venue")
