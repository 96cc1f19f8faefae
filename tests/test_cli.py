"""`cryptoflow pairs` and `cryptoflow status` against a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys

import redis


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "LOG_FORMAT": "json"}
    return subprocess.run([sys.executable, "-m", "cryptoflow.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_pairs_add_list_rm(redis_server, redis_db: redis.Redis) -> None:
    assert cli(redis_server.url, "pairs", "add", "BTC-USDT", "ETH-USDT", "BTC-USD-SWAP").returncode == 0
    assert redis_db.smembers("config:trading_pairs") == {"BTC-USDT", "ETH-USDT", "BTC-USD-SWAP"}
    redis_db.hset("config:trading_pairs:rejected", "FOO-BAR", "60018 unknown instrument")
    listing = cli(redis_server.url, "pairs", "list").stdout.splitlines()
    assert listing == ["BTC-USD-SWAP", "BTC-USDT", "ETH-USDT", "FOO-BAR  REJECTED: 60018 unknown instrument"]
    assert cli(redis_server.url, "pairs", "rm", "ETH-USDT").returncode == 0
    assert redis_db.smembers("config:trading_pairs") == {"BTC-USDT", "BTC-USD-SWAP"}


def test_pairs_add_rejects_malformed_ids_and_writes_nothing(redis_server, redis_db: redis.Redis) -> None:
    proc = cli(redis_server.url, "pairs", "add", "BTC-USDT", "btc/usdt")
    assert proc.returncode == 2
    assert "malformed instrument id 'btc/usdt'" in proc.stderr
    assert redis_db.exists("config:trading_pairs") == 0


def test_pairs_list_marks_pairs_over_the_limit(redis_server, redis_db: redis.Redis) -> None:
    redis_db.sadd("config:trading_pairs", *[f"C{i:02d}-USDT" for i in range(11)])
    lines = cli(redis_server.url, "pairs", "list").stdout.splitlines()
    assert lines[:10] == [f"C{i:02d}-USDT" for i in range(10)]
    assert lines[10] == "C10-USDT  (over MAX_TRADING_PAIRS: not subscribed)"


def test_status_shows_monitoring_and_book_status(redis_server, redis_db: redis.Redis) -> None:
    redis_db.sadd("config:trading_pairs", "BTC-USDT", "ETH-USDT")
    redis_db.hset("system:monitoring", mapping={"active_pairs": 2, "websocket_connections": 1})
    redis_db.hset("orderbook:BTC-USDT", mapping={"status": "valid", "seq_id": 42,
                                                 "latest_timestamp": "2026-01-01T00:00:00Z"})
    out = cli(redis_server.url, "status").stdout
    table = [line.split() for line in out.splitlines()]
    assert ["active_pairs", "2"] in table and ["websocket_connections", "1"] in table
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[-2:]}
    assert rows["BTC-USDT"][:2] == ["valid", "42"]
    assert rows["ETH-USDT"][:2] == ["-", "-"]
