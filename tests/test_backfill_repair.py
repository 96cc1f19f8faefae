"""market_data's self-repair: which interval a reconnect may have lost (pure), and the repair sink fetching it
(and the start-up ``KLINE_BACKFILL``) from the simulator into VictoriaMetrics, compared with the simulator."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import redis
import urllib3

from connectors.market.source import MarketStats
from connectors.rest_klines.repair import KlineRepairSink
from cryptoflow.connector_configs import repair_config, repair_enabled
from cryptoflow.servers import stop_process
from cryptoflow.settings import Settings
from operators.outages import Outage, OutageTracker, covers, repair_range
from tests.dataflow_helpers import log_events, start_dataflow
from tests.fixtures.influx import VictoriaMetrics
from tests.fixtures.redis import RedisServer
from tests.fixtures.simulator import Simulator
from tests.waiting import wait_for

_http = urllib3.PoolManager()


def test_a_reconnect_reports_the_interval_since_the_last_healthy_report() -> None:
    t = OutageTracker()
    assert t.observe("okx", "trades", 0, 1_000, 2, 0) is None
    assert t.observe("okx", "trades", 0, 2_000, 2, 0) is None
    assert t.observe("okx", "trades", 0, 3_000, 1, 0) is None  # one of two connections down: not healthy
    assert t.observe("okx", "trades", 1, 3_500, 1, 5) is None  # another shard: its own state
    assert t.observe("okx", "trades", 0, 4_000, 1, 1) == Outage("okx", 2_000, 4_000)
    assert t.observe("okx", "trades", 0, 5_000, 2, 1) is None
    assert t.observe("okx", "trades", 0, 9_000, 2, 3) == Outage("okx", 5_000, 9_000)


def _settings(sim: Simulator, vm: VictoriaMetrics, redis_server: RedisServer, venues: str) -> Settings:
    return Settings(_env_file=None, redis_url=redis_server.url, influx_url=vm.url, influx_token="t",  # type: ignore[call-arg]
                    market_data_venues=venues, kline_timeframes="1m,5m", kline_backfill=3600,
                    okx_rest_url=sim.okx_rest_url, binance_rest_url=sim.binance_rest_url,
                    bybit_rest_url=sim.okx_rest_url)


def _simulator_klines(sim: Simulator, inst: str, interval: str, start: int, end: int) -> dict[int, Decimal]:
    """open time -> close, read through the simulator's Binance endpoint (no client code shared)."""
    resp = _http.request("GET", f"{sim.binance_rest_url}/api/v3/klines", fields={
        "symbol": inst.replace("-", ""), "interval": interval, "startTime": str(start), "endTime": str(end - 1),
        "limit": "1000"})
    return {r[0]: Decimal(r[4]) for r in orjson.loads(resp.data)}


def _stats(ts_ms: int, connections: int, reconnects: int) -> MarketStats:
    return MarketStats(venue="bybit", source="trades", shard=0, ts_ms=ts_ms, connections=connections,
                       reconnects=reconnects, topics=2)


@pytest.fixture
def sim(start_simulator: Callable[..., Simulator]) -> Simulator:
    # symbols no other test writes klines for: the VictoriaMetrics server is shared by the session
    return start_simulator("--pairs", "AVAX-USDT,TRX-USDT,UNI-USDT", "--seed", "21", "--rate", "5")


