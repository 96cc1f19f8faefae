"""How the order-book collector's cost grows with the number of pairs (issue 15): the scaling table.

For each pair count N (default 10, 100, 300, 1000):

1. ``loop``: the plain parse + apply (+ OKX checksum) loop over the collector's own synthetic generator
   (``bench_collector.make_frames``: 400+400-level books, ~15 changed levels per update, instruments drawn at
   random), µs per update, and the book memory per pair (tracemalloc: the books with their levels and strings);
   also µs per ``view()`` of a random book after the loop (400+400 levels, as the collector publishes it).
   ``--baseline REV`` runs the same loop, alternating, with ``operators/orderbook.py`` as of git revision REV
   (same frames, same machine load), so a change to the book is judged in one run.
2. ``worker``: the collector's source partition (parse + book + integrity on the worker) through Bytewax, one
   worker, batches of up to 5,000 frames, into a counting sink: updates/s per worker
   (``bench_collector.throughput``); also with each batch in arrival order (before ``book_by_book``).
3. ``live``: the whole collector source (WebSocket shards, pairs poller) in this process, one worker, against
   the simulator serving N synthetic pairs x ``--rate`` updates/s, into the real Redis sink: CPU per 100 pairs
   (this process's CPU time per wall second; the simulator and Redis are other processes), p99 frame receipt ->
   ``orderbook:{inst}`` written, and the bytes Redis received per pair per second (``total_net_input_bytes``),
   with ``ORDERBOOK_HASH_INTERVAL`` 0 (every batch) and ``--hash-interval`` (default 1 s).

4. ``cachegrind``: the loop of 1. (parse + apply + checksum) under ``valgrind --tool=cachegrind`` (simulated 32 MiB
   last-level cache, like this machine's L3): instructions, L1 data misses and last-level data misses per update,
   from two runs that differ only in the number of updates applied (``--cg-warm`` and ``--cg-warm`` +
   ``--cg-updates``), so start-up, parsing and the snapshots cancel out. Unlike wall time these do not depend on
   the machine's load. With ``--baseline REV`` the baseline book is measured too.

Each measurement runs ``--repeat`` times (default 3); the median is printed with every run and ``uptime``.
Run: ``.venv/bin/python benchmarks/bench_collector_scale.py [--pairs 10,100,300,1000]
[--only loop|worker|live|cachegrind] [--baseline REV]``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import pickle
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_collector as bc  # noqa: E402
import redis  # noqa: E402
from bytewax import operators as op  # noqa: E402
from bytewax.dataflow import Dataflow  # noqa: E402
from bytewax.testing import run_main  # noqa: E402

from connectors.okx import book_source  # noqa: E402
from connectors.okx.book_source import okx_books_source  # noqa: E402
from connectors.okx.books import parse_books_frame  # noqa: E402
from connectors.redis.book_sink import CollectorRedisSink  # noqa: E402
from cryptoflow import heap  # noqa: E402
from cryptoflow.connector_configs import okx_books_config  # noqa: E402
from cryptoflow.servers import free_port, start_redis, stop_process  # noqa: E402
from cryptoflow.settings import load_settings  # noqa: E402
from operators.orderbook import OrderBook  # noqa: E402


def grouping_module() -> Any:
    """The module whose ``book_by_book`` the collector's book processor calls (the worker mode swaps it)."""
    try:
        from connectors.books import processor  # the shared book processor, where it exists

        return processor
    except ImportError:
        return book_source


def in_arrival_order(events: list[Any], key: Any) -> list[Any]:
    return events


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()


def frames_for(n: int, updates: int) -> list[str]:
    bc.INSTS = [f"C{i}-USDT" for i in range(n)]
    return bc.make_frames(updates, seed=n)


