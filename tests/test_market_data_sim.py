"""``dataflows.market_data`` as a real process against the simulator (real Redis, VictoriaMetrics).

* synthetic market, all three venues: tickers land with their TTLs (Bybit's bid/ask from ``orderbook.1``),
  klines are kept current, pairs are added and removed live;
* a scripted replay per venue at ``--speed 0`` (written here in the recording format, in each venue's wire
  shape): minutes close, an empty minute gives a flat kline, a late trade is reported, the venue's klines are
  reconciled (one mismatch planted), the last minute closes on time with no later trade; for Binance also
  ``-w 2`` and two processes, which must write exactly the klines of one worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from cryptoflow.servers import free_port, stop_process
from tests.fixtures.influx import private_victoria
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_723_161_600_000  # 2024-08-09 00:00 UTC

pytestmark = pytest.mark.slow


@pytest.fixture
def start_flow(tmp_path: Path) -> Iterator[Callable[..., list[subprocess.Popen[bytes]]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], *, workers: int = 1, processes: int = 1) -> list[subprocess.Popen[bytes]]:
        full = {**os.environ, "LOG_FORMAT": "json", "TRADING_PAIRS_POLL_INTERVAL": "0.5",
                "PRICE_ALERTS_ENABLED": "false", **env}
        addrs = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
        started = []
        for i in range(processes):
            cmd = [sys.executable, "-m", "bytewax.run", "dataflows.market_data", "-w", str(workers)]
            if processes > 1:
                cmd += ["-i", str(i), "-a", addrs]
            log = (tmp_path / f"flow-{len(procs)}.log").open("wb")
            proc = subprocess.Popen(cmd, cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            procs.append(proc)
            started.append(proc)
        return started

    yield start
    for proc in procs:
        stop_process(proc)


def test_live_tickers_klines_and_pairs(start_simulator: Any, start_flow: Any, redis_server: Any,
                                       redis_db: Any) -> None:
    sim = start_simulator("--pairs", "BTC-USDT,ETH-USDT", "--seed", "5", "--rate", "20")
    redis_db.sadd("config:trading_pairs", "BTC-USDT")
    start_flow({**sim.env(), "REDIS_URL": redis_server.url, "KLINE_TIMEFRAMES": "1m,5m"})
    venues = ("okx", "binance", "bybit")
    wait_for("three tickers", lambda: all(redis_db.exists(f"ticker:{v}:BTC-USDT") for v in venues))
    for v in venues:
        t = redis_db.hgetall(f"ticker:{v}:BTC-USDT")
        assert Decimal(t["bid"]) <= Decimal(t["ask"]), (v, t)  # Bybit's come from orderbook.1
        assert Decimal(t["low_24h"]) <= Decimal(t["price"]) <= Decimal(t["high_24h"]), (v, t)
        assert t["timestamp"].endswith("Z") and 0 < redis_db.ttl(f"ticker:{v}:BTC-USDT") <= 300
    wait_for("klines", lambda: all(redis_db.exists(f"kline:{v}:BTC-USDT:{tf}")
                                   for v in venues for tf in ("1m", "5m")))
    k = redis_db.hgetall("kline:binance:BTC-USDT:1m")
    assert Decimal(k["low"]) <= Decimal(k["close"]) <= Decimal(k["high"]) and int(k["trades"]) > 0
    assert 0 < redis_db.ttl("kline:okx:BTC-USDT:5m") <= 3600

    # pairs change live: ETH-USDT added, BTC-USDT removed, without a restart
    redis_db.sadd("config:trading_pairs", "ETH-USDT")
    wait_for("ETH tickers", lambda: all(redis_db.exists(f"ticker:{v}:ETH-USDT") for v in venues))
    redis_db.srem("config:trading_pairs", "BTC-USDT")

    def btc_gone() -> bool:
        subs = sim.status()["subscriptions"]
        return not [s for s in subs if s["inst"] == "BTC-USDT"] and any(s["inst"] == "ETH-USDT" for s in subs)

    wait_for("BTC-USDT unsubscribed on every venue", btc_gone)
    mon = redis_db.hgetall("system:monitoring")
    assert int(mon["market_binance_connections"]) >= 1 and int(mon["subscription_changes"]) >= 1
    assert int(mon["websocket_connections"]) >= int(mon["market_binance_connections"])  # summed over venues
    assert mon["market_last_config_check"].endswith("Z")  # ISO-8601 like every time in system:monitoring


# ------------------------------------------------------------------------------------------------ replay
# A venue-neutral script: ("trade", symbol, id, exchange ms, price, qty, receive ms) and
# ("kline", symbol, open ms, o, h, l, c, volume, trades, receive ms); encoded per venue below.
def _t(sym: str, tid: int, ts: int, price: str, qty: str = "1", recv: int | None = None) -> tuple[Any, ...]:
    return ("trade", sym, tid, ts, price, qty, recv or ts)


def _k(sym: str, start: int, o: str, h: str, lo: str, c: str, v: str, n: int, recv: int) -> tuple[Any, ...]:
    return ("kline", sym, start, o, h, lo, c, v, n, recv)


SCRIPT = [
    _t("BTCUSDT", 1, T0 - 30_000, "100"),
    _t("ETHUSDT", 1, T0 - 20_000, "10"),
    _t("BTCUSDT", 2, T0 + 1_000, "100"), _t("BTCUSDT", 3, T0 + 30_000, "105", "2"),
    _t("ETHUSDT", 2, T0 + 31_000, "11"),
    _t("BTCUSDT", 4, T0 + 50_000, "99"),
    _t("BTCUSDT", 5, T0 + 61_000, "101"), _t("BTCUSDT", 6, T0 + 90_000, "102"),
    # minute 2 (00:02): no BTC trade
    _t("ETHUSDT", 3, T0 + 150_000, "12"),
    _t("BTCUSDT", 7, T0 + 185_000, "103"),
    _t("BTCUSDT", 8, T0 + 100_000, "500", "7", recv=T0 + 186_000),  # late: minute 1 is closed by now
    _t("BTCUSDT", 9, T0 + 200_000, "104"),
    _t("ETHUSDT", 4, T0 + 238_000, "13"),
    _t("BTCUSDT", 10, T0 + 239_500, "106"),  # the last trade: minute 3 must close on the clock
    _k("BTCUSDT", T0, "100", "105", "99", "99", "4", 3, T0 + 60_100),
    _k("BTCUSDT", T0 + 60_000, "101", "102", "101", "101", "2", 2, T0 + 120_100),  # planted mismatch
    _k("BTCUSDT", T0 + 120_000, "102", "102", "102", "102", "0", 0, T0 + 180_100),
]
EXPECTED_CLOSE = {T0 - 60_000: 100.0, T0: 99.0, T0 + 60_000: 102.0, T0 + 120_000: 102.0, T0 + 180_000: 106.0}
EXPECTED_ETH = {T0 - 60_000: 10.0, T0: 11.0, T0 + 60_000: 11.0, T0 + 120_000: 12.0, T0 + 180_000: 13.0}


def _inst(sym: str) -> str:
    return f"{sym[:-4]}-{sym[-4:]}"


def _encode(venue: str, row: tuple[Any, ...]) -> tuple[float, str, dict[str, Any]]:
    """(receive s, source URL, frame) of one script row, as ``venue`` sends it."""
    if row[0] == "trade":
        _, sym, tid, ts, price, qty, recv = row
        if venue == "binance":
            return recv / 1000, "wss://stream.binance.com:9443/stream", {"stream": f"{sym.lower()}@trade", "data": {
                "e": "trade", "E": ts, "s": sym, "t": tid, "p": price, "q": qty, "T": ts, "m": False, "M": True}}
        if venue == "okx":
            inst = _inst(sym)
            return recv / 1000, "wss://ws.okx.com:8443/ws/v5/public", {
                "arg": {"channel": "trades", "instId": inst},
                "data": [{"instId": inst, "tradeId": str(tid), "px": price, "sz": qty, "side": "buy", "ts": str(ts)}]}
        return recv / 1000, "wss://stream.bybit.com/v5/public/spot", {
            "topic": f"publicTrade.{sym}", "type": "snapshot", "ts": ts,
            "data": [{"i": str(tid), "T": ts, "p": price, "v": qty, "S": "Buy", "s": sym, "BT": False}]}
    _, sym, start, o, h, lo, c, v, n, recv = row
    if venue == "binance":
        body = {"t": start, "T": start + 59_999, "s": sym, "i": "1m", "f": 0, "L": 0, "o": o, "c": c, "h": h,
                "l": lo, "v": v, "n": n, "x": True, "q": "0"}
        return recv / 1000, "wss://stream.binance.com:9443/stream", {
            "stream": f"{sym.lower()}@kline_1m", "data": {"e": "kline", "E": recv, "s": sym, "k": body}}
    if venue == "okx":
        return recv / 1000, "wss://ws.okx.com:8443/ws/v5/business", {
            "arg": {"channel": "candle1m", "instId": _inst(sym)},
            "data": [[str(start), o, h, lo, c, v, "0", "0", "1"]]}
    return recv / 1000, "wss://stream.bybit.com/v5/public/spot", {
        "topic": f"kline.1.{sym}", "type": "snapshot", "ts": recv,
        "data": [{"start": start, "end": start + 59_999, "interval": "1", "open": o, "close": c, "high": h,
                  "low": lo, "volume": v, "turnover": "0", "confirm": True, "timestamp": recv}]}


def write_replay(path: Path, venue: str) -> Path:
    """The script as a recording (docs/CONTRACTS.md format), in receive order."""
    rows = sorted((_encode(venue, r) for r in SCRIPT), key=lambda e: e[0])
    lines = [json.dumps({"ts": ts, "source": src, "data": json.dumps(frame, separators=(",", ":"))})
             for ts, src, frame in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _closes(victoria: Any, venue: str, symbol: str) -> dict[int, float]:
    return victoria.series("kline", "close", exchange=venue, symbol=symbol, timeframe="1m")


@pytest.mark.parametrize("venue", ["binance", "okx", "bybit"])
def test_replay_klines_flat_late_reconcile_and_workers(venue: str, start_simulator: Any, start_flow: Any,
                                                       redis_server: Any, tmp_path: Path) -> None:
    sim = start_simulator("--replay", str(write_replay(tmp_path / f"{venue}-script.jsonl", venue)), "--speed", "0")
    base = {**sim.env(), "MARKET_DATA_VENUES": venue, "BINANCE_TRADE_STREAM": "trade",
            "KLINE_TIMEFRAMES": "1m,5m", "INFLUX_TOKEN": "t"}
    # every venue once; Binance also with two workers and as two processes (the same klines are required)
    configs = (("w1", 1, 1), ("w2", 2, 1), ("p2", 1, 2)) if venue == "binance" else (("w1", 1, 1),)
    runs: dict[str, dict[str, dict[int, float]]] = {}
    for name, workers, processes in configs:
        db = 1 + len(runs)
        url = f"{redis_server.url.rsplit('/', 1)[0]}/{db}"
        client = redis_lib.Redis.from_url(url, decode_responses=True)
        client.flushdb()
        client.sadd("config:trading_pairs", "BTC-USDT", "ETH-USDT")
        with private_victoria(tmp_path / f"vm-{name}") as vm:
            procs = start_flow({**base, "REDIS_URL": url, "INFLUX_URL": vm.url}, workers=workers,
                               processes=processes)
            # minute 3 closes by the clock (no trade after it), the others by the data
            wait_for(f"closed {venue} klines of run {name}",
                     lambda vm=vm: [len(_closes(vm, venue, s)) for s in ("BTC-USDT", "ETH-USDT")] == [5, 5],
                     timeout=40)
            runs[name] = {s: _closes(vm, venue, s) for s in ("BTC-USDT", "ETH-USDT")}
            if name == "w1":
                vols = vm.series("kline", "volume", exchange=venue, symbol="BTC-USDT", timeframe="1m")
                assert vols[T0 + 120_000] == 0.0 and vols[T0 + 60_000] == 2.0  # flat minute; late trade left out
            mon = wait_for(f"reconciliation of run {name}",
                           lambda c=client: (m := c.hgetall("system:monitoring")) and "kline_mismatches" in m and m)
            assert mon["kline_late_trades"] == "1"
            assert (mon["kline_reconciled"], mon["kline_mismatches"]) == ("3", "1")
            for proc in procs:
                stop_process(proc)
        client.close()
    assert runs["w1"]["BTC-USDT"] == EXPECTED_CLOSE  # minute 2 is flat at minute 1's close
    assert runs["w1"]["ETH-USDT"] == EXPECTED_ETH
    assert all(run == runs["w1"] for run in runs.values())
