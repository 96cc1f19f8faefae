"""Order-book analysis throughput and latency.

1. ``operator``: parse + book + the four analyses per update, in-process, no Bytewax (us/update).
2. ``saturation``: the real dataflow (reliable Redis-list source, keyed analyzers, Redis sink; Influx off) on
   one worker, draining a pre-filled buffer list of 10 instruments x 400-level books: analysed updates/s.
3. ``latency``: 10 pairs x 100 updates/s pushed live into the buffer list, each frame stamped with the
   current time as its exchange time; p50/p99 from that time to the ``analysis:{inst}`` pipeline having
   executed (``--via-collector``: the frames come from the simulator through the collector dataflow instead).

Targets (issue 5): >= 5,000 analysed updates/s per worker at saturation; p99 < 10 ms at 10 x 100/s.

Run: .venv/bin/python benchmarks/bench_analysis.py [--updates 20000] [--seconds 10] [--via-collector]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Runs are stopped with SIGINT; Bytewax reports that as a panic, whose Rust backtrace is only noise here.
os.environ["RUST_BACKTRACE"] = "0"

import redis  # noqa: E402
from bytewax.testing import run_main  # noqa: E402

from connectors.okx.books import parse_books_frame  # noqa: E402
from cryptoflow.analysis_settings import analysis_params  # noqa: E402
from cryptoflow.servers import free_port, start_redis, stop_process  # noqa: E402
from cryptoflow.settings import Settings, load_settings  # noqa: E402
from dataflows.orderbook_analysis import build  # noqa: E402
from operators.analysis import AnalysisOutput, InstrumentAnalyzer  # noqa: E402
from operators.orderbook import OrderBook  # noqa: E402
from tests.okx_frames import SyntheticOkxBook, market  # noqa: E402

INSTS = [f"C{i}-USDT" for i in range(10)]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def bench_operator(frames: list[bytes]) -> None:
    params = analysis_params(load_settings())
    analyzers: dict[str, InstrumentAnalyzer] = {}
    t0 = time.perf_counter()
    n = 0
    for f in frames:
        parsed = parse_books_frame(f, recv_ns=0)
        assert isinstance(parsed, tuple)
        for d in parsed:
            a = analyzers.get(d.instrument)
            if a is None:
                a = analyzers[d.instrument] = InstrumentAnalyzer(d.instrument, OrderBook(d.instrument), params)
            a.on_delta(d, params)
            n += 1
    dt = time.perf_counter() - t0
    print(f"operator: {n} updates in {dt:.2f} s -> {n / dt:,.0f} updates/s, {dt / n * 1e6:.1f} us/update "
          "(parse + book + 4 analyses)")


def run_until(flow_settings: Settings, done: threading.Event,
              on_written: Callable[[list[AnalysisOutput]], None]) -> None:
    """Run the dataflow in this thread until ``done`` is set (then interrupt it: Bytewax surfaces the
    interrupt as KeyboardInterrupt or as a runtime error wrapping it)."""
    def stopper() -> None:
        done.wait()
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=stopper, daemon=True).start()
    try:
        run_main(build(flow_settings, on_written=on_written))
    except (KeyboardInterrupt, Exception):
        if not done.is_set():
            raise


def bench_saturation(url: str, frames: list[bytes]) -> None:
    r = redis.Redis.from_url(url)
    r.flushall()
    for i in range(0, len(frames), 1000):
        r.lpush("okex_orderbook", *frames[i:i + 1000])
    total = len(frames)
    done = threading.Event()
    state = {"start": 0.0, "end": 0.0}
    start = time.perf_counter()

    def on_written(items: list[AnalysisOutput]) -> None:
        if not state["start"]:
            state["start"] = time.perf_counter()
        if int(r.get("okex_orderbook:processing:0:offset") or 0) >= total and r.llen("okex_orderbook") == 0:
            last = max(o.result.exchange_ms for o in items)
            if last >= final_ms:
                state["end"] = time.perf_counter()
                done.set()

    final_ms = max(int(f.split(b'"ts":"')[1].split(b'"')[0]) for f in frames[-len(INSTS):])
    run_until(load_settings(redis_url=url), done, on_written)
    dt = state["end"] - start
    print(f"saturation (1 worker, Redis list -> analysis -> Redis): {total} updates in {dt:.2f} s -> "
          f"{total / dt:,.0f} analysed updates/s")


def produce(url: str, seconds: float, rate: float) -> None:
    books = [SyntheticOkxBook(inst, depth=400, seed=i + 1) for i, inst in enumerate(INSTS)]
    client = redis.Redis.from_url(url)
    client.lpush("okex_orderbook", *[b.snapshot(int(time.time() * 1000)) for b in books])
    step = 1.0 / rate
    nxt = time.perf_counter()
    end = nxt + seconds
    while nxt < end:
        nxt += step
        now_ms = int(time.time() * 1000)
        frames = [b.update(now_ms) for b in books]  # stamped before generating: latency is overstated
        client.lpush("okex_orderbook", *frames)  # the ten instruments' frames of this tick, one round trip
        delay = nxt - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def bench_latency(url: str, seconds: float, rate: float, via_collector: bool) -> None:
    r = redis.Redis.from_url(url)
    r.flushall()
    lat: list[float] = []
    inner: list[float] = []
    done = threading.Event()
    warm_until = time.time() + 2.0

    def on_written(items: list[AnalysisOutput]) -> None:
        now = time.time() * 1000
        if time.time() < warm_until:
            return
        lat.extend(now - o.result.exchange_ms for o in items if o.analysed)
        inner.extend(now - o.result.recv_ns / 1e6 for o in items if o.analysed)

    cleanup = []
    if via_collector:
        from tests.collector_helpers import start_collector
        from tests.fixtures.simulator import launch_simulator

        sim = launch_simulator("--pairs", ",".join(INSTS), "--seed", "1", "--rate", str(int(rate)))
        cleanup.append(sim.stop)
        r.sadd("config:trading_pairs", *INSTS)
        tmp = Path(tempfile.mkdtemp())
        col = start_collector(tmp, {**sim.env(), "REDIS_URL": url, "MAX_TRADING_PAIRS": str(len(INSTS)),
                                    "LOG_LEVEL": "WARNING"})
        cleanup.append(col.stop)
        threading.Timer(seconds + 2.0, done.set).start()
    else:
        producer = multiprocessing.get_context("fork").Process(target=produce, args=(url, seconds + 2.0, rate),
                                                               daemon=True)
        producer.start()  # its own process: the producer must not share the dataflow's GIL
        threading.Thread(target=lambda: (producer.join(), done.set()), daemon=True).start()
    collector_ms = None
    try:
        run_until(load_settings(redis_url=url), done, on_written)
        collector_ms = r.hget("system:monitoring", "avg_processing_latency")
    finally:
        for stop in cleanup:
            stop()
    if via_collector:
        print(f"collector's own avg_processing_latency (frame receipt -> its Redis write): "
              f"{collector_ms.decode() if collector_ms else '?'} ms")
    how = "simulator -> collector -> list -> analysis" if via_collector else "list -> analysis"
    print(f"latency ({how}, {len(INSTS)} pairs x {rate:g}/s, {len(lat)} hash writes): "
          f"p50 {statistics.median(lat):.2f} ms, p99 {pct(lat, 0.99):.2f} ms, max {max(lat):.2f} ms "
          "(exchange time, ms resolution -> write executed); "
          f"parse -> write p50 {statistics.median(inner):.2f} ms, p99 {pct(inner, 0.99):.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=100.0, help="updates/s per pair in the latency run")
    ap.add_argument("--via-collector", action="store_true")
    ap.add_argument("--only", choices=["operator", "saturation", "latency"])
    args = ap.parse_args()
    frames = market(INSTS, seconds=args.updates / len(INSTS) / 100, rate=100, start_ms=1_700_000_000_000)
    port = free_port()
    proc = start_redis(port, Path(tempfile.mkdtemp()))
    url = f"redis://127.0.0.1:{port}/0"
    try:
        if args.only in (None, "operator"):
            bench_operator(frames)
        if args.only in (None, "saturation"):
            bench_saturation(url, frames)
        if args.only in (None, "latency"):
            bench_latency(url, args.seconds, args.rate, args.via_collector)
    finally:
        stop_process(proc)


if __name__ == "__main__":
    main()
