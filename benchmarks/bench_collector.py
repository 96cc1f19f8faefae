"""Order-book collector benchmark: book updates/s per worker and frame-receipt -> hash-write latency.

1. Throughput (``--mode throughput``): 10 instruments x 400 levels, synthetic OKX ``books`` updates (~15 levels
   changed each, real seqId chain and checksum), pre-loaded into the collector's source partition (the real
   ``_Partition`` + ``OkxBookProcessor``: parse + book + integrity on the worker), through Bytewax
   (``run_main``, one worker) into (a) a counting sink and (b) the real ``CollectorRedisSink`` (local Redis).
2. Latency (``--mode latency``): the whole collector source (WebSocket shards, pairs poller, REST) against the
   simulator at 10 pairs x 100 updates/s (and ``--sat-rate`` for a saturation run), Redis sink with a latency
   observer: each written hash's ``recv_ns`` (stamped right after the WebSocket read) -> pipeline done.

Run: ``.venv/bin/python benchmarks/bench_collector.py`` (both), ``--frames 50000``, ``--seconds 10``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from bytewax import operators as op  # noqa: E402
from bytewax.dataflow import Dataflow  # noqa: E402
from bytewax.inputs import FixedPartitionedSource  # noqa: E402
from bytewax.outputs import DynamicSink, StatelessSinkPartition  # noqa: E402
from bytewax.testing import run_main  # noqa: E402

from connectors.okx.book_source import OkxBookProcessor, okx_books_source  # noqa: E402
from connectors.redis.book_sink import CollectorRedisSink  # noqa: E402
from connectors.ws.events import Frame, Subscribed, TopicsChecked  # noqa: E402
from connectors.ws.source import _Partition  # noqa: E402
from cryptoflow import heap  # noqa: E402
from cryptoflow.connector_configs import okx_books_config  # noqa: E402
from cryptoflow.servers import free_port, start_redis, stop_process  # noqa: E402
from cryptoflow.settings import load_settings  # noqa: E402
from operators.book_checksum import okx_checksum  # noqa: E402
from operators.events import BookView, Level  # noqa: E402
from operators.orderbook import OrderBook  # noqa: E402

INSTS = [f"C{i}-USDT" for i in range(10)]


# --- synthetic frames ----------------------------------------------------------------------------------------
def make_frames(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    frames: list[str] = []
    books: dict[str, tuple[dict[int, str], dict[int, str]]] = {}
    seqs: dict[str, int] = {}
    for inst in INSTS:
        bids = {p: str(rng.randint(1, 500)) for p in range(10000 - 400, 10000)}
        asks = {p: str(rng.randint(1, 500)) for p in range(10001, 10401)}
        books[inst] = (bids, asks)
        seqs[inst] = 1000
        frames.append(_frame(inst, "snapshot", bids, asks, bids, asks, -1, 1000))
    for _ in range(n):
        inst = rng.choice(INSTS)
        bids, asks = books[inst]
        ch_b: dict[int, str] = {}
        ch_a: dict[int, str] = {}
        for _ in range(15):
            side, ch = (bids, ch_b) if rng.random() < 0.5 else (asks, ch_a)
            best = max(bids) if side is bids else min(asks)
            p = best - rng.randint(0, 60) if side is bids else best + rng.randint(0, 60)
            size = "0" if rng.random() < 0.3 and p in side and len(side) > 300 else str(rng.randint(1, 500))
            ch[p] = size
            if size == "0":
                side.pop(p, None)
            else:
                side[p] = size
        prev = seqs[inst]
        seqs[inst] = prev + rng.randint(1, 3)
        frames.append(_frame(inst, "update", ch_b, ch_a, bids, asks, prev, seqs[inst]))
    return frames


def _px(p: int) -> str:
    return f"{p / 10:.1f}"


def _frame(inst: str, action: str, ch_b: dict[int, str], ch_a: dict[int, str], bids: dict[int, str],
           asks: dict[int, str], prev: int, seq: int) -> str:
    top_b = [Level(_px(p), bids[p]) for p in sorted(bids, reverse=True)[:25]]
    top_a = [Level(_px(p), asks[p]) for p in sorted(asks)[:25]]
    data = {"asks": [[_px(p), s, "0", "1"] for p, s in sorted(ch_a.items())],
            "bids": [[_px(p), s, "0", "1"] for p, s in sorted(ch_b.items(), reverse=True)],
            "ts": str(int(time.time() * 1000)), "checksum": okx_checksum(top_b, top_a),
            "prevSeqId": prev, "seqId": seq}
    return orjson.dumps({"arg": {"channel": "books", "instId": inst}, "action": action, "data": [data]}).decode()


# --- throughput through Bytewax -----------------------------------------------------------------------------
class _NoControl:
    connections = 1
    reconnects = 0

    def resubscribe(self, topic: str) -> None:
        raise AssertionError(f"unexpected resync of {topic}")

    def fetch(self, topic: str) -> None:
        raise AssertionError(f"unexpected REST fetch of {topic}")


class _Runner:
    def stop(self) -> None:
        pass


class _Preloaded(_Partition):  # type: ignore[type-arg]
    def next_batch(self):  # type: ignore[no-untyped-def]
        if not self._events:
            raise StopIteration
        return super().next_batch()


class PreloadedSource(FixedPartitionedSource):  # type: ignore[type-arg]
    def __init__(self, frames: list[str], max_batch: int) -> None:
        self.frames = frames
        self.max_batch = max_batch

    def list_parts(self) -> list[str]:
        return ["shard-0"]

    def build_part(self, step_id, for_part, resume_state):  # type: ignore[no-untyped-def]
        events: deque = deque([TopicsChecked(0, True, tuple(INSTS), tuple(INSTS))])
        events.extend(Subscribed(0, i) for i in INSTS)
        now = time.time_ns()
        events.extend(Frame(t, now, 0) for t in self.frames)
        proc = OkxBookProcessor(0, _NoControl(), channel="books")
        return _Preloaded(_Runner(), events, proc, 0.25, self.max_batch)  # type: ignore[arg-type]


class _Count(StatelessSinkPartition):  # type: ignore[type-arg]
    def __init__(self, box: list[int]) -> None:
        self.box = box

    def write_batch(self, items):  # type: ignore[no-untyped-def]
        self.box[0] += sum(1 for x in items if type(x) is BookView)


class CountSink(DynamicSink):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self.box = [0]

    def build(self, step_id, worker_index, worker_count):  # type: ignore[no-untyped-def]
        return _Count(self.box)


def throughput(frames: list[str], redis_url: str | None, max_batch: int) -> float:
    """Updates/s: every frame but the snapshots over the dataflow's wall time."""
    return (len(frames) - len(INSTS)) / run_seconds(frames, redis_url, max_batch)


