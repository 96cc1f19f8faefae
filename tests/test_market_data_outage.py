"""Issue 16: ``market_data`` killed (``kill -9``) for 3 real minutes and restarted — the minutes it missed are in
InfluxDB and equal the exchange's.

Real parts: the simulator as Binance (it keeps trading while the dataflow is down), Redis, a VictoriaMetrics of
this test as InfluxDB, ``dataflows.market_data`` as a process, deployed as ``bytewax.yaml`` says (recovery store,
``-s 10 -b 0``) with ``KLINE_BACKFILL`` on. The restart learns what it missed only through its start-up
backfill (:mod:`connectors.rest_klines.repair`: worker 0 fetches the last ``KLINE_BACKFILL`` seconds over REST);
the restart minute, seen in part, is the venue's WebSocket kline replacing the pipeline's incomplete one.

What InfluxDB holds is read from the writes themselves: a small proxy in front of VictoriaMetrics keeps every
``/api/v2/write`` body in order (VictoriaMetrics keeps every sample of one timestamp, where InfluxDB keeps the
last write of each field), so each point's fields are the exact text last written. They are compared as decimals
with the simulator's own klines (its Binance REST endpoint: the bars of its trades, an independent oracle).

Why they are the venue's and not flat: the first trade after the restart follows a trade-id gap, so the rollup
leaves the minutes before it unknown (no flat minutes) and holds back the minute open at the kill, seen in part
(:meth:`operators.klines.Rollup.feed_closed`); the start-up backfill's klines stay the record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import urllib3

from cryptoflow.servers import stop_process
from tests.dataflow_helpers import ROOT, log_events, start_dataflow
from tests.fixtures.influx import VictoriaMetrics, private_victoria
from tests.fixtures.redis import RedisServer
from tests.fixtures.simulator import Simulator
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # about 5 minutes of real time

MINUTE = 60_000
DOWN_S = 180  # the outage: three real minutes
SYMBOL = "ETH-USDT"
FIELDS = ("open", "high", "low", "close", "volume", "trades")
# quote_volume is left out: the simulator's own endpoints disagree on it in the 8th decimal (its WebSocket kline's
# "q" is a float division, simulator/binance.py; its REST kline's is exact), and the restart minute is the
# WebSocket kline by design
_http = urllib3.PoolManager()


class WriteLog:
    """An HTTP proxy for ``/api/v2/write`` in front of a real store: every body, in order, then forwarded."""

    def __init__(self, target: str) -> None:
        self.bodies: list[str] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                resp = _http.request("POST", f"{target}{self.path}", body=body,
                                     headers={"Content-Type": "text/plain; charset=utf-8"})
                if resp.status < 300:
                    with lock:
                        outer.bodies.append(body.decode())
                self.send_response(resp.status)
                self.send_header("Content-Length", str(len(resp.data)))
                self.end_headers()
                self.wfile.write(resp.data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> WriteLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def klines(self, symbol: str, timeframe: str = "1m") -> dict[int, dict[str, str]]:
        """``{open ms: {field: text}}`` as InfluxDB holds them: per point, each field's last written value."""
        out: dict[int, dict[str, str]] = {}
        for body in list(self.bodies):
            for line in body.splitlines():
                head, fields, ts = line.rsplit(" ", 2)
                measurement, *tags = head.split(",")
                if measurement != "kline" or f"symbol={symbol}" not in tags or f"timeframe={timeframe}" not in tags:
                    continue
                point = out.setdefault(int(ts), {})
                for kv in fields.split(","):
                    k, v = kv.split("=", 1)
                    point[k] = v.removesuffix("i").strip('"')
        return out


def simulator_klines(sim: Simulator, start: int, end: int) -> dict[int, dict[str, Decimal]]:
    """The simulator's own 1m bars of ``[start, end)`` through its Binance REST endpoint (no client code shared)."""
    resp = _http.request("GET", f"{sim.binance_rest_url}/api/v3/klines", fields={
        "symbol": SYMBOL.replace("-", ""), "interval": "1m", "startTime": str(start), "endTime": str(end - 1),
        "limit": "1000"})
    assert resp.status == 200, resp.data
    return {r[0]: dict(zip(FIELDS, map(Decimal, (r[1], r[2], r[3], r[4], r[5], r[8])), strict=True))
            for r in orjson.loads(resp.data)}


