"""What a venue must tell the generic WebSocket machinery: the :class:`VenueHooks` contract.

Generic code (``connectors/ws/``) never asks which venue it talks to; everything venue-specific is one
hooks object in the venue's package (``connectors/okx/protocol.py``, ``connectors/binance/...``):

* how to build subscribe/unsubscribe requests for a list of *topics* (a topic is the venue-neutral string
  the caller subscribes to, e.g. an instrument id or ``"trades:BTC-USDT"``; the hooks map it to wire args);
* how to recognise, in a received text frame, an acknowledgement, a rejection, a pong or a shutdown notice
  (``classify`` returns ``None`` for data frames, which the machinery passes on untouched);
* the keep-alive style and the venue's budgets (:class:`Limits`).

The control types here (:class:`Ack`, :class:`Reject`, :class:`Pong`, :class:`Notice`, and :class:`Ignored` for
parsers) are cryptoflow's one vocabulary for frames that carry no data: the venue parsers (books and market data
of every venue) return the same types for the control frames they see, e.g. in tests or when a hook let one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

Op = Literal["subscribe", "unsubscribe"]


@dataclass(frozen=True, slots=True)
class Request:
    """One control message to send: its text, the topics it covers and the id the answer will echo."""

    op: Op
    topics: tuple[str, ...]
    text: str
    req_id: str | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """The venue accepted ``topics`` (or the request ``req_id``) for ``op``; ``op`` ``None`` when the answer does
    not say which (Binance's ``{"result":null,"id":7}`` read without the request): the request's own op counts."""

    op: Op | None = None
    topics: tuple[str, ...] = ()
    req_id: str | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    """The venue refused a request. ``topics`` may be empty when the answer does not say which (OKX errors):
    the machinery then fails the request named by ``req_id``, or else the oldest one still waiting."""

    reason: str
    topics: tuple[str, ...] = ()
    req_id: str | None = None
    op: Op | None = None


@dataclass(frozen=True, slots=True)
class Pong:
    """An application-level pong."""


@dataclass(frozen=True, slots=True)
class Notice:
    """A venue notice; ``reconnect=True`` means the server is about to drop us: reconnect at once."""

    reason: str
    reconnect: bool = True


@dataclass(frozen=True, slots=True)
class Ignored:
    """A frame a parser understood and deliberately does not use (a channel or kline interval it does not take,
    a one-sided best quote). Only parsers return it: ``classify`` passes data frames on as ``None``."""

    detail: str


Control = Ack | Reject | Pong | Notice
Chatter = Control | Ignored  # what a venue parser returns for a frame without data it takes


class KeepAliveMode(StrEnum):
    TEXT_IDLE = "text_idle"  # send `ping_text` after `interval` s without a frame (OKX `ping`)
    TEXT_INTERVAL = "text_interval"  # send `ping_text` every `interval` s (Bybit `{"op":"ping"}`)
    PROTOCOL_IDLE = "protocol_idle"  # WebSocket ping frame after `interval` s of silence (Binance pings us)


@dataclass(frozen=True, slots=True)
class KeepAlive:
    mode: KeepAliveMode
    interval: float = 25.0
    pong_timeout: float = 5.0  # no pong within this after a ping -> reconnect
    ping_text: str = ""


@dataclass(frozen=True, slots=True)
class Limits:
    """A venue's budgets, per connection unless said otherwise."""

    topics_per_request: int = 20
    topics_per_connection: int = 100
    control_per_second: float = 5.0  # control messages sent per second
    requests_per_hour: int | None = None  # subscribe/unsubscribe requests per rolling hour (OKX: 480)
    connects_per_second: float = 3.0  # new connections per second, for the whole process (split by shards)
    max_age: float | None = None  # roll the connection after this many seconds (Binance: 24 h)
    answer_timeout: float = 5.0  # no ack/reject within this -> the request failed
    max_retries: int = 3  # a failed subscribe is retried this many times, then the topic is rejected


class VenueHooks(Protocol):
    """Venue specifics for :class:`connectors.ws.session.WsConnection`."""

    venue: str
    limits: Limits
    keepalive: KeepAlive

    def url(self) -> str:
        """The URL to connect to (may depend on nothing but the hooks' configuration)."""
        ...

    def requests(self, op: Op, topics: Sequence[str], first_id: int) -> list[Request]:
        """Requests covering ``topics``, batched within the venue's limits; ids counted from ``first_id``."""
        ...

    def classify(self, text: str) -> Control | None:
        """A control message, or ``None`` for a data frame (the machinery forwards it untouched)."""
        ...
