"""The exchange's own trades through ``market_data`` (``MARKET_DATA_VENUES=local``): throughput and latency.

Real processes: redis-server, optionally VictoriaMetrics (``--influx``: closed klines written synchronously,
:mod:`connectors.influx.sync`), and ``python -m bytewax.run dataflows.market_data`` with one worker.

* ``throughput``: ``--trades`` entries are XADDed (pipelined, timed on their own) into ``--instruments``
  streams before the dataflow starts; measured is the time from the first trade visible in a ``kline:`` hash
  to the last (the 1d hash's ``trades`` counts them), so start-up is left out. trades/s = per worker.
* ``latency``: a producer XADDs ``--rate`` trades/s (one pipeline per 10 ms tick, ``ts`` = now) for
  ``--seconds``; Redis keyspace notifications on ``kline:local:*:1d`` give the moment each HSET lands; a
  trade's latency is from its XADD being sent (the wall clock read after the tick's pipeline is packed, right
  before it goes to the socket) to the first notification whose ``trades`` count includes it (wall clock; the
  observer is a process of its own, so the producer never delays its clock reads).

* ``sink``: the Redis sink's cost for one such batch: the worker's CPU to queue and pack it, and the server's
  time per EVAL.

Usage: ``.venv/bin/python benchmarks/bench_local_trades.py throughput --trades 1000000``
       ``.venv/bin/python benchmarks/bench_local_trades.py latency --rate 5000 --seconds 30``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptoflow.servers import free_port, start_redis, stop_process, wait_for_port  # noqa: E402

INSTRUMENTS = ("BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "DOGE-USDT", "BNB-USDT", "ADA-USDT", "LTC-USDT",
               "DOT-USDT", "UNI-USDT")


@contextmanager
def servers(influx: bool) -> Iterator[tuple[str, str | None]]:
    work = Path(tempfile.mkdtemp(prefix="bench_local_"))
    port = free_port()
    rproc = start_redis(port, work)
    vproc = None
    vm_url = None
    try:
        if influx:
            vport = free_port()
            vproc = subprocess.Popen(["victoria-metrics", f"-httpListenAddr=127.0.0.1:{vport}",
                                      f"-storageDataPath={work / 'vm'}", "-retentionPeriod=100y", "-loggerLevel=ERROR"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            wait_for_port(vport, proc=vproc)
            vm_url = f"http://127.0.0.1:{vport}"
        yield f"redis://127.0.0.1:{port}/0", vm_url
    finally:
        if vproc is not None:
            stop_process(vproc)
        stop_process(rproc)
        shutil.rmtree(work, ignore_errors=True)


def start_flow(redis_url: str, vm_url: str | None, log: Path, batch: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": redis_url, "MARKET_DATA_VENUES": "local", "KLINE_TIMEFRAMES": "1m,5m,1h,1d",
           "PRICE_ALERTS_ENABLED": "false", "LOG_FORMAT": "json", "LOCAL_STREAM_BATCH": str(batch),
           "TRADING_PAIRS_POLL_INTERVAL": "0.5"}
    if vm_url:
        env.update(INFLUX_URL=vm_url, INFLUX_TOKEN="t")
    else:
        env.pop("INFLUX_URL", None)
    return subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.market_data"], cwd=ROOT, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def entry(i: int, ts: int) -> dict[str, str]:
    tick = 6_000_000 + (i * 7919) % 2001 - 1000
    return {"price": f"{tick // 100}.{tick % 100:02d}", "amount": f"0.{1 + i % 9999:04d}",
            "side": "buy" if i % 3 else "sell", "ts": str(ts), "trade_id": str(i + 1)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its worker thread does the work) — the share of a core it got,
    which on a loaded machine says more than wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def consumed(client: redis.Redis, insts: tuple[str, ...]) -> int:
    return sum(int(client.hget(f"kline:local:{i}:1d", "trades") or 0) for i in insts)


def throughput(args: argparse.Namespace) -> None:
    insts = INSTRUMENTS[: args.instruments]
    per = args.trades // len(insts)
    day = 1_723_161_600_000  # 2024-08-09 00:00 UTC: every trade within one UTC day (the 1d hash counts all)
    with servers(args.influx) as (url, vm):
        client = redis.Redis.from_url(url)
        client.sadd("config:trading_pairs", *insts)
        t0 = time.perf_counter()
        for lo in range(0, per, 5_000):
            pipe = client.pipeline(transaction=False)
            for inst in insts:
                for i in range(lo, min(per, lo + 5_000)):
                    pipe.xadd(f"trades:{inst}", entry(i, day + i * 80_000_000 // per))  # type: ignore[arg-type]
            pipe.execute()
        xadd_s = time.perf_counter() - t0
        log = Path(tempfile.mkdtemp()) / "flow.log"
        proc = start_flow(url, vm, log, args.batch)
        try:
            deadline = time.monotonic() + 600
            while consumed(client, insts) == 0:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"no kline written; see {log}")
                time.sleep(0.005)
            start, first, cpu0 = time.perf_counter(), consumed(client, insts), cpu_seconds(proc.pid)
            total = per * len(insts)
            while (done := consumed(client, insts)) < total:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {done} of {total} trades after 600 s; see {log}")
                time.sleep(0.01)
            secs = time.perf_counter() - start
            cpu = cpu_seconds(proc.pid) - cpu0
        finally:
            stop_process(proc)
    rate = (total - first) / secs
    print(f"throughput: {total:,} trades, {len(insts)} streams, LOCAL_STREAM_BATCH={args.batch}, "
          f"influx={'on' if args.influx else 'off'}: XADD (pipelined, 5k/stream/pipeline) {total / xadd_s:,.0f}/s; "
          f"dataflow {total - first:,} trades in {secs:.2f} s wall = {rate:,.0f} trades/s per worker; "
          f"{cpu:.2f} s CPU of the dataflow process = {(total - first) / cpu:,.0f} trades per CPU second; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def watch(url: str, insts: tuple[str, ...], ready: Any, stop: Any, out: Any) -> None:
    """The observer, in a process of its own (sharing the producer's GIL delayed its clock reads by up to the
    interpreter's 5 ms switch interval): per stream, the wall time at which each trade count was first visible."""
    client = redis.Redis.from_url(url)
    sub = client.pubsub()  # type: ignore[no-untyped-call]
    sub.psubscribe("__keyspace@0__:kline:local:*:1d")
    seen: dict[str, list[float]] = {i: [] for i in insts}
    ready.set()
    while not stop.is_set():
        msg = sub.get_message(timeout=0.05)
        if msg is None or msg["type"] != "pmessage":
            continue
        now = time.time()
        inst = msg["channel"].decode().split(":")[3]
        n = int(client.hget(f"kline:local:{inst}:1d", "trades") or 0)
        got = seen[inst]
        got.extend([now] * (n - len(got)))
    out.send(seen)


def latency(args: argparse.Namespace) -> None:
    insts = INSTRUMENTS[: args.instruments]
    with servers(args.influx) as (url, vm):
        client = redis.Redis.from_url(url)
        client.config_set("notify-keyspace-events", "Kh")
        client.sadd("config:trading_pairs", *insts)
        log = Path(tempfile.mkdtemp()) / "flow.log"
        proc = start_flow(url, vm, log, args.batch)
        sent: dict[str, list[float]] = {i: [] for i in insts}  # per stream, send time of trade k (1-based index)
        ctx = multiprocessing.get_context("spawn")
        ready, stop = ctx.Event(), ctx.Event()
        receive, send = ctx.Pipe(duplex=False)
        watcher = ctx.Process(target=watch, args=(url, insts, ready, stop, send), daemon=True)
        try:
            # wait until the dataflow reads the streams (its pairs poll logged), then produce
            deadline = time.monotonic() + 60
            while b"local_streams" not in log.read_bytes():
                if time.monotonic() > deadline:
                    raise SystemExit(f"dataflow not reading; see {log}")
                time.sleep(0.05)
            watcher.start()
            ready.wait(30)
            cpu0, wall0 = cpu_seconds(proc.pid), time.perf_counter()
            tick, per_tick = 0.01, args.rate / 100 / len(insts)
            owed = 0.0
            k = 0
            t_next = time.perf_counter()
            end = t_next + args.seconds
            conn = client.connection_pool.make_connection()
            now = 0.0
            while t_next < end:
                owed += per_tick
                n = int(owed)
                owed -= n
                ts = time.time_ns() // 1_000_000
                cmds = [("XADD", f"trades:{inst}", "*", *(x for kv in entry(k + j, ts).items() for x in kv))
                        for inst in insts for j in range(n)]
                if cmds:
                    # one pipeline, packed before the clock is read: "sent" is when the XADDs leave (the
                    # producer's own packing, ~0.3-0.5 ms for 50 entries, is not the dataflow's latency)
                    packed = conn.pack_commands(cmds)
                    now = time.time()
                    conn.send_packed_command(packed)
                    for _ in cmds:
                        conn.read_response()  # raises on an error reply
                for inst in insts:
                    sent[inst].extend([now] * n)
                k += n
                t_next += tick
                time.sleep(max(0.0, t_next - time.perf_counter()))
            total = sum(map(len, sent.values()))
            deadline = time.monotonic() + 30
            while consumed(client, insts) < total and time.monotonic() < deadline:
                time.sleep(0.05)
            share = (cpu_seconds(proc.pid) - cpu0) / (time.perf_counter() - wall0)
            time.sleep(0.2)  # the last notifications reach the observer
            stop.set()
            seen: dict[str, list[float]] = receive.recv()
            watcher.join(10)
        finally:
            stop.set()
            stop_process(proc)
    if args.dump:  # per stream, each trade's XADD-sent and first-seen wall times (for a timeline)
        Path(args.dump).write_text(json.dumps({"sent": sent, "seen": seen}))
    lat = sorted((s - x) * 1000 for i in insts for x, s in zip(sent[i], seen[i], strict=False))
    warm = lat  # every trade counted; the first second included (no warm-up excluded)
    q = statistics.quantiles(warm, n=100)
    print(f"latency: {total:,} trades at {args.rate:,}/s over {len(insts)} streams for {args.seconds} s, "
          f"influx={'on' if args.influx else 'off'}: XADD -> kline: hash p50 {q[49]:.2f} ms, p90 {q[89]:.2f} ms, "
          f"p99 {q[98]:.2f} ms, max {warm[-1]:.2f} ms ({len(warm):,} seen); the dataflow used {share:.0%} of a "
          f"core; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def sink(args: argparse.Namespace) -> None:
    """The Redis sink's share of one latency-mode batch (50 trades of 2 pairs, their 8 klines and 2 tickers):
    the worker's CPU to queue and pack it (no socket), and the server's time per EVAL (SLOWLOG at 0 us)."""
    from decimal import Decimal

    from connectors.redis.market_sink import MarketWriter
    from operators.events import Kline, Ticker, Trade
    from operators.kline_steps import KlineOut

    t0, d = 1_723_161_600_000, Decimal

    def batch(n: int) -> list[Any]:
        items: list[Any] = [Trade("local", INSTRUMENTS[i % 2], str(n * 50 + i + 1), d("60000.12"), d("0.0123"),
                                  "buy", t0 + n, 1) for i in range(50)]
        for inst in INSTRUMENTS[:2]:
            items += [KlineOut(Kline("local", inst, tf, t0, t0 + ms, d("60000.12"), d("60010.5"), d("59990.01"),
                                     d("60001.3"), d("12.3456"), d("740000.123456"), 1000 + n, False))
                      for tf, ms in (("1m", 60_000), ("5m", 300_000), ("1h", 3_600_000), ("1d", 86_400_000))]
            items.append(Ticker("local", inst, d("60001.3"), None, None, d("123.45"), d("1.2345"), d("60010.5"),
                                d("59990.01"), t0 + n))
        return items

    batches = [batch(n) for n in range(args.batches)]
    with servers(False) as (url, _):
        client = redis.Redis.from_url(url)
        conn = client.connection_pool.make_connection()
        writer = MarketWriter()
        cpu = []
        for _ in range(5):
            c0 = time.thread_time()
            for items in batches:
                pipe = client.pipeline(transaction=False)
                writer(pipe, items)
                conn.pack_commands([c[0] for c in pipe.command_stack])  # type: ignore[attr-defined]
            cpu.append((time.thread_time() - c0) / len(batches) * 1e6)
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", 100_000)
        client.slowlog_reset()
        for items in batches:
            pipe = client.pipeline(transaction=False)
            writer(pipe, items)
            pipe.execute()
        log = [e for e in client.slowlog_get(100_000) if e["command"].startswith(b"EVAL")]
        hashes = statistics.median(e["duration"] for e in log if b"stream:" not in e["command"])
        events = statistics.median(e["duration"] for e in log if b"stream:" in e["command"])
    print(f"sink: {args.batches} batches of 50 trades, 8 klines, 2 tickers: queue + pack {statistics.median(cpu):.0f} "
          f"us CPU per batch (median of 5 rounds: {', '.join(f'{c:.0f}' for c in cpu)}); server per batch: hashes "
          f"EVAL {hashes:.0f} us, events EVAL {events:.0f} us (SLOWLOG medians); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("throughput", "latency", "sink"))
    p.add_argument("--trades", type=int, default=1_000_000)
    p.add_argument("--instruments", type=int, default=2)
    p.add_argument("--batch", type=int, default=1000, help="LOCAL_STREAM_BATCH")
    p.add_argument("--rate", type=int, default=5000)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--influx", action="store_true", help="also write closed klines to a VictoriaMetrics")
    p.add_argument("--batches", type=int, default=200, help="sink: batches per round")
    p.add_argument("--dump", help="latency: write each trade's sent and seen wall times to this JSON file")
    args = p.parse_args()
    {"throughput": throughput, "latency": latency, "sink": sink}[args.mode](args)


if __name__ == "__main__":
    main()
