"""Binance spot market-data wire models and parsers (combined-stream frames -> domain events).

Frames come from ``/stream?streams=...`` (or a live ``SUBSCRIBE``) wrapped as ``{"stream": "...", "data":
{...}}``. Handled payloads: ``aggTrade`` (one Trade counting ``l - f + 1`` exchange trades), ``trade``,
``24hrTicker`` and ``kline`` (the venue's own kline, ``source="venue"``, closed when ``x`` is true).
Control answers (``{"result": null, "id": 1}``, ``{"error": ...}``) and ``serverShutdown`` become the
machinery's control types (``Ack``, ``Reject``, ``Notice``: :mod:`connectors.ws.hooks`), payloads we do not
take :class:`~connectors.ws.hooks.Ignored`; anything else a :class:`~connectors.market.frames.ParseError` —
never an exception (every decode bounded by :func:`connectors.untrusted.decode`).

Fixtures of every wire shape: ``tests/data/binance_*.jsonl`` (real frames, see tests/data/README.md).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import msgspec

from connectors import untrusted
from connectors.market.frames import (
    EpochMs,
    MarketItem,
    SymbolMap,
    parse_error,
    rejection,
    sane,
)
from connectors.untrusted import Rejected
from connectors.ws.hooks import Ack, Ignored, Notice, Reject
from operators.events import Kline, Ticker, Trade
from operators.klines import TIMEFRAME_MS

VENUE = "binance"


class BinanceAggTrade(msgspec.Struct, frozen=True, tag_field="e", tag="aggTrade"):
    E: EpochMs
    s: str
    a: int
    p: Decimal
    q: Decimal
    f: int
    l: int  # noqa: E741 - the venue's field name
    T: EpochMs
    m: bool


class BinanceTrade(msgspec.Struct, frozen=True, tag_field="e", tag="trade"):
    E: EpochMs
    s: str
    t: int
    p: Decimal
    q: Decimal
    T: EpochMs
    m: bool


class BinanceKlineBody(msgspec.Struct, frozen=True):
    t: EpochMs
    T: EpochMs
    s: str
    i: str
    o: Decimal
    c: Decimal
    h: Decimal
    l: Decimal  # noqa: E741
    v: Decimal
    n: int
    x: bool
    q: Decimal


class BinanceKline(msgspec.Struct, frozen=True, tag_field="e", tag="kline"):
    E: EpochMs
    s: str
    k: BinanceKlineBody


class BinanceTicker(msgspec.Struct, frozen=True, tag_field="e", tag="24hrTicker"):
    E: EpochMs
    s: str
    P: Decimal  # change percent
    c: Decimal  # last
    b: Decimal
    a: Decimal
    o: Decimal
    h: Decimal
    l: Decimal  # noqa: E741
    v: Decimal  # base volume
    q: Decimal  # quote volume


class BinanceShutdown(msgspec.Struct, frozen=True, tag_field="e", tag="serverShutdown"):
    E: EpochMs = 0


BinancePayload = BinanceAggTrade | BinanceTrade | BinanceKline | BinanceTicker | BinanceShutdown


class BinanceEnvelope(msgspec.Struct, frozen=True):
    """The combined-stream wrapper, or a control answer (``result``/``error`` + ``id``)."""

    stream: str | None = None
    data: msgspec.Raw = msgspec.Raw()
    id: Any = msgspec.UNSET
    result: Any = None
    error: dict[str, Any] | None = None


_envelope = msgspec.json.Decoder(BinanceEnvelope)
_payload = msgspec.json.Decoder(BinancePayload)


def _instrument(symbol: str, symbols: SymbolMap) -> str | None:
    return symbols.get(symbol.upper())


def parse_binance_frame(raw: bytes | str, *, recv_ns: int, symbols: SymbolMap) -> list[MarketItem]:
    """Parse one Binance WebSocket text frame into domain events (or one control/error item)."""
    env = untrusted.decode(_envelope, raw)
    if isinstance(env, Rejected):
        return [rejection(VENUE, env)]
    if not env.data:
        req_id = None if env.id is msgspec.UNSET or env.id is None else str(env.id)
        if env.error is not None:  # "<code> <msg>", as BinanceHooks reads it
            return [Reject(f"{env.error.get('code')} {env.error.get('msg')}", (), req_id)]
        if env.id is not msgspec.UNSET:
            return [Ack(None, (), req_id)]  # the answer does not say to which op (the hooks know it)
        return [parse_error(VENUE, "unknown_message", "expected a combined-stream frame with 'data'", raw)]
    payload = untrusted.decode(_payload, env.data)
    if isinstance(payload, Rejected):
        stream = env.stream or ""
        if payload.reason == "wrong_type" and any(name in stream for name in ("depth", "bookTicker", "miniTicker")):
            return [Ignored(stream[:60])]
        return [rejection(VENUE, payload)]
    return _convert(payload, raw, recv_ns=recv_ns, symbols=symbols)


def _convert(payload: BinancePayload, raw: bytes | str, *, recv_ns: int, symbols: SymbolMap) -> list[MarketItem]:
    if isinstance(payload, BinanceShutdown):
        return [Notice("serverShutdown", reconnect=True)]
    inst = _instrument(payload.s, symbols)
    if inst is None:
        return [parse_error(VENUE, "not_subscribed", f"symbol {payload.s[:60]!r} is not subscribed", raw)]
    if isinstance(payload, BinanceAggTrade):
        if not sane(payload.p, payload.q) or payload.l < payload.f:
            return [parse_error(VENUE, "invalid_number", "aggTrade with a non-finite number or l < f", raw)]
        return [Trade(VENUE, inst, str(payload.a), payload.p, payload.q, "sell" if payload.m else "buy",
                      payload.T, recv_ns, payload.l - payload.f + 1, seq=payload.l)]  # f..l chain: contiguous
    if isinstance(payload, BinanceTrade):
        if not sane(payload.p, payload.q):
            return [parse_error(VENUE, "invalid_number", "trade with a non-finite number", raw)]
        return [Trade(VENUE, inst, str(payload.t), payload.p, payload.q, "sell" if payload.m else "buy",
                      payload.T, recv_ns, seq=payload.t)]  # t is contiguous per symbol
    if isinstance(payload, BinanceKline):
        k = payload.k
        if k.i not in TIMEFRAME_MS:
            return [Ignored(f"kline interval {k.i[:20]}")]
        if not sane(k.o, k.h, k.l, k.c, k.v, k.q):
            return [parse_error(VENUE, "invalid_number", "kline with a non-finite or out-of-range number", raw)]
        return [Kline(VENUE, inst, k.i, k.t, k.T + 1, k.o, k.h, k.l, k.c, k.v, k.q, k.n, k.x, "venue")]
    if not sane(payload.c, payload.b, payload.a, payload.v, payload.P, payload.h, payload.l, payload.o, payload.q):
        return [parse_error(VENUE, "invalid_number", "ticker with a non-finite or out-of-range number", raw)]
    return [Ticker(VENUE, inst, payload.c, payload.b, payload.a, payload.v, payload.P, payload.h, payload.l,
                   payload.E)]


def trade_stream_name(symbol: str, stream: Literal["aggTrade", "trade"]) -> str:
    return f"{symbol.lower()}@{stream}"
