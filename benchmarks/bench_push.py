"""The push gateway under load: one gateway process, clients in other processes, a writer at a fixed rate.

* a ``redis-server``;
* the gateway: ``service.push.gateway.router`` in a bare FastAPI app under uvicorn, its own process (its CPU
  time and RSS are sampled with psutil);
* a writer process: ``--pairs`` instruments x ``--rate`` entries/s each, written the way the sinks write
  (:func:`connectors.push_streams.queue_events`, one EVAL per 10 ms tick) to ``<inst>@trades`` (an event
  channel: every entry is delivered, nothing is conflated), each carrying its write time (``time.time_ns()``
  just before the pipeline is sent);
* ``--procs`` client processes with ``--clients`` connections in all (``websockets``), each subscribed to
  ``--channels`` of the pairs' channels (round robin), reading everything and recording, per message, write
  time -> receipt (same host clock).

Reported over the measured window (after ``--warmup``): messages/s delivered to all clients, p50/p99/max of
write -> receipt, the gateway's CPU (% of one core) and RSS, and how many clients the gateway closed as slow.

Run: .venv/bin/python benchmarks/bench_push.py [--clients 1000] [--procs 4] [--pairs 10] [--rate 100]
     [--channels 3] [--seconds 20] [--warmup 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import psutil  # noqa: E402
import redis  # noqa: E402

from connectors.push_streams import queue_events, trades_channel  # noqa: E402
from cryptoflow.servers import free_port, start_redis, stop_process  # noqa: E402

GATEWAY = """
import sys, uvicorn
from fastapi import FastAPI
from cryptoflow.settings import load_settings
from service.push.gateway import router
app = FastAPI()
app.include_router(router)
app.state.settings = load_settings(redis_url=sys.argv[1], push_max_connections_per_ip=100000)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", ws_ping_interval=None)
"""


def pairs(n: int) -> list[str]:
    return [f"C{i}-USDT" for i in range(n)]


def writer(redis_url: str, insts: list[str], rate: int, stop_at: float, out: Any) -> None:
    r = redis.Redis.from_url(redis_url)
    start = time.time()
    n = 0  # entries written per pair
    # every 10 ms, the entries due by now: a writer descheduled on a loaded machine catches up instead of
    # silently offering less than --rate
    while (now := time.time()) < stop_at:
        due = int((now - start) * rate) - n
        if due > 0:
            pipe = r.pipeline(transaction=False)
            ts = time.time_ns()
            data = orjson.dumps({"price": "100.0", "size": "1", "ts": ts})
            queue_events(pipe, [(trades_channel(inst), data, ()) for inst in insts for _ in range(due)], 10_000)
            pipe.execute()
            n += due
        time.sleep(0.01)
    n *= len(insts)
    out.put(("writer", n))


async def _clients(url: str, channels: list[list[str]], t0: float, t1: float, stop_at: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    lat: list[int] = []
    count = 0
    closed = 0

    async def one(chs: list[str]) -> None:
        nonlocal count, closed
        async with connect(url, open_timeout=120, ping_interval=None, max_queue=1024) as ws:
            for ch in chs:
                await ws.send(orjson.dumps({"op": "subscribe", "channel": ch}).decode())
            try:
                while True:
                    remaining = stop_at - time.time()
                    if remaining <= 0:
                        return
                    raw = await asyncio.wait_for(ws.recv(), remaining)
                    now_ns = time.time_ns()
                    now = now_ns / 1e9
                    if t0 <= now < t1:
                        msg = orjson.loads(raw)
                        data = msg.get("data")
                        if isinstance(data, dict) and "ts" in data:
                            count += 1
                            if count % 7 == 0:  # a sample keeps the clients' own cost down
                                lat.append(now_ns - data["ts"])
            except TimeoutError:
                return
            except ConnectionClosed as err:
                if err.rcvd is not None and err.rcvd.code == 4103:
                    closed += 1

    done = await asyncio.gather(*(one(chs) for chs in channels), return_exceptions=True)
    errors = [repr(e) for e in done if isinstance(e, BaseException)]
    return {"count": count, "lat": lat, "closed": closed, "errors": errors}


def client_proc(url: str, channels: list[list[str]], t0: float, t1: float, stop_at: float, out: Any) -> None:
    out.put(("clients", asyncio.run(_clients(url, channels, t0, t1, stop_at))))


def pct(xs: list[int], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] / 1e6 if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--rate", type=int, default=100, help="entries per second per pair")
    ap.add_argument("--channels", type=int, default=3, help="channels per client")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--connect-time", type=float, default=20.0, help="time allowed for every client to connect")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_push_"))
    rport, gport = free_port(), free_port()
    redis_proc = start_redis(rport, tmp / "redis")
    redis_url = f"redis://127.0.0.1:{rport}/0"
    gw = subprocess.Popen([sys.executable, "-c", GATEWAY, redis_url, str(gport)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 300  # a loaded machine imports FastAPI slowly
        while True:
            try:
                import socket

                socket.create_connection(("127.0.0.1", gport), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        insts = pairs(args.pairs)
        chans = [trades_channel(i) for i in insts]
        subs = [[chans[(c * args.channels + k) % len(chans)] for k in range(args.channels)]
                for c in range(args.clients)]
        now = time.time()
        t0 = now + args.connect_time + args.warmup
        t1 = t0 + args.seconds
        stop_at = t1 + 2.0
        out: Any = mp.Queue()
        url = f"ws://127.0.0.1:{gport}/ws"
        procs = [mp.Process(target=client_proc, args=(url, subs[p::args.procs], t0, t1, stop_at, out))
                 for p in range(args.procs)]
        for p in procs:
            p.start()
        wproc = mp.Process(target=writer, args=(redis_url, insts, args.rate, stop_at, out))
        wproc.start()
        gps = psutil.Process(gw.pid)
        while time.time() < t0:
            time.sleep(0.05)
        cpu0 = gps.cpu_times()
        rss_max = gps.memory_info().rss
        while time.time() < t1:
            time.sleep(0.5)
            rss_max = max(rss_max, gps.memory_info().rss)
        cpu1 = gps.cpu_times()
        results = [out.get(timeout=120) for _ in range(args.procs + 1)]
        for p in [*procs, wproc]:
            p.join(30)
        counts = [r for k, r in results if k == "clients"]
        written = next(r for k, r in results if k == "writer")
        total = sum(c["count"] for c in counts)
        lat = sorted(x for c in counts for x in c["lat"])
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / args.seconds * 100
        expected = args.clients * args.channels * args.rate
        print(f"clients={args.clients} procs={args.procs} pairs={args.pairs} rate={args.rate}/s/pair "
              f"channels/client={args.channels} window={args.seconds}s entries_written={written}")
        print(f"delivered: {total / args.seconds:,.0f} msgs/s (offered {expected:,}/s)")
        print(f"write -> receipt: p50 {pct(lat, 0.5):.2f} ms  p99 {pct(lat, 0.99):.2f} ms  "
              f"max {pct(lat, 1.0):.2f} ms  (samples {len(lat)})" if lat else "no samples")
        print(f"gateway: cpu {cpu:.0f}% of one core, rss max {rss_max / 2**20:.1f} MiB; "
              f"clients closed as slow: {sum(c['closed'] for c in counts)}")
        errors = [e for c in counts for e in c["errors"]]
        if errors:
            print(f"client errors: {len(errors)}, first: {errors[0][:300]}")
        if lat:
            print(f"mean {statistics.fmean(lat) / 1e6:.2f} ms")
    finally:
        gw.terminate()
        try:
            gw.wait(10)
        except subprocess.TimeoutExpired:
            gw.kill()
        stop_process(redis_proc)


if __name__ == "__main__":
    main()
