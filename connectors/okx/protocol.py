"""OKX v5 public WebSocket hooks for the generic machinery (:mod:`connectors.ws`).

Wire facts used here (docs: OKX API v5 "WebSocket" overview; fixture shapes in ``connectors/okx/books.py``):

* request: ``{"id":"17","op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"},...]}``; the total
  args length is capped (64 KB) -> at most ``topics_per_request`` args per request;
* answers: ``{"id":"17","event":"subscribe","arg":{...},"connId":"..."}`` per arg; errors
  ``{"id":"17","event":"error","code":"60018","msg":"Wrong URL or channel:books,instId:FOO-BAR doesn't
  exist.","connId":"..."}`` (no ``arg``: the id, else the instId named in ``msg``, else the oldest request);
* notice ``{"event":"notice","code":"64008",...}``: the server closes the connection soon -> reconnect now;
* keep-alive: text ``ping`` when nothing was received for 25 s, the server answers ``pong``;
* budgets: 480 subscribe/unsubscribe requests per connection per hour, 3 new connections per second per IP.

Topics: with a fixed ``channel`` (the books source), a topic is the ``instId``; without one (several
channels on one connection, e.g. trades + tickers), a topic is ``"<channel>:<instId>"``.
"""

from __future__ import annotations

import re
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

RECONNECT_NOTICES = frozenset({"64008"})
INST_IN_MSG = re.compile(r"instId[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9._-]+)")  # the instId an error names


class OkxArg(msgspec.Struct, frozen=True):
    channel: str
    instId: str = ""


class OkxEventFrame(msgspec.Struct, frozen=True):
    event: str
    arg: OkxArg | None = None
    code: str = ""
    msg: str = ""
    connId: str = ""


class _EventWithId(msgspec.Struct, frozen=True):
    id: str = ""


_event_decoder = msgspec.json.Decoder(OkxEventFrame)
_id_decoder = msgspec.json.Decoder(_EventWithId)

OKX_LIMITS = Limits(
    topics_per_request=20,
    topics_per_connection=100,
    control_per_second=3.0,
    requests_per_hour=480,
    connects_per_second=3.0,
    max_age=None,
    answer_timeout=5.0,
    max_retries=3,
)


class OkxHooks:
    """:class:`connectors.ws.hooks.VenueHooks` for OKX v5 public/business WebSockets."""

    venue = "okx"

    def __init__(self, url: str, *, channel: str | None = None, ping_interval: float = 25.0,
                 pong_timeout: float = 5.0, limits: Limits = OKX_LIMITS) -> None:
        self._url = url
        self.channel = channel
        self.limits = limits
        self.keepalive = KeepAlive(KeepAliveMode.TEXT_IDLE, ping_interval, pong_timeout, "ping")

    def url(self) -> str:
        return self._url

    def _arg(self, topic: str) -> dict[str, str]:
        if self.channel is not None:
            return {"channel": self.channel, "instId": topic}
        channel, _, inst = topic.partition(":")
        return {"channel": channel, "instId": inst}

    def requests(self, op: Op, topics: Sequence[str], first_id: int) -> list[Request]:
        size = self.limits.topics_per_request
        out = []
        for n, start in enumerate(range(0, len(topics), size)):
            chunk = tuple(topics[start : start + size])
            req_id = str(first_id * 100 + n)  # OKX: alphanumeric id up to 32 chars, echoed in the answer
            body = {"id": req_id, "op": op, "args": [self._arg(t) for t in chunk]}
            out.append(Request(op, chunk, orjson.dumps(body).decode(), req_id))
        return out

    def classify(self, text: str) -> Control | None:
        if text.startswith('{"arg"'):
            return None  # a data push: the hot path
        if text == "pong":
            return Pong()
        # Runs on the I/O thread: bounded decodes only (a hostile frame must never end the connection task).
        ctl = event_control(text, single_channel=self.channel is not None)
        return None if isinstance(ctl, Rejected) else ctl  # not an event: the data parser counts and reports it


def event_control(text: bytes | str, *, single_channel: bool) -> Control | Rejected:
    """An OKX event frame (``{"event":...}``) in the machinery's control vocabulary, or why it is not one.

    Topics: on a single-channel connection (``single_channel``, the books source) a topic is the ``instId``,
    and an error without ``arg`` names it in ``msg``; else ``"<channel>:<instId>"``. The hooks and the parsers
    (:mod:`connectors.okx.books`, :mod:`connectors.okx.market`) read events through this one function."""
    ev = untrusted.decode(_event_decoder, text)
    if isinstance(ev, Rejected):
        return ev
    ids = untrusted.decode(_id_decoder, text)
    req_id = None if isinstance(ids, Rejected) else ids.id or None
    topics: tuple[str, ...] = ()
    if ev.event in ("subscribe", "unsubscribe"):
        if ev.arg is not None:
            topics = (_topic(ev.arg, single_channel),)
        return Ack("subscribe" if ev.event == "subscribe" else "unsubscribe", topics, req_id)
    if ev.event == "error":
        if ev.arg is not None and ev.arg.instId:
            topics = (_topic(ev.arg, single_channel),)
        elif single_channel and (m := INST_IN_MSG.search(ev.msg)):
            topics = (m.group(1),)
        return Reject(f"{ev.code} {ev.msg}".strip(), topics, req_id)
    if ev.event == "notice":
        return Notice(f"{ev.code} {ev.msg}".strip(), reconnect=ev.code in RECONNECT_NOTICES)
    return Notice(f"{ev.event} {ev.code} {ev.msg}".strip(), reconnect=False)


def _topic(arg: OkxArg, single_channel: bool) -> str:
    return arg.instId if single_channel else f"{arg.channel}:{arg.instId}"
