"""End to end: poison frames never stop a dataflow (real processes, real Redis, the simulator).

* ``orderbook_analysis`` reading the buffer list: 1,000- and 10,000-deep nested values and a 5 MB frame are
  LPUSHed between good frames; the frames after them are analysed, the rejections are counted in
  ``system:monitoring`` and logged once per reason; a crash and restart (the poison may be delivered again
  from the processing list) does not crash again.
* ``orderbook_collector`` and ``market_data`` on the OKX, Binance and Bybit sockets: the simulator's ``raw``
  fault pushes the same frames on the live subscriptions; the next book frames / tickers land, the rejections
  are counted; a frame over the socket's limit (close 1009) is a counted reconnect, not a crash, also when it
  comes again after the reconnect; a restart goes on the same way.

No timed assertions: every condition is awaited (tests/waiting.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from connectors.okx.books import parse_books_frame
from connectors.ws.session import MAX_WS_FRAME_BYTES
from cryptoflow.servers import stop_process
from operators.events import iso_ms
from tests.collector_helpers import Collector, hash_book, monitoring, start_collector
from tests.fixtures.redis import RedisServer
from tests.okx_frames import market
from tests.waiting import wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000
FIVE_MB = 5 * 1024 * 1024


def nested(depth: int, *, objects: bool = False, prefix: str = "", suffix: str = "") -> dict[str, Any]:
    """``raw`` fault parameters of a ``depth``-deep nested value (built by the simulator)."""
    if objects:
        return {"prefix": prefix, "open": '{"x":', "text": "1", "close": "}", "repeat": depth, "suffix": suffix}
    return {"prefix": prefix, "open": "[", "close": "]", "repeat": depth, "suffix": suffix}


def big(size: int, prefix: str = '{"arg":{"channel":"books","instId":"BTC-USDT"},"data":"') -> dict[str, Any]:
    return {"prefix": prefix, "open": "1", "repeat": size, "suffix": '"}'}


def poison_texts() -> list[bytes]:
    data = '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":'
    return [("[" * 1000 + "]" * 1000).encode(), ('{"x":' * 10_000 + "1" + "}" * 10_000).encode(),
            (data + "[" * 10_000 + "]" * 10_000 + "}").encode(), ('{"data":' + "[" * 1000 + "]" * 1000 + "}").encode(),
            (data + '"' + "1" * FIVE_MB + '"}').encode()]


def counter(r: redis.Redis, name: str) -> int:
    return int(monitoring(r).get(name, 0))


def events(log: Path, name: str) -> list[dict[str, Any]]:
    return Collector([], [log]).events(name)


# ---------------------------------------------------------------------------------- the buffer list
def start_analysis(server: RedisServer, recovery: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": server.url, "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
    env.pop("INFLUX_URL", None)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "dataflows.orderbook_analysis", "-r", str(recovery), "-s", "1",
             "-b", "0"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def last_time(frames: list[bytes]) -> str:
    parsed = parse_books_frame(frames[-1], recv_ns=0)
    assert isinstance(parsed, tuple)
    return iso_ms(parsed[-1].ts_ms)


def test_analysis_keeps_going_past_poison_in_the_buffer_list(
    redis_server: RedisServer, redis_db: redis.Redis, tmp_path: Path,
) -> None:
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=ROOT)
    log = tmp_path / "analysis.log"
    btc = market(["BTC-USDT"], seconds=2, rate=5, start_ms=T0, depth=50)
    eth = market(["ETH-USDT"], seconds=2, rate=5, start_ms=T0 + 10_000, depth=50)
    poison = poison_texts()
    # FIFO: LPUSH in order -> consumed in order. Poison between the snapshot and the updates.
    redis_db.lpush("okex_orderbook", btc[0], *poison, *btc[1:])
    proc = start_analysis(redis_server, recovery, log)
    try:
        wait_for("BTC analysed up to its last frame (after the poison)",
                 lambda: redis_db.hget("analysis:BTC-USDT", "analysis_time") == last_time(btc))
        assert redis_db.hget("analysis:BTC-USDT", "book_status") == "valid"
        wait_for("rejections counted", lambda: counter(redis_db, "orderbook_analysis:rejected_too_deep") >= 2
                 and counter(redis_db, "orderbook_analysis:rejected_too_large") >= 1
                 and counter(redis_db, "orderbook_analysis:rejected_messages") >= len(poison))
        assert counter(redis_db, "rejected_too_deep") >= 2  # the product-wide total too
        reasons = [e["reason"] for e in events(log, "frame_rejected")]
        assert len(reasons) == len(set(reasons)) and {"too_deep", "too_large"} <= set(reasons)  # once per kind
        assert all(len(e["sample"]) <= 201 for e in events(log, "frame_rejected"))

        # A crash, then the same poison again, before and among new frames: the restart does not crash.
        kill9(proc)
        redis_db.lpush("okex_orderbook", *poison, eth[0], *poison, *eth[1:])
        proc = start_analysis(redis_server, recovery, log)
        wait_for("ETH analysed after the restart",
                 lambda: redis_db.hget("analysis:ETH-USDT", "analysis_time") == last_time(eth))
        wait_for("the new poison counted", lambda: counter(redis_db, "orderbook_analysis:rejected_messages")
                 >= 3 * len(poison))
        assert proc.poll() is None
        assert "Traceback" not in log.read_text()
    finally:
        stop_process(proc)


# ------------------------------------------------------------------------------------------- sockets
WS_ENV = {"WS_BACKOFF_INITIAL": "0.2", "WS_BACKOFF_MAX": "1", "WS_PING_INTERVAL": "5", "WS_PONG_TIMEOUT": "5"}


def seq(r: redis.Redis, inst: str) -> int:
    book = hash_book(r, inst)
    return int(book["seq_id"]) if book and book.get("status") == "valid" else -1


def test_collector_keeps_its_books_past_poison_on_the_okx_socket(
    start_simulator: Any, redis_server: RedisServer, redis_db: redis.Redis, tmp_path: Path,
) -> None:
    sim = start_simulator("--pairs", "BTC-USDT", "--seed", "4", "--rate", "10")
    redis_db.sadd("config:trading_pairs", "BTC-USDT")
    env = {**sim.env(), "REDIS_URL": redis_server.url, **WS_ENV}
    col = start_collector(tmp_path, env)
    stopped_at = 0
    try:
        for run in range(2):  # the second run is a restart of the dataflow with the same poison
            wait_for("a valid book from this run", lambda s=stopped_at: seq(redis_db, "BTC-USDT") > s)
            deep0 = counter(redis_db, "orderbook_collector:rejected_too_deep")
            large0 = counter(redis_db, "orderbook_collector:rejected_too_large")
            data = '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":'
            for params in (nested(1000), nested(10_000, objects=True), nested(10_000, prefix=data, suffix="}"),
                           nested(1000, prefix='{"data":', suffix="}"), big(FIVE_MB)):
                assert sim.fault("raw", venue="okx", inst="BTC-USDT", **params)["connections"] == 1
            before = seq(redis_db, "BTC-USDT")
            wait_for("the next book frames applied", lambda b=before: seq(redis_db, "BTC-USDT") > b)
            wait_for("poison counted", lambda d=deep0, g=large0:
                     counter(redis_db, "orderbook_collector:rejected_too_deep") >= d + 2
                     and counter(redis_db, "orderbook_collector:rejected_too_large") >= g + 1)
            assert col.alive()

            # Over the socket's own limit: close 1009, a counted reconnect; sent again after the reconnect.
            for _ in range(2):
                reconnects = len(col.events("ws_reconnecting"))
                large = counter(redis_db, "orderbook_collector:rejected_too_large")
                sim.fault("raw", venue="okx", inst="BTC-USDT", **big(MAX_WS_FRAME_BYTES + 1024))
                wait_for("a counted reconnect", lambda n=reconnects, g=large, c=col: len(c.events("ws_reconnecting"))
                         > n and counter(redis_db, "orderbook_collector:rejected_too_large") > g)
                wait_for("the book valid again after the reconnect", lambda: seq(redis_db, "BTC-USDT") > 0)
                before = seq(redis_db, "BTC-USDT")
                wait_for("books move on", lambda b=before: seq(redis_db, "BTC-USDT") > b)
            assert col.alive() and col.events("ws_frame_too_large")
            reasons = [e["reason"] for e in col.events("bad_message_dropped")]
            assert reasons.count("too_deep") <= run + 1  # logged once per kind (per process)
            assert "ShardCrashed" not in col.log() and "Traceback" not in col.log()
            if run == 0:
                col.stop()
                stopped_at = seq(redis_db, "BTC-USDT")
                col = start_collector(tmp_path, env)
    finally:
        col.stop()


def start_market_data(tmp: Path, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    full = {**os.environ, "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", "TRADING_PAIRS_POLL_INTERVAL": "0.5",
            "PRICE_ALERTS_ENABLED": "false", "KLINE_TIMEFRAMES": "1m", **env}
    full.pop("INFLUX_URL", None)
    with (tmp / name).open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.market_data"], cwd=ROOT, env=full,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


VENUE_POISON = {
    "okx": '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":',
    "binance": '{"stream":"btcusdt@trade","data":',
    "bybit": '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":',
}


def test_market_data_keeps_its_tickers_past_poison_on_every_socket(
    start_simulator: Any, redis_server: RedisServer, redis_db: redis.Redis, tmp_path: Path,
) -> None:
    sim = start_simulator("--pairs", "BTC-USDT", "--seed", "6", "--rate", "20")
    redis_db.sadd("config:trading_pairs", "BTC-USDT")
    env = {**sim.env(), "REDIS_URL": redis_server.url, **WS_ENV}
    venues = ("okx", "binance", "bybit")
    log = tmp_path / "market_data.log"
    proc = start_market_data(tmp_path, env, log.name)

    def stamp(v: str) -> str:
        return str(redis_db.hget(f"ticker:{v}:BTC-USDT", "timestamp") or "")

    stopped_at = {v: "" for v in venues}
    try:
        for run in range(2):  # the second run is a restart
            wait_for("three tickers from this run", lambda s=stopped_at: all(stamp(v) > s[v] for v in venues))
            deep0 = counter(redis_db, "market_data:rejected_too_deep")
            large0 = counter(redis_db, "market_data:rejected_too_large")
            for v in venues:
                head = VENUE_POISON[v]
                for params in (nested(1000), nested(10_000, objects=True), nested(10_000, prefix=head, suffix="}"),
                               nested(1000, prefix='{"data":', suffix="}"), big(FIVE_MB, prefix=head + '"')):
                    assert sim.fault("raw", venue=v, inst="BTC-USDT", **params)["connections"] >= 1, (v, params)
            before = {v: stamp(v) for v in venues}
            wait_for("every venue's next ticker lands", lambda b=before: all(stamp(v) > b[v] for v in venues))
            wait_for("poison counted per venue", lambda d=deep0, g=large0:
                     counter(redis_db, "market_data:rejected_too_deep") >= d + 3 * 2
                     and counter(redis_db, "market_data:rejected_too_large") >= g + 3)
            assert counter(redis_db, "rejected_too_deep") >= 6
            assert proc.poll() is None
            text = log.read_text()
            assert "ShardCrashed" not in text and "Traceback" not in text
            if run == 0:
                stop_process(proc)
                stopped_at = {v: stamp(v) for v in venues}
                proc = start_market_data(tmp_path, env, log.name)
    finally:
        stop_process(proc)
    reasons = [(e["venue"], e["reason"]) for e in events(log, "market_parse_error")]
    assert ("binance", "too_large") in reasons and ("bybit", "too_deep") in reasons
