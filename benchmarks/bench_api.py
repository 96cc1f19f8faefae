"""`cryptoflow serve` under load: requests/s and latency of the hot live routes, and a day of 1m klines.

What runs: a private redis-server, seeded through the sinks' own field builders (a 400-level book per side,
tickers of 10 pairs on 3 venues); the real service (`cryptoflow serve --port 0`, one uvicorn worker, a
subprocess); and the load generator in OTHER processes: raw HTTP/1.1 keep-alive over asyncio (uvloop), no
client library in the way.

1. Saturation (closed loop): ``--procs`` client processes x ``--conns`` connections, each sending its next
   request when the previous answer is in, for ``--seconds``: requests/s, p50/p99/max. Identical requests in
   flight together share one Redis read (the service's single flight), so the book is run a second time with a
   query of its own per connection (``UNSHARED``): the rate of requests that each cost a read.
2. Paced (open loop) at ``--rate`` req/s: requests are due on a fixed schedule and latency is counted from the
   time a request was due (a late send counts against the service: no coordinated omission). Also printed: the
   p99 from the moment the request was written (the client's own timer lateness left out), how late the client
   sent (its event loop's timers are 1 ms grained), and the CPU time the hypervisor stole from this VM during
   the phase (``/proc/stat``): what separates the service's tail from the machine's.
   ``--floor``: the same paced client against a bare uvicorn app (same server options) answering a fixed body
   of the book response's size: the latency floor of this machine, client and server stack with no work.
3. With ``influxd`` installed: 1,440 1m klines (one day) written by the project's point builder, read back as
   ``GET /v1/klines`` pages (``limit`` is at most 1,000, so a day is two pages: 1,000 + 440): time per page
   and for the day, median of ``--kline-repeat`` runs.

Usage: ``.venv/bin/python benchmarks/bench_api.py [--seconds 10] [--procs 2] [--conns 16] [--rate 1000]
[--paced-only] [--floor]``
Targets: >= 3,000 req/s per worker, p99 < 5 ms at 1,000 req/s, 1,440-bar read < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import urllib3  # noqa: E402

from connectors.influx.writer import to_line  # noqa: E402
from connectors.redis.book_sink import book_fields  # noqa: E402
from connectors.redis.market_sink import kline_point, write_market  # noqa: E402
from cryptoflow.servers import free_port, start_redis, stop_process  # noqa: E402
from operators.events import BookStatus, BookView, Kline, Level, Ticker  # noqa: E402
from tests.fixtures.influx import start_influxd  # noqa: E402
from tests.fixtures.service import launch_service  # noqa: E402

PAIRS = [f"{b}-USDT" for b in ("BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "AVAX", "DOT", "LINK", "LTC")]
ROUTES = {"orderbook": "/v1/orderbook/BTC-USDT?depth=20", "tickers": "/v1/tickers"}
# The same book, a different query per connection (``c`` is ignored by the route): no two requests in flight are
# identical, so the fast path's single flight shares nothing — each request is its own Redis read and body.
UNSHARED = "/v1/orderbook/BTC-USDT?depth=20&c={conn}"
T0 = 1_764_115_200_000


def seed(client: redis.Redis) -> None:
    levels = [Level(f"{60_000 - i}.{i % 10}", f"{(i % 50) / 10 + 0.001:.3f}") for i in range(400)]
    asks = [Level(f"{60_001 + i}.{i % 10}", lv.size) for i, lv in enumerate(levels)]
    view = BookView("okx", "BTC-USDT", BookStatus.VALID, tuple(levels), tuple(asks), int(time.time() * 1000), 0,
                    checksum=123, seq_id=1)
    client.hset("orderbook:BTC-USDT", mapping=book_fields(view))  # type: ignore[arg-type]
    client.sadd("config:trading_pairs", *PAIRS)
    tickers = [Ticker(v, p, Decimal("100.5"), Decimal("100.4"), Decimal("100.6"), Decimal("12345.6"),
                      Decimal("1.25"), Decimal("110"), Decimal("90"), int(time.time() * 1000))
               for p in PAIRS for v in ("okx", "binance", "bybit")]
    pipe = client.pipeline()
    write_market(pipe, tickers)  # type: ignore[arg-type]
    pipe.execute()


# --- the load generator (runs in its own processes) ------------------------------------------------------------

async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200")


# latencies (ns; paced: from when due), non-200 answers, seconds measured, paced only: latencies from the send
Result = tuple[list[int], int, float, list[int]]


async def _closed_loop(port: int, path: str, conns: int, seconds: float, warmup: float) -> Result:
    lat: list[int] = []
    errors = 0
    start_at = time.perf_counter() + warmup
    stop_at = start_at + seconds

    async def conn(i: int) -> None:
        nonlocal errors
        request = f"GET {path.format(conn=f'{os.getpid()}.{i}')} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (now := time.perf_counter()) < stop_at:
            t0 = time.perf_counter_ns()
            ok = await _exchange(reader, writer, request)
            if now >= start_at:
                lat.append(time.perf_counter_ns() - t0)
                errors += not ok
        writer.close()

    await asyncio.gather(*(conn(i) for i in range(conns)))
    return lat, errors, seconds, []


async def _open_loop(port: int, path: str, rate: float, seconds: float, conns: int) -> Result:
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    due: asyncio.Queue[int | None] = asyncio.Queue()
    lat: list[int] = []
    from_send: list[int] = []
    errors = 0

    async def conn() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (when := await due.get()) is not None:
            sent = time.perf_counter_ns()
            ok = await _exchange(reader, writer, request)
            done = time.perf_counter_ns()
            lat.append(done - when)  # from when it was due, not when it was sent
            from_send.append(done - sent)
            errors += not ok
        writer.close()

    workers = [asyncio.create_task(conn()) for _ in range(conns)]
    await asyncio.sleep(0.5)  # connections up
    period = 1e9 / rate
    t0 = time.perf_counter_ns()
    for i in range(int(rate * seconds)):
        when = t0 + int(i * period)
        delay = (when - time.perf_counter_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait(when)
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    # seconds: longer than planned when the service fell behind
    return lat, errors, (time.perf_counter_ns() - t0) / 1e9, from_send


def _client(args: tuple[str, int, str, int, float, float]) -> Result:
    mode, port, path, conns, seconds, extra = args
    import uvloop

    if mode == "closed":
        return uvloop.run(_closed_loop(port, path, conns, seconds, extra))
    return uvloop.run(_open_loop(port, path, extra, seconds, conns))


# --- reporting ------------------------------------------------------------------------------------------------

def _pct(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc; clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steal_ticks() -> int:
    """CPU time the hypervisor gave to others while this VM wanted it (``steal``, all CPUs; clock ticks)."""
    return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[8])


def _report(name: str, lat: list[int], errors: int, seconds: float, cpu: float) -> None:
    """``cpu``: the service's CPU seconds over the phase; per request it gives the worker's capacity on one
    whole core (what the shared machine does not let us measure directly)."""
    lat.sort()
    per = cpu / len(lat) * 1e6
    print(f"  {name:<44} {len(lat) / seconds:>7,.0f} req/s  p50 {_pct(lat, 0.50):7.2f} ms  "
          f"p99 {_pct(lat, 0.99):7.2f} ms  max {lat[-1] / 1e6:7.1f} ms  errors {errors}  "
          f"service CPU {per:4.0f} us/req (= {1e6 / per:,.0f} req/s per core)", flush=True)


def saturate(pid: int, port: int, path: str, procs: int, conns: int, seconds: float) -> None:
    with mp.get_context("spawn").Pool(procs) as pool:
        pending = pool.map_async(_client, [("closed", port, path, conns, seconds, 1.0)] * procs)
        time.sleep(1.0)  # the clients' warm-up second (their clocks start in their own processes: approximate)
        cpu0 = cpu_seconds(pid)
        parts = pending.get()
        cpu = cpu_seconds(pid) - cpu0
    _report(f"closed loop {procs}x{conns} {path}", [x for p in parts for x in p[0]], sum(p[1] for p in parts),
            max(p[2] for p in parts), cpu)


def paced(pid: int, port: int, path: str, rate: float, seconds: float, label: str = "") -> None:
    with mp.get_context("spawn").Pool(1) as pool:
        cpu0, steal0 = cpu_seconds(pid), steal_ticks()
        lat, errors, elapsed, from_send = pool.map(_client, [("open", port, path, 64, seconds, rate)])[0]
        cpu, steal = cpu_seconds(pid) - cpu0, steal_ticks() - steal0
    late = sorted(d - s for d, s in zip(lat, from_send, strict=True))  # before _report sorts lat in place
    from_send.sort()
    _report(f"paced {rate:,.0f}/s {label or path}", lat, errors, elapsed, cpu)
    stolen = steal / os.sysconf("SC_CLK_TCK") / (elapsed * (os.cpu_count() or 1)) * 100
    print(f"  {'':<44} from the send: p50 {_pct(from_send, 0.50):.2f} ms, p99 {_pct(from_send, 0.99):.2f} ms; "
          f"sent late by the client: p99 {_pct(late, 0.99):.2f} ms; stolen by the hypervisor {stolen:.1f} % "
          f"of the CPUs; load {os.getloadavg()[0]:.2f}", flush=True)


def klines(service_url: str, influx_url: str, repeat: int) -> None:
    http = urllib3.PoolManager()
    bars = [Kline("okx", "BTC-USDT", "1m", T0 + i * 60_000, T0 + (i + 1) * 60_000, Decimal("60000.5"),
                  Decimal("60010.25"), Decimal("59990.75"), Decimal(f"60001.{i % 100}"), Decimal("12.3456"),
                  Decimal("740000.5"), 100 + i, True) for i in range(1440)]
    http.request("POST", f"{influx_url}/query", fields={"q": "CREATE DATABASE cryptoflow"})
    resp = http.request("POST", f"{influx_url}/write?db=cryptoflow&precision=ms",
                        body="\n".join(to_line(kline_point(k)) for k in bars).encode())
    assert resp.status == 204, resp.data
    pages: list[tuple[float, float]] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        first = http.request("GET", f"{service_url}/v1/klines?symbol=BTC-USDT&start={T0}&limit=1000"
                                    f"&end={T0 + 1440 * 60_000}")
        t1 = time.perf_counter()
        second = http.request("GET", f"{service_url}/v1/klines?symbol=BTC-USDT&start={first.headers['X-Next-Start']}"
                                     f"&limit=1000&end={T0 + 1440 * 60_000}")
        t2 = time.perf_counter()
        assert len(first.json()) == 1000 and len(second.json()) == 440
        pages.append((t1 - t0, t2 - t1))
    full = statistics.median(a for a, _ in pages) * 1000
    rest = statistics.median(b for _, b in pages) * 1000
    day = statistics.median(a + b for a, b in pages) * 1000
    print(f"  GET /v1/klines, 1,440 1m bars as 2 pages: 1,000-bar page {full:.1f} ms, 440-bar page {rest:.1f} ms, "
          f"the day {day:.1f} ms (median of {repeat})", flush=True)


def _influxd(root: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    import shutil

    binary = shutil.which("influxd")
    if binary is None:
        return None
    port = free_port()
    return start_influxd(binary, root, port), f"http://127.0.0.1:{port}"


# --- in-process CPU cost (no sockets between client and app; the least load-sensitive figure) ---------------------

def _scope(path: str, query: bytes) -> dict[str, object]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "",
            "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}


async def _cpu_costs(redis_url: str, work: Path, n: int) -> None:
    from cryptoflow.settings import load_settings
    from service.app import create_app

    app = create_app(load_settings(redis_url=redis_url, data_dir=str(work / "data")))

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: object) -> None:
        return None

    async def best_of(label: str, call: object) -> None:
        costs = []
        for _ in range(5):
            cpu0 = time.process_time()
            for _ in range(n):
                await call()  # type: ignore[operator]
            costs.append((time.process_time() - cpu0) / n * 1e6)
        print(f"  in-process {label:<44} {min(costs):6.0f} us CPU/request (best of 5 x {n})", flush=True)

    async with app.router.lifespan_context(app):
        client, pipe = app.state.redis, app.state.redis_calls
        fields = ["bids", "asks", "seq_id", "status"]
        await best_of("Redis HMGET alone (redis-py client)", lambda: client.hmget("orderbook:BTC-USDT", fields))
        await best_of("Redis HMGET alone (the hot reads' pipe)",
                      lambda: pipe.call("HMGET", "orderbook:BTC-USDT", *fields))
        fast = app.fastpath
        for label, app.fastpath in (("", fast), (" (FastAPI only)", None)):  # the fast path (service/fastpath.py)
            for path, query in (("/v1/orderbook/BTC-USDT", b"depth=20"), ("/v1/tickers", b"")):
                await best_of(f"{path}?{query.decode()}{label}",
                              lambda p=path, q=query: app(_scope(p, q), receive, send))


# The floor: uvicorn as `cryptoflow serve` configures it (no access log, lifespan on, auto loop and http =
# uvloop + httptools), answering every request with a fixed body of argv[2] bytes. No Redis, no routing.
_FLOOR_APP = """
import sys, uvicorn
BODY = b"x" * int(sys.argv[2])
HEAD = {"type": "http.response.start", "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]}
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send(HEAD)
    await send({"type": "http.response.body", "body": BODY})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_config=None, lifespan="on")
