"""What a shard's I/O thread hands to its Bytewax partition, in arrival order (one deque per shard).

``Frame`` is the hot path (one per received data frame): a slotted dataclass, created once, never copied.
The rest are rare lifecycle events that a :class:`connectors.ws.source.ShardProcessor` reacts to.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Frame:
    """A data frame exactly as received; ``recv_ns`` is ``time.time_ns()`` right after the read."""

    text: str
    recv_ns: int
    conn: int


@dataclass(frozen=True, slots=True)
class Connected:
    conn: int


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A connection went away (``planned`` when we closed it); its topics' streams are broken."""

    conn: int
    reason: str
    topics: tuple[str, ...]
    planned: bool = False
    rejected: str = ""  # a connectors.untrusted rejection reason when a hostile frame caused it (too_large)


@dataclass(frozen=True, slots=True)
class Subscribed:
    conn: int
    topic: str


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    conn: int
    topic: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """The venue refused ``topic`` after every retry; it stays out until it leaves the set."""

    topic: str
    reason: str


@dataclass(frozen=True, slots=True)
class TopicsChecked:
    """A poll of the wanted set finished; ``ok=False``: the store was unreachable, nothing changed."""

    ts_ms: int
    ok: bool
    topics: tuple[str, ...]  # this shard's topics after the poll
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Fetched:
    """Result of a REST fetch asked for with ``ShardControl.fetch``: ``body`` or ``error``."""

    topic: str
    body: str | None
    error: str | None
    recv_ns: int


@dataclass(frozen=True, slots=True)
class Crashed:
    """The I/O thread died of a bug: the partition re-raises it so the dataflow stops loudly."""

    error: str


WsEvent = Frame | Connected | Disconnected | Subscribed | Unsubscribed | Rejected | TopicsChecked | Fetched | Crashed
