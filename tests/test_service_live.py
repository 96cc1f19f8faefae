"""`cryptoflow serve` live routes against a real Redis, with hashes written by the dataflows' own sinks.

One service (a real uvicorn subprocess) per module; each test flushes Redis and writes what it reads back.
Oracles are the events handed to the sinks (levels, ticker values), not what Redis holds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis

from connectors.redis.analysis_sink import hash_fields
from connectors.redis.book_sink import CollectorRedisSink, bbo_fields, book_fields
from connectors.redis.market_sink import write_market
from connectors.redis.monitoring import MonitorReport, queue_monitoring
from operators.bbo import Bbo, VenueLine
from operators.events import AnalysisResult, BookStatus, BookView, Level, Ticker, iso_ms
from tests.fixtures.redis import RedisServer
from tests.fixtures.service import ServiceProcess, launch_service

NOW_MS = 1_764_400_000_000


@pytest.fixture(scope="module")
def service(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = launch_service(tmp_path_factory.mktemp("svc"), {"REDIS_URL": redis_server.url})
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def api(service: ServiceProcess, redis_db: redis.Redis) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=10) as client:
        yield client


def _levels(n: int, start: int, step: int) -> tuple[Level, ...]:
    # Trailing zeros and odd precision on purpose: the API must hand back the venue's exact strings.
    return tuple(Level(f"{start + step * i}.{i % 7}0", f"0.{i + 1:03d}00") for i in range(n))


def _book(inst: str, n: int = 400, venue: str = "okx") -> BookView:
    return BookView(venue, inst, BookStatus.VALID, bids=_levels(n, 60_000, -1), asks=_levels(n, 60_001, 1),
                    ts_ms=NOW_MS, recv_ns=time.time_ns(), checksum=-123456, seq_id=987654321)


def _as_json(levels: tuple[Level, ...]) -> list[list[str]]:
    return [[lv.price, lv.size] for lv in levels]


def test_orderbook_depth_cuts_the_stored_book_exactly(api: httpx.Client, redis_server: RedisServer) -> None:
    view = _book("BTC-USDT")
    sink = CollectorRedisSink(redis_server.url, "okex_orderbook", 0).build("out", 0, 1)
    try:
        sink.write_batch([view])
    finally:
        sink.close()
    for depth, expected in ((None, 20), (1, 1), (20, 20), (399, 399), (400, 400)):
        resp = api.get("/v1/orderbook/BTC-USDT", params={} if depth is None else {"depth": depth})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["bids"] == _as_json(view.bids[:expected])
        assert body["asks"] == _as_json(view.asks[:expected])
        assert (body["seq_id"], body["checksum"], body["status"]) == (987654321, -123456, "valid")
        assert body["timestamp"] == iso_ms(NOW_MS)


def test_a_short_book_and_other_venues(api: httpx.Client, redis_db: redis.Redis) -> None:
    """Fewer levels than asked: all of them. Binance/Bybit books live at orderbook:{exchange}:{inst}."""
    short = _book("ETH-USDT", n=3, venue="binance")
    redis_db.hset("orderbook:binance:ETH-USDT", mapping=book_fields(short))
    body = api.get("/v1/orderbook/ETH-USDT", params={"exchange": "binance", "depth": 50}).json()
    assert body["bids"] == _as_json(short.bids) and body["asks"] == _as_json(short.asks)
    assert body["exchange"] == "binance"
    assert api.get("/v1/orderbook/ETH-USDT").status_code == 404  # no OKX book of it
    empty = BookView("bybit", "SOL-USDT", BookStatus.SYNCING, (), (), NOW_MS, 0, seq_id=None)
    redis_db.hset("orderbook:bybit:SOL-USDT", mapping=book_fields(empty))
    body = api.get("/v1/orderbook/SOL-USDT", params={"exchange": "bybit"}).json()
    assert (body["bids"], body["asks"], body["seq_id"], body["status"]) == ([], [], None, "syncing")


@pytest.mark.parametrize(("path", "field"), [
    ("/v1/orderbook/btc-usdt", "inst"),
    ("/v1/orderbook/BTC-USDT?depth=0", "depth"),
    ("/v1/orderbook/BTC-USDT?depth=401", "depth"),
    ("/v1/orderbook/BTC-USDT?depth=x", "depth"),
    ("/v1/orderbook/BTC-USDT?exchange=kraken", "exchange"),
    ("/v1/analysis/BTC_USDT", "inst"),
    ("/v1/tickers?symbol=BTCUSDT", "symbol"),
    ("/v1/tickers?exchange=ftx", "exchange"),
])
def test_bad_parameters_are_422_naming_the_field(api: httpx.Client, path: str, field: str) -> None:
    resp = api.get(path)
    assert resp.status_code == 422
    body = resp.json()
    assert set(body) == {"code", "msg"} and body["msg"].startswith(f"{field}: "), body


def test_unknown_routes_and_instruments_are_404_in_the_error_shape(api: httpx.Client) -> None:
    for path in ("/v1/orderbook/XRP-USDT", "/v1/analysis/XRP-USDT", "/v2/nothing", "/v1/orderbook"):
        resp = api.get(path)
        assert resp.status_code == 404, path
        assert set(resp.json()) == {"code", "msg"} and resp.json()["code"] == "not_found"


def test_analysis_is_the_hash_the_analysis_sink_wrote(api: httpx.Client, redis_db: redis.Redis) -> None:
    result = AnalysisResult("BTC-USDT", NOW_MS, BookStatus.VALID, support_level_1=Decimal("59990.5"),
                            resistance_level_1=Decimal("60010.25"), large_buy_orders=Decimal("12.5"),
                            large_order_trend="bullish", depth_anomaly_score=1.25, liquidity_index=0.875)
    redis_db.hset("analysis:BTC-USDT", mapping=hash_fields(result))
    body = api.get("/v1/analysis/BTC-USDT").json()
    assert body["support_level_1"] == "59990.5" and body["resistance_level_1"] == "60010.25"
    assert body["large_order_trend"] == "bullish" and body["book_status"] == "valid"
    assert body["analysis_time"] == iso_ms(NOW_MS) and body["support_level_2"] == ""


def _ticker(venue: str, inst: str, price: str) -> Ticker:
    return Ticker(venue, inst, Decimal(price), Decimal(price) - 1, Decimal(price) + 1, Decimal("1234.50"),
                  Decimal("-1.5"), Decimal(price) + 10, Decimal(price) - 10, NOW_MS)


def test_bbo_is_the_hash_the_collector_sink_wrote(api: httpx.Client, redis_db: redis.Redis) -> None:
    line = VenueLine(bid="60000.1", ask="60000.3", age_ms=12, status="valid")
    stale = VenueLine(bid="60000.2", ask="60000.2", age_ms=9000, status="valid")
    got = Bbo("BTC-USDT", "60000.1", "okx", "60000.3", "okx", (("okx", line), ("bybit", stale)), ("bybit",), NOW_MS)
    redis_db.hset("bbo:BTC-USDT", mapping=bbo_fields(got))
    body = api.get("/v1/bbo/BTC-USDT").json()
    assert (body["bid"], body["bid_venue"], body["ask"], body["ask_venue"]) == ("60000.1", "okx", "60000.3", "okx")
    assert body["excluded"] == ["bybit"] and body["venues"]["bybit"]["age_ms"] == 9000
    assert body["venues"]["okx"] == {"bid": "60000.1", "ask": "60000.3", "age_ms": 12, "status": "valid"}
    assert body["timestamp"] == iso_ms(NOW_MS)
    missing = api.get("/v1/bbo/ETH-USDT")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert api.get("/v1/bbo/ethusdt").status_code == 422


def test_tickers_of_the_monitored_pairs(api: httpx.Client, redis_db: redis.Redis) -> None:
    redis_db.sadd("config:trading_pairs", "BTC-USDT", "ETH-USDT")
    pipe = redis_db.pipeline()
    write_market(pipe, [_ticker("okx", "BTC-USDT", "60000.10"), _ticker("binance", "BTC-USDT", "60000.20"),
                        _ticker("bybit", "ETH-USDT", "3000.5"), _ticker("okx", "DOGE-USDT", "0.1")])
    pipe.execute()
    rows = api.get("/v1/tickers").json()
    assert [(r["symbol"], r["exchange"], r["price"]) for r in rows] == [
        ("BTC-USDT", "binance", "60000.20"), ("BTC-USDT", "okx", "60000.10"), ("ETH-USDT", "bybit", "3000.5")]
    okx = rows[1]
    assert (okx["bid"], okx["ask"], okx["volume_24h"], okx["timestamp"]) == (
        "59999.10", "60001.10", "1234.50", iso_ms(NOW_MS))
    assert [r["exchange"] for r in api.get("/v1/tickers", params={"exchange": "okx"}).json()] == ["okx"]
    # A symbol asked for by name is read even when it is not monitored.
    one = api.get("/v1/tickers", params={"symbol": "DOGE-USDT", "exchange": "okx"}).json()
    assert [(r["symbol"], r["price"]) for r in one] == [("DOGE-USDT", "0.1")]
    assert api.get("/v1/tickers", params={"symbol": "XRP-USDT"}).json() == []


def test_status_reports_monitoring_and_the_stores(api: httpx.Client, redis_db: redis.Redis) -> None:
    pipe = redis_db.pipeline()
    queue_monitoring(pipe, [MonitorReport("orderbook_collector/okx/shard-0", sums=(("active_pairs", 3),),
                                          counters=(("gaps", 2),))])
    pipe.execute()
    body = api.get("/v1/status").json()
    assert body["stores"] == {"redis": "ok", "database": "ok", "influxdb": "disabled"}
    assert body["monitoring"]["gaps"] == "2" and float(body["monitoring"]["active_pairs"]) == 3


def test_openapi_and_body_limit(api: httpx.Client) -> None:
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/v1/orderbook/{inst}", "/v1/tickers", "/v1/status", "/v1/klines"} <= set(paths)
    resp = api.post("/v1/orderbook/BTC-USDT", content=b"x" * 65_537)
    assert resp.status_code == 413 and resp.json()["code"] == "payload_too_large"



def test_a_streamed_body_over_the_limit_is_413(api: httpx.Client, service: ServiceProcess,
                                               redis_server: RedisServer) -> None:
    """Without Content-Length (chunked) the body is counted as it arrives and refused once past API_MAX_BODY."""
    import subprocess
    import sys

    env = {"REDIS_URL": redis_server.url, "DATA_DIR": str(service.stderr_path.parent / "data"),
           "PATH": "/usr/bin:/bin"}
    added = subprocess.run([sys.executable, "-m", "cryptoflow.cli", "users", "add", "streamer"], env=env,
                           capture_output=True, text=True, timeout=300, check=True)
    key = added.stdout.strip().splitlines()[-1]
    chunks = (b'{"pad": "' + b"x" * 16_000 + b'"}' for _ in range(5))
    resp = api.post("/v1/alerts", content=chunks, headers={"content-type": "application/json",
                                                           "authorization": f"Bearer {key}"})
    assert resp.status_code == 413 and resp.json()["code"] == "payload_too_large", resp.text


def test_the_browser_monitor_at_root(api: httpx.Client) -> None:
    """`/` serves the built monitor (web/dist) when it is there, else sends the browser to the API docs."""
    from service.app import WEB_DIST

    resp = api.get("/")
    if (WEB_DIST / "index.html").is_file():
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        assert resp.text == (WEB_DIST / "index.html").read_text()
    else:
        assert resp.status_code == 307 and resp.headers["location"] == "/docs"


def _start_private_redis(port: int, workdir: Path) -> object:
    from cryptoflow.servers import start_redis

    return start_redis(port, workdir)


def test_redis_down_is_503_and_the_service_recovers_by_itself(tmp_path: Path) -> None:
    from cryptoflow.servers import free_port, stop_process
    from tests.waiting import wait_for

    port = free_port()
    server = _start_private_redis(port, tmp_path / "redis")
    svc = launch_service(tmp_path / "svc", {"REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    try:
        redis.Redis(port=port).hset("orderbook:BTC-USDT", mapping=book_fields(_book("BTC-USDT", 5)))
        with httpx.Client(base_url=svc.url, timeout=30) as api:
            assert api.get("/v1/orderbook/BTC-USDT").status_code == 200
            stop_process(server)  # type: ignore[arg-type]
            for path in ("/v1/orderbook/BTC-USDT", "/v1/tickers", "/v1/analysis/BTC-USDT"):
                resp = api.get(path)
                assert resp.status_code == 503, path
                assert resp.json() == {"code": "redis_unavailable", "msg": "redis is unavailable; try again shortly"}
            assert api.get("/v1/status").json()["stores"]["redis"] == "unavailable"
            server = _start_private_redis(port, tmp_path / "redis")
            redis.Redis(port=port).hset("orderbook:BTC-USDT", mapping=book_fields(_book("BTC-USDT", 5)))
            wait_for("the service to read Redis again", lambda: api.get("/v1/orderbook/BTC-USDT").status_code == 200)
            assert api.get("/v1/status").json()["stores"]["redis"] == "ok"
        assert "Traceback" not in svc.stderr()
    finally:
        svc.stop()
        stop_process(server)  # type: ignore[arg-type]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_serve_stops_cleanly_with_exit_0(tmp_path: Path, redis_server: RedisServer, sig: str) -> None:
    import signal

    svc = launch_service(tmp_path, {"REDIS_URL": redis_server.url})
    with httpx.Client(base_url=svc.url) as api:  # a keep-alive connection open during the stop
        assert api.get("/v1/status").status_code == 200
        svc.proc.send_signal(getattr(signal, sig))
        assert svc.proc.wait(30) == 0, svc.stderr()
    assert svc.proc.stdout is not None
    rest = svc.proc.stdout.read()
    assert [*svc.stdout_lines, *rest.splitlines()] == [f"cryptoflow serve: listening on {svc.url}"]


def test_market_reads_need_a_key_when_public_reads_are_off(tmp_path: Path, redis_server: RedisServer) -> None:
    svc = launch_service(tmp_path, {"REDIS_URL": redis_server.url, "API_PUBLIC_READS": "false"})
    try:
        with httpx.Client(base_url=svc.url) as api:
            for path in ("/v1/tickers", "/v1/orderbook/BTC-USDT", "/v1/klines?symbol=BTC-USDT"):
                resp = api.get(path)
                assert resp.status_code == 401, path
                assert resp.json()["code"] == "unauthorized"
            bad = api.get("/v1/tickers", headers={"Authorization": "Bearer cf_not_a_key"})
            assert bad.status_code == 401 and bad.json()["msg"].startswith("invalid API key")
    finally:
        svc.stop()


def test_serve_with_two_workers_answers_and_stops_with_exit_0(tmp_path: Path, redis_server: RedisServer) -> None:
    from tests.waiting import wait_for

    svc = launch_service(tmp_path, {"REDIS_URL": redis_server.url}, args=["--workers", "2"])
    try:
        def answered() -> bool:
            try:
                return httpx.get(f"{svc.url}/v1/status", timeout=10).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("a worker to answer", answered, timeout=120)
    finally:
        assert svc.stop(60) == 0, svc.stderr()


def test_a_worker_that_cannot_start_makes_serve_exit_1(tmp_path: Path, redis_server: RedisServer) -> None:
    svc = launch_service(tmp_path, {"REDIS_URL": redis_server.url,
                                    "DATABASE_URL": "sqlite+aiosqlite:////proc/no-such-dir/cryptoflow.db"},
                         args=["--workers", "2"])
    assert svc.proc.wait(120) == 1
    assert "cryptoflow serve: a worker did not start" in svc.stderr()


_OPEN_AT = """
import asyncio, sys, time
from service.db import Database
async def main():
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # every process starts migrating at this moment
    await (await Database.open(sys.argv[1])).close()
asyncio.run(main())
"""


def test_processes_opening_a_new_sqlite_file_at_once_all_migrate_it(tmp_path: Path) -> None:
    """SQLite runs Alembic's DDL outside a transaction: without the lock, two processes upgrading a new file at
    once both create ``alembic_version`` and one fails (a ``serve --workers 2`` worker died at start)."""
    import sqlite3
    import subprocess
    import sys

    url = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"
    at = str(time.time() + 3)  # after every interpreter has imported the service
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT, url, at], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    results = [(p.wait(120), p.stderr.read() if p.stderr else "") for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0, 0], [err[-500:] for _, err in results]
    with sqlite3.connect(tmp_path / "new.db") as conn:
        assert len(conn.execute("SELECT version_num FROM alembic_version").fetchall()) == 1
