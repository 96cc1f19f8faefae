"""How the order-book collector's cost grows with the number of pairs (issue 15): the scaling table.

For each pair count N (default 10, 100, 300, 1000):

1. ``loop``: the plain parse + apply (+ OKX checksum) loop over the collector's own synthetic generator
   (``bench_collector.make_frames``: 400+400-level books, ~15 changed levels per update, instruments drawn at
   random), µs per update, and the book memory per pair (tracemalloc: the books with their levels and strings).
2. ``worker``: the collector's source partition (parse + book + integrity on the worker) through Bytewax, one
   worker, batches of up to 5,000 frames, into a counting sink: updates/s per worker
   (``bench_collector.throughput``); also with each batch in arrival order (before ``book_by_book``).
3. ``live``: the whole collector source (WebSocket shards, pairs poller) in this process, one worker, against
   the simulator serving N synthetic pairs x ``--rate`` updates/s, into the real Redis sink: CPU per 100 pairs
   (this process's CPU time per wall second; the simulator and Redis are other processes), p99 frame receipt ->
   ``orderbook:{inst}`` written, and the bytes Redis received per pair per second (``total_net_input_bytes``),
   with ``ORDERBOOK_HASH_INTERVAL`` 0 (every batch) and ``--hash-interval`` (default 1 s).

Each measurement runs ``--repeat`` times (default 3); the median is printed with every run and ``uptime``.
Run: ``.venv/bin/python benchmarks/bench_collector_scale.py [--pairs 10,100,300,1000] [--only loop|worker|live]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
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
from cryptoflow.connector_configs import okx_books_config  # noqa: E402
from cryptoflow.servers import free_port, start_redis, stop_process  # noqa: E402
from cryptoflow.settings import load_settings  # noqa: E402
from operators.orderbook import OrderBook  # noqa: E402

by_book = book_source.book_by_book


def in_arrival_order(events: list[Any], key: Any) -> list[Any]:
    return events


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()


def frames_for(n: int, updates: int) -> list[str]:
    bc.INSTS = [f"C{i}-USDT" for i in range(n)]
    return bc.make_frames(updates, seed=n)


# --- 1. plain loop + memory -------------------------------------------------------------------------------
def loop_once(frames: list[str], n: int) -> float:
    books: dict[str, OrderBook] = {}
    for f in frames[:n]:
        for d in parse_books_frame(f, recv_ns=0):  # type: ignore[union-attr]
            books[d.instrument] = OrderBook(d.instrument)
            books[d.instrument].apply(d)
    updates = frames[n:]
    start = time.process_time()
    for f in updates:
        for d in parse_books_frame(f, recv_ns=0):  # type: ignore[union-attr]
            books[d.instrument].apply(d)
    return (time.process_time() - start) / len(updates) * 1e6


def book_memory(frames: list[str], n: int) -> float:
    """MiB per book after every update was applied (the books, their levels and strings)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    books: dict[str, OrderBook] = {}
    for f in frames:
        for d in parse_books_frame(f, recv_ns=0):  # type: ignore[union-attr]
            if d.action == "snapshot":
                books[d.instrument] = OrderBook(d.instrument)
            books[d.instrument].apply(d)
    del f, d
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used / n / 2**20


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
    ap.add_argument("--only", choices=("loop", "worker", "live"), action="append")
    ap.add_argument("--updates", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rate", type=float, default=2.0, help="live: updates/s per pair")
    ap.add_argument("--seconds", type=float, default=15.0, help="live: measured window")
    ap.add_argument("--hash-interval", type=float, default=1.0)
    args = ap.parse_args()
    only = set(args.only or ("loop", "worker", "live"))
    counts = [int(x) for x in args.pairs.split(",")]
    random.seed(1)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {load()}, pid {os.getpid()}")
    if only & {"loop", "worker"}:
        for n in counts:
            frames_n = frames_for(n, args.updates)
            if "loop" in only:
                runs = [loop_once(frames_n, n) for _ in range(args.repeat)]
                mem = book_memory(frames_n, n)
                print(f"loop N={n}: {statistics.median(runs):.1f} µs/update median (runs "
                      f"{', '.join(f'{x:.1f}' for x in runs)}); {mem:.3f} MiB per book; load {load()}")
            if "worker" in only:
                for regroup in (True, False):  # False: the frames in arrival order (before book_by_book)
                    book_source.book_by_book = by_book if regroup else in_arrival_order
                    rates = [bc.throughput(frames_n, None, 5000) for _ in range(args.repeat)]
                    print(f"worker N={n}{'' if regroup else ' (arrival order)'}: {statistics.median(rates):,.0f} "
                          f"updates/s per worker median (runs {', '.join(f'{x:,.0f}' for x in rates)}); "
                          f"load {load()}")
                book_source.book_by_book = by_book
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
