"""Re-syncing one book from a REST snapshot plus the WebSocket updates buffered while it was fetched. Pure.

Use (one :class:`SnapshotResync` per instrument being re-synced)::

    book.mark_resyncing()                  # the book refuses updates from now on (NotSynced)
    pending = SnapshotResync()
    ... start the REST request ...
    pending.add(update)                    # every WS update of that instrument until the REST answer is in
    outcome = pending.complete(book, rest_snapshot)
    if is_failure(outcome.result): ...     # start again (new REST request), the book stays `resyncing`

What :meth:`SnapshotResync.complete` does, precisely:

1. It applies the snapshot (``book.apply``; ``prevSeqId`` is not checked on snapshots). If that fails
   (checksum, crossed), the buffer is dropped and the failure returned.
2. With ``S = snapshot.seq_id`` known: the buffered updates *before* the first one whose ``prev_seq_id == S``
   are already contained in the snapshot and are dropped; that first one and all after it are applied in order
   with the normal rules (so each must chain, heartbeats and resets included; a reset ``seqId < prevSeqId`` is
   kept because it is found by its ``prevSeqId``, not dropped for a small ``seqId``). When no buffered update
   chains: if every buffered update has ``seq_id <= S`` the snapshot is newer than all of them and they are
   all dropped (the book is valid at the snapshot); otherwise the snapshot and the buffer do not meet and the
   result is :class:`~operators.orderbook.SequenceGap` (expected ``S``, got the ``prev_seq_id`` of the first
   update newer than ``S``), the book stays ``resyncing``: fetch a new snapshot.
3. With no ``seq_id`` on the snapshot (OKX REST bodies carry none): updates with ``ts_ms <`` the snapshot's
   ``ts_ms`` are dropped and the rest applied in order, the first one without a chain check (the book has no
   ``seq_id`` yet; later ones must chain to it). The boundary is inclusive on purpose: OKX updates carry
   absolute sizes, so re-applying, in order, an update the snapshot already contains is harmless, while
   skipping one that it does not contain would leave the book silently wrong. A non-zero checksum is the only
   proof; with ``checksum == 0`` the merge is best effort, which is why a WebSocket snapshot (resubscribe) is
   preferred when available.

Updates that fail to apply stop the replay: the result is that failure, the book is ``resyncing``.
A WebSocket *snapshot* arriving while the REST request is pending makes the REST answer unnecessary: apply it
to the book directly and drop this object (:meth:`add` refuses snapshots).
"""

from __future__ import annotations

import msgspec

from operators.events import BookDelta
from operators.orderbook import IntegrityResult, OrderBook, SequenceGap, is_failure


class ResyncOutcome(msgspec.Struct, frozen=True):
    """``result``: the first failure, else the result of the last delta applied (snapshot or update)."""

    result: IntegrityResult
    applied: int  # buffered updates applied after the snapshot
    dropped: int  # buffered updates not applied (contained in the snapshot, or after a failure)


class BufferOverflow(Exception):
    """More updates buffered than ``max_buffered``: the REST answer is too late, start again."""


class SnapshotResync:
    """Buffers one instrument's WS updates while its REST snapshot is pending."""

    __slots__ = ("_buffer", "max_buffered")

    def __init__(self, max_buffered: int = 20_000) -> None:
        self.max_buffered = max_buffered
        self._buffer: list[BookDelta] = []

    def __len__(self) -> int:
        return len(self._buffer)

    def add(self, update: BookDelta) -> None:
        """Buffer one update. Raises ``ValueError`` for a snapshot, :class:`BufferOverflow` when full."""
        if update.action != "update":
            msg = "SnapshotResync buffers updates only; apply a WebSocket snapshot to the book directly"
            raise ValueError(msg)
        if len(self._buffer) >= self.max_buffered:
            msg = f"more than {self.max_buffered} updates buffered for {update.instrument} during a resync"
            raise BufferOverflow(msg)
        self._buffer.append(update)

    def complete(self, book: OrderBook, snapshot: BookDelta) -> ResyncOutcome:
        """Apply ``snapshot`` then the buffered updates that follow it (see the module docstring). Empties the
        buffer."""
        if snapshot.action != "snapshot":
            msg = f"complete() needs a snapshot, got an {snapshot.action}"
            raise ValueError(msg)
        buffered, self._buffer = self._buffer, []
        result = book.apply(snapshot)
        if is_failure(result):
            return ResyncOutcome(result, 0, len(buffered))
        start = _first_to_apply(buffered, snapshot)
        if isinstance(start, SequenceGap):
            book.mark_resyncing()
            return ResyncOutcome(start, 0, len(buffered))
        applied = 0
        for update in buffered[start:]:
            result = book.apply(update)
            if is_failure(result):
                return ResyncOutcome(result, applied, len(buffered) - applied)
            applied += 1
        return ResyncOutcome(result, applied, len(buffered) - applied)


def _first_to_apply(buffered: list[BookDelta], snapshot: BookDelta) -> int | SequenceGap:
    """Index of the first buffered update to apply after ``snapshot`` (``len(buffered)``: none)."""
    seq = snapshot.seq_id
    if seq is None:
        ts = snapshot.ts_ms
        for i, u in enumerate(buffered):
            if u.ts_ms >= ts:
                return i
        return len(buffered)
    for i, u in enumerate(buffered):
        if u.prev_seq_id == seq and u.seq_id is not None:
            return i
    for u in buffered:
        if u.seq_id is not None and u.seq_id > seq:
            return SequenceGap(seq, u.prev_seq_id if u.prev_seq_id is not None else u.seq_id)
    return len(buffered)
