"""The push gateway under load: one gateway process, clients in other processes, a writer at a fixed rate.

* a ``redis-server``;
* the gateway: ``service.push.gateway.router`` in a bare FastAPI app under uvicorn (its default WebSocket
  protocol and loop, as ``cryptoflow serve`` runs it), its own process (CPU time and RSS sampled with psutil);
* a writer process: ``--pairs`` instruments x ``--rate`` entries/s each, written the way the sinks write
  (:func:`connectors.redis.push_streams.queue_events`, one EVAL per 10 ms tick) to ``<inst>@trades`` (an event
  channel: every entry is delivered, nothing is conflated), each carrying its write time (``time.time_ns()``
  just before the pipeline is sent);
* ``--procs`` client processes with ``--clients`` connections in all, each subscribed to ``--channels`` of the
  pairs' channels (round robin). The clients are lean on purpose (:class:`LeanClient`: an asyncio Protocol on
  uvloop that does the HTTP upgrade and parses frames itself, no compression offered, no JSON decoding): the
  previous ``websockets`` clients with ``orjson.loads`` per message took 7,160 of 15,000 messages/s offered to
  50 clients on this machine (2026-11-30 13:21). Every message's receipt is timestamped (one ``time.time_ns()``
  per socket read: the frames of one read arrived together) and its write time taken from its ``"ts":`` field,
  so p50/p99 are over all messages, not a sample.

The writer starts after ``--connect-time`` (the ramp has the gateway to itself), the window after ``--warmup``
more. Reported over the window: messages/s delivered to all
clients, p50/p99/p99.9/max of write -> receipt, the gateway's CPU (% of one core, us per delivered message,
user/system) and RSS, its messages per transport write (from a ``/stats`` route the benchmark's app adds), the
clients', writer's and Redis' CPU, how long the gateway and the clients waited for a CPU while runnable
(``/proc/<pid>/task/*/schedstat``: on a shared machine, the part of the latency that is the machine's), how
many clients were closed as slow, and the load average. ``--gateway-root DIR`` runs the gateway from another
checkout (``git archive <commit> | tar -x -C DIR``) for a before/after; ``--py-spy FILE`` records it.

Run: .venv/bin/python benchmarks/bench_push.py [--clients 1000] [--procs 4] [--pairs 10] [--rate 100]
     [--channels 3] [--seconds 20] [--warmup 5] [--connect-time 30] [--gateway-root DIR] [--py-spy FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
import redis  # noqa: E402

from connectors.redis.push_streams import queue_events, trades_channel  # noqa: E402
from cryptoflow.servers import free_port, start_redis, stop_process, wait_for_port  # noqa: E402

GATEWAY = """
import resource, sys, uvicorn
from fastapi import FastAPI
from cryptoflow.settings import load_settings
from service.push.gateway import router
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
app = FastAPI()
app.include_router(router)
async def stats(): return app.state.push_gateway.stats()  # the benchmark's view; async: no worker thread
app.get("/stats")(stats)
app.state.settings = load_settings(redis_url=sys.argv[1], push_max_connections_per_ip=100000)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", ws_ping_interval=None,
            backlog=4096)
