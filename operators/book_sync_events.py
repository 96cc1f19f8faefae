"""The book-sync machine's vocabulary (:mod:`operators.book_sync`): its config, the events in, the outputs out.

All small frozen msgspec Structs (cheap to pickle); times are integer epoch nanoseconds (``*_ns``), given by
the caller: the machine reads no clock.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec

from operators.book_results import IntegrityResult
from operators.book_sequencing import ResyncBy
from operators.events import BookDelta, BookStatus

_S = 1_000_000_000


class SyncConfig(msgspec.Struct, frozen=True):
    """``None`` disables a timer. ``resync_by`` ``None``: the venue's way."""

    depth: int = 400
    stale_after_ns: int | None = 30 * _S
    snapshot_wait_ns: int | None = 3 * _S
    backoff_base_ns: int = _S
    backoff_max_ns: int = 30 * _S
    max_buffered: int = 20_000
    resync_by: ResyncBy | None = None
    fetch_missing: bool = True  # an update before any snapshot, or no snapshot within snapshot_wait: fetch one


# ------------------------------------------------------------------------------------------------ events
class Track(msgspec.Struct, frozen=True):
    """Keep a book of ``instrument`` (``syncing``); ``subscribed``: its stream has started."""

    instrument: str
    now_ns: int
    subscribed: bool = False


class Subscribed(msgspec.Struct, frozen=True):
    instrument: str
    now_ns: int


class Unsubscribed(msgspec.Struct, frozen=True):
    """The stream stopped on purpose (moved, unsubscribed): the book keeps its state."""

    instrument: str


class Disconnected(msgspec.Struct, frozen=True):
    """The stream broke: the book is ``resyncing`` until the next snapshot (the reconnect resubscribes)."""

    instrument: str
    now_ns: int


class SnapshotFetched(msgspec.Struct, frozen=True):
    """The answer to :class:`FetchSnapshot`: a snapshot delta, or ``None`` and why."""

    instrument: str
    now_ns: int
    snapshot: BookDelta | None
    error: str = ""


class Invalidated(msgspec.Struct, frozen=True):
    """Whoever feeds us says the book is ``stale`` or ``resyncing`` (e.g. the upstream source re-syncs it)."""

    instrument: str
    status: BookStatus
    now_ns: int


class Untrack(msgspec.Struct, frozen=True):
    instrument: str


class Tick(msgspec.Struct, frozen=True):
    now_ns: int


SyncEvent = Track | Subscribed | Unsubscribed | Disconnected | SnapshotFetched | Invalidated | Untrack | Tick


# ----------------------------------------------------------------------------------------------- outputs
class StateChanged(msgspec.Struct, frozen=True):
    instrument: str
    status: BookStatus
    was: BookStatus | None  # None: a new book


class Resubscribe(msgspec.Struct, frozen=True):
    instrument: str


class FetchSnapshot(msgspec.Struct, frozen=True):
    instrument: str


class Resynced(msgspec.Struct, frozen=True):
    """A fetched snapshot made the book ``valid``; ``refs``: those of the buffered updates applied after it."""

    instrument: str
    snapshot: BookDelta
    refs: tuple[object, ...] = ()


class Failed(msgspec.Struct, frozen=True):
    """Why a book lost sync: an integrity result's ``kind``, ``fetch_failed``, ``fetch_merge_failed`` or
    ``buffer_overflow``; ``detail`` for the log."""

    instrument: str
    reason: str
    detail: str = ""


SyncOutput = StateChanged | Resubscribe | FetchSnapshot | Resynced | Failed


class Fed(IntEnum):
    """What :meth:`BookSync.on_delta` did with a delta."""

    APPLIED = 0  # applied (heartbeats included): the book changed or was confirmed
    SKIPPED = 1  # already contained in the book
    BUFFERED = 2  # held until a snapshot arrives
    REFUSED = 3  # the book waits for a snapshot: dropped
    FAILED = 4  # the book lost sync (see the outputs)
    UNKNOWN = 5  # no such book


class ReplayOutcome(msgspec.Struct, frozen=True):
    """``result``: the first failure, else the result of the last delta applied (snapshot or update)."""

    result: IntegrityResult
    applied: int  # buffered updates applied after the snapshot
    dropped: int  # buffered updates not applied (contained in the snapshot, or after a failure)
    refs: tuple[object, ...] = ()  # the refs of the applied ones
