"""An exact, pure L2 order book with explicit integrity results (OKX v5 ``books`` rules). No I/O.

Levels keep the exchange's strings as sent. Ordering uses integer ticks: a price string is read as an integer
at the book's decimal scale (the most decimals seen so far; a finer price rescales the book once), so there
are no float keys and no ``Decimal`` on the hot path. Each side is a dict ``ticks -> Level`` plus a sorted
list of ticks (bids stored negated, so both lists are ascending and index 0 is the best level), plus a dict of
pre-joined ``"price:size"`` strings that makes the OKX checksum cheap.

Integrity (DESIGN.md, "Order books"), checked by :meth:`OrderBook.apply`:

* a snapshot replaces the book (its ``prevSeqId`` is -1 on OKX; it is not checked);
* an update needs a snapshot first (:class:`NotSynced`), and its ``prevSeqId`` must equal the last ``seqId``
  (:class:`SequenceGap`); an empty update with ``seqId == prevSeqId`` is a :class:`Heartbeat`; a reset
  (``seqId < prevSeqId``) is accepted when its ``prevSeqId`` chains; frames without ``seqId`` (older format)
  and updates after a snapshot without ``seqId`` are validated by checksum alone;
* a non-zero checksum is verified over the top 25 levels (:func:`okx_checksum`); 0 means "none sent";
* a crossed book (best bid >= best ask) is a failure (:class:`BookCrossed`).

On any failure ``status`` becomes ``resyncing`` and every update is refused (:class:`NotSynced`) until the next
snapshot. The caller (the connector) decides how to re-sync; see :mod:`operators.book_resync`.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left, insort
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import msgspec

from operators.events import BookDelta, BookStatus, BookView, Level

CHECKSUM_LEVELS = 25
_SIGN_BIT = 1 << 31
_CRC_MOD = 1 << 32


# ---------------------------------------------------------------------------------------------- results
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
    """A level whose price is not a plain non-negative decimal string (parsers normally catch this first)."""

    kind: ClassVar[str] = "invalid_level"
    price: str
    size: str


IntegrityFailure = SequenceGap | ChecksumMismatch | BookCrossed | InvalidLevel
IntegrityResult = Applied | Heartbeat | NotSynced | SequenceGap | ChecksumMismatch | BookCrossed | InvalidLevel
FAILURES: tuple[type, ...] = (SequenceGap, ChecksumMismatch, BookCrossed, InvalidLevel)


def is_failure(result: IntegrityResult) -> bool:
    """True for results that put the book into ``resyncing``."""
    return isinstance(result, FAILURES)


# --------------------------------------------------------------------------------------------- checksum
def _signed_crc(text: str) -> int:
    crc = zlib.crc32(text.encode())
    return crc - _CRC_MOD if crc >= _SIGN_BIT else crc


def _interleave(bids: Sequence[str], asks: Sequence[str]) -> list[str]:
    nb, na = len(bids), len(asks)
    n = min(nb, na)
    out = [s for pair in zip(bids[:n], asks[:n], strict=True) for s in pair]
    if nb > n:
        out.extend(bids[n:])
    elif na > n:
        out.extend(asks[n:])
    return out


def okx_checksum(bids: Sequence[Level], asks: Sequence[Level]) -> int:
    """OKX v5 book checksum: signed CRC32 of the top 25 bids/asks (best first), interleaved
    ``bid1:ask1:bid2:ask2...`` as ``price:size`` strings joined by ``:``; when one side has fewer levels the
    other side's remaining levels follow."""
    b = [f"{lv.price}:{lv.size}" for lv in bids[:CHECKSUM_LEVELS]]
    a = [f"{lv.price}:{lv.size}" for lv in asks[:CHECKSUM_LEVELS]]
    return _signed_crc(":".join(_interleave(b, a)))


# ------------------------------------------------------------------------------------------------- book
class _Rescale(Exception):
    def __init__(self, scale: int) -> None:
        self.scale = scale


class _BadPrice(Exception):
    def __init__(self, level: Level) -> None:
        self.level = level


