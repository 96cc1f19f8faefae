"""`cryptoflow pairs` and `cryptoflow status` against a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
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


def test_status_shows_rejected_pairs_with_their_reason(redis_server, redis_db: redis.Redis) -> None:
    huge = "X" * 100_000
    redis_db.sadd("config:trading_pairs", "BTC-USDT", "FOO-BAR", "bad id", huge)
    redis_db.hset("config:trading_pairs:rejected", mapping={
        "FOO-BAR": "okx: 60018 instId FOO-BAR doesn't exist", "bad id": "malformed instrument id 'bad id'",
        huge: "instrument id too long: 100000 characters, at most 64"})
    proc = cli(redis_server.url, "status")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) < 300, "an absurd id is printed whole"
    start = lines.index("config:trading_pairs:rejected")
    books = {line.split()[0]: line.split()[1] for line in lines[:start] if line.startswith(("BTC-", "FOO-", "XXX"))}
    assert books == {"BTC-USDT": "-", "FOO-BAR": "rejected", "X" * 40 + "…": "rejected"}
    reasons = "\n".join(lines[start:])
    assert ["FOO-BAR", "okx:", "60018", "instId", "FOO-BAR", "doesn't", "exist"] in [r.split() for r in lines[start:]]
    assert "malformed instrument id 'bad id'" in reasons and "at most 64" in reasons


def test_an_absurd_pair_id_is_refused_in_one_short_line(redis_server, redis_db: redis.Redis) -> None:
    proc = cli(redis_server.url, "pairs", "add", "A" * 100_000 + "-USDT")
    assert proc.returncode == 2
    assert "instrument id too long: 100005 characters, at most 64" in proc.stderr
    assert len(proc.stderr) < 300
    assert redis_db.exists("config:trading_pairs") == 0


@pytest.fixture
def alerts_db(tmp_path, monkeypatch) -> str:  # type: ignore[no-untyped-def]
    """Alerts live in SQL: each test gets its own SQLite file (the children inherit DATABASE_URL)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/cryptoflow.db"
    monkeypatch.setenv("DATABASE_URL", url)
    return url


def test_alert_on_an_unmonitored_instrument_warns_or_monitors_it(redis_server, redis_db: redis.Redis,
                                                                  alerts_db: str) -> None:
    redis_db.sadd("config:trading_pairs", "BTC-USDT")
    quiet = cli(redis_server.url, "alerts", "add", "--crypto", "BTC-USDT", "--above", "1", "--email", "a@b.example")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr

    warned = cli(redis_server.url, "alerts", "add", "--crypto", "DOGE-USDT", "--above", "1", "--email", "a@b.example")
    assert warned.returncode == 0
    assert ("warning: DOGE-USDT is not in config:trading_pairs, so this alert cannot fire until it is monitored"
            in warned.stderr)
    assert redis_db.exists(f"alert:{warned.stdout.strip()}")  # stored all the same
    assert redis_db.smembers("config:trading_pairs") == {"BTC-USDT"}

    redis_db.hset("config:trading_pairs:rejected", "SOL-USDT", "okx: 60018 nope")
    added = cli(redis_server.url, "alerts", "add", "--crypto", "SOL-USDT", "--below", "1", "--email", "a@b.example",
                "--monitor")
    assert added.returncode == 0 and "SOL-USDT added to config:trading_pairs" in added.stderr
    assert redis_db.smembers("config:trading_pairs") == {"BTC-USDT", "SOL-USDT"}
    assert not redis_db.hexists("config:trading_pairs:rejected", "SOL-USDT")

    redis_db.hset("config:trading_pairs:rejected", "BTC-USDT", "okx: 60018 nope")
    moved = cli(redis_server.url, "alerts", "update", warned.stdout.strip(), "--crypto", "BTC-USDT")
    assert moved.returncode == 0 and "BTC-USDT is monitored but was rejected (okx: 60018 nope)" in moved.stderr


def test_an_unreadable_alert_hash_is_one_line_not_a_traceback(redis_server, redis_db: redis.Redis,
                                                              alerts_db: str) -> None:
    aid = "0" * 32
    redis_db.hset(f"alert:{aid}", mapping={"id": aid, "crypto": "BTC-USDT", "price": "[" * 5000,
                                           "direction": "maybe"})
    shown = cli(redis_server.url, "alerts", "show", aid)
    assert shown.returncode == 1 and "Traceback" not in shown.stderr
    assert shown.stderr.startswith(f"cryptoflow alerts: alert {aid} is unreadable: ")
    assert len(shown.stderr) < 600  # the hostile value is cut, not echoed
    listed = cli(redis_server.url, "alerts", "list")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