"""


def pairs(n: int) -> list[str]:
    return [f"C{i}-USDT" for i in range(n)]


def writer(redis_url: str, insts: list[str], rate: int, start_at: float, stop_at: float, out: Any) -> None:
    r = redis.Redis.from_url(redis_url)
    time.sleep(max(0.0, start_at - time.time()))  # after the connection ramp: handshakes do not compete with it
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
    out.put(("writer", n * len(insts)))


_TS = re.compile(rb'"ts":([0-9]+)')  # the writer's time_ns in each trade's data


def _masked(payload: bytes) -> bytes:
    """A client text frame (RFC 6455 5.2: client frames are masked); only the small subscribe messages."""
    key = os.urandom(4)
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Tally:
    def __init__(self, t0: float, t1: float) -> None:
        self.t0_ns, self.t1_ns = int(t0 * 1e9), int(t1 * 1e9)
        self.lat = array("q")  # ns, one per message received inside the window
        self.frames = 0  # every text frame, window or not
        self.closed_slow = 0
        self.closed_other: dict[int, int] = {}
        self.lost = 0  # connections that ended without a close frame


class LeanClient(asyncio.Protocol):
    """One WebSocket client: upgrade, subscribe, then parse unmasked server frames straight from the buffer."""

    def __init__(self, host: str, channels: list[str], tally: Tally) -> None:
        self.host = host
        self.channels = channels
        self.tally = tally
        self.buf = bytearray()
        self.open = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None  # uvloop's transport, no asyncio.Transport subclass
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16))
        self.transport.write(b"GET /ws HTTP/1.1\r\nHost: " + self.host.encode() + b"\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(bytes(buf[:80]).decode(errors="replace")))
                return
            del buf[:end + 4]
            self.open = True
            self.transport.write(b"".join(_masked(orjson.dumps({"op": "subscribe", "channel": ch}))
                                          for ch in self.channels))
            self.ready.set_result(None)
        tally = self.tally
        in_window = tally.t0_ns <= now < tally.t1_ns
        lat = tally.lat
        i, n, frames = 0, len(buf), 0
        while n - i >= 2:
            size, h = buf[i + 1] & 0x7F, 2
            if size == 126:
                if n - i < 4:
                    break
                size, h = int.from_bytes(buf[i + 2:i + 4], "big"), 4
            elif size == 127:
                if n - i < 10:
                    break
                size, h = int.from_bytes(buf[i + 2:i + 10], "big"), 10
            start = i + h
            end = start + size
            if end > n:
                break
            op = buf[i] & 0x0F
            if op == 1:
                frames += 1
            elif op == 8:
                code = int.from_bytes(buf[start:start + 2], "big") if size >= 2 else 1005
                if code == 4103:
                    tally.closed_slow += 1
                else:
                    tally.closed_other[code] = tally.closed_other.get(code, 0) + 1
                self.closed = True
                self.transport.close()
                break
            i = end
        tally.frames += frames
        if in_window and i:  # the write times of every complete frame, in one pass in C
            lat.extend([now - int(ts) for ts in _TS.findall(buf, 0, i)])
        del buf[:i]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.tally.lost += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during the handshake: {exc!r}"))


async def _clients(port: int, channels: list[list[str]], t0: float, t1: float, stop_at: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    tally = Tally(t0, t1)
    gate = asyncio.Semaphore(16)  # handshakes in flight per process: a ramp the gateway's accept loop can take
    conns: list[LeanClient] = []
    errors: list[str] = []

    async def one(chs: list[str]) -> None:
        async with gate:
            for attempt in range(5):
                proto = None
                try:
                    _, proto = await loop.create_connection(
                        lambda: LeanClient(f"127.0.0.1:{port}", chs, tally), "127.0.0.1", port)
                    await asyncio.wait_for(proto.ready, 30)
                    conns.append(proto)
                    return
                except (OSError, TimeoutError) as err:
                    if proto is not None:  # not counted, and not left to open behind the retry's back
                        proto.closed = True
                        proto.transport.close()
                    if attempt == 4:
                        errors.append(repr(err))
                    await asyncio.sleep(0.2 * (attempt + 1))

    await asyncio.gather(*(one(chs) for chs in channels))
    connected_at = time.time()
    await asyncio.sleep(max(0.0, stop_at - time.time()))
    for c in conns:
        if not c.closed and c.transport is not None:
            c.closed = True
            c.transport.close()
    return {"lat": tally.lat.tobytes(), "frames": tally.frames, "closed": tally.closed_slow,
            "closed_other": tally.closed_other, "lost": tally.lost, "errors": errors,
            "connected": sum(1 for c in conns if c.open), "connected_at": connected_at}


def client_proc(port: int, channels: list[list[str]], t0: float, t1: float, stop_at: float, own_session: bool,
                out: Any) -> None:
    import uvloop

    if own_session:
        os.setsid()  # a scheduling group of its own (see main)

    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    out.put(("clients", uvloop.run(_clients(port, channels, t0, t1, stop_at))))


def _runq_wait(pid: int) -> float:
    """Seconds the process's threads have waited for a CPU while runnable (/proc/<pid>/schedstat, field 2)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def _gw_stats(port: int) -> dict[str, Any]:
    """The gateway's counters, or {} when it does not answer within 5 s (its loop saturated)."""
    try:
        with socket.create_connection(("127.0.0.1", port), 5) as s:
            s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            body = b""
            while chunk := s.recv(65536):
                body += chunk
        return orjson.loads(body.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]
    except (OSError, IndexError, orjson.JSONDecodeError):
        return {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--rate", type=int, default=100, help="entries per second per pair")
    ap.add_argument("--channels", type=int, default=3, help="channels per client")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--connect-time", type=float, default=30.0, help="time allowed for every client to connect")
    ap.add_argument("--client-sessions", action="store_true",
                    help="each client process in its own session (autogroup: its own share of the CPUs)")
    ap.add_argument("--gateway-root", type=Path, default=ROOT,
                    help="the checkout whose service.push the gateway runs (an older commit, for a before/after)")
    ap.add_argument("--py-spy", metavar="FILE", help="record the gateway with py-spy over the window (raw stacks)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_push_"))
    rport, gport = free_port(), free_port()
    redis_proc = start_redis(rport, tmp / "redis")
    redis_url = f"redis://127.0.0.1:{rport}/0"
    # its own session, as the Redis is: with autogroup scheduling (Linux's default) every session shares one
    # fair share of the CPUs, so in the benchmark's session the gateway would split one share with the clients
    gw = subprocess.Popen([sys.executable, "-c", GATEWAY, redis_url, str(gport)], cwd=args.gateway_root,
                          start_new_session=True)
    try:
        wait_for_port(gport, 300, proc=gw)  # a loaded machine imports FastAPI slowly
        insts = pairs(args.pairs)
        chans = [trades_channel(i) for i in insts]
        subs = [[chans[(c * args.channels + k) % len(chans)] for k in range(args.channels)]
                for c in range(args.clients)]
        load0 = os.getloadavg()
        t0 = time.time() + args.connect_time + args.warmup
        t1 = t0 + args.seconds
        stop_at = t1 + 2.0
        out: Any = mp.Queue()
        procs = [mp.Process(target=client_proc,
                            args=(gport, subs[p::args.procs], t0, t1, stop_at, args.client_sessions, out))
                 for p in range(args.procs)]
        for p in procs:
            p.start()
        wproc = mp.Process(target=writer, args=(redis_url, insts, args.rate, t0 - args.warmup, stop_at, out))
        wproc.start()
        gps = psutil.Process(gw.pid)
        cps = [psutil.Process(p.pid) for p in procs]
        wps, rps = psutil.Process(wproc.pid), psutil.Process(redis_proc.pid)
        while time.time() < t0:
            time.sleep(0.05)
        cpu0 = [sum(p.cpu_times()[:2]) for p in (gps, wps, rps, *cps)]  # user + system
        g0, st0 = gps.cpu_times(), _gw_stats(gport)
        wait0 = [_runq_wait(p.pid) for p in (gps, *cps)]
        spy = None if not args.py_spy else subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(gw.pid), "-d", str(int(args.seconds)),
             "-f", "raw", "-o", args.py_spy, "-r", "200"], stdout=subprocess.DEVNULL)
        rss_max = gps.memory_info().rss
        while time.time() < t1:
            time.sleep(0.5)
            rss_max = max(rss_max, gps.memory_info().rss)
        cpu1 = [sum(p.cpu_times()[:2]) for p in (gps, wps, rps, *cps)]
        g1, st1 = gps.cpu_times(), _gw_stats(gport)
        wait1 = [_runq_wait(p.pid) for p in (gps, *cps)]
        load1 = os.getloadavg()
        results = [out.get(timeout=300) for _ in range(args.procs + 1)]
        if spy is not None:
            spy.wait(60)
        for p in [*procs, wproc]:
            p.join(30)
        report(args, results, [b - a for a, b in zip(cpu0, cpu1, strict=True)], rss_max, t0, load0, load1)
        print(f"gateway: user {g1.user - g0.user:.2f} s, system {g1.system - g0.system:.2f} s")
        if st0 and st1:
            writes, sent = st1.get("writes", 0) - st0.get("writes", 0), st1["sent"] - st0["sent"]
            per = f"{sent / writes:.1f} per write" if writes else "one ASGI send each"
            print(f"gateway: {sent:,} messages sent in {writes:,} direct writes ({per}), "
                  f"{st1.get('direct', 0)} of {st1['connections']} connections direct")
        else:
            print("gateway: /stats did not answer within 5 s at the window's start or end (its loop saturated)")
        waits = [b - a for a, b in zip(wait0, wait1, strict=True)]
        print(f"waited for a CPU while runnable (schedstat): gateway {waits[0] / args.seconds * 100:.0f}% of the "
              f"window, client processes {sum(waits[1:]) / args.seconds * 100:.0f}% (summed)")
    finally:
        gw.terminate()
        try:
            gw.wait(10)
        except subprocess.TimeoutExpired:
            gw.kill()
        stop_process(redis_proc)
        shutil.rmtree(tmp, ignore_errors=True)


