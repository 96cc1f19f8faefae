"""Bybit v5 public spot WebSocket hooks for the generic machinery (:mod:`connectors.ws`).

Wire facts (Bybit v5 "WebSocket Connect"/"Public"): ``{"req_id":"7","op":"subscribe","args":["publicTrade.
BTCUSDT",...]}`` with at most 10 args per request (spot), answered ``{"success":true,"ret_msg":"subscribe",
"req_id":"7","op":"subscribe",...}`` or ``success:false`` with ``ret_msg`` such as ``Invalid symbol
:[tickers.FOOUSDT]``; keep-alive: send ``{"op":"ping"}`` every 20 s, answered ``{"op":"pong",...}`` (spot) or
``{"success":true,"ret_msg":"pong","op":"ping"}``.

Topics are ``"<topic kind>:<instrument id>"`` (``publicTrade:BTC-USDT``, ``tickers:BTC-USDT``,
``kline.1:BTC-USDT``, ``orderbook.1:BTC-USDT``); spot ids only.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import orjson

from connectors import untrusted
from connectors.untrusted import Rejected
from connectors.ws.hooks import (
    Ack,
    Control,
    KeepAlive,
    KeepAliveMode,
    Limits,
    Notice,
    Op,
    Pong,
    Reject,
    Request,
)
from operators.instruments import venue_symbol

BYBIT_LIMITS = Limits(
    topics_per_request=10,
    topics_per_connection=200,
    control_per_second=5.0,
    requests_per_hour=None,
    connects_per_second=5.0,  # 500 connections per 5 minutes per IP
    max_age=None,
    answer_timeout=5.0,
    max_retries=3,
)


class _Answer(msgspec.Struct, frozen=True):
    op: str = ""
    success: bool | None = None
    ret_msg: str = ""
    req_id: str = ""


_answer = msgspec.json.Decoder(_Answer)


def topic_arg(topic: str) -> str:
    """``kline.1:BTC-USDT`` -> ``kline.1.BTCUSDT``."""
    kind, _, inst = topic.partition(":")
    return f"{kind}.{venue_symbol(inst)}"


class BybitHooks:
    """:class:`connectors.ws.hooks.VenueHooks` for Bybit v5 public spot."""

    venue = "bybit"

    def __init__(self, url: str, *, ping_interval: float = 20.0, pong_timeout: float = 5.0,
                 limits: Limits = BYBIT_LIMITS) -> None:
        self._url = url
        self.limits = limits
        self.keepalive = KeepAlive(KeepAliveMode.TEXT_INTERVAL, ping_interval, pong_timeout, '{"op":"ping"}')

    def url(self) -> str:
        return self._url

    def requests(self, op: Op, topics: Sequence[str], first_id: int) -> list[Request]:
        size = min(self.limits.topics_per_request, 10)
        out = []
        for n, start in enumerate(range(0, len(topics), size)):
            chunk = tuple(topics[start : start + size])
            args = []
            for topic in chunk:
                arg = topic_arg(topic)
                args.append(arg)
            req_id = str(first_id * 100 + n)
            text = orjson.dumps({"req_id": req_id, "op": op, "args": args}).decode()
            out.append(Request(op, chunk, text, req_id))
        return out

    def classify(self, text: str) -> Control | None:
        if text.startswith('{"topic"'):
            return None
        ans = untrusted.decode(_answer, text)  # I/O thread: bounded, never raises
        if isinstance(ans, Rejected):
            return None  # the data parser reports it
        if ans.op == "pong" or (ans.op == "ping" and ans.ret_msg == "pong"):
            return Pong()
        if ans.op not in ("subscribe", "unsubscribe"):
            return None
        return op_answer(ans.op, ans.success, ans.ret_msg, ans.req_id or None)


def op_answer(op: str, success: bool | None, ret_msg: str, req_id: str | None = None) -> Ack | Reject | Notice:
    """A Bybit ``op`` answer (not a pong) in the machinery's control vocabulary, for the hooks and the parsers
    (:mod:`connectors.bybit.books`, :mod:`connectors.bybit.market`): a subscribe/unsubscribe answer -> an
    :class:`Ack` or :class:`Reject` of its request; an answer to another op (none is sent) -> a :class:`Reject`
    when refused, else a :class:`Notice` to log."""
    if op in ("subscribe", "unsubscribe"):
        sub: Op = "subscribe" if op == "subscribe" else "unsubscribe"
        if success is False:
            # The whole request is refused (e.g. one invalid symbol among 10 args): fail all of its topics,
            # the machinery retries each alone and only the bad ones end up rejected.
            return Reject(ret_msg or "refused", (), req_id, sub)
        return Ack(sub, (), req_id)
    detail = f"{op} {ret_msg}".strip()
    return Reject(detail, (), req_id) if success is False else Notice(detail, reconnect=False)
