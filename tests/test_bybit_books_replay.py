"""Replays of real Bybit v5 book sessions through the Bybit book parser and the book-sync machine.

Recordings (unmodified copies of ``../shared/recordings/bybit/``, see tests/data/README.md):

* ``bybit-2024-12-01-xrpusdt-orderbook500.jsonl`` (nautechsystems/nautilus_trader, LGPL-3.0-or-later): linear
  ``orderbook.500.XRPUSDT``, one snapshot and 49 deltas with ``u`` +1 each;
* ``bybit-2025-06-13-orderbook1.jsonl`` (bmoscon/cryptofeed pull request 1085): ``orderbook.1`` of 10 linear
  and spot symbols, snapshots only (``u`` sometimes repeated), and the subscribe answers.

Each final book equals an independent rebuild that follows Bybit's documented rules itself (a snapshot
replaces the book, a delta sets each level, size "0" removes it), with no resync. Symbols map to our ids the
product's way (``XRPUSDT`` -> ``XRP-USDT``); the recordings' linear symbols are named as the spot pair would be.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.bybit.books import parse_bybit_book_frame
from connectors.market.frames import symbol_map
from connectors.ws.hooks import Ack, Control
from operators.book_sequencing import BYBIT
from operators.book_sync import BookSync, Failed, FetchSnapshot, Resubscribe, SyncConfig, Track
from operators.events import BookDelta, BookStatus, Level

DATA = Path(__file__).parent / "data/simulator/bybit"


class NaiveBybitBooks:
    """Bybit v5 "Orderbook" rules written out plainly, per symbol."""

    def __init__(self) -> None:
        self.books: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        self.last_u: dict[str, int] = {}

    def frame(self, msg: dict[str, object]) -> None:
        data: dict[str, object] = msg["data"]  # type: ignore[assignment]
        sym, u = str(data["s"]), int(data["u"])  # type: ignore[call-overload]
        if msg["type"] == "snapshot" or u == 1:
            self.books[sym] = ({}, {})
        else:
            assert u == self.last_u[sym] + 1, f"{sym}: u {u} after {self.last_u[sym]}"
        for side, key in zip(self.books[sym], ("b", "a"), strict=True):
            for price, size in data[key]:  # type: ignore[attr-defined]
                if Decimal(size) == 0:
                    side.pop(price, None)
                else:
                    side[price] = size
        self.last_u[sym] = u

    def levels(self, sym: str) -> tuple[list[Level], list[Level]]:
        bids, asks = self.books[sym]
        return ([Level(p, s) for p, s in sorted(bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)],
                [Level(p, s) for p, s in sorted(asks.items(), key=lambda kv: Decimal(kv[0]))])


@pytest.mark.parametrize(("name", "depth", "symbols", "deltas"), [
    ("bybit-2024-12-01-xrpusdt-orderbook500.jsonl", 500, 1, 50),
    ("bybit-2025-06-13-orderbook1.jsonl", 1, 10, 337),
])
def test_replay_equals_naive_rebuild(name: str, depth: int, symbols: int, deltas: int) -> None:
    rows = [json.loads(line) for line in (DATA / name).read_text().splitlines()]
    frames = [json.loads(r["data"]) for r in rows]
    syms = sorted({f["data"]["s"] for f in frames if "topic" in f})
    assert len(syms) == symbols
    ids = {s: f"{s[:-4]}-{s[-4:]}" for s in syms}  # XRPUSDT -> XRP-USDT, OPUSDC -> OP-USDC
    smap = symbol_map(ids.values())
    sync = BookSync(BYBIT, SyncConfig(depth=depth, stale_after_ns=None, snapshot_wait_ns=None,
                                      fetch_missing=False))
    t0 = int(rows[0]["ts"] * 1e9)
    for inst in ids.values():
        sync.feed(Track(inst, t0, subscribed=True))
    naive = NaiveBybitBooks()
    outputs = sync.drain()
    parsed = controls = 0
    for row, msg in zip(rows, frames, strict=True):
        item = parse_bybit_book_frame(row["data"], recv_ns=int(row["ts"] * 1e9), symbols=smap)
        if isinstance(item, Control):
            assert isinstance(item, Ack) and "topic" not in msg
            controls += 1
            continue
        assert isinstance(item, BookDelta), item
        assert item.seq_id == msg["data"]["u"] and item.ts_ms == msg["ts"]
        parsed += 1
        sync.on_delta(item)
        naive.frame(msg)
        outputs += sync.drain()
    assert parsed == deltas and controls == len(rows) - deltas
    assert not [o for o in outputs if type(o) in (Failed, Resubscribe, FetchSnapshot)]
    assert sync.counters["resyncs"] == 0 and sync.counters["gaps"] == 0
    for sym, inst in ids.items():
        assert sync.status(inst) is BookStatus.VALID
        view = sync.view(inst, depth)
        bids, asks = naive.levels(sym)
        assert len(bids) <= depth and len(asks) <= depth  # Bybit keeps the topic's depth itself
        assert (list(view.bids), list(view.asks)) == (bids, asks), sym
        assert view.seq_id == naive.last_u[sym]
