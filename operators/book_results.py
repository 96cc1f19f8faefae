"""What :meth:`operators.orderbook.OrderBook.apply` returns: explicit, typed integrity results.

Every result has a class-level ``kind`` (a stable snake_case name for counters and logs). Failures
(:data:`IntegrityFailure`) put the book into ``resyncing``; :func:`is_failure` tells them apart.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from operators.events import BookStatus


class Applied(msgspec.Struct, frozen=True):
    """The delta was applied and every check passed; the book is ``valid``."""

    kind: ClassVar[str] = "applied"
    action: Literal["snapshot", "update"]


class Heartbeat(msgspec.Struct, frozen=True):
    """An empty update with ``seqId == prevSeqId`` that chains: nothing changed, the book is ``valid``."""

    kind: ClassVar[str] = "heartbeat"
    seq_id: int


class NotSynced(msgspec.Struct, frozen=True):
    """An update arrived while the book waits for a snapshot (``syncing`` or ``resyncing``); ignored."""

    kind: ClassVar[str] = "not_synced"
    status: BookStatus


class SequenceGap(msgspec.Struct, frozen=True):
    """``prevSeqId`` (``got``) did not equal the last ``seqId`` (``expected``)."""

    kind: ClassVar[str] = "sequence_gap"
    expected: int
    got: int


class ChecksumMismatch(msgspec.Struct, frozen=True):
    """The venue's checksum (``expected``) differs from the one computed over the book (``computed``)."""

    kind: ClassVar[str] = "checksum_mismatch"
    expected: int
    computed: int


class BookCrossed(msgspec.Struct, frozen=True):
    """After applying, the best bid was at or above the best ask."""

    kind: ClassVar[str] = "book_crossed"
    best_bid: str
    best_ask: str


class InvalidLevel(msgspec.Struct, frozen=True):
    """A level whose price is not a plain non-negative decimal string of at most 40 characters and 20 decimals
    (parsers normally catch the first part)."""

    kind: ClassVar[str] = "invalid_level"
    price: str
    size: str


IntegrityFailure = SequenceGap | ChecksumMismatch | BookCrossed | InvalidLevel
IntegrityResult = Applied | Heartbeat | NotSynced | SequenceGap | ChecksumMismatch | BookCrossed | InvalidLevel
FAILURES: tuple[type, ...] = (SequenceGap, ChecksumMismatch, BookCrossed, InvalidLevel)


def is_failure(result: IntegrityResult) -> bool:
    """True for results that put the book into ``resyncing``."""
    return isinstance(result, FAILURES)
