"""Binance and Bybit book benchmark: book updates/s per worker, parse + book-sync machine + coalesced views.

Synthetic frames shaped like each venue's (what the parsers read in the replays): 10 instruments,

* Binance: ``<sym>@depth@100ms`` in the combined-stream envelope, 8-decimal strings (``"2683.80000000"``),
  ``U``/``u`` chained (``U = previous u + 1``), ~15 levels changed per event, 30 % of them deletions
  (``"0.00000000"``); each book bootstrapped by a 1,000-level REST ``/api/v3/depth`` body answering the
  machine's ``FetchSnapshot``;
* Bybit: ``orderbook.200.{SYMBOL}``, a 200-level snapshot then deltas (``u`` + 1), ~15 levels changed each.

Three measures per venue, each frame counted once as one update (snapshots not counted), as updates per
wall-clock second and per CPU second of the process (``time.process_time``, less moved by a busy machine):

1. in-process: :func:`parse` + :meth:`BookSync.on_delta` per frame, views coalesced per 1,000 frames;
2. through Bytewax (``run_main``, one worker): the frames pre-loaded into a source partition whose
   ``next_batch`` does the same as 1. (parse -> feed -> one :class:`BookView` per changed book per batch, the
   OKX collector's shape) into a counting sink;
3. the collector's own processor (``connectors/books/processor.py`` with the venue's adapter, as
   ``BOOK_VENUES`` runs it) in the source partition under ``run_main``: the frames as ``Frame`` events, Binance's
   REST bodies answering its ``FetchSnapshot`` commands at the next batch.

Run: ``.venv/bin/python benchmarks/bench_venue_books.py --frames 50000`` (``--venue binance|bybit|both``;
``--okx-reference`` measures OKX's parser + rules + checksum on ``bench_collector.py``'s frames the same way,
for a ratio that a busy machine does not move as much as the absolute numbers). ``--cachegrind [--baseline REV]``:
Binance's in-process worker under cachegrind (1 MiB last level), per-update counts that load does not move.
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from bytewax import operators as op  # noqa: E402
from bytewax.dataflow import Dataflow  # noqa: E402
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition  # noqa: E402
from bytewax.outputs import DynamicSink, StatelessSinkPartition  # noqa: E402
from bytewax.testing import run_main  # noqa: E402

from connectors.binance.books import parse_binance_book_frame, parse_depth_snapshot  # noqa: E402
from connectors.bybit.books import parse_bybit_book_frame  # noqa: E402
from connectors.market.frames import symbol_map  # noqa: E402
from operators.book_sequencing import BINANCE, BYBIT, OKX  # noqa: E402
from operators.book_sync import BookSync, FetchSnapshot, SnapshotFetched, SyncConfig, Track  # noqa: E402
from operators.events import BookDelta, BookStatus, BookView  # noqa: E402

INSTS = [f"C{i}-USDT" for i in range(10)]
SYMBOLS = symbol_map(INSTS)


def _binance_px(p: int) -> str:
    return f"{p // 100}.{p % 100:02d}000000"


def _bybit_px(p: int) -> str:
    return f"{p // 10000}.{p % 10000:04d}"


def _walk(rng: random.Random, bids: dict[int, int], asks: dict[int, int], keep: int) -> tuple[dict[int, int],
                                                                                           dict[int, int]]:
    """~15 level changes near the top (30 % deletions while a side holds more than ``keep``)."""
    ch_b: dict[int, int] = {}
    ch_a: dict[int, int] = {}
    for _ in range(15):
        side, ch = (bids, ch_b) if rng.random() < 0.5 else (asks, ch_a)
        best = max(bids) if side is bids else min(asks)
        p = best - rng.randint(0, 60) if side is bids else best + rng.randint(0, 60)
        size = 0 if rng.random() < 0.3 and p in side and len(side) > keep else rng.randint(1, 50_000)
        ch[p] = size
        if size:
            side[p] = size
        else:
            side.pop(p, None)
    return ch_b, ch_a


def binance_frames(n: int, seed: int = 1) -> tuple[dict[str, str], list[str]]:
    """REST bodies per instrument, and ``n`` combined-stream depth frames."""
    rng = random.Random(seed)
    rest: dict[str, str] = {}
    books: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
    last: dict[str, int] = {}
    for inst in INSTS:
        bids = {p: rng.randint(1, 50_000) for p in range(268_000 - 1000, 268_000)}
        asks = {p: rng.randint(1, 50_000) for p in range(268_001, 268_001 + 1000)}
        books[inst], last[inst] = (bids, asks), 35_346_513_512
        body = {"lastUpdateId": last[inst],
                "bids": [[_binance_px(p), f"{q / 1e4:.8f}"] for p, q in sorted(bids.items(), reverse=True)],
                "asks": [[_binance_px(p), f"{q / 1e4:.8f}"] for p, q in sorted(asks.items())]}
        rest[inst] = orjson.dumps(body).decode()
    frames = []
    for i in range(n):
        inst = rng.choice(INSTS)
        ch_b, ch_a = _walk(rng, *books[inst], keep=900)
        first, last[inst] = last[inst] + 1, last[inst] + rng.randint(len(ch_b) + len(ch_a), 40)
        sym = inst.replace("-", "")
        data = {"e": "depthUpdate", "E": 1_723_161_255_308 + i, "s": sym, "U": first, "u": last[inst],
                "b": [[_binance_px(p), f"{q / 1e4:.8f}"] for p, q in sorted(ch_b.items(), reverse=True)],
                "a": [[_binance_px(p), f"{q / 1e4:.8f}"] for p, q in sorted(ch_a.items())]}
        frames.append(orjson.dumps({"stream": f"{sym.lower()}@depth@100ms", "data": data}).decode())
    return rest, frames


def bybit_frames(n: int, seed: int = 1) -> list[str]:
    """A 200-level snapshot per instrument, then ``n`` deltas."""
    rng = random.Random(seed)
    books: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
    us: dict[str, int] = {}
    frames = []

    def frame(inst: str, kind: str, b: dict[int, int], a: dict[int, int], ts: int) -> str:
        sym = inst.replace("-", "")
        return orjson.dumps({"topic": f"orderbook.200.{sym}", "type": kind, "ts": ts, "data": {
            "s": sym, "b": [[_bybit_px(p), str(q)] for p, q in sorted(b.items(), reverse=True)],
            "a": [[_bybit_px(p), str(q)] for p, q in sorted(a.items())], "u": us[inst], "seq": 130_020_238_981 + ts},
            "cts": ts - 2}).decode()

    for inst in INSTS:
        bids = {p: rng.randint(1, 50_000) for p in range(19_531 - 200, 19_531)}
        asks = {p: rng.randint(1, 50_000) for p in range(19_532, 19_532 + 200)}
        books[inst], us[inst] = (bids, asks), 20_254_869
        frames.append(frame(inst, "snapshot", bids, asks, 1_733_011_200_691))
    for i in range(n):
        inst = rng.choice(INSTS)
        ch_b, ch_a = _walk(rng, *books[inst], keep=190)
        us[inst] += 1
        frames.append(frame(inst, "delta", ch_b, ch_a, 1_733_011_200_700 + i))
    return frames


# --- the work of one worker: parse -> feed -> coalesced views -------------------------------------------------
class Worker:
    def __init__(self, venue: str, rest: dict[str, str] | None) -> None:
        self.parse: Callable[..., object]
        if venue == "okx":  # the reference: the OKX parser, its rules and checksum, the same loop
            from connectors.okx.books import parse_books_frame
            self.sync = BookSync(OKX, SyncConfig(depth=400, stale_after_ns=None, snapshot_wait_ns=None))
            self.parse = lambda text, recv_ns, symbols: parse_books_frame(text, recv_ns=recv_ns)
        elif venue == "binance":
            self.sync = BookSync(BINANCE, SyncConfig(depth=1000, stale_after_ns=None, snapshot_wait_ns=None))
            self.parse = parse_binance_book_frame
        else:
            self.sync = BookSync(BYBIT, SyncConfig(depth=200, stale_after_ns=None, snapshot_wait_ns=None,
                                                   fetch_missing=False))
            self.parse = parse_bybit_book_frame
        now = time.time_ns()
        self.rest = rest or {}
        for inst in INSTS:
            self.sync.feed(Track(inst, now, subscribed=True))
        self.sync.drain()

    def batch(self, frames: list[str]) -> list[BookView]:
        sync, parse = self.sync, self.parse
        dirty: dict[str, None] = {}
        now = time.time_ns()
        for text in frames:
            d = parse(text, recv_ns=now, symbols=SYMBOLS)
            if type(d) is BookDelta:
                sync.on_delta(d)
                dirty[d.instrument] = None
            elif type(d) is tuple:  # OKX: one delta per data entry
                for x in d:
                    sync.on_delta(x)
                    dirty[x.instrument] = None
        if sync.has_output():
            out = sync.drain()
            assert not [o for o in out if type(o).__name__ in ("Failed", "Resubscribe")], out[:3]
            for o in out:  # Binance: a book's first update asks for the REST snapshot (answered at the batch's end)
                if type(o) is FetchSnapshot:
                    snap = parse_depth_snapshot(self.rest[o.instrument], instrument=o.instrument, recv_ns=now)
                    assert isinstance(snap, BookDelta)
                    sync.feed(SnapshotFetched(o.instrument, now, snap))
                    dirty[o.instrument] = None
            assert not [o for o in sync.drain() if type(o).__name__ in ("Failed", "Resubscribe")]
        return [sync.view(i, 400) for i in dirty if sync.status(i) is BookStatus.VALID]


def in_process(venue: str, rest: dict[str, str] | None, frames: list[str], counted: int) -> tuple[float, float]:
    """(updates per wall second, updates per CPU second of this process)."""
    worker = Worker(venue, rest)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(frames), 1000):
        worker.batch(frames[i:i + 1000])
    return counted / (time.perf_counter() - start), counted / (time.process_time() - cpu)


class _Part(StatefulSourcePartition[BookView, None]):
    def __init__(self, worker: Worker, frames: list[str], max_batch: int) -> None:
        self.worker, self.frames, self.max_batch, self.pos = worker, frames, max_batch, 0

    def next_batch(self) -> list[BookView]:
        if self.pos >= len(self.frames):
            raise StopIteration
        chunk = self.frames[self.pos:self.pos + self.max_batch]
        self.pos += len(chunk)
        return self.worker.batch(chunk)

    def snapshot(self) -> None:
        return None


class _Source(FixedPartitionedSource[BookView, None]):
    def __init__(self, venue: str, rest: dict[str, str] | None, frames: list[str], max_batch: int) -> None:
        self.venue, self.rest, self.frames, self.max_batch = venue, rest, frames, max_batch

    def list_parts(self) -> list[str]:
        return ["books-0"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Part:
        return _Part(Worker(self.venue, self.rest), self.frames, self.max_batch)


class _Count(StatelessSinkPartition[BookView]):
    def __init__(self, box: list[int]) -> None:
        self.box = box

    def write_batch(self, items: list[BookView]) -> None:
        self.box[0] += len(items)


class _CountSink(DynamicSink[BookView]):
    def __init__(self) -> None:
        self.box = [0]

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Count:
        return _Count(self.box)


# --- the collector's own processor (connectors/books/processor.py) with the venue's adapter ----------------------
class _Control:
    """A shard control without I/O: fetches are answered with the REST body at the next batch."""

    def __init__(self) -> None:
        self.fetches: list[str] = []
        self.connections, self.reconnects = 1, 0

    def resubscribe(self, topic: str) -> None:
        raise AssertionError(f"resubscribe {topic}: the frames have no fault")

    def fetch(self, topic: str) -> None:
        self.fetches.append(topic)


def _processor(venue: str) -> tuple[Any, _Control]:
    from connectors.binance.book_source import BinanceBooks
    from connectors.books.processor import BookProcessor
    from connectors.bybit.book_source import BybitBooks
    from connectors.okx.book_source import OkxBooks
    from connectors.ws.events import Subscribed, TopicsChecked

    adapter = {"okx": lambda: OkxBooks("books"), "binance": BinanceBooks, "bybit": lambda: BybitBooks(200)}[venue]()
    control = _Control()
    proc = BookProcessor(0, control, adapter, stale_after=3600, snapshot_wait=3600)
    proc.on_events([TopicsChecked(0, True, tuple(INSTS), tuple(INSTS)), *(Subscribed(0, i) for i in INSTS)])
    return proc, control


class _ProcPart(StatefulSourcePartition[object, None]):
    def __init__(self, venue: str, rest: dict[str, str] | None, frames: list[str], max_batch: int) -> None:
        self.proc, self.control = _processor(venue)
        self.rest, self.frames, self.max_batch, self.pos = rest or {}, frames, max_batch, 0

    def next_batch(self) -> list[object]:
        from connectors.ws.events import Fetched, Frame, WsEvent

        if self.pos >= len(self.frames):
            raise StopIteration
        now = time.time_ns()
        events: list[WsEvent] = [Fetched(i, self.rest[i], None, now) for i in self.control.fetches]
        self.control.fetches.clear()
        chunk = self.frames[self.pos:self.pos + self.max_batch]
        self.pos += len(chunk)
        events += [Frame(text, now, 0) for text in chunk]
        return list(self.proc.on_events(events))

    def snapshot(self) -> None:
        return None


class _ProcSource(FixedPartitionedSource[object, None]):
    def __init__(self, venue: str, rest: dict[str, str] | None, frames: list[str], max_batch: int) -> None:
        self.args = (venue, rest, frames, max_batch)

    def list_parts(self) -> list[str]:
        return ["books-0"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ProcPart:
        return _ProcPart(*self.args)


def through_collector(venue: str, rest: dict[str, str] | None, frames: list[str], counted: int,
                      max_batch: int) -> tuple[float, float]:
    """The collector's source partition work: ``BookProcessor.on_events`` (book_by_book grouping, parse, the
    machine, coalesced views, BookState/ShardStats items) in ``next_batch``, under ``run_main``."""
    _processor(venue)  # its imports (~0.85 s: settings, logging, aiohttp) are the process's start, not per update
    flow = Dataflow(f"bench_{venue}_collector")
    sink = _CountSink()
    op.output("out", op.input("books", flow, _ProcSource(venue, rest, frames, max_batch)), sink)
    start, cpu = time.perf_counter(), time.process_time()
    run_main(flow)  # type: ignore[no-untyped-call]
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert sink.box[0] > 0
    return counted / elapsed, counted / cpu


def through_bytewax(venue: str, rest: dict[str, str] | None, frames: list[str], counted: int,
                    max_batch: int) -> tuple[float, float]:
    flow = Dataflow(f"bench_{venue}_books")
    sink = _CountSink()
    op.output("out", op.input("books", flow, _Source(venue, rest, frames, max_batch)), sink)
    start, cpu = time.perf_counter(), time.process_time()
    run_main(flow)  # type: ignore[no-untyped-call]
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert sink.box[0] > 0
    return counted / elapsed, counted / cpu


# --- cachegrind of the in-process Binance worker. argv: root, (rest, frames) pickle, frames, [another book.py] ----
CG_CHILD = """
import gc, importlib.util, pickle, sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + "/benchmarks"]
if len(sys.argv) > 4:
    spec = importlib.util.spec_from_file_location("operators.orderbook", sys.argv[4])
    sys.modules["operators.orderbook"] = mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