@pytest.fixture
def sim(start_simulator: Callable[..., Simulator]) -> Simulator:
    return start_simulator("--pairs", SYMBOL, "--seed", "16", "--rate", "5")


class OutageMinutesWrong(AssertionError):
    """A minute of the outage in InfluxDB is not the simulator's."""


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with private_victoria(tmp_path / "vm") as vm:
        yield vm


@pytest.fixture
def store(victoria: VictoriaMetrics) -> Iterator[WriteLog]:
    with WriteLog(victoria.url) as writes:
        yield writes


def test_killed_for_three_minutes_then_restarted_the_missed_minutes_equal_the_simulators(
        sim: Simulator, victoria: VictoriaMetrics, store: WriteLog, redis_server: RedisServer, redis_db: redis.Redis,
        tmp_path: Path) -> None:
    redis_db.sadd("config:trading_pairs", SYMBOL)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], cwd=ROOT, check=True)
    env = {**sim.env(), "REDIS_URL": redis_server.url, "INFLUX_URL": store.url, "INFLUX_TOKEN": "t",
           "MARKET_DATA_VENUES": "binance", "BINANCE_TRADE_STREAM": "trade", "KLINE_TIMEFRAMES": "1m",
           "KLINE_BACKFILL": "900", "LOG_FORMAT": "json", "PRICE_ALERTS_ENABLED": "false",
           "TRADING_PAIRS_POLL_INTERVAL": "1"}
    args = ("-w", "1", "-r", str(recovery), "-s", "10", "-b", "0")  # as bytewax.yaml deploys it
    logs = [tmp_path / "market_data-1.log", tmp_path / "market_data-2.log"]
    started = int(time.time() * 1000)
    first = start_dataflow("market_data", env, logs[0], *args)
    second = None
    try:
        # klines of its own: the first whole minute after start closed and written (and snapshotted since)
        first_full = (started // MINUTE + 1) * MINUTE
        wait_for("a whole closed 1m kline of the live run", lambda: first_full in store.klines(SYMBOL), timeout=150)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        killed = int(time.time() * 1000)
        time.sleep(DOWN_S)  # the outage itself (the simulator keeps trading); not a wait for a condition
        restarted = int(time.time() * 1000)
        second = start_dataflow("market_data", env, logs[1], *args)
        done = wait_for("the start-up backfill", lambda: log_events(logs[1], "kline_repair_done"), timeout=120)[0]
        assert done["venue"] == "binance" and done["klines"] >= 15
        # the restart minute (seen in part; the venue's kline replaces it when it closes) and what the pipeline
        # writes when it closes (a gap it fills) are written by the time the next minute has closed
        restart_minute = restarted // MINUTE * MINUTE
        wait_for("the minute after the restart closed",
                 lambda: restart_minute + MINUTE in store.klines(SYMBOL), timeout=150)
    finally:
        stop_process(first)
        if second is not None:
            stop_process(second)

    window = range(killed // MINUTE * MINUTE, restart_minute + MINUTE, MINUTE)  # the kill's .. the restart's
    assert len(window) >= 4
    want = simulator_klines(sim, window[0], window[-1] + MINUTE)
    have = store.klines(SYMBOL)
    assert all(t in want for t in window), f"the simulator has no kline for some minutes: {sorted(want)}"
    missing = [t for t in window if t not in have]
    assert not missing, f"minutes of the outage not in InfluxDB: {missing}"
    wrong = {t: ({f: have[t].get(f) for f in (*FIELDS, "source", "complete")}, {f: str(v) for f, v in want[t].items()})
             for t in window if {f: Decimal(have[t][f]) if f in have[t] else None for f in FIELDS} != want[t]}
    if wrong:
        raise OutageMinutesWrong(f"minutes of the outage unlike the simulator's (stored, simulator): {wrong}")
    assert all(have[t]["source"] == "venue" and have[t]["complete"] == "true" for t in window), \
        {t: (have[t].get("source"), have[t].get("complete")) for t in window}
    # and the store itself holds them (the write log is what InfluxDB would keep; VictoriaMetrics keeps every write)
    closes: dict[int, set[float]] = {}
    for row in victoria.export(f'{{__name__="kline_close",symbol="{SYMBOL}",timeframe="1m"}}'):
        for t, v in zip(row["timestamps"], row["values"], strict=True):
            closes.setdefault(t, set()).add(v)
    assert all(float(want[t]["close"]) in closes.get(t, ()) for t in window), {t: closes.get(t) for t in window}
