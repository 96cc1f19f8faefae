"""The reconciler as the app runs it (:func:`service.alerts.reconcile_forever`): it outlives a Redis outage,
says so in one line, and indexes what SQL holds as soon as Redis is back; an SQL outage is named too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine
from structlog.testing import capture_logs

from cryptoflow.servers import free_port, start_redis, stop_process
from operators.alerts import parse_new_alert
from service.alerts import OPERATOR, AlertService, reconcile_forever
from service.db import Database
from tests.alerts_sql_helpers import ArmFails, async_redis, sqlite_url


async def until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """``tests.waiting.wait_for`` for a test running inside an event loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def test_the_sync_survives_a_redis_outage_and_indexes_sql_when_redis_is_back(tmp_path: Path, redis_server) -> None:
    port = free_port()

    async def main() -> None:
        db = await Database.open(sqlite_url(tmp_path))
        seed = async_redis(redis_server.port)
        spec = parse_new_alert({"crypto": "BTC-USDT", "price": 5, "direction": True, "email": "a@b.example"})
        made = await AlertService(db, ArmFails(seed)).create(OPERATOR, spec)  # in SQL only
        await seed.aclose()
        client = async_redis(port)  # nothing listens there yet
        with capture_logs() as logs:
            task = asyncio.create_task(reconcile_forever(db, client, interval=0.01))
            await until("the outage line", lambda: events(logs, "alert_sync_failed"))
            proc = await asyncio.to_thread(start_redis, port, tmp_path / "late-redis")
            try:
                check = async_redis(port)
                deadline = time.monotonic() + 60
                while await check.hget(f"alert:{made.id}", "status") != "active":  # the SQL alert, indexed
                    assert time.monotonic() < deadline, "the alert was not indexed after Redis came back"
                    await asyncio.sleep(0.02)
                await until("the recovery line", lambda: events(logs, "alert_sync_recovered"))
                assert await check.zscore("alert:BTC-USDT:gt", made.id) == 5.0
                assert not task.done()
                await check.aclose()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await client.aclose()
                await asyncio.to_thread(stop_process, proc)
        failed = events(logs, "alert_sync_failed")
        assert len(failed) == 1 and failed[0]["store"] == "redis"  # one line per outage, not one per pass
        await db.close()

    asyncio.run(asyncio.wait_for(main(), 240))


def test_an_sql_outage_is_named_and_the_loop_keeps_running(redis_server) -> None:
    async def main() -> None:
        db = Database(create_async_engine(f"postgresql+asyncpg://u@127.0.0.1:{free_port()}/x"))
        client = async_redis(redis_server.port)
        await client.hset("alert:" + "a" * 32, mapping={"id": "a" * 32})  # something to look up in SQL
        with capture_logs() as logs:
            task = asyncio.create_task(reconcile_forever(db, client, interval=0.01))
            failed = await until("the outage line", lambda: events(logs, "alert_sync_failed"))
            assert failed[0]["store"] == "database" and not task.done()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        await db.close()

    asyncio.run(asyncio.wait_for(main(), 240))
