"""Shared by the SQL alert tests: a database URL per backend, async Redis clients, faulty indexes."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from connectors.alerts.index import AlertIndex, IndexEntry
from cryptoflow.servers import free_port


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'db' / 'cryptoflow.db'}"


def db_url_for(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return str(request.getfixturevalue("postgres_url"))


def async_redis(port: int) -> aioredis.Redis:
    return aioredis.Redis(port=port, decode_responses=True, socket_connect_timeout=1, socket_timeout=2)


def closed_port_redis() -> aioredis.Redis:
    """A client of a port nothing listens on: every call fails as a Redis outage does."""
    return async_redis(free_port())


class ArmFails(AlertIndex):
    """The index write after the SQL commit fails (a crash or an outage at exactly that point)."""

    async def arm(self, entry: IndexEntry) -> bool:
        raise redis.ConnectionError("injected: index write after the SQL commit")


class RemoveFails(AlertIndex):
    async def remove(self, alert_id: str) -> None:
        raise redis.ConnectionError("injected: index removal after the SQL commit")


def index_state(client: redis.Redis) -> dict[str, object]:
    """Every alert key with its content: hashes as dicts, sorted sets as {member: score}."""
    out: dict[str, object] = {}
    for key in client.scan_iter(match="alert:*"):
        kind = client.type(key)
        out[key] = client.hgetall(key) if kind == "hash" else dict(client.zrange(key, 0, -1, withscores=True))
    return out
