"""The alert service against real Redis and real SQL (SQLite and PostgreSQL): SQL is the record, Redis the
index, the real Lua matcher fires what the index holds. Faults are injected as a failing index object or a
Redis client on a closed port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
import redis
from sqlalchemy import select

from connectors.alerts.index import AlertIndex
from connectors.alerts.matcher import AlertMatcher
from operators.alerts import parse_change, parse_new_alert
from service.alerts import OPERATOR, AlertService, Scope, reconcile
from service.db import AlertRow, Database
from service.errors import ApiError
from tests.alerts_sql_helpers import ArmFails, RemoveFails, async_redis, closed_port_redis, db_url_for, index_state

Body = Callable[[Database, AlertIndex], Awaitable[None]]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    return db_url_for(request, tmp_path)


def run(db_url: str, port: int, body: Body) -> None:
    async def main() -> None:
        db = await Database.open(db_url)
        client = async_redis(port)
        try:
            await body(db, AlertIndex(client))
        finally:
            await client.aclose()
            await db.close()

    asyncio.run(main())


def spec(crypto: str = "BTC-USDT", price: Any = "36000.10", direction: bool = True, email: str = "a@b.example"):  # type: ignore[no-untyped-def]
    return parse_new_alert({"crypto": crypto, "price": price, "direction": direction, "email": email})


async def sql_row(db: Database, alert_id: str) -> AlertRow | None:
    async with db.session() as s:
        return (await s.execute(select(AlertRow).where(AlertRow.id == alert_id))).scalar_one_or_none()


def test_crud_keeps_sql_and_the_index_equal(db_url, redis_server, redis_db) -> None:
    async def body(db: Database, index: AlertIndex) -> None:
        svc = AlertService(db, index)
        made = await svc.create(OPERATOR, spec())
        assert made.price == "36000.1" and made.status == "active" and made.fired_at is None
        row = await sql_row(db, made.id)
        assert row is not None and (row.price, row.crypto, row.direction, row.status) == (
            "36000.1", "BTC-USDT", True, "active")
        assert redis_db.hget(f"alert:{made.id}", "status") == "active"
        assert redis_db.zrange("alert:BTC-USDT:gt", 0, -1, withscores=True) == [(made.id, 36000.1)]

        changed = await svc.change(OPERATOR, made.id, parse_change({"direction": False, "price": "35000.25",
                                                                    "crypto": "ETH-USDT"}))
        assert (changed.crypto, changed.price, changed.direction) == ("ETH-USDT", "35000.25", False)
        assert redis_db.zscore("alert:BTC-USDT:gt", made.id) is None
        assert redis_db.zscore("alert:ETH-USDT:lt", made.id) == 35000.25
        assert redis_db.hget(f"alert:{made.id}", "status") == "active"
        assert [a.id for a in await svc.list_alerts(OPERATOR)] == [made.id]
        assert (await svc.get(OPERATOR, made.id)).price == "35000.25"

        await svc.delete(OPERATOR, made.id)
        assert index_state(redis_db) == {}
        row = await sql_row(db, made.id)
        assert row is not None and row.status == "deleted"  # a tombstone: the reconciler can tell it apart
        for call in (svc.get(OPERATOR, made.id), svc.delete(OPERATOR, made.id)):
            with pytest.raises(ApiError) as err:
                await call
            assert err.value.status == 404
        assert await svc.list_alerts(OPERATOR) == []

    run(db_url, redis_server.port, body)


def test_a_fired_alert_reads_as_fired_at_once_and_cannot_change(db_url, redis_server, redis_db) -> None:
    async def body(db: Database, index: AlertIndex) -> None:
        svc = AlertService(db, index)
        made = await svc.create(OPERATOR, spec(price=100))
        assert AlertMatcher(redis_db).match([("BTC-USDT", Decimal("100.5"), 1_700_000_000_000)]) == [made.id]
        got = await svc.get(OPERATOR, made.id)  # read-through: the hash says fired
        assert (got.status, got.fired_price, got.fired_at) == ("fired", "100.5", "2023-11-14T22:13:20.000Z")
        row = await sql_row(db, made.id)
        assert row is not None and (row.status, row.fired_price) == ("fired", "100.5")
        with pytest.raises(ApiError) as err:
            await svc.change(OPERATOR, made.id, parse_change({"price": "5"}))
        assert err.value.status == 409
        await svc.delete(OPERATOR, made.id)  # a fired alert can be cleared away
        assert await svc.list_alerts(OPERATOR) == []

    run(db_url, redis_server.port, body)


def test_users_see_only_their_own_alerts(db_url, redis_server, redis_db) -> None:
    from service.users import add_user, find_user

    async def body(db: Database, index: AlertIndex) -> None:
        await add_user(db, "alice")
        await add_user(db, "bob")
        await add_user(db, "root", admin=True)
        alice, bob, root = [Scope.of(await find_user(db, n)) for n in ("alice", "bob", "root")]
        svc = AlertService(db, index)
        mine = await svc.create(alice, spec())
        assert mine.owner == "alice"
        for call in (svc.get(bob, mine.id), svc.change(bob, mine.id, parse_change({"price": "1"})),
                     svc.delete(bob, mine.id)):
            with pytest.raises(ApiError) as err:
                await call
            assert (err.value.status, err.value.msg) == (404, f"no alert with id {mine.id}")
        assert await svc.list_alerts(bob) == []
        assert [a.id for a in await svc.list_alerts(alice)] == [mine.id]
        cli_made = await svc.create(OPERATOR, spec(crypto="ETH-USDT"))
        assert {a.id for a in await svc.list_alerts(root)} == {mine.id, cli_made.id}
        assert await svc.list_alerts(alice) == await svc.list_alerts(alice)  # stable
        assert cli_made.id not in {a.id for a in await svc.list_alerts(alice)}
        assert redis_db.zscore("alert:BTC-USDT:gt", mine.id) == 36000.1  # bob's tries touched nothing

    run(db_url, redis_server.port, body)


def test_index_write_lost_after_commit_then_reconcile_arms_it_and_it_fires(db_url, redis_server, redis_db) -> None:
    async def body(db: Database, index: AlertIndex) -> None:
        made = await AlertService(db, ArmFails(index.client)).create(OPERATOR, spec(price=100))
        assert (await sql_row(db, made.id)) is not None
        assert index_state(redis_db) == {}  # the "crash": recorded, never indexed
        assert AlertMatcher(redis_db).match([("BTC-USDT", Decimal(101), 1000)]) == []

        report = await reconcile(db, index.client)  # the restart
        assert report.armed == 1
        assert AlertMatcher(redis_db).match([("BTC-USDT", Decimal(101), 1000)]) == [made.id]
        assert await reconcile(db, index.client) == type(report)(fired_recorded=1)
        row = await sql_row(db, made.id)
        assert row is not None and (row.status, row.fired_price) == ("fired", "101")
        assert index_state(redis_db) == {}  # the fired hash is dropped once SQL holds it

    run(db_url, redis_server.port, body)


def test_delete_whose_index_removal_failed_never_fires_and_is_cleaned_up(db_url, redis_server, redis_db) -> None:
    async def body(db: Database, index: AlertIndex) -> None:
        made = await AlertService(db, index).create(OPERATOR, spec(price=100, direction=False))
        await AlertService(db, RemoveFails(index.client)).delete(OPERATOR, made.id)
        assert redis_db.zscore("alert:BTC-USDT:lt", made.id) == 100.0  # still in the index...
        assert AlertMatcher(redis_db).match([("BTC-USDT", Decimal(99), 1000)]) == []  # ...but it cannot fire
        assert redis_db.llen("queue:email") == 0
        # Put the set entry back (the matcher took it out) to see the reconciler remove it too.
        redis_db.zadd("alert:BTC-USDT:lt", {made.id: 100})
        report = await reconcile(db, index.client)
        assert report.removed >= 1
        assert index_state(redis_db) == {}

    run(db_url, redis_server.port, body)


def test_a_change_that_crashed_after_disarming_is_rearmed_after_the_grace(db_url, redis_server, redis_db) -> None:
    async def body(db: Database, index: AlertIndex) -> None:
        made = await AlertService(db, index).create(OPERATOR, spec(price=100))
        # Step 1 of a change, then the process died before its SQL commit.
        await index.disarm(made.id, time.time_ns() // 1_000_000)
        assert AlertMatcher(redis_db).match([("BTC-USDT", Decimal(100), 1000)]) == []
        redis_db.zadd("alert:BTC-USDT:gt", {made.id: 100})  # the matcher popped it; a live index keeps it

        report = await reconcile(db, index.client, grace_s=1e9)  # a change in flight is left alone
        assert report.pending_changes == 1 and redis_db.hget(f"alert:{made.id}", "status") == "disarmed"
        report = await reconcile(db, index.client, grace_s=0)
        assert report.armed == 1
        assert AlertMatcher(redis_db).match([("BTC-USDT", Decimal(100), 1000)]) == [made.id]

    run(db_url, redis_server.port, body)


def test_a_change_whose_rearm_failed_fires_only_at_the_new_price_after_reconcile(db_url, redis_server,
                                                                                redis_db) -> None:
    async def body(db: Database, index: AlertIndex) -> None:
        made = await AlertService(db, index).create(OPERATOR, spec(price=100))
        await AlertService(db, ArmFails(index.client)).change(OPERATOR, made.id, parse_change({"price": "200"}))
        assert AlertMatcher(redis_db).match([("BTC-USDT", Decimal(150), 1000)]) == []  # old threshold: disarmed
        await reconcile(db, index.client, grace_s=0)
        assert redis_db.zrange("alert:BTC-USDT:gt", 0, -1, withscores=True) == [(made.id, 200.0)]
        assert AlertMatcher(redis_db).match([("BTC-USDT", Decimal(199), 1000)]) == []
        assert AlertMatcher(redis_db).match([("BTC-USDT", Decimal(200), 1000)]) == [made.id]

    run(db_url, redis_server.port, body)


def test_redis_down_is_a_503_with_nothing_changed(db_url, redis_server, redis_db) -> None:
    async def body(db: Database, index: AlertIndex) -> None:
        made = await AlertService(db, index).create(OPERATOR, spec())
        before = index_state(redis_db)
        down = AlertService(db, AlertIndex(closed_port_redis()))
        for call in (down.create(OPERATOR, spec()), down.delete(OPERATOR, made.id),
                     down.change(OPERATOR, made.id, parse_change({"price": "1"}))):
            with pytest.raises(ApiError) as err:
                await call
            assert (err.value.status, err.value.code) == (503, "redis_unavailable")
        assert index_state(redis_db) == before
        assert [a.model_dump() for a in await AlertService(db, index).list_alerts(OPERATOR)] == [
            (await AlertService(db, index).get(OPERATOR, made.id)).model_dump()]
        assert (await down.get(OPERATOR, made.id)).status == "active"  # reads fall back to SQL alone

    run(db_url, redis_server.port, body)


def test_reconcile_adopts_redis_only_alerts_and_drops_strays(db_url, redis_server, redis_db) -> None:
    from connectors.alerts.store import AlertStore
    from operators.alerts import create_alert

    async def body(db: Database, index: AlertIndex) -> None:
        legacy = create_alert(spec(price="1.5"), 1_700_000_000_000)
        AlertStore(redis_db).add(legacy)  # made by the wave-1 CLI / the demo: Redis only
        redis_db.zadd("alert:BTC-USDT:gt", {"f" * 32: 5})  # a set entry with no hash nor SQL record
        redis_db.hset("alert:" + "e" * 32, mapping={"id": "e" * 32, "price": "[[[", "direction": "x"})
        report = await reconcile(db, index.client)
        assert (report.imported, report.unreadable_removed) == (1, 1)
        row = await sql_row(db, legacy.id)
        assert row is not None and (row.owner_id, row.price, row.status) == (None, "1.5", "active")
        assert set(index_state(redis_db)) == {f"alert:{legacy.id}", "alert:BTC-USDT:gt"}
        assert redis_db.zrange("alert:BTC-USDT:gt", 0, -1) == [legacy.id]
        assert await reconcile(db, index.client) == type(report)()  # idempotent: nothing left to do

    run(db_url, redis_server.port, body)


def test_reconcile_repairs_a_tampered_index(db_url, redis_server, redis_db) -> None:
    async def body(db: Database, index: AlertIndex) -> None:
        made = await AlertService(db, index).create(OPERATOR, spec(price=100))
        redis_db.hset(f"alert:{made.id}", "email", "evil@x.example")
        redis_db.zadd("alert:BTC-USDT:lt", {made.id: 100})  # in both sets
        assert (await reconcile(db, index.client)).armed == 1
        assert redis_db.hget(f"alert:{made.id}", "email") == "a@b.example"
        assert redis_db.zscore("alert:BTC-USDT:lt", made.id) is None
        assert redis_db.zscore("alert:BTC-USDT:gt", made.id) == 100.0

    run(db_url, redis_server.port, body)


def test_two_matchers_and_a_reconcile_record_one_firing(db_url, redis_server, redis_db) -> None:
    async def body(db: Database, index: AlertIndex) -> None:
        made = await AlertService(db, index).create(OPERATOR, spec(price=100))
        other = redis.Redis(port=redis_server.port, decode_responses=True)
        fired = AlertMatcher(redis_db).match([("BTC-USDT", Decimal(100), 1000)]) + AlertMatcher(other).match(
            [("BTC-USDT", Decimal(100), 2000)])
        assert fired == [made.id] and redis_db.llen("queue:email") == 1
        await reconcile(db, index.client)
        await reconcile(db, index.client)
        row = await sql_row(db, made.id)
        assert row is not None and row.status == "fired" and row.fired_at is not None
        other.close()

    run(db_url, redis_server.port, body)


def test_replicas_starting_together_migrate_once(postgres_url) -> None:
    from sqlalchemy import text

    async def main() -> None:
        dbs = await asyncio.gather(*(Database.open(postgres_url) for _ in range(3)))  # the advisory lock
        async with dbs[0].session() as s:
            versions = (await s.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        assert versions == ["0001"]
        for db in dbs:
            await db.close()

    asyncio.run(main())
