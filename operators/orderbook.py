"""An exact, pure L2 order book with explicit integrity results (OKX v5 ``books`` rules). No I/O.

Levels keep the exchange's strings as sent. Ordering uses integer ticks: a price string is read as an integer
at the book's decimal scale (the most decimals seen so far; a finer price rescales the book once), so there
are no float keys and no ``Decimal`` on the hot path.

Each side is a key array and a parallel list in ascending key order, BEST LAST: the keys (integer ticks, asks
negated; an ``array('q')``, or a list once a key does not fit 63 bits) and the parser's ``Level`` objects; plus,
once the book has seen a checksum (OKX), the ``"price:size"`` strings of the top 25 levels, best first, kept up
to date so the checksum is one join and one CRC. A changed level is found by :mod:`operators.book_keys` (in C
when built: the key read from the price text, a binary search of the int64 keys; else, and for every case the C
step leaves to it, the exact Python path: rescale, junk, wide keys).
Why (issue 15, benchmarks/RESULTS.md "Scaling with the number of pairs"): with hundreds of books a book is cold
in the CPU caches when its next update comes, so what counts is how many cache lines an update touches. Almost
every change is within a few dozen levels of the best, so best-last makes an insert or delete move the few
entries above it, not the whole side; contiguous int64 keys and no per-book price-text cache leave the level
objects as the only scattered memory an update reads; a book without checksums (Binance, Bybit) keeps no top
strings.

Integrity (docs/CONTRACTS.md, "Order books"), checked by :meth:`OrderBook.apply`:

* a snapshot replaces the book (its ``prevSeqId`` is -1 on OKX; it is not checked);
* an update needs a snapshot first (:class:`NotSynced`), and its ``prevSeqId`` must equal the last ``seqId``
  (:class:`SequenceGap`); an empty update with ``seqId == prevSeqId`` is a :class:`Heartbeat`; a reset
  (``seqId < prevSeqId``) is accepted when its ``prevSeqId`` chains; frames without ``seqId`` (older format)
  and updates after a snapshot without ``seqId`` are validated by checksum alone;
* a non-zero checksum is verified over the top 25 levels (:func:`operators.book_checksum.okx_checksum`); 0 means
  "none sent";
* a crossed book (best bid >= best ask) is a failure (:class:`BookCrossed`).

On any failure ``status`` becomes ``resyncing`` and every update is refused (:class:`NotSynced`) until the next
snapshot. Deciding how to re-sync is :mod:`operators.book_sync`'s (the sync machine every venue shares).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any, Literal

from operators import book_keys
from operators.book_checksum import CHECKSUM_LEVELS, interleave, signed_crc
from operators.book_keys import BadPrice, Rescale, exact_locate, key_store, level_key
from operators.book_results import (
    Applied,
    BookCrossed,
    ChecksumMismatch,
    Heartbeat,
    IntegrityFailure,
    IntegrityResult,
    InvalidLevel,
    NotSynced,
    SequenceGap,
)
from operators.events import BookDelta, BookStatus, BookView, Level

_APPLIED_UPDATE = Applied("update")
_APPLIED_SNAPSHOT = Applied("snapshot")


def _best_first(lvls: list[Level], levels: int) -> tuple[Level, ...]:
    """The best ``levels`` of a best-last side, best first (``levels`` counted as ``lvls[:levels]`` would)."""
    n = len(lvls)
    if levels >= n:
        return tuple(lvls[::-1])
    return tuple(lvls[: n - levels - 1 : -1] if levels > 0 else lvls[::-1][:levels])


def _top_strings(lvls: list[Level]) -> list[str]:
    """``"price:size"`` of the best CHECKSUM_LEVELS levels of a best-last side, best first."""
    return [f"{lv.price}:{lv.size}" for lv in lvls[: -CHECKSUM_LEVELS - 1 : -1]]


class OrderBook:
    """One instrument's book. Picklable; its pickled state is compact (the levels' strings, best first).

    ``depth`` is how many levels per side are kept after each apply. Keep it at least the channel's depth
    (OKX ``books``: 400, ``books50-l2-tbt``: 50): a shallower book loses the levels that move up when the top
    empties, which then shows as checksum mismatches. Publish fewer levels with :meth:`view` instead.
    """

    __slots__ = (
        "_ak",
        "_al",
        "_at",
        "_bk",
        "_bl",
        "_bt",
        "_scale",
        "_tops",
        "checksum",
        "depth",
        "instrument",
        "last_action",
        "recv_ns",
        "seq_id",
        "status",
        "ts_ms",
        "venue",
    )

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
        self._scale = 0  # decimals of the tick unit; only grows
        self._clear()

    def _clear(self) -> None:
        self._bk: array[int] | list[int] = array("q")  # ticks, ascending: best bid last
        self._bl: list[Level] = []  # the levels of _bk, in the same order
        self._ak: array[int] | list[int] = array("q")  # negated ticks, ascending: best ask last
        self._al: list[Level] = []
        # "price:size" of the best CHECKSUM_LEVELS, best first: built at the first checksum (_finish), then kept
        self._tops = False
        self._bt: list[str] = []
        self._at: list[str] = []

    # ------------------------------------------------------------------------------------- public API
    def apply(self, delta: BookDelta) -> IntegrityResult:
        """Apply one snapshot or update and check it. See the module docstring for the rules.

        ``delta.instrument`` is not compared with the book's: routing deltas to books is the caller's job."""
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
                self.ts_ms, self.recv_ns = delta.ts_ms, delta.recv_ns  # unchanged as of this heartbeat
                return Heartbeat(seq)
        try:
            try:
                if delta.bids:
                    self._update_side(delta.bids, True)
                if delta.asks:
                    self._update_side(delta.asks, False)
            except Rescale as exc:
                self._rescale_and_redo(delta, exc.scale)
        except BadPrice as exc:
            return self._fail(InvalidLevel(exc.level.price, exc.level.size))
        if len(self._bl) > self.depth or len(self._al) > self.depth:
            self._truncate()
        return self._finish(delta)

    def view(self, levels: int = 400) -> BookView:
        """The top ``levels`` per side, best first, with the book's status and last frame's metadata."""
        return BookView(
            venue=self.venue,
            instrument=self.instrument,
            status=self.status,
            bids=_best_first(self._bl, levels),
            asks=_best_first(self._al, levels),
            ts_ms=self.ts_ms,
            recv_ns=self.recv_ns,
            checksum=self.checksum,
            seq_id=self.seq_id,
            action=self.last_action,
        )

    def best_bid(self) -> Level | None:
        return self._bl[-1] if self._bl else None

    def best_ask(self) -> Level | None:
        return self._al[-1] if self._al else None

    def __len__(self) -> int:
        """Number of levels on both sides."""
        return len(self._bl) + len(self._al)

    def computed_checksum(self) -> int:
        """The OKX checksum of the book as it is now."""
        if self._tops:
            return signed_crc(":".join(interleave(self._bt, self._at)))
        return signed_crc(":".join(interleave(_top_strings(self._bl), _top_strings(self._al))))

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
            if not self._tops:
                self._bt, self._at, self._tops = _top_strings(self._bl), _top_strings(self._al), True
            computed = signed_crc(":".join(interleave(self._bt, self._at)))
            if computed != delta.checksum:
                return self._fail(ChecksumMismatch(delta.checksum, computed))
        if self._bk and self._ak and self._bk[-1] >= -self._ak[-1]:
            return self._fail(BookCrossed(self._bl[-1].price, self._al[-1].price))
        self.status = BookStatus.VALID
        return _APPLIED_UPDATE if delta.action == "update" else _APPLIED_SNAPSHOT

    def _apply_snapshot(self, delta: BookDelta) -> IntegrityResult:
        self.seq_id = None
        while True:
            self._clear()
            try:
                self._load_side(delta.bids, True)
                self._load_side(delta.asks, False)
                break
            except Rescale as exc:  # a finer price than any before: rescale and start again
                self._scale = exc.scale
            except BadPrice as exc:
                self._clear()
                return self._fail(InvalidLevel(exc.level.price, exc.level.size))
        self._truncate()
        return self._finish(delta)

    def _load_side(self, levels: Sequence[Level], bid: bool) -> None:
        """Fill one (cleared) side from a snapshot: the last level of a price wins, size 0 removes it."""
        scale, sign = self._scale, 1 if bid else -1
        book: dict[int, Level] = {}
        for lv in levels:
            k = level_key(lv, scale, sign)
            size = lv.size
            if size == "0" or not size.strip("0."):
                book.pop(k, None)
            else:
                book[k] = lv
        keys = sorted(book)
        lvls = list(map(book.__getitem__, keys))
        if bid:
            self._bk, self._bl = key_store(keys), lvls
        else:
            self._ak, self._al = key_store(keys), lvls

    def _rescale_and_redo(self, delta: BookDelta, scale: int) -> None:
        """A finer price than any before: rescale, then apply the whole delta again (idempotent: every level
        sets its final state, whatever part of the delta was applied before)."""
        while True:
            factor = 10 ** (scale - self._scale)
            self._bk = key_store([k * factor for k in self._bk])
            self._ak = key_store([k * factor for k in self._ak])
            self._scale = scale
            try:
                self._update_side(delta.bids, True)
                self._update_side(delta.asks, False)
                return
            except Rescale as exc:
                scale = exc.scale

    def _update_side(self, levels: Sequence[Level], bid: bool) -> None:
        """Apply one side's changed levels (best last: level ``i`` of ``n`` is the ``n - 1 - i``-th best).
        Invariant after every level, while ``_tops``: ``top == ["p:s" of the best N levels, best first]``."""
        if bid:
            keys, lvls, top, sign = self._bk, self._bl, self._bt, 1
        else:
            keys, lvls, top, sign = self._ak, self._al, self._at, -1
        n_top = CHECKSUM_LEVELS
        tops = self._tops
        scale = self._scale
        locate = book_keys.locate if type(keys) is array else None
        for lv in levels:
            price = lv.price
            n = len(keys)
            r = None if locate is None else locate(keys, price, scale, sign)  # type: ignore[arg-type]  # an array
            if r is None:  # the exact path: no C step, a wide key, or a price it leaves to us (raises why)
                r = exact_locate(keys, lv, scale, sign)
            found = r >= 0
            i = r if found else -r - 1
            size = lv.size
            if size == "0" or not size.strip("0."):
                if found:
                    del keys[i]
                    del lvls[i]
                    if tops and n - 1 - i < n_top:
                        del top[n - 1 - i]
                        if n > n_top:  # the 26th best moves up
                            nxt = lvls[n - 1 - n_top]
                            top.append(f"{nxt.price}:{nxt.size}")
            elif found:
                lvls[i] = lv
                if tops and n - 1 - i < n_top:
                    top[n - 1 - i] = f"{price}:{size}"
            else:
                k = level_key(lv, scale, sign)
                try:
                    keys.insert(i, k)
                except OverflowError:  # past 63 bits: this side keeps Python ints (until a snapshot or rescale)
                    keys, locate = self._widen(bid), None
                    keys.insert(i, k)
                lvls.insert(i, lv)
                if tops and n - i < n_top:
                    top.insert(n - i, f"{price}:{size}")
                    if len(top) > n_top:
                        top.pop()

    def _widen(self, bid: bool) -> list[int]:
        keys = list(self._bk if bid else self._ak)
        if bid:
            self._bk = keys
        else:
            self._ak = keys
        return keys

    def _truncate(self) -> None:
        depth = self.depth
        for keys, lvls, top in ((self._bk, self._bl, self._bt), (self._ak, self._al, self._at)):
            if len(keys) > depth:  # the worst levels come first (rare but for snapshots: moves the whole side)
                del keys[: len(keys) - depth]
                del lvls[: len(lvls) - depth]
                del top[depth:]

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
            "scale": self._scale,
            "bids": [s for lv in reversed(self._bl) for s in (lv.price, lv.size)],  # best first, as before
            "asks": [s for lv in reversed(self._al) for s in (lv.price, lv.size)],
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
        self._scale = state["scale"]
        self._clear()
        for side, bid in (("bids", True), ("asks", False)):
            flat: list[str] = state[side]
            self._load_side([Level(p, s) for p, s in zip(flat[::2], flat[1::2], strict=True)], bid)

    def __repr__(self) -> str:
        return (
            f"OrderBook({self.instrument!r}, venue={self.venue!r}, status={self.status.value}, "
            f"bids={len(self._bl)}, asks={len(self._al)}, seq_id={self.seq_id})"
        )