def updates_only_rate(frames: list[str], n: int) -> float:
    """Updates/s of the worker without its one-time costs: the same dataflow run over the ``n`` snapshots alone
    is subtracted (start-up and loading n 400+400-level snapshots, which the throughput above charges to the
    updates: at 300 pairs ~15 % of its time; a live book loads its snapshot once per subscription)."""
    gc.collect()
    both = bc.run_seconds(frames, None, 5000)
    gc.collect()
    snaps = bc.run_seconds(frames[:n], None, 5000)
    return (len(frames) - n) / (both - snaps)


def interleaved(counts: list[int], updates: int, rounds: int) -> None:
    """The worker's updates-only rate (book by book) for each pair count in turn, ``rounds`` times; per round the
    cost per update of each count relative to the first count's."""
    frames = {n: frames_for(n, updates) for n in counts}
    ratios: dict[int, list[float]] = {n: [] for n in counts}
    for r in range(rounds):
        rates = {n: updates_only_rate(frames[n], n) for n in counts}
        for n in counts:
            ratios[n].append(rates[counts[0]] / rates[n])
        print(f"round {r + 1}: " + ", ".join(f"N={n} {rates[n]:,.0f} updates/s ({ratios[n][-1]:.2f}x)" for n in counts)
              + f"; load {load()}")
    for n in counts[1:]:
        print(f"worker updates only, N={n} per-update cost / N={counts[0]}'s: median "
              f"{statistics.median(ratios[n]):.2f}x (rounds {', '.join(f'{x:.2f}' for x in ratios[n])})")


# --- 1. plain loop + memory -------------------------------------------------------------------------------
def book_source_at(rev: str) -> Path:
    """``operators/orderbook.py`` as of git revision ``rev``, written to a temporary file."""
    text = subprocess.run(["git", "show", f"{rev}:operators/orderbook.py"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="bench_book_")) / "orderbook_baseline.py"
    path.write_text(text)
    return path


