"""``cryptoflow users`` and ``cryptoflow alerts --user/import`` through the CLI's ``main`` (in-process: a
child process per call costs seconds of imports on a loaded machine), on real Redis and SQLite: the key is
printed once on the last stdout line, only its SHA-256 is stored, and the key printed authenticates through
:mod:`service.auth`; CLI and API share the same alerts."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from connectors.alerts.store import AlertStore
from cryptoflow.cli import main
from operators.alerts import create_alert, parse_new_alert
from service.db import Database
from service.users import principal_for_key


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def env(redis_server, redis_db, tmp_path: Path, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    values = {"REDIS_URL": redis_server.url, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cryptoflow.db'}"}

    def apply(overrides: dict[str, str]) -> None:
        for name, value in {**values, **overrides}.items():
            monkeypatch.setenv(name, value)

    # structlog would keep printing to capsys' stderr after it is closed: leave logging as it is.
    monkeypatch.setattr("cryptoflow.cli.configure_logging", lambda *a, **k: None)
    return {"values": values, "apply": apply, "capsys": capsys}


def cli(env, *args: str) -> Ran:  # type: ignore[no-untyped-def]
    env["apply"](env.get("overrides", {}))
    env["capsys"].readouterr()
    code = main(list(args))
    out, err = env["capsys"].readouterr()
    return Ran(code, out, err)


def _db_file(env) -> Path:  # type: ignore[no-untyped-def]
    return Path(env["values"]["DATABASE_URL"].removeprefix("sqlite+aiosqlite:///"))


def test_users_add_list_rm_and_the_key_authenticates(env) -> None:
    made = cli(env, "users", "add", "alice")
    assert made.returncode == 0, made.stderr
    key = made.stdout.splitlines()[-1]
    assert key.startswith("cf_") and len(key) >= 40 and "shown once" in made.stderr
    admin_key = cli(env, "users", "add", "root", "--admin").stdout.splitlines()[-1]
    assert admin_key != key

    with sqlite3.connect(_db_file(env)) as conn:
        stored = {row[0] for row in conn.execute("SELECT key_hash FROM api_keys")}
    assert stored == {hashlib.sha256(k.encode()).hexdigest() for k in (key, admin_key)}
    assert key.encode() not in _db_file(env).read_bytes()

    async def who(k: str):  # type: ignore[no-untyped-def]
        db = await Database.open(env["values"]["DATABASE_URL"])
        try:
            return await principal_for_key(db, k)
        finally:
            await db.close()

    alice = asyncio.run(who(key))
    assert alice is not None and (alice.name, alice.is_admin) == ("alice", False)
    assert asyncio.run(who(admin_key)).is_admin  # type: ignore[union-attr]
    assert asyncio.run(who(key[:-1] + ("A" if key[-1] != "A" else "B"))) is None

    again = cli(env, "users", "add", "alice")
    assert again.returncode == 2 and "user 'alice' already exists" in again.stderr
    bad = cli(env, "users", "add", "bad name\nx")
    assert bad.returncode == 2 and "malformed user name" in bad.stderr

    listed = cli(env, "users", "list").stdout.splitlines()
    assert [line.split()[:2] for line in listed] == [["alice", "user"], ["root", "admin"]]
    assert all(line.endswith("keys=1") for line in listed)

    removed = cli(env, "users", "rm", "alice")
    assert removed.returncode == 0 and asyncio.run(who(key)) is None
    assert cli(env, "users", "rm", "alice").returncode == 2


def test_alerts_of_a_user_and_their_removal_with_the_user(env, redis_db: redis.Redis) -> None:
    cli(env, "users", "add", "alice")
    mine = cli(env, "alerts", "add", "--crypto", "BTC-USDT", "--above", "5", "--email", "a@b.example",
               "--user", "alice")
    assert mine.returncode == 0, mine.stderr
    mine_id = mine.stdout.strip()
    ops = cli(env, "alerts", "add", "--crypto", "ETH-USDT", "--below", "5", "--email", "a@b.example").stdout.strip()
    as_alice = cli(env, "alerts", "list", "--user", "alice").stdout.splitlines()
    assert [line.split()[0] for line in as_alice] == [mine_id] and as_alice[0].endswith("user alice")
    assert {line.split()[0] for line in cli(env, "alerts", "list").stdout.splitlines()} == {mine_id, ops}
    hidden = cli(env, "alerts", "show", ops, "--user", "alice")
    assert hidden.returncode == 1 and hidden.stderr.strip() == f"cryptoflow alerts: no alert with id {ops}"
    unknown = cli(env, "alerts", "list", "--user", "nobody")
    assert unknown.returncode == 2 and "no user named 'nobody'" in unknown.stderr

    gone = cli(env, "users", "rm", "alice")
    assert gone.returncode == 0 and "and its 1 alert(s)" in gone.stdout
    assert not redis_db.exists(f"alert:{mine_id}") and redis_db.zscore("alert:BTC-USDT:gt", mine_id) is None
    assert [line.split()[0] for line in cli(env, "alerts", "list").stdout.splitlines()] == [ops]


def test_alerts_import_adopts_redis_only_alerts_once(env, redis_db: redis.Redis) -> None:
    old = create_alert(parse_new_alert({"crypto": "BTC-USDT", "price": "7.25", "direction": True,
                                        "email": "a@b.example"}), 1_700_000_000_000)
    AlertStore(redis_db).add(old)
    assert cli(env, "alerts", "list").stdout == ""
    shown = cli(env, "alerts", "show", old.id)
    assert shown.returncode == 0 and '"price": "7.25"' in shown.stdout and "exists only in Redis" in shown.stderr
    first = cli(env, "alerts", "import")
    assert first.returncode == 0 and first.stdout.strip() == "imported 1, already in SQL 0, unreadable 0"
    second = cli(env, "alerts", "import")
    assert second.stdout.strip() == "imported 0, already in SQL 1, unreadable 0"
    listed = cli(env, "alerts", "list").stdout.split()
    assert listed[:4] == [old.id, "BTC-USDT", "above", "7.25"]
    assert redis_db.hget(f"alert:{old.id}", "status") == "active"  # still armed, untouched


def test_a_database_that_is_down_is_one_line(env) -> None:
    from cryptoflow.servers import free_port

    down = {**env, "overrides": {"DATABASE_URL": f"postgresql+asyncpg://u@127.0.0.1:{free_port()}/x"}}
    for args in (("users", "list"), ("alerts", "list")):
        proc = cli(down, *args)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith(f"cryptoflow {args[0]}: database at postgresql+asyncpg://u@127.0.0.1:")
        assert proc.stderr.count("\n") == 1