class OrderBook:
    """One instrument's book. Picklable (compact state: the levels' ``"price:size"`` strings, best first)."""

    __slots__ = (
        "_aj",
        "_ak",
        "_al",
        "_bj",
        "_bk",
        "_bl",
        "_crc",
        "_scale",
        "checksum",
        "depth",
        "instrument",
        "last_action",
        "recv_ns",
        "seq_id",
        "status",
        "ts_ms",
        "venue",
    )  # fmt: skip

    def __init__(self, instrument: str, venue: str = "okx", depth: int = 400) -> None:
        if depth < 1:
            msg = f"depth must be >= 1, got {depth}"
            raise ValueError(msg)
        self.instrument = instrument
        self.venue = venue
        self.depth = depth
        self.status = BookStatus.SYNCING
        self.seq_id: int | None = None
        self.checksum = 0
        self.ts_ms = 0
        self.recv_ns = 0
        self.last_action: Literal["snapshot", "update"] = "snapshot"
        self._clear()

    def _clear(self) -> None:
        self._scale = 0
        self._bk: list[int] = []  # negated ticks, ascending: best bid first
        self._bl: dict[int, Level] = {}
        self._bj: dict[int, str] = {}
        self._ak: list[int] = []  # ticks, ascending: best ask first
        self._al: dict[int, Level] = {}
        self._aj: dict[int, str] = {}
        self._crc: int | None = None  # cached checksum of the current top levels

    # ------------------------------------------------------------------------------------- public API
    def apply(self, delta: BookDelta) -> IntegrityResult:
        """Apply one snapshot or update and check it. See the module docstring for the rules."""
        if delta.action == "snapshot":
            return self._apply_snapshot(delta)
        if self.status is BookStatus.SYNCING or self.status is BookStatus.RESYNCING:
            return NotSynced(self.status)
        seq, prev = delta.seq_id, delta.prev_seq_id
        if seq is not None and prev is not None and self.seq_id is not None:
            if prev != self.seq_id:
                return self._fail(SequenceGap(self.seq_id, prev))
            if seq == prev and not delta.bids and not delta.asks:
                self.status = BookStatus.VALID
                self.recv_ns = delta.recv_ns
                return Heartbeat(seq)
        try:
            dirty = self._update_side(delta.bids, True)
            dirty = self._update_side(delta.asks, False) or dirty
        except _BadPrice as exc:
            return self._fail(InvalidLevel(exc.level.price, exc.level.size))
        if dirty:
            self._crc = None
        self._truncate()
        return self._finish(delta)

    def view(self, levels: int = 400) -> BookView:
        """The top ``levels`` per side, best first, with the book's status and last frame's metadata."""
        return BookView(
            venue=self.venue,
            instrument=self.instrument,
            status=self.status,
            bids=tuple(map(self._bl.__getitem__, self._bk[:levels])),
            asks=tuple(map(self._al.__getitem__, self._ak[:levels])),
            ts_ms=self.ts_ms,
            recv_ns=self.recv_ns,
            checksum=self.checksum,
            seq_id=self.seq_id,
            action=self.last_action,
        )

    def best_bid(self) -> Level | None:
        return self._bl[self._bk[0]] if self._bk else None

    def best_ask(self) -> Level | None:
        return self._al[self._ak[0]] if self._ak else None

    def __len__(self) -> int:
        """Number of levels on both sides."""
        return len(self._bk) + len(self._ak)

    def computed_checksum(self) -> int:
        """The OKX checksum of the book as it is now."""
        if self._crc is None:
            bj, aj = self._bj, self._aj
            b = list(map(bj.__getitem__, self._bk[:CHECKSUM_LEVELS]))
            a = list(map(aj.__getitem__, self._ak[:CHECKSUM_LEVELS]))
            self._crc = _signed_crc(":".join(_interleave(b, a)))
        return self._crc

    def mark_stale(self) -> None:
        """No frame for too long: ``valid`` -> ``stale`` (the next good update makes it ``valid`` again)."""
        if self.status is BookStatus.VALID:
            self.status = BookStatus.STALE

    def mark_resyncing(self) -> None:
        """The connector is re-syncing this book: refuse updates until the next snapshot."""
        self.status = BookStatus.RESYNCING

    # ------------------------------------------------------------------------------------------ internals
    def _fail(self, result: IntegrityFailure) -> IntegrityFailure:
        self.status = BookStatus.RESYNCING
        return result

    def _finish(self, delta: BookDelta) -> IntegrityResult:
        self.ts_ms = delta.ts_ms
        self.recv_ns = delta.recv_ns
        self.last_action = delta.action
        if delta.seq_id is not None:
            self.seq_id = delta.seq_id
        self.checksum = delta.checksum
        if delta.checksum:
            computed = self.computed_checksum()
            if computed != delta.checksum:
                return self._fail(ChecksumMismatch(delta.checksum, computed))
        if self._bk and self._ak and -self._bk[0] >= self._ak[0]:
            return self._fail(BookCrossed(self._bl[self._bk[0]].price, self._al[self._ak[0]].price))
        self.status = BookStatus.VALID
        return Applied(delta.action)

    def _apply_snapshot(self, delta: BookDelta) -> IntegrityResult:
        self._clear()
        self.seq_id = None
        try:
            self._update_side(delta.bids, True)
            self._update_side(delta.asks, False)
        except _BadPrice as exc:
            self._clear()
            return self._fail(InvalidLevel(exc.level.price, exc.level.size))
        self._truncate()
        return self._finish(delta)

    def _update_side(self, levels: Sequence[Level], bid: bool) -> bool:
        """Apply levels to one side; True when the top ``CHECKSUM_LEVELS`` may have changed."""
        while True:
            try:
                return self._update_side_at_scale(levels, bid)
            except _Rescale as exc:  # a finer price than any before: rescale, then redo (idempotent)
                self._rescale(exc.scale)

    def _update_side_at_scale(self, levels: Sequence[Level], bid: bool) -> bool:
        if bid:
            keys, book, joined = self._bk, self._bl, self._bj
        else:
            keys, book, joined = self._ak, self._al, self._aj
        scale = self._scale
        dirty = False
        for lv in levels:
            price = lv.price
            whole, _, frac = price.partition(".")
            n = len(frac)
            if n == scale:
                digits = whole + frac
            elif n < scale:
                digits = whole + frac + "0" * (scale - n)
            else:
                raise _Rescale(n)
            if not (digits.isdigit() and digits.isascii()):
                raise _BadPrice(lv)
            k = -int(digits) if bid else int(digits)
            size = lv.size
            if size == "0" or not size.strip("0."):
                if k in book:
                    if not dirty and (len(keys) <= CHECKSUM_LEVELS or k <= keys[CHECKSUM_LEVELS - 1]):
                        dirty = True
                    del book[k]
                    del joined[k]
                    del keys[bisect_left(keys, k)]
                continue
            if not dirty and (len(keys) < CHECKSUM_LEVELS or k <= keys[CHECKSUM_LEVELS - 1]):
                dirty = True
            if k not in book:
                insort(keys, k)
            book[k] = lv
            joined[k] = f"{price}:{size}"
        return dirty

    def _rescale(self, scale: int) -> None:
        factor = 10 ** (scale - self._scale)
        for keys, book, joined in ((self._bk, self._bl, self._bj), (self._ak, self._al, self._aj)):
            keys[:] = [k * factor for k in keys]
            items = [(k * factor, v, joined[k]) for k, v in book.items()]
            book.clear()
            joined.clear()
            for k, v, j in items:
                book[k] = v
                joined[k] = j
        self._scale = scale

    def _truncate(self) -> None:
        depth = self.depth
        for keys, book, joined in ((self._bk, self._bl, self._bj), (self._ak, self._al, self._aj)):
            if len(keys) > depth:
                for k in keys[depth:]:
                    del book[k]
                    del joined[k]
                del keys[depth:]

    # -------------------------------------------------------------------------------------------- pickle
    def __getstate__(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "venue": self.venue,
            "depth": self.depth,
            "status": self.status.value,
            "seq_id": self.seq_id,
            "checksum": self.checksum,
            "ts_ms": self.ts_ms,
            "recv_ns": self.recv_ns,
            "last_action": self.last_action,
            "bids": [self._bj[k] for k in self._bk],
            "asks": [self._aj[k] for k in self._ak],
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.instrument = state["instrument"]
        self.venue = state["venue"]
        self.depth = state["depth"]
        self.status = BookStatus(state["status"])
        self.seq_id = state["seq_id"]
        self.checksum = state["checksum"]
        self.ts_ms = state["ts_ms"]
        self.recv_ns = state["recv_ns"]
        self.last_action = state["last_action"]
        self._clear()
        self._update_side([Level(*j.split(":", 1)) for j in state["bids"]], True)
        self._update_side([Level(*j.split(":", 1)) for j in state["asks"]], False)

    def __repr__(self) -> str:
        return (
            f"OrderBook({self.instrument!r}, venue={self.venue!r}, status={self.status.value}, "
            f"bids={len(self._bk)}, asks={len(self._ak)}, seq_id={self.seq_id})"
        )
