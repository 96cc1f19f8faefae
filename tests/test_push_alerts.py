"""``@my_alerts`` end to end: alerts owned by two users in SQL, armed in the Redis index, fired by the real
matching script; each user's socket gets its own alerts and never the other's."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from connectors.alerts.index import AlertIndex, IndexEntry
from connectors.alerts.matcher import AlertMatcher
from service.db import AlertRow, Database
from service.push.protocol import Code
from service.users import add_user, find_user
from tests.fixtures.redis import RedisServer
from tests.push_helpers import gateway_server, open_client


async def _seed(db_url: str, redis_url: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Two users; each owns alerts on BTC-USDT above 100..104 (A) or 200..202 (B). -> keys, owner -> ids."""
    import redis.asyncio as aioredis

    db = await Database.open(db_url)
    keys = {"a": await add_user(db, "alice"), "b": await add_user(db, "bob")}
    ids: dict[str, list[str]] = {"a": [], "b": []}
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    index = AlertIndex(client)
    now = datetime.now(UTC)
    for who, prices in (("a", range(100, 105)), ("b", range(200, 203))):
        owner = await find_user(db, "alice" if who == "a" else "bob")
        for p in prices:
            alert_id = uuid.uuid4().hex
            async with db.session() as s:  # SQL first, then the index (the service's order)
                s.add(AlertRow(id=alert_id, owner_id=owner.id, crypto="BTC-USDT", price=str(p), direction=True,
                               email=f"{who}@example.com", status="active", created_at=now))
                await s.commit()
            await index.arm(IndexEntry(alert_id, "BTC-USDT", str(p), True, f"{who}@example.com",
                                       now.isoformat()))
            ids[who].append(alert_id)
    await client.aclose()
    await db.close()
    return keys, ids


def test_each_user_gets_only_their_alerts(redis_server: RedisServer, redis_db: redis.Redis,
                                          tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'cryptoflow.db'}"
    keys, ids = asyncio.run(_seed(db_url, redis_server.url))
    matcher = AlertMatcher(redis.Redis(port=redis_server.port))

    async def body(url: str) -> None:
        a, b, anon = await open_client(url), await open_client(url), await open_client(url)
        assert (await anon.request({"op": "subscribe", "channel": "@my_alerts"}))["code"] == Code.AUTH_REQUIRED
        assert (await anon.request({"op": "auth", "token": keys["a"] + "x"}))["code"] == Code.AUTH_FAILED
        assert await a.request({"op": "auth", "token": keys["a"]}) == {"result": True}
        assert await b.request({"op": "auth", "token": keys["b"]}) == {"result": True}
        await a.subscribe("@my_alerts")
        await b.subscribe("@my_alerts")
        # a price of 250 fires every alert of both users, in one script call
        fired = await asyncio.to_thread(matcher.match, [("BTC-USDT", Decimal("250"), 1_700_000_000_000)])
        assert sorted(fired) == sorted(ids["a"] + ids["b"])

        async def take(c: Any, n: int) -> list[dict[str, Any]]:
            return [(await c.recv())["data"] for _ in range(n)]

        got_a, got_b = await take(a, len(ids["a"])), await take(b, len(ids["b"]))
        assert sorted(d["id"] for d in got_a) == sorted(ids["a"])
        assert sorted(d["id"] for d in got_b) == sorted(ids["b"])
        assert {(d["crypto"], d["direction"], d["status"], d["fired_price"]) for d in got_a + got_b} == \
            {("BTC-USDT", True, "fired", "250")}
        # nothing else is on its way to either: the next message of each is the pong
        for c in (a, b):
            await c.send({"op": "ping"})
            assert await c.recv() == {"op": "pong"}

    with gateway_server(redis_server.url, database_url=db_url) as gw:
        asyncio.run(body(gw.url))
