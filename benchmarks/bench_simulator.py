"""How many OKX ``books`` frames per second one simulator process serves to 10 subscriptions.

Starts ``python -m simulator`` (10 synthetic pairs, real CRC32 checksums, 400-level books) and reads with a
deliberately cheap raw WebSocket client (frame headers only, one JSON parse in 1,000 to check the content), so
the client is not what is measured. Prints frames/s and MB/s received per layout:
10 connections x 1 subscription, and 1 connection x 10 subscriptions.

    .venv/bin/python benchmarks/bench_simulator.py --seconds 5 --rate 5000 --pregenerate 2000

``--pregenerate N`` serves the books from a precomputed cycle (see ``simulator/pregen.py``): the first lap
costs what the live market costs, later laps only join pre-encoded text, so warm up past one lap
(2N steps / rate seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.simulator import launch_simulator  # noqa: E402

PAIRS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "DOGE-USDT", "ADA-USDT", "LTC-USDT", "DOT-USDT",
         "LINK-USDT", "AVAX-USDT"]


class Reader(asyncio.Protocol):
    """Counts text frames; parses one in ``sample`` to check it is a chained OKX books frame."""

    def __init__(self, sample: int = 1000) -> None:
        self.buf = bytearray()
        self.handshaken = False
        self.frames = 0
        self.bytes = 0
        self.sample = sample
        self.checked = 0
        self.ready = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.bytes += len(data)
        if not self.handshaken:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            assert self.buf.startswith(b"HTTP/1.1 101"), bytes(self.buf[:100])
            del self.buf[: end + 4]
            self.handshaken = True
            self.ready.set_result(None)
        buf, pos, n = self.buf, 0, len(self.buf)
        while n - pos >= 2:
            size = buf[pos + 1] & 0x7F
            head = 2
            if size == 126:
                if n - pos < 4:
                    break
                size = struct.unpack_from("!H", buf, pos + 2)[0]
                head = 4
            elif size == 127:
                if n - pos < 10:
                    break
                size = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if n - pos < head + size:
                break
            if buf[pos] & 0x0F == 1:
                self.frames += 1
                if self.frames % self.sample == 0:
                    msg = json.loads(bytes(buf[pos + head: pos + head + size]))
                    if msg.get("arg", {}).get("channel") == "books":
                        assert isinstance(msg["data"][0]["seqId"], int)
                        self.checked += 1
            pos += head + size
        del buf[:pos]

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        header = struct.pack("!BB", 0x81, 0x80 | len(payload)) if len(payload) < 126 else \
            struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
        assert self.transport is not None
        self.transport.write(header + mask + masked)


async def open_reader(port: int, path: str) -> Reader:
    loop = asyncio.get_running_loop()
    _, reader = await loop.create_connection(Reader, "127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    assert reader.transport is not None
    reader.transport.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                           .encode())
    await reader.ready
    return reader


async def measure(port: int, layout: str, seconds: float, warmup: float) -> tuple[float, float, int]:
    readers: list[Reader] = []
    if layout == "10x1":
        for inst in PAIRS:
            r = await open_reader(port, "/ws/v5/public")
            r.send_text(json.dumps({"op": "subscribe", "args": [{"channel": "books", "instId": inst}]}))
            readers.append(r)
    else:
        r = await open_reader(port, "/ws/v5/public")
        r.send_text(json.dumps({"op": "subscribe", "args": [{"channel": "books", "instId": i} for i in PAIRS]}))
        readers.append(r)
    await asyncio.sleep(warmup)
    f0, b0, t0 = sum(r.frames for r in readers), sum(r.bytes for r in readers), time.perf_counter()
    await asyncio.sleep(seconds)
    f1, b1, t1 = sum(r.frames for r in readers), sum(r.bytes for r in readers), time.perf_counter()
    for r in readers:
        assert r.transport is not None
        r.transport.close()
    return (f1 - f0) / (t1 - t0), (b1 - b0) / (t1 - t0) / 1e6, sum(r.checked for r in readers)


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rate", type=float, default=5000.0, help="book updates/s per instrument offered (x10 pairs)")
    p.add_argument("--checksum", choices=("real", "zero"), default="real")
    p.add_argument("--pregenerate", type=int, default=0,
                   help="also measure the --pregenerate N mode (0: only the live synthetic market)")
    args = p.parse_args()
    print(f"simulator: 10 pairs, --rate {args.rate:g}/pair (offered {args.rate * 10:,.0f} frames/s), "
          f"--checksum {args.checksum}, load {os.getloadavg()[0]:.2f}")
    modes: list[tuple[str, list[str]]] = [("live", [])]
    if args.pregenerate:
        modes.append(("pregenerated", ["--pregenerate", str(args.pregenerate)]))
    for (mode, extra), layout in [(m, lay) for m in modes for lay in ("10x1", "1x10")]:
        sim = launch_simulator("--pairs", ",".join(PAIRS), "--rate", str(args.rate), "--checksum", args.checksum,
                               "--log-level", "WARNING", *extra)
        try:
            cpu0 = proc_cpu_seconds(sim.proc.pid)
            wall0 = time.perf_counter()
            fps, mbps, checked = asyncio.run(measure(sim.port, layout, args.seconds, args.warmup))
            cpu = (proc_cpu_seconds(sim.proc.pid) - cpu0) / (time.perf_counter() - wall0)
        finally:
            sim.stop()
        behind = sum("clock_behind" in line for line in sim.stderr_lines)
        label = "10 connections x 1 books sub" if layout == "10x1" else "1 connection x 10 books subs"
        print(f"[{mode}] {label}: {fps:,.0f} frames/s, {mbps:.1f} MB/s, simulator CPU {cpu * 100:.0f}% of a core "
              f"({checked} sampled frames checked; clock fell >1 s behind {behind} times)")
    print(f"client max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
