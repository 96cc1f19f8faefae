"""What a shard's I/O thread hands to its Bytewax partition, in arrival order (one deque per shard).

``Frame`` is the hot path (one per received data frame): a slotted dataclass, created once, never copied.
The rest are rare lifecycle events that a :class:`connectors.ws.source.ShardProcessor` reacts to.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MAX_BACKLOG = 10_000
"""Events a shard may hold for its worker before its connections stop reading (see :class:`EventQueue`)."""


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


class EventQueue(deque):  # type: ignore[type-arg]
    """A shard's hand-off: the I/O thread appends (``emit``), the worker drains it with ``popleft``.

    Bounded by backpressure, not by dropping: once ``max_backlog`` events wait, each connection of the shard
    stops reading its socket (:meth:`full`) until the worker has caught up, so a worker that falls behind
    (a stall, a loaded machine) holds at most ``max_backlog`` frames in memory and the rest waits in the
    kernel's and the venue's buffers. A venue that drops a slow reader costs a reconnect and a resync, never
    memory. (A deque's append and popleft are atomic under the GIL: no lock.)
    """

    def __init__(self, max_backlog: int = MAX_BACKLOG) -> None:
        super().__init__()
        self.max_backlog = max_backlog

    def __call__(self, event: object) -> None:
        self.append(event)

    def full(self) -> bool:
        return len(self) >= self.max_backlog


def book_by_book(events: list[WsEvent], key: Callable[[str], str]) -> list[WsEvent]:
    """``events`` with each run of frames between two other events regrouped by ``key(frame.text)`` (the
    instrument): each key's frames in their order, keys in the order they first appear; other events keep their
    place. Why: a batch then works on one book after another, so a book's memory is fetched into the CPU cache
    once per batch instead of once per frame (at hundreds of pairs a book touched once per frame is cold every
    time: benchmarks/RESULTS.md, "Scaling"). The order across instruments is not part of any contract."""
    out: list[WsEvent] = []
    run: dict[str, list[WsEvent]] = {}
    for ev in events:
        if type(ev) is Frame:
            k = key(ev.text)
            if k in run:
                run[k].append(ev)
            else:
                run[k] = [ev]
        else:
            for frames in run.values():
                out.extend(frames)
            run = {}
            out.append(ev)
    for frames in run.values():
        out.extend(frames)
    return out