def report(args: Any, results: list[tuple[str, Any]], cpu: list[float], rss_max: int, t0: float,
           load0: tuple[float, ...], load1: tuple[float, ...]) -> None:
    counts = [r for k, r in results if k == "clients"]
    written = next(r for k, r in results if k == "writer")
    lat = np.concatenate([np.frombuffer(c["lat"], dtype=np.int64) for c in counts]) / 1e6
    total = len(lat)
    secs = args.seconds
    gw_cpu, w_cpu, r_cpu, c_cpu = cpu[0], cpu[1], cpu[2], sum(cpu[3:])
    offered = args.clients * args.channels * args.rate
    connected = sum(c["connected"] for c in counts)
    ramp = max(c["connected_at"] for c in counts) - (t0 - args.warmup - args.connect_time)
    late = ramp - args.connect_time  # > 0: still connecting when the writer started
    print(f"clients={args.clients} procs={args.procs} pairs={args.pairs} rate={args.rate}/s/pair "
          f"channels/client={args.channels} window={secs}s entries_written={written}")
    print(f"connected {connected}/{args.clients} in {ramp:.1f} s{'' if late < 0 else ' (AFTER THE WRITER STARTED)'}; "
          f"load {load0[0]:.2f} -> {load1[0]:.2f} (5 min {load1[1]:.2f})")
    print(f"delivered: {total / secs:,.0f} msgs/s (offered {offered:,}/s)")
    if total:
        p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
        print(f"write -> receipt over all {total:,} messages: p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
              f"p99.9 {p999:.2f} ms  max {lat.max():.2f} ms")
    per_msg = f"{gw_cpu / total * 1e6:.1f} us/msg" if total else "-"
    print(f"gateway: cpu {gw_cpu / secs * 100:.0f}% of one core ({per_msg}), rss max {rss_max / 2**20:.1f} MiB")
    c_per = f"{c_cpu / total * 1e6:.1f} us/msg" if total else "-"
    print(f"clients: cpu {c_cpu / secs * 100:.0f}% ({c_per}); writer {w_cpu / secs * 100:.0f}%, "
          f"redis {r_cpu / secs * 100:.0f}%")
    other = dict(sum((Counter(c["closed_other"]) for c in counts), Counter()))
    print(f"clients closed as slow (4103): {sum(c['closed'] for c in counts)}; other closes {other}; "
          f"dropped without a close frame: {sum(c['lost'] for c in counts)}")
    errors = [e for c in counts for e in c["errors"]]
    if errors:
        print(f"connect errors: {len(errors)}, first: {errors[0][:300]}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout's SIGTERM: still stop the gateway and Redis
    with contextlib.suppress(KeyboardInterrupt):
        main()