import bench_venue_books as bv
rest, frames = pickle.load(open(sys.argv[2], "rb")); k = int(sys.argv[3]); w = bv.Worker("binance", rest)
w.batch(frames[:1000])  # the REST snapshots are fetched here
gc.collect(); gc.freeze(); gc.disable()  # no whole-heap pass falls into one run and not the other
for i in range(1000, k, 1000): w.batch(frames[i:min(i + 1000, k)])
"""


def cachegrind_binance(rev: str | None, ll: str, warm: int = 2000, measured: int = 3000) -> dict[str, float]:
    """Instructions, L1 and last-level data misses per update: the difference of runs of warm and warm+measured."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_venue_cg_"))
    (tmp / "frames.pkl").write_bytes(pickle.dumps(binance_frames(warm + measured)))
    if rev:
        (tmp / "book.py").write_text(subprocess.run(["git", "show", f"{rev}:operators/orderbook.py"], cwd=ROOT,
                                                    capture_output=True, text=True, check=True).stdout)
    totals = []
    for count in (warm, warm + measured):
        out = tmp / f"cg.{count}"
        subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=yes", f"--LL={ll}",
                        f"--cachegrind-out-file={out}", sys.executable, "-c", CG_CHILD, str(ROOT),
                        str(tmp / "frames.pkl"), str(count), *([str(tmp / "book.py")] if rev else [])],
                       check=True, capture_output=True)
        events, summary = (re.search(rf"^{w}: (.*)$", out.read_text(), re.M).group(1).split()  # type: ignore[union-attr]
                           for w in ("events", "summary"))
        totals.append(dict(zip(events, map(int, summary), strict=True)))
    d = {k: (totals[1][k] - totals[0][k]) / measured for k in totals[0]}
    return {"Ir": d["Ir"], "D1": d["D1mr"] + d["D1mw"], "LLd": d["DLmr"] + d["DLmw"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--venue", choices=("binance", "bybit", "both"), default="both")
    ap.add_argument("--okx-reference", action="store_true",
                    help="also measure OKX (benchmarks/bench_collector.py's frames) the same way, for the ratio")
    ap.add_argument("--max-batch", type=int, default=1000)
    ap.add_argument("--cachegrind", action="store_true", help="only: Binance in-process under cachegrind")
    ap.add_argument("--baseline", metavar="REV", help="--cachegrind: also with operators/orderbook.py of REV")
    args = ap.parse_args()
    for rev in ((None, args.baseline) if args.baseline else (None,)) if args.cachegrind else ():
        cg = cachegrind_binance(rev, "1048576,16,64")  # 1 MiB: one core's L2 here
        print(f"binance in-process{f' (orderbook.py of {rev})' if rev else ''}, 1 MiB LL: {cg['Ir']:,.0f} instructions,"
              f" {cg['D1']:.1f} L1 / {cg['LLd']:.1f} last-level data misses per update", flush=True)
    venues = () if args.cachegrind else ("binance", "bybit") if args.venue == "both" else (args.venue,)
    body: dict[str, str] | None
    for venue in (("okx",) if args.okx_reference else ()) + venues:
        if venue == "okx":
            # bench_collector's make_frames: 10 x 400-level OKX books, ~15 changes each, real checksums
            frames, body = importlib.import_module("bench_collector").make_frames(args.frames), None
        elif venue == "binance":
            body, frames = binance_frames(args.frames)
        else:
            frames, body = bybit_frames(args.frames), None
        counted = args.frames
        size = sum(map(len, frames[-counted:])) / counted
        a = in_process(venue, body, frames, counted)
        b = through_bytewax(venue, body, frames, counted, args.max_batch)
        c = through_collector(venue, body, frames, counted, args.max_batch)
        print(f"{venue}: {counted} updates ({size:.0f} B avg): in-process {a[0]:,.0f}/s ({a[1]:,.0f} per CPU s), "
              f"Bytewax 1 worker {b[0]:,.0f}/s ({b[1]:,.0f} per CPU s), collector processor 1 worker "
              f"{c[0]:,.0f}/s ({c[1]:,.0f} per CPU s) (target >= 25,000)", flush=True)


if __name__ == "__main__":
    main()