def run_seconds(frames: list[str], redis_url: str | None, max_batch: int) -> float:
    """Wall seconds of the dataflow: preloaded frames -> the collector's processor -> a count sink (or Redis).
    The heap is settled first, as a dataflow process does once its flow is built (cryptoflow.entry)."""
    flow = Dataflow("bench_collector")
    items = op.input("okx_books", flow, PreloadedSource(frames, max_batch))
    if redis_url is None:
        op.output("out", items, CountSink())
    else:
        books = op.filter_map("book_items", items, lambda x: x if type(x).__name__ in (
            "BookView", "BookState", "BufferFrame") else None)
        op.output("redis", books, CollectorRedisSink(redis_url, "bench_buffer", 100_000))
    heap.settle()
    start = time.perf_counter()
    run_main(flow)
    return time.perf_counter() - start


def check_frames(frames: list[str]) -> None:
    books = {i: OrderBook(i) for i in INSTS}
    from connectors.okx.books import parse_books_frame
    from operators.book_results import is_failure
    for f in frames[:2000]:
        for d in parse_books_frame(f, recv_ns=0):  # type: ignore[union-attr]
            assert not is_failure(books[d.instrument].apply(d))


# --- latency against the simulator ----------------------------------------------------------------------------
def latency(redis_url: str, redis_port: int, rate: float, seconds: float) -> tuple[list[int], int]:
    from tests.fixtures.simulator import launch_simulator

    sim = launch_simulator("--pairs", ",".join(f"{c}-USDT" for c in
                                               ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LTC", "TRX", "BNB")),
                           "--rate", str(rate), "--seed", "1")
    try:
        import redis

        r = redis.Redis(port=redis_port)
        r.flushall()
        r.sadd("config:trading_pairs", *[f"{c}-USDT" for c in
                                         ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LTC", "TRX", "BNB")])
        settings = load_settings(redis_url=redis_url, okx_ws_url=sim.okx_ws_url, okx_rest_url=sim.okx_rest_url,
                                 trading_pairs_poll_interval=1.0, okx_pairs_per_connection=5)
        lats: list[int] = []
        src = okx_books_source(okx_books_config(settings), shards=2)
        deadline = [0.0]
        real_factory = src._processor

        def processor(index, control):  # type: ignore[no-untyped-def]
            proc = real_factory(index, control)
            tick = proc.on_tick

            def on_tick(now_ns: int):  # type: ignore[no-untyped-def]
                if deadline[0] and time.monotonic() > deadline[0]:
                    raise StopIteration
                return tick(now_ns)

            proc.on_tick = on_tick
            return proc

        src._processor = processor
        warm = time.monotonic() + 3.0

        def observe(batch: list[int]) -> None:
            if time.monotonic() > warm:
                lats.extend(batch)

        flow = Dataflow("bench_latency")
        items = op.input("okx_books", flow, src)
        books = op.filter_map("book_items", items, lambda x: x if type(x).__name__ in (
            "BookView", "BookState", "BufferFrame") else None)
        op.output("redis", books, CollectorRedisSink(redis_url, "bench_buffer", 10_000, observe))
        deadline[0] = time.monotonic() + 3.0 + seconds
        heap.settle()  # as the dataflow process does (cryptoflow.entry)
        run_main(flow)
        frames = int(r.llen("bench_buffer"))
        return lats, frames
    finally:
        sim.stop()


def pct(values: list[int], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("all", "throughput", "latency"), default="all")
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--sat-rate", type=float, default=1000.0, help="updates/s per pair for the saturation run")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_collector_"))
    port = free_port()
    server = start_redis(port, tmp / "redis")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        if args.mode in ("all", "throughput"):
            frames = make_frames(args.frames)
            check_frames(frames)
            print(f"frames: {len(frames)} (10 instruments, 400 levels/side, ~15 levels per update, "
                  f"{sum(map(len, frames[10:])) / (len(frames) - 10):.0f} B avg)")
            for label, redis_url, batch in (("parse+book+checksum -> count sink", None, 5000),
                                            ("parse+book+checksum -> count sink, batch<=100", None, 100),
                                            ("parse+book+checksum -> Redis sink (hash+buffer)", url, 5000)):
                rates = [throughput(frames, redis_url, batch) for _ in range(3)]
                print(f"throughput [{label}]: median {statistics.median(rates):,.0f} updates/s per worker "
                      f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})")
        if args.mode in ("all", "latency"):
            for rate in (100.0, args.sat_rate):
                lats, frames = latency(url, port, rate, args.seconds)
                if not lats:
                    print(f"latency at 10 x {rate:g}/s: no samples")
                    continue
                print(f"latency frame receipt -> orderbook hash written, 10 pairs x {rate:g}/s for {args.seconds:g} s: "
                      f"p50 {pct(lats, 0.5):.2f} ms, p99 {pct(lats, 0.99):.2f} ms, max {max(lats) / 1e6:.1f} ms "
                      f"({len(lats)} hash writes, {frames} frames buffered)")
    finally:
        stop_process(server)


if __name__ == "__main__":
    main()