def book_class(rev: str | None) -> Any:
    """``OrderBook`` as it is now, or as of git revision ``rev`` (loaded as a separate module)."""
    if rev is None:
        return OrderBook
    path = book_source_at(rev)
    spec = importlib.util.spec_from_file_location("orderbook_baseline", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.OrderBook


def loop_once(frames: list[str], n: int, cls: Any = OrderBook) -> tuple[float, float]:
    """µs per update of the parse + apply loop, and µs per ``view()`` of a random book afterwards."""
    books: dict[str, Any] = {}
    for f in frames[:n]:
        for d in parse_books_frame(f, recv_ns=0):  # type: ignore[union-attr]
            books[d.instrument] = cls(d.instrument)
            books[d.instrument].apply(d)
    updates = frames[n:]
    start = time.process_time()
    for f in updates:
        for d in parse_books_frame(f, recv_ns=0):  # type: ignore[union-attr]
            books[d.instrument].apply(d)
    per_update = (time.process_time() - start) / len(updates) * 1e6
    picks = [books[i] for i in random.Random(n).choices(list(books), k=2000)]
    start = time.process_time()
    for b in picks:
        b.view()
    return per_update, (time.process_time() - start) / len(picks) * 1e6


def book_memory(frames: list[str], n: int, cls: Any = OrderBook) -> float:
    """MiB per book after every update was applied (the books, their levels and strings)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    books: dict[str, Any] = {}
    for f in frames:
        for d in parse_books_frame(f, recv_ns=0):  # type: ignore[union-attr]
            if d.action == "snapshot":
                books[d.instrument] = cls(d.instrument)
            books[d.instrument].apply(d)
    del f, d
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used / n / 2**20


# --- 4. cachegrind of the parse-free apply loop ----------------------------------------------------------------
CG = ["valgrind", "--tool=cachegrind", "--cache-sim=yes"]


# Run under valgrind by ``python -c`` (not this module: its imports of Bytewax and Redis would multiply the
# simulated start-up): apply the snapshots, then parse + apply the first COUNT updates, each parsed just before
# it is applied as in the collector (parsing them all first would add misses for reading old deltas back).
APPLY_CHILD = """
import gc, importlib.util, pickle, sys
sys.path.insert(0, sys.argv[1])
from connectors.okx.books import parse_books_frame
from operators.orderbook import OrderBook as cls
if len(sys.argv) > 4:
    spec = importlib.util.spec_from_file_location("orderbook_baseline", sys.argv[4])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = mod.OrderBook
with open(sys.argv[2], "rb") as fh:
    frames = pickle.load(fh)
books = {}
for f in frames:
    if '"action":"snapshot"' in f:
        for d in parse_books_frame(f, recv_ns=0):
            books[d.instrument] = cls(d.instrument)
            books[d.instrument].apply(d)
updates = [f for f in frames if '"action":"update"' in f][: int(sys.argv[3])]
gc.collect()
gc.freeze()
gc.disable()  # else whole-heap passes fall into one run's length and not the other's: unstable differences
for f in updates:
    for d in parse_books_frame(f, recv_ns=0):
        if books[d.instrument].apply(d).kind != "applied":
            raise SystemExit(f"not applied: {d.instrument} {d.seq_id}")
"""


def cachegrind(n: int, warm: int, measured: int, rev: str | None, ll: str) -> dict[str, float]:
    """Per-update Ir, L1 data misses and last-level data misses (the difference of two runs)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_cg_"))
    frames = tmp / "frames.pkl"
    with frames.open("wb") as fh:
        pickle.dump(frames_for(n, warm + measured), fh)
    totals = []
    for count in (warm, warm + measured):
        out = tmp / f"cg.{count}"
        cmd = [*CG, f"--LL={ll}", f"--cachegrind-out-file={out}", sys.executable, "-c", APPLY_CHILD, str(ROOT),
               str(frames), str(count)]
        subprocess.run([*cmd, *([str(book_source_at(rev))] if rev else [])], check=True, capture_output=True)
        text = out.read_text()
        events = re.search(r"^events: (.*)$", text, re.M).group(1).split()  # type: ignore[union-attr]
        summary = re.search(r"^summary: (.*)$", text, re.M).group(1).split()  # type: ignore[union-attr]
        totals.append(dict(zip(events, map(int, summary), strict=True)))
    d = {k: (totals[1][k] - totals[0][k]) / measured for k in totals[0]}
    return {"Ir": d["Ir"], "D1": d["D1mr"] + d["D1mw"], "LLd": d["DLmr"] + d["DLmw"]}


# --- 3. live against the simulator ------------------------------------------------------------------------
def live_once(n: int, rate: float, seconds: float, hash_interval: float, redis_port: int) -> dict[str, float]:
    from tests.fixtures.simulator import launch_simulator

    pairs = [f"P{i:04d}-USDT" for i in range(n)]
    sim = launch_simulator("--pairs", ",".join(pairs), "--rate", str(rate), "--seed", "1", timeout=120)
    r = redis.Redis(port=redis_port)
    try:
        r.flushall()
        r.sadd("config:trading_pairs", *pairs)
        settings = load_settings(redis_url=f"redis://127.0.0.1:{redis_port}/0", okx_ws_url=sim.okx_ws_url,
                                 okx_rest_url=sim.okx_rest_url, trading_pairs_poll_interval=1.0,
                                 max_trading_pairs=n, okx_pairs_per_connection=50)
        src = okx_books_source(okx_books_config(settings))
        lats: list[int] = []
        window = {"on": False}
        marks: dict[str, float] = {}
        deadline = time.monotonic() + 120
        counted = [0]

        def book_item(x):  # type: ignore[no-untyped-def]
            name = type(x).__name__
            if name == "BufferFrame":
                counted[0] += 1
            return x if name in ("BookView", "BookState", "BufferFrame") else None

        def frames(_: redis.Redis) -> int:
            return counted[0]

        def observe(batch: list[int]) -> None:
            if window["on"]:
                lats.extend(batch)

        real = src._processor

        def processor(index, control):  # type: ignore[no-untyped-def]
            proc = real(index, control)
            tick = proc.on_tick

            def on_tick(now_ns: int):  # type: ignore[no-untyped-def]
                now = time.monotonic()
                if not window["on"] and now > deadline:
                    raise StopIteration  # the books never all became valid: no measurement
                if not window["on"] and r_valid(r, pairs):
                    window["on"] = True
                    marks.update(t0=now, cpu0=time.process_time(), net0=net_in(r), frames0=frames(r))
                if window["on"] and now - marks["t0"] >= seconds:
                    if "t1" not in marks:
                        marks.update(t1=now, cpu1=time.process_time(), net1=net_in(r), frames1=frames(r))
                    raise StopIteration
                return tick(now_ns)

            proc.on_tick = on_tick
            return proc

        src._processor = processor
        flow = Dataflow("bench_scale")
        items = op.input("okx_books", flow, src)
        books = op.filter_map("book_items", items, book_item)
        op.output("redis", books, CollectorRedisSink(settings_url(settings), "bench_buffer", 10_000, observe,
                                                     hash_interval=hash_interval))
        heap.settle()  # as the dataflow process does (cryptoflow.entry)
        run_main(flow)
        if "t1" not in marks:
            return {}
        wall = marks["t1"] - marks["t0"]
        return {"cpu_per_100": (marks["cpu1"] - marks["cpu0"]) / wall * 100 / n * 100,
                "updates_s": (marks["frames1"] - marks["frames0"]) / wall,
                "p99_ms": pct(lats, 0.99), "p50_ms": pct(lats, 0.5),
                "redis_kb_per_pair_s": (marks["net1"] - marks["net0"]) / wall / n / 1024}
    finally:
        sim.stop()
        r.close()


def settings_url(settings) -> str:  # type: ignore[no-untyped-def]
    return str(settings.redis_url)


_valid_cache: dict[str, float] = {}


def r_valid(r: redis.Redis, pairs: list[str]) -> bool:
    """Every pair's hash is valid (checked at most every 0.5 s: it costs a pipeline of N HGETs)."""
    now = time.monotonic()
    if now - _valid_cache.get("at", 0.0) < 0.5:
        return False
    _valid_cache["at"] = now
    pipe = r.pipeline(transaction=False)
    for p in pairs:
        pipe.hget(f"orderbook:{p}", "status")
    return all(s == b"valid" for s in pipe.execute())


def net_in(r: redis.Redis) -> int:
    return int(r.info("stats")["total_net_input_bytes"])


P99, CPU = "p99_ms", "cpu_per_100"


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default="10,100,300,1000")
    ap.add_argument("--only", choices=("loop", "worker", "live", "cachegrind"), action="append")
    ap.add_argument("--updates", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rate", type=float, default=2.0, help="live: updates/s per pair")
    ap.add_argument("--seconds", type=float, default=15.0, help="live: measured window")
    ap.add_argument("--hash-interval", type=float, default=1.0)
    ap.add_argument("--interleave", action="store_true", help="worker: the updates-only rate of each pair count "
                    "in turn, --repeat rounds, and each round's ratio to the first count (the host's speed drifts "
                    "between the rounds; a ratio is taken within one)")
    ap.add_argument("--baseline", metavar="REV", help="loop, cachegrind: also the book of this git revision")
    ap.add_argument("--cg-warm", type=int, default=5000, help="cachegrind: updates before the measured ones")
    ap.add_argument("--cg-updates", type=int, default=5000, help="cachegrind: measured updates")
    ap.add_argument("--cg-ll", default="33554432,16,64", help="cachegrind: the simulated last-level cache "
                    "(size,ways,line); 1048576,8,64 is one core's L2 here, the level a book hot at 10 pairs stays in")
    args = ap.parse_args()
    only = set(args.only or ("loop", "worker", "live"))
    counts = [int(x) for x in args.pairs.split(",")]
    random.seed(1)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {load()}, pid {os.getpid()}")
    revs: list[tuple[str, str | None]] = [("", None)]
    if args.baseline:
        revs.append((f" (baseline {args.baseline})", args.baseline))
    classes = [(label, book_class(rev)) for label, rev in revs]
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in revs}
    if "cachegrind" in only:
        for n in counts:
            for label, rev in revs:
                cg = cachegrind(n, args.cg_warm, args.cg_updates, rev, args.cg_ll)
                print(f"cachegrind N={n}{label} LL {args.cg_ll}: {cg['Ir']:,.0f} instructions, {cg['D1']:.1f} L1 "
                      f"data misses, {cg['LLd']:.1f} last-level data misses per update; load {load()}")
    if args.interleave:
        interleaved(counts, args.updates, args.repeat)
        return
    if only & {"loop", "worker"}:
        for n in counts:
            frames_n = frames_for(n, args.updates)
            if "loop" in only:
                for label, _ in revs:
                    runs[label] = []
                for _ in range(args.repeat):  # alternating, so both books see the same machine load
                    for label, cls in classes:
                        runs[label].append(loop_once(frames_n, n, cls))
                for label, cls in classes:
                    mem = book_memory(frames_n, n, cls)
                    ups, views = [r[0] for r in runs[label]], [r[1] for r in runs[label]]
                    print(f"loop N={n}{label}: {statistics.median(ups):.1f} µs/update median (runs "
                          f"{', '.join(f'{x:.1f}' for x in ups)}); view {statistics.median(views):.1f} µs; "
                          f"{mem:.3f} MiB per book; load {load()}")
            if "worker" in only:
                grouping = grouping_module()
                by_book = grouping.book_by_book
                for regroup in (True, False):  # False: the frames in arrival order (before book_by_book)
                    grouping.book_by_book = by_book if regroup else in_arrival_order
                    rates = [bc.throughput(frames_n, None, 5000) for _ in range(args.repeat)]
                    print(f"worker N={n}{'' if regroup else ' (arrival order)'}: {statistics.median(rates):,.0f} "
                          f"updates/s per worker median (runs {', '.join(f'{x:,.0f}' for x in rates)}); "
                          f"load {load()}")
                    rates = [updates_only_rate(frames_n, n) for _ in range(args.repeat)]
                    print(f"worker N={n}{'' if regroup else ' (arrival order)'}, updates only: "
                          f"{statistics.median(rates):,.0f} updates/s per worker median (runs "
                          f"{', '.join(f'{x:,.0f}' for x in rates)}); load {load()}")
                grouping.book_by_book = by_book
            del frames_n
            gc.collect()
    if "live" in only:
        tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
        port = free_port()
        server = start_redis(port, tmp / "redis")
        try:
            for n in counts:
                for interval in (0.0, args.hash_interval):
                    res = [live_once(n, args.rate, args.seconds, interval, port) for _ in range(args.repeat)]
                    res = [x for x in res if x]
                    if not res:
                        print(f"live N={n} interval={interval}: no measurement (books never all valid)")
                        continue
                    med = {k: statistics.median(x[k] for x in res) for k in res[0]}
                    print(f"live N={n} x {args.rate:g}/s, ORDERBOOK_HASH_INTERVAL={interval:g}: "
                          f"{med['updates_s']:,.0f} updates/s, CPU {med['cpu_per_100']:.1f} % of a core per 100 "
                          f"pairs, p50 {med['p50_ms']:.2f} ms, p99 {med['p99_ms']:.2f} ms frame -> hash, Redis in "
                          f"{med['redis_kb_per_pair_s']:.1f} KiB/s per pair ({len(res)} runs: "
                          f"p99 {', '.join(f'{x[P99]:.1f}' for x in res)}; CPU "
                          f"{', '.join(f'{x[CPU]:.1f}' for x in res)}); load {load()}")
        finally:
            stop_process(server)


if __name__ == "__main__":
    main()
