"""Price-alert matching with 1,000,000 alerts in Redis.

1. ``throughput``: trade ticks for 10 instruments (100,000 alerts each, half ``gt`` half ``lt``, thresholds
   away from the price, so a tick is checked but rarely fires) matched in batches through
   :class:`connectors.alerts.matcher.PriceAlertSink` (freshness filter + per-instrument high/low + ONE Lua
   call per batch) by one worker: ticks/s at several batch sizes, called directly and through a one-worker
   Bytewax dataflow (``TestingSource`` -> the sink).
2. ``latency``: one tick that fires exactly 10 alerts (10 fresh alerts just under its price, the other
   100,000 of that instrument out of reach): time of the whole ``match`` call (reduce + script round trip +
   10 hashes marked + 10 jobs queued); p50/p99 over many repetitions.

Targets (issue 7): >= 20,000 ticks/s by one worker; p99 < 2 ms for a tick firing 10 alerts.

Run: .venv/bin/python benchmarks/bench_alerts.py [--alerts 1000000] [--ticks 200000] [--reps 2000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from bytewax import operators as op  # noqa: E402
from bytewax.dataflow import Dataflow  # noqa: E402
from bytewax.testing import TestingSource, run_main  # noqa: E402

from connectors.alerts.matcher import AlertMatcher, PriceAlertSink  # noqa: E402
from cryptoflow.servers import free_port, start_redis, stop_process  # noqa: E402
from operators.events import Trade  # noqa: E402

INSTRUMENTS = [f"C{i}-USDT" for i in range(10)]
PRICE = 1000.0

# Creates ARGV[2] alerts of instrument ARGV[1] numbered from ARGV[3]: half gt in (1.02..1.5) x PRICE,
# half lt in (0.5..0.98) x PRICE (deterministic spread), in the shapes the store writes.
_FILL = """
local inst, n, start, price = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for i = start, start + n - 1 do
  local id = string.format('%032x', i)
  local up = (i % 2 == 0)
  local frac = ((i * 7919) % 100000) / 100000
  local thr = up and price * (1.02 + 0.48 * frac) or price * (0.98 - 0.48 * frac)
  thr = math.floor(thr * 100) / 100
  redis.call('HSET', 'alert:' .. id, 'id', id, 'crypto', inst, 'price', tostring(thr),
             'direction', up and 'true' or 'false', 'email', 'u' .. i .. '@example.com',
             'created_at', '2026-11-21T09:00:00.000Z', 'status', 'active')
  redis.call('ZADD', 'alert:' .. inst .. (up and ':gt' or ':lt'), thr, id)
