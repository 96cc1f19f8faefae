"""Trades per second per worker through kline aggregation (1m, 5m, 1h, 1d) and the Redis/InfluxDB sinks.

Input: the 14,515 real ETHUSDT trades of ``tests/data/binance/binance-2024-08-08-ethusdt-trade.jsonl.gz``,
repeated over ``--instruments`` instruments and shifted forward in time for every repetition (so minutes keep
closing), as raw Binance combined-stream frames. Measured, one worker, wall clock:

* ``pure``: parse + :func:`operators.klines.bucket_trades` + minute merges in plain Python (no Bytewax);
* ``flow``: Bytewax ``run_main`` of the production steps (``dataflows.market_data.wire``: bucket -> 1-minute
  event-time window -> rollup to 4 timeframes -> Redis pipeline sink (latest kline per key per batch) +
  InfluxDB sink (every closed kline) to a real redis-server and VictoriaMetrics), from pre-parsed trades and
  from raw frames (``parse`` step included), at several source batch sizes.

Usage: ``.venv/bin/python benchmarks/bench_klines.py --trades 500000``
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import bytewax.operators.windowing as win
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.binance.market import parse_binance_frame  # noqa: E402
from cryptoflow.servers import free_port, start_redis, stop_process, wait_for_port  # noqa: E402
from cryptoflow.settings import load_settings  # noqa: E402
from dataflows.market_data import wire  # noqa: E402
from operators.events import Trade  # noqa: E402
from operators.kline_clock import EPOCH  # noqa: E402
from operators.kline_steps import aggregate_klines  # noqa: E402
from operators.klines import Bucket, bucket_trades, merge  # noqa: E402

DATA = ROOT / "tests" / "data" / "binance" / "binance-2024-08-08-ethusdt-trade.jsonl.gz"
SPAN_MS = 11 * 60_000


def frames(n: int, instruments: int) -> tuple[list[str], dict[str, str]]:
    with gzip.open(DATA, "rt") as f:
        base = [json.loads(json.loads(line)["data"])["data"] for line in f]
    syms = [f"C{i}USDT" for i in range(instruments)]
    out: list[str] = []
    rep = 0
    while len(out) < n:
        shift = rep * SPAN_MS
        for d in base:
            for s in syms:
                t = d["T"] + shift
                out.append(f'{{"stream":"{s.lower()}@trade","data":{{"e":"trade","E":{t},"s":"{s}",'
                           f'"t":{d["t"] + rep * 10**7},"p":"{d["p"]}","q":"{d["q"]}","T":{t},'
                           f'"m":{str(d["m"]).lower()},"M":true}}}}')
            if len(out) >= n:
                break
        rep += 1
    return out, {s: f"{s[:-4]}-USDT" for s in syms}


def parse_all(raw: list[str], symbols: dict[str, str]) -> list[Trade]:
    out: list[Trade] = []
    for text in raw:
        out.extend(parse_binance_frame(text, recv_ns=0, symbols=symbols))  # type: ignore[arg-type]
    return out


def bench_pure(raw: list[str], symbols: dict[str, str], batch: int) -> float:
    start = time.perf_counter()
    windows: dict[tuple[str, int], Bucket] = {}
    for i in range(0, len(raw), batch):
        trades = parse_all(raw[i : i + batch], symbols)
        for b in bucket_trades(trades):
            key = (b.instrument, b.start_ms)
            windows[key] = merge(windows[key], b) if key in windows else b
    return len(raw) / (time.perf_counter() - start)


def bench_flow(items: list[Any], symbols: dict[str, str], batch: int, redis_url: str, influx_url: str | None,
               parse: bool) -> float:
    settings = load_settings(redis_url=redis_url, influx_url=influx_url, influx_token="t",
                             price_alerts_enabled=False, kline_timeframes="1m,5m,1h,1d")
    flow = Dataflow("bench_klines")
    src = op.input("inp", flow, TestingSource(items, batch_size=batch))
    if parse:
        def parse_batch(texts: list[str]) -> list[Any]:
            return parse_all(texts, symbols)

        src = op.flat_map_batch("parse", src, parse_batch)
    wire(src, settings)
    start = time.perf_counter()
    run_main(flow)
    return len(items) / (time.perf_counter() - start)


class _Drop(DynamicSink[Any]):
    class _Part(StatelessSinkPartition[Any]):
        def write_batch(self, items: list[Any]) -> None:
            pass

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition[Any]:
        return self._Part()


def bench_design(trades: list[Trade], batch: int, design: str) -> float:
    """Aggregation only (no sinks): ``rollup`` (bucket -> one 1m window -> derived 5m/1h/1d) versus ``windows``
    (one Bytewax ``fold_window`` per timeframe over the raw trades)."""
    flow = Dataflow("bench_design")
    src = op.input("inp", flow, TestingSource(trades, batch_size=batch))
    if design == "rollup":
        ks = aggregate_klines(src, ("1m", "5m", "1h", "1d"), 2.0)
        op.output("out", ks.klines, _Drop())
    else:
        keyed = op.key_on("key", src, lambda t: f"{t.venue}:{t.instrument}")
        clock = win.EventClock(lambda t: EPOCH + timedelta(milliseconds=t.ts_ms),
                               wait_for_system_duration=timedelta(seconds=2),
                               to_system_utc=lambda ts: ts + timedelta(seconds=2))
        for tf, ms in (("1m", 60_000), ("5m", 300_000), ("1h", 3_600_000), ("1d", 86_400_000)):
            windower = win.TumblingWindower(length=timedelta(milliseconds=ms), align_to=EPOCH)
            out = win.fold_window(f"fold_{tf}", keyed, clock, windower, lambda: None, _fold, _merge_acc)
            op.output(f"out_{tf}", out.down, _Drop())
    start = time.perf_counter()
    run_main(flow)
    return len(trades) / (time.perf_counter() - start)


def _fold(acc: Any, t: Trade) -> Any:
    if acc is None:
        return [t.price, t.price, t.price, t.price, t.size, t.price * t.size, t.count]
    if t.price > acc[1]:
        acc[1] = t.price
    elif t.price < acc[2]:
        acc[2] = t.price
    acc[3] = t.price
    acc[4] += t.size
    acc[5] += t.price * t.size
    acc[6] += t.count
    return acc


def _merge_acc(a: Any, b: Any) -> Any:
    return a


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trades", type=int, default=500_000)
    ap.add_argument("--instruments", type=int, default=10)
    ap.add_argument("--batches", default="100,1000")
    ap.add_argument("--no-influx", action="store_true")
    ap.add_argument("--design", action="store_true", help="also compare rollup vs four fold_windows (no sinks)")
    args = ap.parse_args()
    raw, symbols = frames(args.trades, args.instruments)
    trades = parse_all(raw, symbols)
    closed_minutes = len({(t.instrument, t.ts_ms // 60_000) for t in trades})
    print(f"{len(trades):,} trades, {args.instruments} instruments, {closed_minutes:,} instrument-minutes "
          f"(every one a closed 1m kline; 5m/1h/1d derived)")
    work = Path(tempfile.mkdtemp(prefix="bench_klines_"))
    redis_port = free_port()
    redis_proc = start_redis(redis_port, work / "redis")
    vm_proc = None
    influx_url = None
    if not args.no_influx and shutil.which("victoria-metrics"):
        vm_port = free_port()
        vm_proc = subprocess.Popen(["victoria-metrics", f"-httpListenAddr=127.0.0.1:{vm_port}",
                                    f"-storageDataPath={work / 'vm'}", "-retentionPeriod=100y", "-loggerLevel=ERROR"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(vm_port, proc=vm_proc)
        influx_url = f"http://127.0.0.1:{vm_port}"
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    try:
        if args.design:
            for batch in (100, 1000):
                rollup = bench_design(trades, batch, "rollup")
                windows = bench_design(trades, batch, "windows")
                print(f"batch {batch:>5}, aggregation only: bucket + 1m window + rollup {rollup:>10,.0f} trades/s | "
                      f"four fold_windows {windows:>10,.0f} trades/s")
        for batch in (int(b) for b in args.batches.split(",")):
            pure = bench_pure(raw, symbols, batch)
            pre = bench_flow(trades, symbols, batch, redis_url, influx_url, parse=False)
            full = bench_flow(raw, symbols, batch, redis_url, influx_url, parse=True)
            print(f"batch {batch:>5}: pure parse+aggregate {pure:>10,.0f} trades/s | Bytewax 1 worker, "
                  f"4 timeframes + Redis + {'Influx' if influx_url else 'no Influx'}: pre-parsed {pre:>10,.0f} "
                  f"trades/s, from raw frames {full:>10,.0f} trades/s")
    finally:
        stop_process(redis_proc)
        if vm_proc is not None:
            stop_process(vm_proc)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
