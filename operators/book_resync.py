"""Re-syncing one book from a REST snapshot plus the WebSocket updates buffered while it was fetched. Pure.

A standalone front to :func:`operators.book_sync.replay` (the sync machine does this itself for the books it
keeps); the rules are the venue's :mod:`operators.book_sequencing` policy, OKX's by default.

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
2. With ``S = snapshot.seq_id`` known: the buffered updates before the first one whose ``prev_seq_id == S``
   are already contained in the snapshot (``seq_id <= S``) and are dropped; that first one and all after it
   are applied in order with the normal rules (so each must chain, heartbeats and resets included; a reset
   ``seqId < prevSeqId`` is kept because it is found by its ``prevSeqId``, not dropped for a small
   ``seqId``). An update newer than ``S`` (``seq_id > S``) met before one that chains means the snapshot and
   the buffer do not meet: the result is :class:`~operators.orderbook.SequenceGap` (expected ``S``, got its
   ``prev_seq_id``), the book stays ``resyncing``: fetch a new snapshot.
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

from operators.book_sequencing import OKX, Sequencing
from operators.book_sync import ReplayOutcome, replay
from operators.events import BookDelta
from operators.orderbook import OrderBook

ResyncOutcome = ReplayOutcome  # the name this module has always used


class BufferOverflow(Exception):
    """More updates buffered than ``max_buffered``: the REST answer is too late, start again."""


class SnapshotResync:
    """Buffers one instrument's WS updates while its REST snapshot is pending (the OKX rules by default)."""

    __slots__ = ("_buffer", "max_buffered", "sequencing")

    def __init__(self, max_buffered: int = 20_000, sequencing: Sequencing = OKX) -> None:
        self.max_buffered = max_buffered
        self.sequencing = sequencing
        self._buffer: list[tuple[BookDelta, object]] = []

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
        self._buffer.append((update, None))

    def complete(self, book: OrderBook, snapshot: BookDelta) -> ReplayOutcome:
        """Apply ``snapshot`` then the buffered updates that follow it (see the module docstring). Empties the
        buffer."""
        if snapshot.action != "snapshot":
            msg = f"complete() needs a snapshot, got an {snapshot.action}"
            raise ValueError(msg)
        buffered, self._buffer = self._buffer, []
        return replay(book, snapshot, buffered, self.sequencing)
