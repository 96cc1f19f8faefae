"""``cryptoflow backfill`` end to end: the simulator's REST klines -> VictoriaMetrics (InfluxDB v2 write API),
checkpoints in a real Redis; killed mid-way and resumed; within the simulator's rate limits, or waiting out a 429.

The oracle is the simulator's own market, read back with plain HTTP on its Binance endpoint (no code shared with
the client), compared with what VictoriaMetrics holds: every expected open time, nothing else, equal values.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import urllib3

from connectors.rest_klines.backfill import VENUES
from connectors.rest_klines.budget import Budget
from connectors.rest_klines.client import BackfillError, KlineClient
from cryptoflow.servers import free_port
from operators.events import iso_ms
from tests.fixtures.influx import VictoriaMetrics
from tests.fixtures.redis import RedisServer
from tests.fixtures.simulator import Simulator
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ["ADA-USDT", "LTC-USDT", "DOT-USDT"]  # symbols no other test writes klines for (shared servers)
DAY_MS = 86_400_000
_http = urllib3.PoolManager()


def _env(sim: Simulator, vm: VictoriaMetrics, redis_server: RedisServer) -> dict[str, str]:
    return {**os.environ, **sim.env(), "BYBIT_REST_URL": sim.okx_rest_url, "REDIS_URL": redis_server.url,
            "INFLUX_URL": vm.url, "INFLUX_TOKEN": "t", "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cryptoflow.cli", "backfill", *args]


def _range(days: int) -> tuple[int, int]:
    """``days`` whole days of minutes ending at the last closed minute."""
    end = int(time.time() * 1000) // 60_000 * 60_000
    return end - days * DAY_MS, end


def _oracle(sim: Simulator, inst: str, start: int, end: int, via: str = "binance") -> dict[int, list[Decimal]]:
    """open time -> [open, high, low, close, volume] of the simulator's 1m klines in [start, end), read through
    its Binance endpoint (or Bybit's, when a test spends Binance's limit)."""
    out: dict[int, list[Decimal]] = {}
    cursor = start
    while cursor < end:
        if via == "binance":
            resp = _http.request("GET", f"{sim.binance_rest_url}/api/v3/klines", fields={
                "symbol": inst.replace("-", ""), "interval": "1m", "startTime": str(cursor),
                "endTime": str(end - 1), "limit": "1000"})
            rows = orjson.loads(resp.data)
        else:
            resp = _http.request("GET", f"{sim.okx_rest_url}/v5/market/kline", fields={
                "category": "spot", "symbol": inst.replace("-", ""), "interval": "1", "start": str(cursor),
                "end": str(min(end, cursor + 1000 * 60_000) - 1), "limit": "1000"})
            rows = [[int(r[0]), *r[1:]] for r in reversed(orjson.loads(resp.data)["result"]["list"])]
        assert resp.status == 200, resp.data
        out.update({r[0]: [Decimal(x) for x in r[1:6]] for r in rows})
        cursor = rows[-1][0] + 60_000
    return out


def _stored(vm: VictoriaMetrics, exchange: str, inst: str, start: int, end: int) -> dict[int, list[float]]:
    """What VictoriaMetrics holds in [start - 1 day, end + 1 day) (the server is shared by the session's tests:
    other tests' points for the same series lie elsewhere in time)."""
    labels = {"exchange": exchange, "symbol": inst, "timeframe": "1m"}
    series = [vm.series("kline", name, **labels) for name in ("open", "high", "low", "close", "volume")]
    return {t: [s.get(t, float("nan")) for s in series] for t in series[0] if start - DAY_MS <= t < end + DAY_MS}


def _raw_samples(vm: VictoriaMetrics, exchange: str, inst: str) -> int:
    rows = vm.export(f'{{__name__="kline_open",exchange="{exchange}",symbol="{inst}",timeframe="1m"}}')
    return sum(len(r["timestamps"]) for r in rows)


def _assert_equal(stored: dict[int, list[float]], want: dict[int, list[Decimal]]) -> None:
    assert sorted(stored) == sorted(want), (
        f"holes {sorted(set(want) - set(stored))[:5]}, extra {sorted(set(stored) - set(want))[:5]}")
    bad = [t for t in want if stored[t] != [float(x) for x in want[t]]]
    assert not bad, f"{len(bad)} klines differ, first {bad[0]}: {stored[bad[0]]} != {want[bad[0]]}"


def _counters(sim: Simulator) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(_http.request("GET", f"{sim.control_url}/rest").data)
    return out


@pytest.fixture
def sim(start_simulator: Callable[..., Simulator]) -> Simulator:
    return start_simulator("--pairs", ",".join(SYMBOLS), "--seed", "11", "--rate", "5",
                           "--okx-rest-limit", "10/1", "--binance-rest-limit", "100000/60",
                           "--bybit-rest-limit", "3/5")


def test_three_days_three_symbols_killed_and_resumed_no_duplicate_no_hole_never_refused(
        sim: Simulator, victoria: VictoriaMetrics, redis_server: RedisServer, redis_db: redis.Redis) -> None:
    start, end = _range(3)
    env = _env(sim, victoria, redis_server)
    args = _command("--exchange", "okx", "--symbol", ",".join(SYMBOLS), "--timeframe", "1m", "--from", str(start),
                    "--to", str(end), "--budget", "10/1")
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # kill it (no clean stop) once the second symbol is part-way
        wait_for("the second symbol's checkpoint to move",
                 lambda: int(redis_db.hget(f"backfill:okx:{SYMBOLS[1]}:1m", "next") or 0) > start, timeout=120)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(30)
    cp = redis_db.hgetall(f"backfill:okx:{SYMBOLS[1]}:1m")
    assert cp["done"] == "false" and start < int(cp["next"]) < end
    assert redis_db.hget(f"backfill:okx:{SYMBOLS[0]}:1m", "done") == "true"
    assert not redis_db.exists(f"backfill:okx:{SYMBOLS[2]}:1m")
    requests_before = _counters(sim)["okx"]["requests"]

    second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    lines = second.stdout.splitlines()
    assert f"backfill okx {SYMBOLS[1]} 1m" in lines[1] and f"resumed at {iso_ms(int(cp['next']))}" in lines[1]
    assert lines[0] == f"backfill okx {SYMBOLS[0]} 1m: already complete up to {iso_ms(end)} (checkpoint; " \
        "--restart to fetch again)"  # the first was finished: nothing asked
    # the resumed run asked only for what was missing: symbol 3 whole, symbol 2 from its checkpoint (its own count:
    # `requests` of its last backfill_done line, the client's total)
    pages_left = -(-(end - int(cp["next"])) // 6_000_000) + -(-(end - start) // 6_000_000)
    done = [orjson.loads(x) for x in second.stderr.splitlines() if '"backfill_done"' in x]
    assert [(d["instrument"], d["pages"] > 0) for d in done] == [(SYMBOLS[0], False), (SYMBOLS[1], True),
                                                                 (SYMBOLS[2], True)], done
    assert done[-1]["requests"] == pages_left and done[-1]["rate_limited"] == 0, done
    # what keeps it from being refused: the killed run's requests count in the venue's window too
    assert '"kline_budget_follows_previous_run"' in second.stderr
    # and the venue saw that many: plus, at most, the killed run's last request (its client asks one page at a
    # time), which may reach the simulator's counter after requests_before was read
    counters = _counters(sim)
    assert pages_left <= counters["okx"]["requests"] - requests_before <= pages_left + 1, counters["okx"]
    # never over the limit: nothing refused, never more than the window's allowance served in one window
    assert counters["okx"]["refused"] == 0 and counters["okx"]["max_used"] <= 10, counters["okx"]

    for inst in SYMBOLS:
        want = _oracle(sim, inst, start, end)
        assert len(want) == 3 * 1440
        _assert_equal(_stored(victoria, "okx", inst, start, end), want)
        # a replayed page is the only possible rewrite (VictoriaMetrics keeps raw samples; InfluxDB overwrites)
        assert _raw_samples(victoria, "okx", inst) <= len(want) + 100
        assert redis_db.hgetall(f"backfill:okx:{inst}:1m") | {"updated_at": ""} == {
            "from": str(start), "to": str(end), "next": str(end), "done": "true", "updated_at": ""}


def test_a_client_told_429_waits_retry_after_and_then_succeeds(
        start_simulator: Callable[..., Simulator], victoria: VictoriaMetrics, redis_server: RedisServer,
        redis_db: redis.Redis) -> None:
    # the venue allows 1 request (weight 2) per 4 s; the client is told it may do 100 per second
    sim = start_simulator("--pairs", "LINK-USDT", "--seed", "12", "--rate", "5", "--binance-rest-limit", "2/4")
    start, end = _range(3)
    done = subprocess.run(
        _command("--exchange", "binance", "--symbol", "LINK-USDT", "--from", str(start), "--to", str(end),
                 "--budget", "100/1"), cwd=ROOT, env=_env(sim, victoria, redis_server), capture_output=True,
        text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    counters = _counters(sim)["binance"]
    assert counters["refused"] >= 1, counters  # it was told to wait...
    assert counters["banned"] == 0, counters  # ...and never asked before Retry-After was over (no 418)
    assert '"kline_rate_limited"' in done.stderr and '"told":true' in done.stderr
    _assert_equal(_stored(victoria, "binance", "LINK-USDT", start, end),
                  _oracle(sim, "LINK-USDT", start, end, via="bybit"))


def test_bybit_paced_by_its_limit_headers_is_never_refused(
        sim: Simulator, victoria: VictoriaMetrics, redis_server: RedisServer, redis_db: redis.Redis) -> None:
    start, end = _range(8)
    # the client allows itself far more than the venue's 3 per 5 s: X-Bapi-Limit-Status "0" holds it back
    done = subprocess.run(
        _command("--exchange", "bybit", "--symbol", "DOT-USDT", "--from", str(start), "--to", str(end), "--budget",
                 "100/1"), cwd=ROOT, env=_env(sim, victoria, redis_server), capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    counters = _counters(sim)["bybit"]
    assert counters["requests"] == 12 and counters["refused"] == 0, counters
    done_line = next(e for e in map(orjson.loads, done.stderr.splitlines()) if e["event"] == "backfill_done")
    assert done_line["paused"] >= 3 and done_line["rate_limited"] == 0, done_line  # 12 requests, 3 per window
    _assert_equal(_stored(victoria, "bybit", "DOT-USDT", start, end), _oracle(sim, "DOT-USDT", start, end))


def test_an_unknown_symbol_is_one_line_and_exit_1(
        sim: Simulator, victoria: VictoriaMetrics, redis_server: RedisServer, redis_db: redis.Redis) -> None:
    done = subprocess.run(_command("--exchange", "binance", "--symbol", "DOGE-USDT", "--from", "2026-11-01"),
                          cwd=ROOT, env=_env(sim, victoria, redis_server), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("cryptoflow backfill: binance refused")
    assert "Invalid symbol." in done.stderr


def test_influxdb_unreachable_is_one_line_exit_1_and_no_checkpoint_moves(
        sim: Simulator, victoria: VictoriaMetrics, redis_server: RedisServer, redis_db: redis.Redis) -> None:
    env = {**_env(sim, victoria, redis_server), "INFLUX_URL": f"http://127.0.0.1:{free_port()}"}
    start, end = _range(1)
    done = subprocess.run(_command("--exchange", "bybit", "--symbol", "ADA-USDT", "--from", str(start), "--to",
                                   str(end)), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("cryptoflow backfill: InfluxDB at http://127.0.0.1:") and "did not take" in last
    assert "Traceback" not in done.stderr
    assert not redis_db.exists("backfill:bybit:ADA-USDT:1m")


def test_told_to_wait_longer_than_allowed_the_client_gives_up_with_the_reason(
        start_simulator: Callable[..., Simulator]) -> None:
    # one request per window, and a window far longer than the test: windows are aligned to the epoch, and the
    # next boundary of a 10^9 s window is in 2033 (the Retry-After, ~2e8 s, is believed: before, one over a day
    # was ignored, and a 10^5 s window failed the test in the first 14 % of each window)
    sim = start_simulator("--pairs", "BTC-USDT", "--seed", "13", "--rate", "5", "--binance-rest-limit", "2/1000000000")
    client = KlineClient(VENUES["binance"], sim.binance_rest_url, Budget(100, 1.0), max_wait_s=5.0)
    start, end = _range(1)

    async def two_pages() -> None:
        try:
            await client.page("BTC-USDT", "1m", start, start + 60 * 60_000)
            await client.page("BTC-USDT", "1m", start + 60 * 60_000, end)
        finally:
            await client.close()

    with pytest.raises(BackfillError, match=r"binance refused \(HTTP 429\) for \d+ s, longer than 5 s"):
        asyncio.run(two_pages())
    assert _counters(sim)["binance"]["requests"] == 2 and client.requests == 2  # it did not ask again
