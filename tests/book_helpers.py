"""Builders and an independent, naive reference of the OKX book rules, for the order-book tests."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Literal

from operators.events import BookDelta, Level

Levels = Sequence[tuple[str, str]]


def levels(pairs: Levels) -> tuple[Level, ...]:
    return tuple(Level(p, s) for p, s in pairs)


def delta(
    bids: Levels = (),
    asks: Levels = (),
    *,
    action: Literal["snapshot", "update"] = "update",
    seq: int | None = None,
    prev: int | None = None,
    checksum: int = 0,
    ts_ms: int = 1_700_000_000_000,
    inst: str = "BTC-USDT",
) -> BookDelta:
    return BookDelta(
        venue="okx",
        instrument=inst,
        action=action,
        bids=levels(bids),
        asks=levels(asks),
        ts_ms=ts_ms,
        recv_ns=ts_ms * 1_000_000,
        checksum=checksum,
        seq_id=seq,
        prev_seq_id=prev,
    )


def snapshot(bids: Levels = (), asks: Levels = (), **kw: object) -> BookDelta:
    return delta(bids, asks, action="snapshot", **kw)  # type: ignore[arg-type]


def naive_checksum(bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> int:
    """OKX's documented algorithm, written the slow obvious way."""
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts.append(f"{bids[i][0]}:{bids[i][1]}")
        if i < len(asks):
            parts.append(f"{asks[i][0]}:{asks[i][1]}")
    crc = zlib.crc32(":".join(parts).encode())
    return crc - 2**32 if crc > 2**31 - 1 else crc


_PRICE = re.compile(r"[0-9]+\.?[0-9]*|\.[0-9]+")


def valid_price(price: str) -> bool:
    """The book's rule: a plain decimal, at most 40 characters and 20 decimals."""
    return bool(_PRICE.fullmatch(price)) and len(price) <= 40 and len(price.partition(".")[2]) <= 20


class _Invalid(Exception):
    pass


class NaiveBook:
    """Reference model: a dict Decimal -> (price, size) per side, sorted() on every read."""

    def __init__(self, depth: int = 400) -> None:
        self.depth = depth
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}
        self.status = "syncing"
        self.seq: int | None = None

    def sorted_bids(self) -> list[tuple[str, str]]:
        return [self.bids[k] for k in sorted(self.bids, reverse=True)]

    def sorted_asks(self) -> list[tuple[str, str]]:
        return [self.asks[k] for k in sorted(self.asks)]

    def _set(self, side: dict[Decimal, tuple[str, str]], pairs: Sequence[Level]) -> None:
        for lv in pairs:
            if not valid_price(lv.price):
                raise _Invalid
            key = Decimal(lv.price)
            if Decimal(lv.size) == 0:
                side.pop(key, None)
            else:
                side[key] = (lv.price, lv.size)

    def _truncate(self) -> None:
        for side, reverse in ((self.bids, True), (self.asks, False)):
            for k in sorted(side, reverse=reverse)[self.depth :]:
                del side[k]

    def checksum(self) -> int:
        return naive_checksum(self.sorted_bids(), self.sorted_asks())

    def would_be(self, d: BookDelta) -> NaiveBook:
        """A copy with ``d``'s levels applied (no checks), e.g. to compute the checksum a venue would send."""
        copy = NaiveBook(self.depth)
        if d.action == "update":
            copy.bids, copy.asks = dict(self.bids), dict(self.asks)
        try:
            copy._set(copy.bids, d.bids)
            copy._set(copy.asks, d.asks)
        except _Invalid:
            pass
        copy._truncate()
        return copy

    def apply(self, d: BookDelta) -> str:
        """Returns the expected result kind."""
        if d.action == "snapshot":
            self.bids, self.asks = {}, {}
            self.seq = None
        else:
            if self.status in ("syncing", "resyncing"):
                return "not_synced"
            if d.seq_id is not None and d.prev_seq_id is not None and self.seq is not None:
                if d.prev_seq_id != self.seq:
                    self.status = "resyncing"
                    return "sequence_gap"
                if d.seq_id == d.prev_seq_id and not d.bids and not d.asks:
                    self.status = "valid"
                    return "heartbeat"
        try:
            self._set(self.bids, d.bids)
            self._set(self.asks, d.asks)
        except _Invalid:
            if d.action == "snapshot":
                self.bids, self.asks = {}, {}
            self.status = "resyncing"
            return "invalid_level"
        self._truncate()
        if d.seq_id is not None:
            self.seq = d.seq_id
        if d.checksum and d.checksum != self.checksum():
            self.status = "resyncing"
            return "checksum_mismatch"
        if self.bids and self.asks and max(self.bids) >= min(self.asks):
            self.status = "resyncing"
            return "book_crossed"
        self.status = "valid"
        return "applied"


class RecordingControl:
    """A book shard's control (``ShardControl``) that records what a processor asks of it: the topics it
    resubscribes and the REST snapshots it fetches. For driving a venue's book processor with ws events directly."""

    connections = 1
    reconnects = 0

    def __init__(self) -> None:
        self.resubscribed: list[str] = []
        self.fetched: list[str] = []

    def resubscribe(self, topic: str) -> None:
        self.resubscribed.append(topic)

    def fetch(self, topic: str) -> None:
        self.fetched.append(topic)
