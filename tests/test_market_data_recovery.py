"""``market_data`` with Bytewax recovery, killed with SIGKILL mid-replay and restarted: no double counting.

The simulator replays the 11-minute Binance ETHUSDT trade recording (``tests/data/binance/``) at 50x. Two
dataflows subscribe to it at the same moment: an uninterrupted one (the reference) and one with a recovery
store that is killed with ``kill -9`` while a minute is open and restarted on the same store. The restarted
one's new subscription is replayed from the start of the recording, so every trade before the kill arrives
again. Required: both runs write the same closed klines (1m, 5m, 1h; every field, and every write of a
kline the same value — a rewrite after recovery must not differ), the reference's 1m klines are those of the
raw trades, and the restarted run dropped the resent trades as already counted.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from cryptoflow.servers import stop_process
from tests.fixtures.influx import private_victoria
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
RECORDING = ROOT / "tests/data/binance/binance-2024-08-08-ethusdt-trade.jsonl.gz"
FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "trades")
TIMEFRAMES = ("1m", "5m", "1h")
MINUTES = 11  # 23:54 (partial) .. 00:04; 00:05 stays open (its end is 55 s of event time after the last trade)

pytestmark = pytest.mark.slow


def expected_minutes() -> dict[int, tuple[Decimal, Decimal, Decimal, Decimal, Decimal, int]]:
    """1m klines of the raw trades: ``{open ms: (open, high, low, close, volume, trades)}``."""
    rows: dict[int, list[Any]] = {}
    with gzip.open(RECORDING, "rt") as f:
        for line in f:
            t = json.loads(json.loads(line)["data"])["data"]
            ts, price, qty = t["T"], Decimal(t["p"]), Decimal(t["q"])
            start = ts - ts % 60_000
            row = rows.get(start)
            if row is None:
                rows[start] = [price, price, price, price, qty, 1]
            else:
                row[1], row[2], row[3] = max(row[1], price), min(row[2], price), price
                row[4] += qty
                row[5] += 1
    return {k: (o, h, lo, c, v, n) for k, (o, h, lo, c, v, n) in rows.items()}


def samples(vm: Any, tf: str, field: str) -> dict[int, set[float]]:
    """Every value written for each kline of one field (a rewrite after recovery must be identical)."""
    selector = f'{{__name__="kline_{field}",exchange="binance",symbol="ETH-USDT",timeframe="{tf}"}}'
    out: dict[int, set[float]] = {}
    for row in vm.export(selector):
        for ts, value in zip(row["timestamps"], row["values"], strict=True):
            out.setdefault(ts, set()).add(value)
    return out


def klines(vm: Any) -> dict[tuple[str, str], dict[int, float]]:
    out = {}
    for tf in TIMEFRAMES:
        for field in FIELDS:
            written = samples(vm, tf, field)
            assert all(len(v) == 1 for v in written.values()), (tf, field, written)
            out[(tf, field)] = {ts: next(iter(v)) for ts, v in written.items()}
    return out


@pytest.fixture
def flows(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], name: str, recovery: Path | None = None) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "bytewax.run", "dataflows.market_data"]
        if recovery is not None:
            cmd += ["-r", str(recovery), "-s", "1", "-b", "0"]
        full = {**os.environ, "LOG_FORMAT": "json", "TRADING_PAIRS_POLL_INTERVAL": "0.5",
                "PRICE_ALERTS_ENABLED": "false", "MARKET_DATA_VENUES": "binance", "BINANCE_TRADE_STREAM": "trade",
                "KLINE_TIMEFRAMES": ",".join(TIMEFRAMES), "INFLUX_TOKEN": "t", "INFLUX_FLUSH_INTERVAL": "0.2",
                **env}
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_process(proc)


def test_kill_9_mid_replay_and_restart_gives_the_uninterrupted_klines(start_simulator: Any, flows: Any,
                                                                       redis_server: Any, tmp_path: Path) -> None:
    sim = start_simulator("--replay", str(RECORDING), "--speed", "50")
    store = tmp_path / "recovery"
    store.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(store), "1"], cwd=ROOT, check=True)
    clients = {}
    urls = {}
    for name, db in (("reference", 4), ("recovered", 5)):
        urls[name] = f"{redis_server.url.rsplit('/', 1)[0]}/{db}"
        clients[name] = c = redis_lib.Redis.from_url(urls[name], decode_responses=True)
        c.flushdb()
        c.sadd("config:trading_pairs", "ETH-USDT")

    def closed_minutes(vm: Any) -> int:
        return len(samples(vm, "1m", "close"))

    with private_victoria(tmp_path / "vm-ref") as ref_vm, private_victoria(tmp_path / "vm-rec") as rec_vm:
        flows({**sim.env(), "REDIS_URL": urls["reference"], "INFLUX_URL": ref_vm.url}, "reference")
        rec_env = {**sim.env(), "REDIS_URL": urls["recovered"], "INFLUX_URL": rec_vm.url}
        first = flows(rec_env, "recovered-1", store)
        wait_for("four closed minutes before the kill",
                 lambda: closed_minutes(rec_vm) >= 4,
                 timeout=40)
        # mid-way (minute 5 or 6 of 12 is open); snapshots are taken every second
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        before = closed_minutes(rec_vm)
        assert before < MINUTES - 2
        flows(rec_env, "recovered-2", store)

        seen: list[tuple[int, int]] = []

        def all_closed() -> bool:
            seen.append((closed_minutes(ref_vm), closed_minutes(rec_vm)))
            return seen[-1] == (MINUTES, MINUTES)

        try:
            wait_for("every minute closed in both runs",
                     all_closed,
                     timeout=60)
        except AssertionError as e:
            raise AssertionError(f"{e}: closed minutes (reference, recovered) {seen[-1]}, {before} before") from e
        ref, rec = klines(ref_vm), klines(rec_vm)

    expected = expected_minutes()
    last = max(expected)
    assert len(expected) == MINUTES + 1
    expected_last = expected.pop(last)
    got = {ts: tuple(ref[("1m", f)][ts] for f in FIELDS if f != "quote_volume") for ts in ref[("1m", "close")]}
    assert got == {ts: tuple(float(x) for x in row) for ts, row in expected.items()}
    assert ref == rec  # every timeframe, every field: nothing counted twice, nothing lost
    assert len(rec[("5m", "close")]) >= 2 and rec[("1h", "trades")]  # the rollups were recovered too
    def latest(name: str) -> list[dict[str, str]]:
        return [clients[name].hgetall(f"kline:binance:ETH-USDT:{tf}") for tf in TIMEFRAMES]

    # the latest klines in Redis agree as well: the open minute 00:05 (with all its trades) and its rollups
    wait_for("equal latest klines in Redis",
             lambda: latest("recovered") == latest("reference") and latest("reference")[0]["trades"]
             == str(expected_last[5]))
    mon = clients["recovered"].hgetall("system:monitoring")
    assert int(mon.get("market_replayed_trades", 0)) > 0  # the resent trades were recognised
    assert "kline_late_trades" not in mon and "kline_corrections" not in mon
    assert "market_source_resumed" in (tmp_path / "recovered-2.log").read_text()
    for c in clients.values():
        c.close()
