"""`cryptoflow serve` history routes against a real InfluxDB 1.x (InfluxQL on /query) and a real Redis.

Klines are made by the project's own point builder (``connectors.redis.market_sink.kline_point`` ->
``connectors.influx.writer.to_line``) and replayed into InfluxDB through ``/write``, as the dataflow's writer would;
the oracle is the list of :class:`Kline` objects written, compared by decimal value.
"""

from __future__ import annotations

import csv
import io
import random
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis

from connectors.influx.query import TimeRange, ident, literal, select
from connectors.influx.writer import to_line
from connectors.redis.analysis_sink import alert_points, result_points
from connectors.redis.market_sink import kline_fields, kline_point
from operators.analysis.engine import AnalysisOutput
from operators.events import AlertEvent, AnalysisResult, BookStatus, Kline, iso_ms
from tests.fixtures.influx import InfluxDB1, start_influxd
from tests.fixtures.redis import RedisServer
from tests.fixtures.service import ServiceProcess, launch_service

T0 = 1_764_115_200_000  # 2025-11-26 00:00 UTC
MINUTE = 60_000
BARS = 3 * 24 * 60  # three days of 1m klines


def _kline(i: int, rng: random.Random, symbol: str = "BTC-USDT") -> Kline:
    base = Decimal(60_000) + Decimal(rng.randint(-50_000, 50_000)) / 100
    prices = sorted(base + Decimal(rng.randint(0, 5_000)) / 100 for _ in range(4))
    return Kline("okx", symbol, "1m", T0 + i * MINUTE, T0 + (i + 1) * MINUTE, open=prices[1], high=prices[3],
                 low=prices[0], close=prices[2], volume=Decimal(rng.randint(1, 10**9)) / 10**8,
                 quote_volume=Decimal(rng.randint(1, 10**6)), trades=rng.randint(0, 5000), closed=True)


@pytest.fixture(scope="module")
def written(influxdb1: InfluxDB1) -> list[Kline]:
    influxdb1.reset()
    rng = random.Random(11)
    klines = [_kline(i, rng) for i in range(BARS)]
    # A tiny volume (exponent notation as a float) and another symbol that must not leak into BTC-USDT's rows.
    klines[7] = msgspec.structs.replace(klines[7], volume=Decimal("0.00000123"))
    other = [_kline(i, rng, "ETH-USDT") for i in range(50)]
    for chunk in range(0, BARS, 1000):
        influxdb1.write_lines("\n".join(to_line(kline_point(k)) for k in klines[chunk:chunk + 1000]), "ms")
    influxdb1.write_lines("\n".join(to_line(kline_point(k)) for k in other), "ms")
    return klines


