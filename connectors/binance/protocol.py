"""Binance spot WebSocket hooks for the generic machinery (:mod:`connectors.ws`).

Wire facts (Binance spot "WebSocket Streams"): connect to ``<BINANCE_WS_URL>/stream`` (combined streams, every
data frame wrapped as ``{"stream": ..., "data": ...}``); ``{"method":"SUBSCRIBE","params":["btcusdt@trade"],
"id":7}`` answered ``{"result":null,"id":7}`` or ``{"error":{"code":2,"msg":"..."},"id":7}``; at most 5
incoming control messages per second and 1024 streams per connection; a connection is dropped after 24 h
(we roll it a little earlier) and ``serverShutdown`` announces a maintenance disconnect (reconnect at once).
The server pings every 20 s and the client library answers; we only watch for silence.

Topics are ``"<stream kind>:<instrument id>"`` (``aggTrade:BTC-USDT``, ``ticker:BTC-USDT``,
``kline_1m:BTC-USDT``); spot ids only (``operators.instruments.venue_symbol``).
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
    Reject,
    Request,
)
from operators.instruments import venue_symbol

BINANCE_LIMITS = Limits(
    topics_per_request=100,
    topics_per_connection=1024,
    control_per_second=5.0,
    requests_per_hour=None,
    connects_per_second=1.0,  # 300 connections per 5 minutes per IP
    max_age=24 * 3600 - 300,  # roll before the venue's 24 h cut
    answer_timeout=5.0,
    max_retries=3,
)


class _Answer(msgspec.Struct, frozen=True):
    id: int | str | None = None
    result: object = None
    error: dict[str, object] | None = None
    e: str = ""


_answer = msgspec.json.Decoder(_Answer)


def stream_name(topic: str) -> str:
    """``aggTrade:BTC-USDT`` -> ``btcusdt@aggTrade``."""
    kind, _, inst = topic.partition(":")
    return f"{venue_symbol(inst).lower()}@{kind}"


class BinanceHooks:
    """:class:`connectors.ws.hooks.VenueHooks` for Binance spot combined streams."""

    venue = "binance"

    def __init__(self, base_url: str, *, silence: float = 25.0, pong_timeout: float = 5.0,
                 limits: Limits = BINANCE_LIMITS) -> None:
        self._url = base_url.rstrip("/") + "/stream"
        self.limits = limits
        self.keepalive = KeepAlive(KeepAliveMode.PROTOCOL_IDLE, silence, pong_timeout)
        self._ops: dict[str, Op] = {}

    def url(self) -> str:
        return self._url

    def requests(self, op: Op, topics: Sequence[str], first_id: int) -> list[Request]:
        size = self.limits.topics_per_request
        out = []
        for n, start in enumerate(range(0, len(topics), size)):
            chunk = tuple(topics[start : start + size])
            req_id = first_id * 100 + n
            streams = []
            for topic in chunk:
                name = stream_name(topic)
                streams.append(name)
            method = "SUBSCRIBE" if op == "subscribe" else "UNSUBSCRIBE"
            text = orjson.dumps({"method": method, "params": streams, "id": req_id}).decode()
            self._ops[str(req_id)] = op
            out.append(Request(op, chunk, text, str(req_id)))
        return out

    def classify(self, text: str) -> Control | None:
        if text.startswith('{"stream"'):
            if '"serverShutdown"' in text[:160]:
                return Notice("serverShutdown", reconnect=True)
            return None
        ans = untrusted.decode(_answer, text)  # I/O thread: bounded, never raises
        if isinstance(ans, Rejected):
            return None  # the data parser reports it
        if ans.e == "serverShutdown":
            return Notice("serverShutdown", reconnect=True)
        req_id = None if ans.id is None else str(ans.id)
        op = self._ops.pop(req_id, "subscribe") if req_id is not None else "subscribe"
        if ans.error is not None:
            # Binance refuses the whole request (one unknown stream fails them all): fail every topic of
            # it, so that the machinery retries each alone and only the bad ones end up rejected.
            reason = f"{ans.error.get('code')} {ans.error.get('msg')}"
            return Reject(reason, (), req_id, op)
        if req_id is not None:
            return Ack(op, (), req_id)
        return None