end
return n
"""


def fill(client: redis.Redis, total: int) -> float:
    script = client.register_script(_FILL)
    per = total // len(INSTRUMENTS)
    started = time.perf_counter()
    next_id = 1
    for inst in INSTRUMENTS:
        for chunk in range(0, per, 10_000):
            n = min(10_000, per - chunk)
            script(args=[inst, n, next_id, PRICE])
            next_id += n
    return time.perf_counter() - started


def throughput(url: str, n_ticks: int, batch: int) -> float:
    rng = random.Random(1)
    now_ms = time.time_ns() // 1_000_000
    trades = [Trade("okx", rng.choice(INSTRUMENTS), str(i), Decimal(f"{PRICE * rng.uniform(0.99, 1.01):.2f}"),
                    Decimal(1), "buy", now_ms, now_ms * 1_000_000) for i in range(n_ticks)]
    part = PriceAlertSink(url, max_age_s=3600).build("bench", 0, 1)
    started = time.perf_counter()
    for i in range(0, len(trades), batch):
        part.write_batch(trades[i:i + batch])
    elapsed = time.perf_counter() - started
    part.close()
    return n_ticks / elapsed


def through_bytewax(url: str, n_ticks: int, batch: int) -> float:
    """The same ticks through a one-worker Bytewax dataflow (TestingSource -> PriceAlertSink)."""
    rng = random.Random(2)
    now_ms = time.time_ns() // 1_000_000
    trades = [Trade("okx", rng.choice(INSTRUMENTS), str(i), Decimal(f"{PRICE * rng.uniform(0.99, 1.01):.2f}"),
                    Decimal(1), "buy", now_ms, now_ms * 1_000_000) for i in range(n_ticks)]
    flow = Dataflow("bench_alerts")
    op.output("match", op.input("ticks", flow, TestingSource(trades, batch_size=batch)),
              PriceAlertSink(url, max_age_s=3600))
    started = time.perf_counter()
    run_main(flow)
    return n_ticks / (time.perf_counter() - started)


def latency(client: redis.Redis, reps: int) -> list[float]:
    matcher = AlertMatcher(client)
    inst = INSTRUMENTS[0]
    samples: list[float] = []
    base = 10**9
    for r in range(reps):
        ids = [f"{base + r * 10 + k:032x}" for k in range(10)]
        pipe = client.pipeline(transaction=False)
        for k, aid in enumerate(ids):
            thr = PRICE - 1 - k * 0.01  # just under the tick price; every other gt alert is >= 1.02 x PRICE
            pipe.hset(f"alert:{aid}", mapping={"id": aid, "crypto": inst, "price": f"{thr:.2f}",
                                               "direction": "true", "email": f"l{k}@example.com",
                                               "created_at": "2026-11-21T09:00:00.000Z", "status": "active"})
            pipe.zadd(f"alert:{inst}:gt", {aid: thr})
        if r % 100 == 0:
            pipe.ltrim("queue:email", 0, 0)
        pipe.execute()
        tick = [(inst, Decimal(f"{PRICE:.2f}"), time.time_ns() // 1_000_000)]
        t0 = time.perf_counter()
        fired = matcher.match(tick)
        samples.append((time.perf_counter() - t0) * 1000)
        assert sorted(fired) == ids, (fired, ids)
    return samples


def ping_baseline(client: redis.Redis, reps: int) -> list[float]:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        client.ping()
        samples.append((time.perf_counter() - t0) * 1000)
    return sorted(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=1_000_000)
    ap.add_argument("--ticks", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=2000)
    args = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_redis(port, Path(tmp))
        try:
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis(port=port)
            took = fill(client, args.alerts)
            sets = sum(client.zcard(f"alert:{i}:{s}") for i in INSTRUMENTS for s in ("gt", "lt"))
            print(f"alerts in Redis: {sets:,} (filled in {took:.1f} s), used_memory "
                  f"{client.info('memory')['used_memory_human']}")
            samples = sorted(latency(client, args.reps))
            p50 = statistics.median(samples)
            p99 = samples[int(len(samples) * 0.99) - 1]
            print(f"latency tick firing 10 alerts: p50 {p50:.3f} ms  p99 {p99:.3f} ms  max {samples[-1]:.3f} ms "
                  f"({len(samples)} reps)")
            for batch in (1, 100, 1000):
                n = min(args.ticks, 20_000) if batch == 1 else args.ticks
                rate = throughput(url, n, batch)
                print(f"throughput batch={batch:<5} {rate:>12,.0f} ticks/s matched (one worker, {n:,} ticks)")
            for batch in (100, 1000):
                rate = through_bytewax(url, args.ticks, batch)
                print(f"through Bytewax batch={batch:<5} {rate:>9,.0f} ticks/s matched (one worker, "
                      f"{args.ticks:,} ticks)")
            ping = ping_baseline(client, args.reps)
            print(f"baseline PING round trip:      p50 {statistics.median(ping):.3f} ms  "
                  f"p99 {ping[int(len(ping) * 0.99) - 1]:.3f} ms (machine noise floor)")
            untouched = sum(client.zcard(f"alert:{i}:{s}") for i in INSTRUMENTS for s in ("gt", "lt"))
            print(f"alerts still armed after the runs: {untouched:,} (nothing but the latency alerts fired)")
        finally:
            stop_process(proc)


if __name__ == "__main__":
    main()
