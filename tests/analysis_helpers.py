"""Hand-built books for the analysis tests."""

from __future__ import annotations

from collections.abc import Sequence

from operators.events import BookDelta, Level

Levels = Sequence[tuple[str, str]]


def lv(levels: Levels) -> tuple[Level, ...]:
    return tuple(Level(p, s) for p, s in levels)


def delta(
    bids: Levels, asks: Levels, *, ts_ms: int = 1_700_000_000_000, action: str = "update",
    inst: str = "BTC-USDT", seq: int | None = None, prev: int | None = None,
) -> BookDelta:
    return BookDelta(
        venue="okx", instrument=inst, action=action,  # type: ignore[arg-type]
        bids=lv(bids), asks=lv(asks), ts_ms=ts_ms, recv_ns=ts_ms * 1_000_000, seq_id=seq, prev_seq_id=prev,
    )


def snapshot(bids: Levels, asks: Levels, **kw: object) -> BookDelta:
    return delta(bids, asks, action="snapshot", **kw)  # type: ignore[arg-type]