"""


def floor(rate: float, seconds: float, body_bytes: int) -> None:
    """The paced client against the bare app (:data:`_FLOOR_APP`)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _FLOOR_APP, str(port), str(body_bytes)])
    try:
        deadline = time.monotonic() + 30
        while True:  # bounded wait for the bare app to listen
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the floor app did not start listening within 30 s")
            time.sleep(0.05)
        paced(proc.pid, port, "/", rate, seconds, label=f"FLOOR: bare uvicorn, {body_bytes:,}-byte body")
    finally:
        stop_process(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--procs", type=int, default=2, help="client processes for the closed loop")
    parser.add_argument("--conns", type=int, default=16, help="keep-alive connections per client process")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced requests per second")
    parser.add_argument("--kline-repeat", type=int, default=20)
    parser.add_argument("--cpu-only", action="store_true", help="only the in-process CPU cost per request")
    parser.add_argument("--paced-only", action="store_true", help="only the paced phases (no closed loop, klines)")
    parser.add_argument("--floor", action="store_true",
                        help="also pace a bare uvicorn app answering the book's body: the machine's floor")
    args = parser.parse_args()
    if args.cpu_only:
        import uvloop

        with tempfile.TemporaryDirectory(prefix="bench_api") as tmp:
            port = free_port()
            proc = start_redis(port, Path(tmp) / "redis")
            try:
                seed(redis.Redis(port=port, decode_responses=True))
                uvloop.run(_cpu_costs(f"redis://127.0.0.1:{port}/0", Path(tmp), 400))
            finally:
                stop_process(proc)
        return
    with tempfile.TemporaryDirectory(prefix="bench_api") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        redis_port = free_port()
        redis_proc = start_redis(redis_port, work / "redis")
        stack.callback(stop_process, redis_proc)
        influx = _influxd(work / "influx")
        env = {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "LOG_LEVEL": "WARNING"}
        if influx is not None:
            stack.callback(stop_process, influx[0])
            env["INFLUX_URL"] = influx[1]
        service = launch_service(work / "svc", env)
        stack.callback(service.stop)
        seed(redis.Redis(port=redis_port, decode_responses=True))
        port = int(service.url.rsplit(":", 1)[1])
        print(f"service {service.url} (pid {service.proc.pid}, 1 uvicorn worker); load {os.getloadavg()[0]:.2f}")
        pid = service.proc.pid  # `cryptoflow serve` with one worker is this one process
        if not args.paced_only:
            for path in (*ROUTES.values(), UNSHARED):
                saturate(pid, port, path, args.procs, args.conns, args.seconds)
        for path in ROUTES.values():
            paced(pid, port, path, args.rate, args.seconds)
        if args.floor:
            book = urllib3.PoolManager().request("GET", f"{service.url}{ROUTES['orderbook']}")
            floor(args.rate, args.seconds, len(book.data))
        if args.paced_only:
            pass
        elif influx is not None:
            klines(service.url, influx[1], args.kline_repeat)
        else:
            print("  klines: influxd not installed, skipped")
        print(f"load average after: {os.getloadavg()[0]:.2f}")

if __name__ == "__main__":
    main()
