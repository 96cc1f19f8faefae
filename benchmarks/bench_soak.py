"""Collector soak: is the collector's memory flat after warm-up?

The real collector process (``python -m bytewax.run dataflows.orderbook_collector``, one worker) against the
simulator (10 synthetic pairs x ``--rate`` book updates/s, real checksums) and a local redis-server, for
``--minutes``. The collector's RSS (``VmRSS`` from ``/proc/PID/status``) is sampled every ``--interval`` s; the
samples are printed as they come, then the least-squares slope of RSS over time after ``--warmup`` minutes,
in MB per 10 minutes (target: under 1).

``--trace DIR`` runs the collector under :mod:`tracemalloc` instead and writes, every ``--trace-every`` s, the
allocation sites that grew most since the first snapshot (taken after the warm-up) to ``DIR/diff_<t>.txt``:
the tool to find what grows. It slows the collector down; do not compare its RSS with a plain run.

Run: ``.venv/bin/python benchmarks/bench_soak.py --minutes 30`` (``--minutes 2 --warmup 0.5`` for a smoke run).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptoflow.allocator import with_allocator  # noqa: E402
from cryptoflow.servers import free_port, start_redis, stop_process  # noqa: E402
from tests.fixtures.simulator import launch_simulator  # noqa: E402

PAIRS = [f"{c}-USDT" for c in ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LTC", "TRX", "BNB")]

# The collector under tracemalloc: snapshots diffed against the one taken after the warm-up.
_TRACER = """
import os, runpy, sys, threading, time, tracemalloc
tracemalloc.start(int(os.environ.get("SOAK_TRACE_FRAMES", "8")))
out, warm, every = os.environ["SOAK_TRACE_DIR"], float(os.environ["SOAK_WARMUP_S"]), float(os.environ["SOAK_EVERY_S"])
def watch():
    t0 = time.monotonic()
    time.sleep(warm)
    base = tracemalloc.take_snapshot()
    while True:
        time.sleep(every)
        snap = tracemalloc.take_snapshot()
        t = round(time.monotonic() - t0)
        with open(os.path.join(out, f"diff_{t:05d}.txt"), "w") as f:
            cur, peak = tracemalloc.get_traced_memory()
            f.write(f"t={t}s traced={cur / 1e6:.1f} MB peak={peak / 1e6:.1f} MB\\n")
            for stat in snap.compare_to(base, "traceback")[:25]:
                f.write(f"{stat.size_diff / 1e6:+.3f} MB {stat.count_diff:+d} blocks (now {stat.size / 1e6:.3f} MB)\\n")
                for line in stat.traceback.format()[-12:]:
                    f.write(f"    {line}\\n")
threading.Thread(target=watch, daemon=True).start()
sys.argv = ["bytewax.run", "dataflows.orderbook_collector"]
runpy.run_module("bytewax.run", run_name="__main__", alter_sys=True)
"""


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    msg = f"no VmRSS line in /proc/{pid}/status"
    raise RuntimeError(msg)


def slope_per_10min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per 10 minutes."""
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mm = sum(m for _, m in samples) / n
    num = sum((t - mt) * (m - mm) for t, m in samples)
    den = sum((t - mt) ** 2 for t, _ in samples)
    return num / den * 600 if den else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0, help="minutes left out of the slope")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between RSS samples")
    ap.add_argument("--rate", type=float, default=100.0, help="book updates/s per pair")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--trace", type=Path, default=None, help="run under tracemalloc, diffs into this directory")
    ap.add_argument("--trace-every", type=float, default=60.0)
    ap.add_argument("--allocator", choices=("jemalloc", "glibc"), default="jemalloc",
                    help="the collector's malloc: jemalloc as `cryptoflow run` starts it (default), or glibc's")
    args = ap.parse_args()
    pairs = PAIRS[: args.pairs]
    tmp = Path(tempfile.mkdtemp(prefix="bench_soak_"))
    port = free_port()
    redis_proc = start_redis(port, tmp / "redis")
    sim = launch_simulator("--pairs", ",".join(pairs), "--rate", str(args.rate), "--seed", "1", "--checksum", "real")
    collector: subprocess.Popen[bytes] | None = None
    try:
        import redis

        r = redis.Redis(port=port)
        r.sadd("config:trading_pairs", *pairs)
        env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{port}/0", OKX_WS_URL=sim.okx_ws_url,
                   OKX_REST_URL=sim.okx_rest_url, LOG_FORMAT="json", PYTHONUNBUFFERED="1")
        env.pop("INFLUX_URL", None)
        env = with_allocator(dict(env, CRYPTOFLOW_ALLOCATOR=args.allocator))
        if args.trace is not None:
            args.trace.mkdir(parents=True, exist_ok=True)
            env.update(SOAK_TRACE_DIR=str(args.trace), SOAK_WARMUP_S=str(args.warmup * 60),
                       SOAK_EVERY_S=str(args.trace_every))
            cmd = [sys.executable, "-c", _TRACER]
        else:
            cmd = [sys.executable, "-m", "bytewax.run", "dataflows.orderbook_collector"]
        log = open(tmp / "collector.log", "wb")  # noqa: SIM115 - closed with the process below
        collector = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        print(f"collector pid {collector.pid} ({args.allocator}), {len(pairs)} pairs x {args.rate:g} updates/s, "
              f"{args.minutes:g} min, RSS every {args.interval:g} s; log {tmp / 'collector.log'}", flush=True)
        samples: list[tuple[float, float]] = []
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        next_t = t0
        while time.monotonic() < end:
            if collector.poll() is not None:
                msg = f"collector exited with {collector.returncode}; see {tmp / 'collector.log'}"
                raise RuntimeError(msg)
            next_t += args.interval
            time.sleep(max(0.0, next_t - time.monotonic()))
            t = time.monotonic() - t0
            samples.append((t, rss_mb(collector.pid)))
            lat = r.hget("system:monitoring", "avg_processing_latency")  # frame receipt -> hash write, ms
            print(f"t={t:7.1f} s  rss={samples[-1][1]:7.2f} MB  latency={lat.decode() if lat else '-'} ms",
                  flush=True)
        frames = sum(int(s.get("frames", 0)) for s in sim.status().get("subscriptions", []))
        written = int(r.llen("okex_orderbook"))
        after = [s for s in samples if s[0] >= args.warmup * 60]
        rss = [m for _, m in after]
        print(f"frames sent by the simulator: {frames:,}; buffer list length now {written:,}")
        print(f"RSS: start {samples[0][1]:.2f} MB, at warm-up end {after[0][1]:.2f} MB, "
              f"min/max after warm-up {min(rss):.2f}/{max(rss):.2f} MB, end {samples[-1][1]:.2f} MB")
        print(f"slope after {args.warmup:g} min ({len(after)} samples): "
              f"{slope_per_10min(after):+.3f} MB per 10 minutes (target < 1)")
    finally:
        if collector is not None:
            stop_process(collector)
        sim.stop()
        stop_process(redis_proc)


if __name__ == "__main__":
    main()
