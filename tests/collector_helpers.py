"""Helpers for the order-book collector's end-to-end tests: run the dataflow as real processes, wait, compare."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from cryptoflow.servers import free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Collector:
    """One or more ``bytewax.run`` processes of the collector; ``log()`` is their stderr so far."""

    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            if f'"{name}"' in line:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if obj.get("event") == name:
                    out.append(obj)
        return out

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for proc in self.procs:  # interrupt every member of the cluster first, so none waits for a peer
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
        for proc in self.procs:
            stop_process(proc)


def start_collector(tmp: Path, env: dict[str, str], *, workers: int = 1, processes: int = 1) -> Collector:
    full = {**os.environ, "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", "TRADING_PAIRS_POLL_INTERVAL": "1",
            **env}
    full.pop("INFLUX_URL", None) if "INFLUX_URL" not in env else None
    base = [sys.executable, "-m", "bytewax.run", "dataflows.orderbook_collector", "-w", str(workers)]
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    procs, logs = [], []
    for i in range(processes):
        cmd = base + (["-i", str(i), "-a", addresses] if processes > 1 else [])
        log = tmp / f"collector-{i}-{time.monotonic_ns()}.log"
        with log.open("wb") as fh:
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=full, stdout=fh, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        logs.append(log)
    return Collector(procs, logs, env)


def hash_book(r: redis.Redis, inst: str) -> dict[str, Any] | None:
    h = r.hgetall(f"orderbook:{inst}")
    if not h:
        return None
    return {**h, "bids": json.loads(h["bids"]), "asks": json.loads(h["asks"])} if "bids" in h else h


def same_as_simulator(r: redis.Redis, sim: Any, inst: str) -> bool:
    """Our hash is ``valid`` and holds exactly the simulator's book at the same ``seqId`` (call with the
    simulator paused)."""
    ours = hash_book(r, inst)
    theirs = sim.book("okx", inst)
    return bool(
        ours and ours.get("status") == "valid" and ours.get("seq_id") == str(theirs["seqId"])
        and ours["bids"] == theirs["bids"] and ours["asks"] == theirs["asks"]
    )


def monitoring(r: redis.Redis) -> dict[str, str]:
    return r.hgetall("system:monitoring")
