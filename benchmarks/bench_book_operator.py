"""Book operator cost: OKX ``books`` frame parse + OrderBook.apply + checksum, per frame, in one process.

Synthetic load like MEASUREMENTS.md's peer baseline: 10 instruments, 400-level books, ~15 level changes per
update (a third each: new level, size change, removal; biased towards the top of the book), every frame with a
real non-zero checksum (so the check always runs), and seqId/prevSeqId. Then the real recordings
(tests/data/okx/). Target (issue 4): >= 25,000 updates/s per worker through Bytewax, which adds ~9 us/msg at
batch 100, so parse + apply + checksum should stay <= ~20 us per ~685-byte update.

Run: .venv/bin/python benchmarks/bench_book_operator.py [--updates 50000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from connectors.okx.books import parse_books_frame
from operators.book_checksum import okx_checksum
from operators.book_results import Applied, Heartbeat
from operators.events import BookDelta, Level
from operators.orderbook import OrderBook

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = sorted((ROOT / "tests" / "data" / "okx").glob("*.jsonl"))
INSTRUMENTS = [f"C{i}-USDT" for i in range(10)]


def _px(ticks: int) -> str:
    """Ticks of 0.1 -> OKX-style text (``30249.4``, ``30261``)."""
    whole, frac = divmod(ticks, 10)
    return f"{whole}.{frac}" if frac else str(whole)


def _sz(rng: random.Random) -> str:
    """Spot-like sizes (``0.60038921``, ``12.5``) and the odd whole number."""
    r = rng.random()
    if r < 0.2:
        return str(rng.randint(1, 500))
    text = f"{rng.randint(1, 10**9) / 10**8:.8f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


class _Gen:
    """One instrument's synthetic market: a true book from which frames (with real checksums) are cut."""

    def __init__(self, inst: str, rng: random.Random) -> None:
        self.inst, self.rng, self.seq = inst, rng, rng.randint(1000, 10**6)
        mid = rng.randint(200_000, 400_000)
        self.bids = {mid - 1 - i * 2: _sz(rng) for i in range(400)}
        self.asks = {mid + 1 + i * 2: _sz(rng) for i in range(400)}

    def _levels(self, side: dict[int, str], reverse: bool) -> list[Level]:
        return [Level(_px(k), side[k]) for k in sorted(side, reverse=reverse)[:400]]

    def _frame(self, action: str, bids: list[list[str]], asks: list[list[str]], prev: int) -> str:
        cs = okx_checksum(self._levels(self.bids, True)[:25], self._levels(self.asks, False)[:25])
        data = {
            "asks": asks,
            "bids": bids,
            "ts": str(1_700_000_000_000 + self.seq),
            "checksum": cs,
            "prevSeqId": prev,
            "seqId": self.seq,
        }
        return json.dumps(
            {"arg": {"channel": "books", "instId": self.inst}, "action": action, "data": [data]}, separators=(",", ":")
        )

    def snapshot(self) -> str:
        bids = [[lv.price, lv.size, "0", "1"] for lv in self._levels(self.bids, True)]
        asks = [[lv.price, lv.size, "0", "1"] for lv in self._levels(self.asks, False)]
        return self._frame("snapshot", bids, asks, -1)

    def update(self, changes: int = 15) -> str:
        rng = self.rng
        out: dict[bool, dict[int, str]] = {True: {}, False: {}}
        while len(out[True]) + len(out[False]) < changes:
            is_bid = rng.random() < 0.5
            side = self.bids if is_bid else self.asks
            keys = sorted(side, reverse=is_bid)
            depth = min(int(rng.expovariate(1 / 40)), len(keys) - 1)  # biased to the top
            op = rng.random()
            if op < 1 / 3 and len(side) > 300:
                k = keys[depth]
                del side[k]
                out[is_bid][k] = "0"
            elif op < 2 / 3:
                k = keys[depth]
                side[k] = out[is_bid][k] = _sz(rng)
            else:
                inner = keys[depth] + (1 if is_bid else -1)
                other_best = max(self.bids) if not is_bid else min(self.asks)
                if (is_bid and inner >= other_best) or (not is_bid and inner <= other_best) or inner in side:
                    continue
                side[inner] = out[is_bid][inner] = _sz(rng)
        # OKX keeps 400 levels: what falls off the end is simply not there any more
        for side, rev in ((self.bids, True), (self.asks, False)):
            for k in sorted(side, reverse=rev)[400:]:
                del side[k]
        prev = self.seq
        self.seq += rng.randint(1, 5)
        bids = [[_px(k), s, "0", "0" if s == "0" else "1"] for k, s in out[True].items()]
        asks = [[_px(k), s, "0", "0" if s == "0" else "1"] for k, s in out[False].items()]
        return self._frame("update", bids, asks, prev)