@pytest.fixture(scope="module")
def service(redis_server: RedisServer, influxdb1: InfluxDB1,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = launch_service(tmp_path_factory.mktemp("svc"), {
        "REDIS_URL": redis_server.url, "INFLUX_URL": influxdb1.url, "INFLUX_BUCKET": influxdb1.database})
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def api(service: ServiceProcess, redis_db: redis.Redis) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        yield client


def _same_bar(row: list[Any], k: Kline) -> bool:
    return (row[0] == k.open_ms and [Decimal(v) for v in row[1:6]] == [k.open, k.high, k.low, k.close, k.volume]
            and row[6] == k.trades and row[7] is k.closed)


def _pages(api: httpx.Client, fmt: str = "json") -> list[list[Any]]:
    rows: list[list[Any]] = []
    start = T0
    while True:
        resp = api.get("/v1/klines", params={"symbol": "BTC-USDT", "exchange": "okx", "interval": "1m",
                                             "start": start, "end": T0 + BARS * MINUTE, "limit": 1000,
                                             "format": fmt})
        assert resp.status_code == 200, resp.text
        page = resp.json() if fmt == "json" else _csv_rows(resp)
        rows.extend(page)
        if len(page) < 1000:
            assert "X-Next-Start" not in resp.headers
            return rows
        start = int(resp.headers["X-Next-Start"])
        assert start == page[-1][0] + 1


def _csv_rows(resp: httpx.Response) -> list[list[Any]]:
    assert resp.headers["content-type"].startswith("text/csv")
    reader = csv.reader(io.StringIO(resp.text))
    assert next(reader) == ["open_time", "open", "high", "low", "close", "volume", "trades", "closed"]
    return [[int(r[0]), *r[1:6], int(r[6]), r[7] == "true"] for r in reader]


def test_three_days_of_klines_read_back_page_by_page(api: httpx.Client, written: list[Kline]) -> None:
    rows = _pages(api)
    assert len(rows) == BARS
    bad = [i for i, (row, k) in enumerate(zip(rows, written, strict=True)) if not _same_bar(row, k)]
    assert bad == [], f"{len(bad)} rows differ, first: {rows[bad[0]]} vs {written[bad[0]]}"
    assert rows[7][5] == "0.00000123"  # decimal text, never exponent notation
    assert all("e" not in v.lower() for row in rows for v in row[1:6])
    assert _pages(api, "csv") == rows


def test_without_start_the_newest_bars_oldest_first(api: httpx.Client, written: list[Kline]) -> None:
    end = T0 + 100 * MINUTE
    rows = api.get("/v1/klines", params={"symbol": "BTC-USDT", "end": end, "limit": 10}).json()
    assert [r[0] for r in rows] == [k.open_ms for k in written[90:100]]
    iso = api.get("/v1/klines", params={"symbol": "BTC-USDT", "start": iso_ms(T0 + 5 * MINUTE),
                                        "end": "2025-11-26T00:08:00+00:00"}).json()
    assert [r[0] for r in iso] == [k.open_ms for k in written[5:8]]


def test_the_live_bar_from_redis_comes_last(api: httpx.Client, written: list[Kline], redis_db: redis.Redis) -> None:
    live = Kline("okx", "BTC-USDT", "1m", T0 + BARS * MINUTE, T0 + (BARS + 1) * MINUTE, Decimal("60001.5"),
                 Decimal("60002"), Decimal("60000.25"), Decimal("60001"), Decimal("3.5"), Decimal(1), 42, False)
    redis_db.hset("kline:okx:BTC-USDT:1m", mapping=kline_fields(live))
    params: dict[str, Any] = {"symbol": "BTC-USDT", "start": T0 + (BARS - 3) * MINUTE, "end": live.close_ms}
    rows = api.get("/v1/klines", params=params).json()
    assert [r[0] for r in rows] == [k.open_ms for k in written[-3:]] + [live.open_ms]
    assert rows[-1] == [live.open_ms, "60001.5", "60002", "60000.25", "60001", "3.5", 42, False]
    # A full page ends before the live bar (the next page has it), and a range that ends before it omits it.
    full = api.get("/v1/klines", params={**params, "limit": 2}).json()
    assert [r[0] for r in full] == [k.open_ms for k in written[-3:-1]]
    before = api.get("/v1/klines", params={**params, "end": live.open_ms}).json()
    assert [r[0] for r in before] == [k.open_ms for k in written[-3:]]
    # The live bar already stored (its minute closed and was written) is not repeated.
    redis_db.hset("kline:okx:BTC-USDT:1m", mapping=kline_fields(written[-1]))
    again = api.get("/v1/klines", params=params).json()
    assert [r[0] for r in again] == [k.open_ms for k in written[-3:]]


@pytest.mark.parametrize(("params", "field"), [
    ({"symbol": "BTC-USDT' OR 1=1"}, "symbol"),
    ({}, "symbol"),
    ({"symbol": "BTC-USDT", "interval": "2m"}, "interval"),
    ({"symbol": "BTC-USDT", "exchange": "kraken"}, "exchange"),
    ({"symbol": "BTC-USDT", "limit": 1001}, "limit"),
    ({"symbol": "BTC-USDT", "limit": 0}, "limit"),
    ({"symbol": "BTC-USDT", "start": "yesterday"}, "start"),
    ({"symbol": "BTC-USDT", "end": "99999999999999999999"}, "end"),
    ({"symbol": "BTC-USDT", "start": "1900-01-01T00:00:00Z"}, "start"),
    ({"symbol": "BTC-USDT", "start": 2000, "end": 1000}, "end"),
    ({"symbol": "BTC-USDT", "format": "xml"}, "format"),
])
def test_bad_history_parameters_are_422_naming_the_field(api: httpx.Client, params: dict[str, Any],
                                                         field: str) -> None:
    resp = api.get("/v1/klines", params=params)
    assert resp.status_code == 422, resp.text
    assert resp.json()["msg"].startswith(f"{field}: ")


def test_influxql_quoting() -> None:
    assert ident('a"b\\c') == '"a\\"b\\\\c"'
    assert literal("x' OR '1'='1") == "'x\\' OR \\'1\\'=\\'1'"
    q = select("kline", ("open",), {"symbol": "A'B"}, TimeRange(1, 2), 5)
    assert q == "SELECT \"open\" FROM \"kline\" WHERE \"symbol\" = 'A\\'B' AND time >= 1ms AND time < 2ms " \
                "ORDER BY time ASC LIMIT 5"


def test_quoted_values_reach_influxdb_as_plain_strings(influxdb1: InfluxDB1, written: list[Kline]) -> None:
    """A tag value full of quotes is one string to InfluxDB (no rows), not a statement that matches everything."""
    import asyncio

    from connectors.influx.query import InfluxQuery

    async def run() -> tuple[int, int]:
        client = InfluxQuery(influxdb1.url, influxdb1.database)
        try:
            evil = await client.query(select("kline", ("open",), {"symbol": "x' OR symbol='BTC-USDT"},
                                             TimeRange(T0, T0 + BARS * MINUTE), 10))
            good = await client.query(select("kline", ("open",), {"symbol": "BTC-USDT"},
                                             TimeRange(T0, T0 + BARS * MINUTE), 10))
        finally:
            await client.close()
        return len(evil), sum(len(s.values) for s in good)

    assert asyncio.run(run()) == (0, 10)


def test_analysis_history_and_analysis_alerts(api: httpx.Client, influxdb1: InfluxDB1, written: list[Kline]) -> None:
    results = [AnalysisResult("BTC-USDT", T0 + i * 1000, BookStatus.VALID, support_level_1=Decimal(f"59990.{i}"),
                              large_buy_orders=Decimal("2.5"), depth_anomaly_score=0.5 * i, liquidity_index=0.75)
               for i in range(5)]
    alert = AlertEvent("BTC-USDT", "depth_anomaly", "alert", 3.5, 3.0, 'depth "jumped", z=3.5', T0 + 4000)
    points = [p for r in results for p in result_points(AnalysisOutput(r, (alert,) if r is results[-1] else ()))]
    points += alert_points(AnalysisOutput(results[-1], (alert,)))
    influxdb1.write_lines("\n".join(to_line(p) for p in points), "ms")

    rows = api.get("/v1/analysis/history", params={"inst": "BTC-USDT", "type": "support_resistance",
                                                   "start": T0, "end": T0 + 10_000}).json()
    # Decimal values: InfluxDB keeps a float64, so "59990.0" comes back "59990"
    assert [(r["time"], Decimal(r["support_level_1"]), r["analysis_type"]) for r in rows] == [
        (T0 + i * 1000, Decimal(f"59990.{i}"), "support_resistance") for i in range(5)]
    every = api.get("/v1/analysis/history", params={"inst": "BTC-USDT", "start": T0, "end": T0 + 10_000}).json()
    assert len(every) == 4 * 5
    scores = [r["anomaly_score"] for r in every if r["analysis_type"] == "depth_anomaly"]
    assert [Decimal(s) for s in scores] == [Decimal(str(0.5 * i)) for i in range(5)]
    csv_text = api.get("/v1/analysis/history", params={"inst": "BTC-USDT", "type": "liquidity_shrink",
                                                       "start": T0, "end": T0 + 10_000, "format": "csv"}).text
    table = list(csv.DictReader(io.StringIO(csv_text)))
    assert [(int(r["time"]), r["liquidity_index"], r["alert_triggered"]) for r in table] == [
        (T0 + i * 1000, "0.75", "false") for i in range(5)]

    alerts = api.get("/v1/alerts/analysis", params={"start": T0, "end": T0 + 10_000}).json()
    assert alerts == [{"time": T0 + 4000, "instrument_id": "BTC-USDT", "alert_type": "depth_anomaly",
                       "level": "alert", "value": "3.5", "threshold": "3", "message": 'depth "jumped", z=3.5'}]
    table = list(csv.DictReader(io.StringIO(api.get("/v1/alerts/analysis", params={
        "start": T0, "end": T0 + 10_000, "format": "csv"}).text)))
    assert table[0]["message"] == 'depth "jumped", z=3.5'
    assert api.get("/v1/analysis/history", params={"inst": "BTC-USDT", "type": "nope"}).status_code == 422


def _influxd(root: Path, port: int) -> subprocess.Popen[bytes]:
    """A private influxd (its data kept in ``root`` across restarts) on ``port``."""
    import shutil

    binary = shutil.which("influxd")
    if binary is None:
        pytest.skip("influxd is not installed")
    return start_influxd(binary, root, port)


def test_influxdb_down_is_503_and_the_service_recovers(tmp_path: Path, redis_server: RedisServer) -> None:
    from cryptoflow.servers import free_port, stop_process
    from tests.waiting import wait_for

    port = free_port()
    (tmp_path / "influx").mkdir()
    influx = _influxd(tmp_path / "influx", port)
    server = InfluxDB1(port)
    wait_for("influxd to accept queries", lambda: _create(server))
    rng = random.Random(1)
    server.write_lines("\n".join(to_line(kline_point(_kline(i, rng))) for i in range(10)), "ms")
    svc = launch_service(tmp_path / "svc", {"REDIS_URL": redis_server.url, "INFLUX_URL": server.url})
    params = {"symbol": "BTC-USDT", "start": T0, "end": T0 + 10 * MINUTE}
    try:
        with httpx.Client(base_url=svc.url, timeout=30) as api:
            assert len(api.get("/v1/klines", params=params).json()) == 10
            stop_process(influx)
            resp = api.get("/v1/klines", params=params)
            assert resp.status_code == 503
            assert resp.json() == {"code": "influxdb_unavailable", "msg": "influxdb is unavailable; try again shortly"}
            assert api.get("/v1/status").json()["stores"]["influxdb"] == "unavailable"
            influx = _influxd(tmp_path / "influx", port)
            wait_for("the service to read InfluxDB again",
                     lambda: api.get("/v1/klines", params=params).status_code == 200)
            assert len(api.get("/v1/klines", params=params).json()) == 10
            assert api.get("/v1/status").json()["stores"]["influxdb"] == "ok"
        assert "Traceback" not in svc.stderr()
    finally:
        svc.stop()
        stop_process(influx)


def _create(server: InfluxDB1) -> bool:
    try:
        server.query(f"CREATE DATABASE {server.database}")
    except Exception:
        return False
    return True
