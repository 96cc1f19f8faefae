"""``/v1/alerts`` and ``/v1/pairs`` over HTTP (httpx in-process transport) on a small app holding just these
routers and the real error handlers, with real Redis and real SQL (SQLite and PostgreSQL): keys, ownership,
admin-only writes, exact prices, one 422 naming the field, and 503s naming the store that is down."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from connectors.alerts.matcher import AlertMatcher
from cryptoflow.servers import free_port
from cryptoflow.settings import Settings
from service import handlers
from service.db import Database
from service.routes import alerts, pairs
from service.users import add_user
from tests.alerts_sql_helpers import async_redis, closed_port_redis, db_url_for

BODY = {"price": 40000.0, "crypto": "BTC-USDT", "direction": False, "email": "a@b.example"}


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    return db_url_for(request, tmp_path)


def build_app(db: Database, redis: Any, *, public_reads: bool = True) -> FastAPI:
    app = FastAPI()
    handlers.install(app)
    app.include_router(alerts.router)
    app.include_router(pairs.router)
    app.state.db = db
    app.state.redis = redis
    app.state.settings = Settings(api_public_reads=public_reads)
    return app


Call = Callable[[httpx.AsyncClient, dict[str, dict[str, str]]], Awaitable[None]]


def serve(db_url: str, port: int, body: Call, *, public_reads: bool = True) -> None:
    """Run ``body(client, headers)`` with users alice, bob and admin root (``headers[name]``)."""

    async def main() -> None:
        db = await Database.open(db_url)
        redis = async_redis(port)
        keys = {n: await add_user(db, n, admin=n == "root") for n in ("alice", "bob", "root")}
        headers = {n: {"Authorization": f"Bearer {k}"} for n, k in keys.items()}
        app = build_app(db, redis, public_reads=public_reads)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                await body(client, headers)
        finally:
            await redis.aclose()
            await db.close()

    asyncio.run(main())


def test_alert_crud_over_http(db_url, redis_server, redis_db) -> None:
    async def body(c: httpx.AsyncClient, h: dict[str, dict[str, str]]) -> None:
        made = await c.post("/v1/alerts", json=BODY, headers=h["alice"])
        assert made.status_code == 201, made.text
        alert = made.json()
        assert {k: alert[k] for k in ("crypto", "price", "direction", "email", "status", "fired_at", "fired_price")} \
            == {"crypto": "BTC-USDT", "price": "40000", "direction": False, "email": "a@b.example",
                "status": "active", "fired_at": None, "fired_price": None}
        assert redis_db.zscore("alert:BTC-USDT:lt", alert["id"]) == 40000.0
        assert (await c.get(f"/v1/alerts/{alert['id']}", headers=h["alice"])).json() == alert
        assert (await c.get("/v1/alerts", headers=h["alice"])).json() == {"alerts": [alert]}

        patched = await c.patch(f"/v1/alerts/{alert['id']}", json={"direction": True, "price": 41000},
                                headers=h["alice"])
        assert patched.status_code == 200 and patched.json()["direction"] is True
        assert redis_db.zscore("alert:BTC-USDT:gt", alert["id"]) == 41000.0
        assert redis_db.zscore("alert:BTC-USDT:lt", alert["id"]) is None

        assert AlertMatcher(redis_db).match([("BTC-USDT", Decimal("41000.5"), 1_700_000_000_000)]) == [alert["id"]]
        fired = (await c.get(f"/v1/alerts/{alert['id']}", headers=h["alice"])).json()
        assert (fired["status"], fired["fired_price"], fired["fired_at"]) == (
            "fired", "41000.5", "2023-11-14T22:13:20.000Z")
        again = await c.patch(f"/v1/alerts/{alert['id']}", json={"price": 1}, headers=h["alice"])
        assert (again.status_code, again.json()["code"]) == (409, "alert_fired")

        assert (await c.delete(f"/v1/alerts/{alert['id']}", headers=h["alice"])).status_code == 204
        gone = await c.get(f"/v1/alerts/{alert['id']}", headers=h["alice"])
        assert (gone.status_code, gone.json()["code"]) == (404, "not_found")

    serve(db_url, redis_server.port, body)


def test_prices_keep_their_exact_decimal_text(db_url, redis_server, redis_db) -> None:
    async def body(c: httpx.AsyncClient, h: dict[str, dict[str, str]]) -> None:
        raw = b'{"price": 123456789.123456789, "crypto": "BTC-USDT", "direction": true, "email": "a@b.example"}'
        made = await c.post("/v1/alerts", content=raw, headers={**h["alice"], "content-type": "application/json"})
        assert made.status_code == 201 and made.json()["price"] == "123456789.123456789"  # a float: ...12345679
        assert redis_db.hget(f"alert:{made.json()['id']}", "price") == "123456789.123456789"

    serve(db_url, redis_server.port, body)


@pytest.mark.parametrize(("change", "needle"), [
    ({"price": -1}, "price: must be positive"),
    ({"price": "NaN"}, "price: must be finite"),
    ({"crypto": "btc_usdt"}, "crypto: malformed instrument id"),
    ({"email": "nobody"}, "email: not a valid address"),
    ({"email": "a@b.example\r\nBcc: v@c.example"}, "email: must be a single line"),
    ({"direction": "up"}, "direction: must be true"),
    ({"email": None}, "email: field required"),
    ({"extra": 1}, "extra: Extra inputs are not permitted"),
])
def test_a_bad_alert_is_one_422_naming_the_field(redis_server, redis_db, tmp_path, change, needle) -> None:
    async def body(c: httpx.AsyncClient, h: dict[str, dict[str, str]]) -> None:
        sent = {k: v for k, v in {**BODY, **change}.items() if v is not None}
        got = await c.post("/v1/alerts", json=sent, headers=h["alice"])
        assert got.status_code == 422 and got.json()["code"] == "invalid_request"
        assert got.json()["msg"].startswith(needle), got.json()
        assert redis_db.keys("alert:*") == []

    from tests.alerts_sql_helpers import sqlite_url
    serve(sqlite_url(tmp_path), redis_server.port, body)


def test_malformed_bodies_are_422(redis_server, redis_db, tmp_path) -> None:
    from tests.alerts_sql_helpers import sqlite_url

    async def body(c: httpx.AsyncClient, h: dict[str, dict[str, str]]) -> None:
        for raw in (b"{", b"[1]", b'"x"'):
            got = await c.post("/v1/alerts", content=raw, headers=h["alice"])
            assert got.status_code == 422 and got.json()["msg"].startswith("body: "), got.json()
        made = (await c.post("/v1/alerts", json=BODY, headers=h["alice"])).json()
        empty = await c.patch(f"/v1/alerts/{made['id']}", json={}, headers=h["alice"])
        assert empty.status_code == 422 and "nothing to change" in empty.json()["msg"]

    serve(sqlite_url(tmp_path), redis_server.port, body)


def test_keys_and_ownership(db_url, redis_server, redis_db) -> None:
    async def body(c: httpx.AsyncClient, h: dict[str, dict[str, str]]) -> None:
        for headers in ({}, {"Authorization": "Bearer cf_not-a-key"}, {"Authorization": "Basic eDp5"}):
            for method, path in (("GET", "/v1/alerts"), ("POST", "/v1/alerts"), ("GET", "/v1/alerts/" + "0" * 32)):
                got = await c.request(method, path, json=BODY, headers=headers)
                assert (got.status_code, got.json()["code"]) == (401, "unauthorized"), (method, path, headers)
        assert redis_db.keys("alert:*") == []

        mine = (await c.post("/v1/alerts", json=BODY, headers=h["alice"])).json()
        for method, json in (("GET", None), ("PATCH", {"price": 1}), ("DELETE", None)):
            got = await c.request(method, f"/v1/alerts/{mine['id']}", json=json, headers=h["bob"])
            assert (got.status_code, got.json()) == (404, {"code": "not_found",
                                                           "msg": f"no alert with id {mine['id']}"})
        assert (await c.get("/v1/alerts", headers=h["bob"])).json() == {"alerts": []}
        assert redis_db.zscore("alert:BTC-USDT:lt", mine["id"]) == 40000.0  # bob changed nothing
        seen = (await c.get("/v1/alerts", headers=h["root"])).json()["alerts"]
        assert [(a["id"], a["owner"]) for a in seen] == [(mine["id"], "alice")]

    serve(db_url, redis_server.port, body)


def test_pairs_reads_are_public_writes_are_for_admins(db_url, redis_server, redis_db) -> None:
    async def body(c: httpx.AsyncClient, h: dict[str, dict[str, str]]) -> None:
        redis_db.sadd("config:trading_pairs", "BTC-USDT")
        redis_db.hset("config:trading_pairs:rejected", mapping={"FOO-BAR": "okx: 60018", "SOL-USDT": "okx: x"})
        assert (await c.get("/v1/pairs")).json() == {"pairs": ["BTC-USDT"],
                                                    "rejected": {"FOO-BAR": "okx: 60018", "SOL-USDT": "okx: x"}}
        for headers in ({}, h["alice"]):
            got = await c.post("/v1/pairs/ETH-USDT", headers=headers)
            assert got.status_code == (401 if not headers else 403)
            assert got.json()["code"] == ("unauthorized" if not headers else "forbidden")
            assert (await c.delete("/v1/pairs/BTC-USDT", headers=headers)).status_code in (401, 403)
        assert redis_db.smembers("config:trading_pairs") == {"BTC-USDT"}

        added = await c.post("/v1/pairs/SOL-USDT", headers=h["root"])
        assert added.status_code == 200 and added.json() == {"pairs": ["BTC-USDT", "SOL-USDT"],
                                                              "rejected": {"FOO-BAR": "okx: 60018"}}
        assert (await c.delete("/v1/pairs/BTC-USDT", headers=h["root"])).json()["pairs"] == ["SOL-USDT"]
        assert redis_db.smembers("config:trading_pairs") == {"SOL-USDT"}
        missing = await c.delete("/v1/pairs/BTC-USDT", headers=h["root"])
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
        bad = await c.post("/v1/pairs/btc_usdt", headers=h["root"])
        assert bad.status_code == 422 and bad.json()["msg"].startswith("inst: malformed instrument id")

    serve(db_url, redis_server.port, body)


def test_pairs_need_a_key_when_public_reads_are_off(redis_server, redis_db, tmp_path) -> None:
    from tests.alerts_sql_helpers import sqlite_url

    async def body(c: httpx.AsyncClient, h: dict[str, dict[str, str]]) -> None:
        assert (await c.get("/v1/pairs")).status_code == 401
        assert (await c.get("/v1/pairs", headers={"Authorization": "Bearer cf_nope"})).status_code == 401
        assert (await c.get("/v1/pairs", headers=h["bob"])).status_code == 200

    serve(sqlite_url(tmp_path), redis_server.port, body, public_reads=False)


def test_a_store_that_is_down_is_a_503_naming_it(redis_server, redis_db, tmp_path) -> None:
    from tests.alerts_sql_helpers import sqlite_url

    async def main() -> None:
        db = await Database.open(sqlite_url(tmp_path))
        key = await add_user(db, "alice")
        auth = {"Authorization": f"Bearer {key}"}
        down_redis = closed_port_redis()
        app = build_app(db, down_redis)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            for method, path in (("POST", "/v1/alerts"), ("GET", "/v1/pairs")):
                got = await c.request(method, path, json=BODY, headers=auth)
                assert (got.status_code, got.json()["code"]) == (503, "redis_unavailable"), path
        await db.close()
        # SQL down: an engine on a port nothing listens on (the Redis is fine).
        down_db = Database(create_async_engine(f"postgresql+asyncpg://u@127.0.0.1:{free_port()}/x"))
        app = build_app(down_db, async_redis(redis_server.port))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            got = await c.get("/v1/alerts", headers=auth)
            assert (got.status_code, got.json()["code"]) == (503, "database_unavailable")
        await down_db.close()
        assert redis_db.keys("alert:*") == []

    asyncio.run(main())