def synthetic(updates: int, seed: int = 7) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    gens = [_Gen(inst, rng) for inst in INSTRUMENTS]
    snaps = [g.snapshot() for g in gens]
    return snaps, [gens[i % len(gens)].update() for i in range(updates)]


def recorded() -> list[str]:
    out = []
    for path in RECORDINGS:
        with path.open() as f:
            for line in f:
                raw = json.loads(line)["data"]
                if '"channel":"books' in raw and '"data"' in raw:
                    out.append(raw)
    return out


def _time(fn: Callable[[], int], repeat: int) -> tuple[float, float, int]:
    """(best, median) total microseconds over ``repeat`` runs, and the frame count of one run. Process CPU time,
    not wall time: the machine is shared, and time spent waiting for a core is not the operator's cost."""
    runs = []
    n = 0
    for _ in range(repeat):
        t0 = time.process_time_ns()
        n = fn()
        runs.append(time.process_time_ns() - t0)
    return min(runs) / 1e3, statistics.median(runs) / 1e3, n


def _report(label: str, best_us: float, median_us: float, n: int, unit: str = "frame") -> None:
    print(
        f"  {label:<34} best {best_us / n:7.2f} us/{unit} ({n / best_us * 1e6:>9,.0f}/s)"
        f"   median {median_us / n:7.2f} us/{unit} ({n / median_us * 1e6:>9,.0f}/s)"
    )


def bench(name: str, snaps: list[str], frames: list[str], repeat: int) -> None:
    encoded = frames  # str, as the WebSocket client delivers text frames
    size = sum(len(f.encode()) for f in frames) / max(1, len(frames))
    parsed_levels = 0
    for raw in encoded:
        out = parse_books_frame(raw, recv_ns=1)
        assert isinstance(out, tuple)
        parsed_levels += sum(len(d.bids) + len(d.asks) for d in out)
    print(
        f"{name}: {len(frames):,} frames, mean {size:.0f} bytes and {parsed_levels / len(frames):.1f} levels per frame,"
        f" {len(snaps)} snapshots first"
    )

    def fresh() -> dict[str, OrderBook]:
        books: dict[str, OrderBook] = {}
        for s in snaps:
            out = parse_books_frame(s, recv_ns=0)
            assert isinstance(out, tuple)
            for d in out:
                book = books.setdefault(d.instrument, OrderBook(d.instrument))
                assert isinstance(book.apply(d), Applied)
        return books

    def parse_only() -> int:
        for raw in encoded:
            parse_books_frame(raw, recv_ns=1)
        return len(encoded)

    parsed: list[BookDelta] = []
    for raw in encoded:
        out = parse_books_frame(raw, recv_ns=1)
        assert isinstance(out, tuple)
        parsed.extend(out)

    def apply_only() -> int:
        books = fresh()
        for d in parsed:
            books[d.instrument].apply(d)
        return len(parsed)

    def end_to_end() -> int:
        books = fresh()
        ok = 0
        for raw in encoded:
            out = parse_books_frame(raw, recv_ns=time.time_ns())
            if isinstance(out, tuple):
                for d in out:
                    ok += isinstance(books[d.instrument].apply(d), Applied | Heartbeat)
        assert ok == len(parsed), f"{len(parsed) - ok} frames failed their checks"
        return len(encoded)

    def snapshot_parse_apply() -> int:
        for _ in range(20):
            fresh()
        return 20 * len(snaps)

    _report("parse", *_time(parse_only, repeat))
    _report("apply + checksum (pre-parsed)", *_time(apply_only, repeat))
    _report("parse + apply + checksum", *_time(end_to_end, repeat))
    if snaps:
        _report("snapshot parse + apply (400+400)", *_time(snapshot_parse_apply, max(1, repeat // 2)))
        books = fresh()
        for d in parsed:
            books[d.instrument].apply(d)

        def views() -> int:
            for _ in range(50):
                for book in books.values():
                    book.view()
            return 50 * len(books)

        def pickles() -> int:
            for _ in range(10):
                for book in books.values():
                    pickle.loads(pickle.dumps(book))
            return 10 * len(books)

        levels = sum(len(b) for b in books.values()) / len(books)
        print(f"  per book of ~{levels:.0f} levels (Bytewax state / publishing):")
        _report("view() (all levels)", *_time(views, repeat), unit="book")
        _report("pickle + unpickle", *_time(pickles, max(1, repeat // 2)), unit="book")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--updates", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    snaps, updates = synthetic(args.updates)
    bench("synthetic OKX books (10 instruments x 400 levels, ~15 changes/update)", snaps, updates, args.repeat)
    rec = recorded()
    snaps_rec = [f for f in rec if '"action":"snapshot"' in f]
    bench("recordings (tests/data/okx, books + books-l2-tbt)", snaps_rec, rec, args.repeat)


if __name__ == "__main__":
    main()