def test_start_up_backfills_kline_backfill_seconds(sim: Simulator, victoria: VictoriaMetrics,
                                                   redis_server: RedisServer, redis_db: redis.Redis) -> None:
    redis_db.sadd("config:trading_pairs", "AVAX-USDT")
    settings = _settings(sim, victoria, redis_server, "okx")
    assert repair_enabled(settings)
    now = int(time.time() * 1000)
    partition = KlineRepairSink(repair_config(settings)).build("repair_klines", 0, 1)
    try:
        labels = {"exchange": "okx", "symbol": "AVAX-USDT", "timeframe": "1m"}
        stored = wait_for("an hour of 1m klines", lambda: (s := victoria.series("kline", "close", **labels))
                          and len(s) >= 60 and s, timeout=120)
    finally:
        partition.close()
    first = min(stored)
    last_closed = (now // 60_000 - 1) * 60_000
    backfill_from = (now - 3_600_000) // 60_000 * 60_000  # the minute holding "an hour ago", whole
    assert first in (backfill_from, backfill_from + 60_000) and max(stored) in (last_closed, last_closed + 60_000)
    want = _simulator_klines(sim, "AVAX-USDT", "1m", first, max(stored) + 60_000)
    assert stored == {t: float(c) for t, c in want.items()}


def test_a_reconnect_fetches_the_interval_it_missed(sim: Simulator, victoria: VictoriaMetrics,
                                                    redis_server: RedisServer, redis_db: redis.Redis) -> None:
    redis_db.sadd("config:trading_pairs", "TRX-USDT", "AVAX-USDT")
    settings = _settings(sim, victoria, redis_server, "bybit,okx")
    partition = KlineRepairSink(repair_config(settings)).build("repair_klines", 1, 2)  # worker 1: no start-up backfill
    t0 = (int(time.time() * 1000) // 60_000 - 30) * 60_000 + 20_000  # 30 minutes ago, 20 s into a minute
    try:
        partition.write_batch([_stats(t0, 1, 0), _stats(t0 + 60_000, 0, 0), _stats(t0 + 10 * 60_000, 1, 1)])
        labels = {"exchange": "bybit", "symbol": "TRX-USDT"}
        five = wait_for("the missed 5m klines", lambda: victoria.series("kline", "close", timeframe="5m", **labels),
                        timeout=120)
        minutes = wait_for("the missed minutes", lambda: (s := victoria.series("kline", "close", timeframe="1m",
                           **labels)) and len(s) == 11 and s, timeout=60)
    finally:
        partition.close()
    start = t0 - 20_000
    assert sorted(minutes) == [start + i * 60_000 for i in range(11)]  # the outage's minutes, both ends whole
    assert minutes == {t: float(c) for t, c in _simulator_klines(sim, "TRX-USDT", "1m", start,
                                                                  start + 11 * 60_000).items()}
    assert min(five) == start - start % 300_000 and all(t % 300_000 == 0 for t in five)
    assert not victoria.series("kline", "close", exchange="okx", symbol="TRX-USDT", timeframe="1m")  # not okx's


@pytest.mark.slow
def test_market_data_backfills_at_start_and_repairs_after_a_dropped_connection(
        sim: Simulator, victoria: VictoriaMetrics, redis_server: RedisServer, redis_db: redis.Redis,
        tmp_path: Path) -> None:
    redis_db.sadd("config:trading_pairs", "UNI-USDT")
    env = {**sim.env(), "REDIS_URL": redis_server.url, "INFLUX_URL": victoria.url,
           "INFLUX_TOKEN": "t", "MARKET_DATA_VENUES": "okx", "KLINE_TIMEFRAMES": "1m", "KLINE_BACKFILL": "1200",
           "LOG_FORMAT": "json", "PRICE_ALERTS_ENABLED": "false", "TRADING_PAIRS_POLL_INTERVAL": "1"}
    log = tmp_path / "market_data.log"
    started = int(time.time() * 1000)
    proc = start_dataflow("market_data", env, log)
    try:
        first = wait_for("the start-up backfill", lambda: log_events(log, "kline_repair_done"), timeout=120)[0]
        assert first["venue"] == "okx" and first["klines"] >= 20
        labels = {"exchange": "okx", "symbol": "UNI-USDT", "timeframe": "1m"}
        stored = wait_for("the backfilled points", lambda: (x := victoria.series("kline", "close", **labels))
                          and len(x) >= 20 and x)
        backfill_from = (started - 1_200_000) // 60_000 * 60_000
        assert min(stored) in (backfill_from, backfill_from + 60_000)
        wait_for("the okx connection", lambda: any(s["venue"] == "okx" for s in sim.status()["subscriptions"]))
        sim.fault("drop_connection", venue="okx")
        outage = wait_for("the outage", lambda: log_events(log, "kline_outage"), timeout=60)[0]
        repair = wait_for("the repair", lambda: log_events(log, "kline_repair_done")[1:], timeout=120)[0]
        assert repair["start_ms"] == outage["start_ms"] and repair["klines"] >= 1
    finally:
        stop_process(proc)
    minute = outage["end_ms"] // 60_000 * 60_000  # the reconnect's minute, fetched whole once closed
    want = _simulator_klines(sim, "UNI-USDT", "1m", backfill_from, minute + 60_000)
    stored = victoria.series("kline", "close", **labels)
    # Only the start-up backfill wrote these: from the minute its window starts in (the dataflow's own clock: a
    # start that straddles a minute boundary moves it one minute past `backfill_from`) to the test's start.
    first_minute = first["start_ms"] // 60_000 * 60_000
    before_start = [t for t in want if first_minute <= t < started // 60_000 * 60_000]
    wrong = [(t, stored.get(t), want[t]) for t in before_start if stored.get(t) != float(want[t])]
    assert len(before_start) >= 19 and not wrong, (started, first, wrong)
    # the outage's minutes hold the venue's kline (the pipeline may have written its own too: VictoriaMetrics keeps
    # both samples of one timestamp, where InfluxDB keeps the last written)
    def samples() -> dict[int, list[float]]:
        out: dict[int, list[float]] = {}
        for row in victoria.export('{__name__="kline_close",exchange="okx",symbol="UNI-USDT",timeframe="1m"}'):
            for t, v in zip(row["timestamps"], row["values"], strict=True):
                out.setdefault(t, []).append(v)
        return out

    missed = range(outage["start_ms"] // 60_000 * 60_000, minute + 60_000, 60_000)
    # waited for, not read once: VictoriaMetrics makes new samples searchable up to about a second after the write
    try:
        wait_for("the venue's kline in the store for every minute of the outage", lambda: all(
            float(want[t]) in samples().get(t, []) for t in missed), timeout=15)
    except AssertionError as e:
        got = samples()
        raise AssertionError(f"{e}: {[(t, got.get(t), want[t]) for t in missed]}") from e


def test_one_fetch_serves_the_outages_of_one_blip() -> None:
    hour = 3_600_000
    first = Outage("okx", 10 * 60_000 + 5_000, 20 * 60_000 + 1_000)
    assert repair_range(first, hour) == (10 * 60_000 + 5_000, 21 * 60_000)  # the reconnect's minute, whole
    assert repair_range(Outage("okx", 0, 2 * hour), hour) == (hour, 2 * hour + 60_000)  # at most max_back
    assert covers(first, Outage("okx", 10 * 60_000 + 59_000, 20 * 60_000 + 59_000), hour)  # same minutes
    assert covers(first, Outage("okx", 10 * 60_000, 19 * 60_000), hour)  # inside
    assert not covers(first, Outage("okx", 9 * 60_000 + 59_000, 20 * 60_000), hour)  # starts a minute earlier
    assert not covers(first, Outage("okx", 11 * 60_000, 21 * 60_000), hour)  # ends a minute later
    assert not covers(first, Outage("bybit", 10 * 60_000 + 5_000, 20 * 60_000 + 1_000), hour)  # another venue


def test_every_shard_of_a_venue_reconnecting_is_one_repair(
        sim: Simulator, victoria: VictoriaMetrics, redis_server: RedisServer, redis_db: redis.Redis) -> None:
    redis_db.sadd("config:trading_pairs", "UNI-USDT", "AVAX-USDT")
    settings = _settings(sim, victoria, redis_server, "bybit,okx")
    partition = KlineRepairSink(repair_config(settings)).build("repair_klines", 1, 2)  # worker 1: no start-up backfill
    t0 = (int(time.time() * 1000) // 60_000 - 40) * 60_000 + 20_000  # 40 minutes ago, 20 s into a minute

    def shard(venue: str, n: int, ts_ms: int, reconnects: int) -> MarketStats:
        return MarketStats(venue=venue, source="trades", shard=n, ts_ms=ts_ms, connections=1,
                           reconnects=reconnects, topics=2)

    try:
        # three bybit shards drop in the same second: one batch; then an okx outage, repaired after them (FIFO)
        partition.write_batch([shard("bybit", n, t0 + n, 0) for n in range(3)])
        partition.write_batch([shard("bybit", n, t0 + 10 * 60_000 + n, 1) for n in range(3)])
        partition.write_batch([shard("okx", 0, t0, 0), shard("okx", 0, t0 + 5 * 60_000, 1)])
        wait_for("the okx repair", lambda: victoria.series("kline", "close", exchange="okx", symbol="UNI-USDT",
                                                           timeframe="5m"), timeout=120)
    finally:
        partition.close()
    counters = orjson.loads(_http.request("GET", f"{sim.control_url}/rest").data)
    assert counters["bybit"]["requests"] == 4  # one page per pair and timeframe, once (not once per shard)
    start = t0 - 20_000
    minutes = victoria.series("kline", "close", exchange="bybit", symbol="UNI-USDT", timeframe="1m")
    assert sorted(minutes) == [start + i * 60_000 for i in range(11)]
