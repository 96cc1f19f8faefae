"""The /ws gateway over real sockets: a real uvicorn on a free port, a real Redis, the ``websockets`` client.

Stream entries are written with the dataflows' own helper (:func:`connectors.redis.push_streams.queue_events`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import orjson
import pytest
import redis
from websockets.exceptions import ConnectionClosed

from connectors.redis.push_streams import queue_events, stream_key
from service.push.protocol import Code
from service.push.tailer import READ_COUNT
from tests.fixtures.redis import RedisServer
from tests.push_helpers import Client, GatewayServer, gateway_server, open_client
from tests.waiting import wait_for


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def xadd(db: redis.Redis, channel: str, data: dict[str, Any], n: int = 1, **extra: str | int) -> list[str]:
    """Write ``n`` entries (``data`` with ``i`` set to 0..n-1) the way a sink does; their ids."""
    fields = tuple(x for kv in extra.items() for x in kv)
    pipe = db.pipeline(transaction=True)
    queue_events(pipe, [(channel, orjson.dumps({**data, "i": i}), fields) for i in range(n)], 10_000)
    pipe.xrevrange(stream_key(channel), count=n)  # in the same MULTI: the n entries just written
    rows = pipe.execute()[-1]
    return [r[0] if isinstance(r[0], str) else r[0].decode() for r in reversed(rows)]


async def events(c: Client, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    out = []
    while len(out) < n:
        msg = await c.recv(timeout)
        assert "event" in msg, msg
        out.append(msg)
    return out


def test_replies_errors_and_the_connection_stays(redis_server: RedisServer, redis_db: redis.Redis) -> None:
    async def body(url: str) -> None:
        c = await open_client(url)
        assert await c.request({"op": "ping"}) == {"op": "pong"}
        cases: list[tuple[Any, Code]] = [
            ("{nope", Code.MALFORMED), ('["op"]', Code.MALFORMED), ({"op": "buy"}, Code.UNKNOWN_OP),
            ({"op": "subscribe"}, Code.MALFORMED), ({"op": "subscribe", "channel": "BTC-USDT@nope"}, Code.BAD_CHANNEL),
            ({"op": "subscribe", "channel": "BTC-USDT@trades", "since": "yesterday"}, Code.BAD_SINCE),
            ({"op": "unsubscribe", "channel": "BTC-USDT@trades"}, Code.NOT_SUBSCRIBED),
            ({"op": "subscribe", "channel": "@my_alerts"}, Code.AUTH_REQUIRED),
            ({"op": "auth", "token": "wrong"}, Code.AUTH_FAILED),
            ({"op": "ping", "pad": "x" * 600}, Code.TOO_LARGE),
            (b'{"op":"ping"}' + b" " * 600, Code.TOO_LARGE),
        ]
        for msg, code in cases:
            reply = await c.request(msg)
            assert reply["code"] == int(code), (msg, reply)
            assert reply["msg"]
            assert await c.request({"op": "ping"}) == {"op": "pong"}  # still open, still answering
        await c.subscribe("BTC-USDT@trades")
        assert (await c.request({"op": "subscribe", "channel": "BTC-USDT@trades"}))["code"] == Code.ALREADY_SUBSCRIBED
        assert await c.request({"op": "unsubscribe", "channel": "BTC-USDT@trades"}) == \
            {"result": True, "channel": "BTC-USDT@trades"}
        await c.ws.close()

    with gateway_server(redis_server.url, push_max_message_bytes=256) as gw:
        run(body(gw.url))


def test_subscription_limit(redis_server: RedisServer, redis_db: redis.Redis) -> None:
    async def body(url: str) -> None:
        c = await open_client(url)
        await c.subscribe("BTC-USDT@trades")
        await c.subscribe("ETH-USDT@trades")
        reply = await c.request({"op": "subscribe", "channel": "SOL-USDT@trades"})
        assert reply["code"] == Code.TOO_MANY_SUBSCRIPTIONS and "2" in reply["msg"]
        await c.request({"op": "unsubscribe", "channel": "BTC-USDT@trades"})
        await c.subscribe("SOL-USDT@trades")  # a freed slot can be used again

    with gateway_server(redis_server.url, push_max_subscriptions=2) as gw:
        run(body(gw.url))


def test_connection_limit_per_address(redis_server: RedisServer, redis_db: redis.Redis) -> None:
    async def body(gw: GatewayServer) -> None:
        url = gw.url
        a, b = await open_client(url), await open_client(url)
        c = await open_client(url)
        refused = await c.recv()
        assert refused["code"] == Code.TOO_MANY_CONNECTIONS and "127.0.0.1" in refused["msg"]
        with pytest.raises(ConnectionClosed) as closed:
            await c.ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4102
        assert await a.request({"op": "ping"}) == {"op": "pong"}  # the others are untouched
        await a.ws.close()
        await a.ws.wait_closed()
        # The slot is freed when the server's handler of `a` has returned, which the client's closing handshake
        # does not wait for (under load the next connection can come first, and is refused: correct).
        wait_for("a's slot freed", lambda: gw.gateway is not None and gw.gateway.per_ip.get("127.0.0.1") == 1)
        d = await open_client(url)  # a freed slot is usable
        assert await d.request({"op": "ping"}) == {"op": "pong"}
        assert await b.request({"op": "ping"}) == {"op": "pong"}

    with gateway_server(redis_server.url, push_max_connections_per_ip=2) as gw:
        run(body(gw))


def test_trades_in_order_then_unsubscribed(redis_server: RedisServer, redis_db: redis.Redis) -> None:
    async def body(url: str) -> None:
        c = await open_client(url)
        await c.subscribe("BTC-USDT@trades")
        await c.subscribe("@alerts")
        ids = await asyncio.to_thread(xadd, redis_db, "BTC-USDT@trades", {"price": "1.5"}, 300)
        got = await events(c, 300)
        assert [(m["event"], m["id"], m["data"]) for m in got] == \
            [("BTC-USDT@trades", i, {"price": "1.5", "i": n}) for n, i in enumerate(ids)]
        assert await c.request({"op": "unsubscribe", "channel": "BTC-USDT@trades"}) == \
            {"result": True, "channel": "BTC-USDT@trades"}

        def both() -> None:
            pipe = redis_db.pipeline(transaction=True)
            queue_events(pipe, [("BTC-USDT@trades", b'{"late":true}', ()), ("@alerts", b'{"a":1}', ())], 100)
            pipe.execute()

        await asyncio.to_thread(both)
        assert (await c.recv())["data"] == {"a": 1}
        await c.send({"op": "ping"})
        assert await c.recv() == {"op": "pong"}  # no trade in between

    with gateway_server(redis_server.url) as gw:
        run(body(gw.url))


def test_since_resumes_inside_retention_and_resets_beyond(redis_server: RedisServer,
                                                          redis_db: redis.Redis) -> None:
    async def body(url: str) -> None:
        ids = xadd(redis_db, "ETH-USDT@trades", {"p": "2"}, 10)
        c = await open_client(url)
        await c.subscribe("ETH-USDT@trades", since=ids[3])
        got = await events(c, 6)
        assert [m["id"] for m in got] == ids[4:] and not any(m.get("reset") for m in got)
        live = await asyncio.to_thread(xadd, redis_db, "ETH-USDT@trades", {"p": "3"}, 2)
        assert [m["id"] for m in await events(c, 2)] == live  # joined live with nothing twice, nothing lost

        redis_db.xtrim("stream:ETH-USDT@trades", maxlen=3, approximate=False)
        d = await open_client(url)
        await d.subscribe("ETH-USDT@trades", since=ids[2])  # ids[3..] are gone: missed events are lost
        marker = await d.recv()
        assert marker == {"event": "ETH-USDT@trades", "id": live[-1], "data": {"type": "snapshot"}, "reset": True}

        # a state channel: the newest state, marked reset when the since is beyond retention
        t_ids = xadd(redis_db, "okx:ETH-USDT@ticker", {"price": "9"}, 5)
        redis_db.xtrim("stream:okx:ETH-USDT@ticker", maxlen=2, approximate=False)
        e = await open_client(url)
        await e.subscribe("okx:ETH-USDT@ticker", since=t_ids[0])
        assert await e.recv() == {"event": "okx:ETH-USDT@ticker", "id": t_ids[-1],
                                  "data": {"price": "9", "i": 4}, "reset": True}
        f = await open_client(url)
        await f.subscribe("okx:ETH-USDT@ticker")  # no since: the current state, not a reset
        assert await f.recv() == {"event": "okx:ETH-USDT@ticker", "id": t_ids[-1], "data": {"price": "9", "i": 4}}

    with gateway_server(redis_server.url) as gw:
        run(body(gw.url))


def test_since_too_far_behind_for_the_queue_is_a_reset(redis_server: RedisServer, redis_db: redis.Redis) -> None:
    async def body(url: str) -> None:
        ids = xadd(redis_db, "BTC-USDT@trades", {"p": "1"}, 40)
        c = await open_client(url)
        await c.subscribe("BTC-USDT@trades", since=ids[0])  # 39 to replay, over the queue of 20
        assert (await c.recv()) == {"event": "BTC-USDT@trades", "id": ids[-1], "data": {"type": "snapshot"},
                                    "reset": True}

    with gateway_server(redis_server.url, push_queue_max=20) as gw:
        run(body(gw.url))


def test_my_alerts_go_to_their_owner_only(redis_server: RedisServer, redis_db: redis.Redis) -> None:
    async def body(url: str) -> None:
        a, b = await open_client(url), await open_client(url)
        reply = await a.request({"op": "subscribe", "channel": "@my_alerts"})
        assert reply["code"] == Code.AUTH_REQUIRED
        assert await a.request({"op": "auth", "token": "key-a"}) == {"result": True}
        assert await b.request({"op": "auth", "token": "key-b"}) == {"result": True}
        await a.subscribe("@my_alerts")
        await b.subscribe("@my_alerts")

        def fire() -> None:
            for n in range(20):
                owner = "user-a" if n % 3 else "user-b"
                xadd(redis_db, "@my_alerts", {"alert_id": f"al-{n}", "owner": owner}, o=owner)

        await asyncio.to_thread(fire)
        got_a = [m["data"]["alert_id"] for m in await events(a, 13)]
        got_b = [m["data"]["alert_id"] for m in await events(b, 7)]
        assert got_a == [f"al-{n}" for n in range(20) if n % 3]
        assert got_b == [f"al-{n}" for n in range(20) if not n % 3]
        # and nothing else is on the way to either: a ping's pong comes next
        for c in (a, b):
            await c.send({"op": "ping"})
            assert await c.recv() == {"op": "pong"}

    with gateway_server(redis_server.url, users={"key-a": "user-a", "key-b": "user-b"}) as gw:
        run(body(gw.url))


def test_a_client_that_reads_nothing(redis_server: RedisServer, redis_db: redis.Redis) -> None:
    """A stalled client on an event channel is closed with SLOW_CONSUMER once its queue passes the cap; one on a
    state channel only is never closed and ends with the newest state; a fast client gets every event."""
    queue_max = 200
    n, batch = 8000, 100
    pad = "x" * 2000  # ~2 KB per event: 16 MB, far past the loopback socket buffers

    async def body(url: str, gw: Any) -> None:
        fast = await open_client(url)
        # the library stops reading its socket too, and the socket's buffer is small, as a slow link's is;
        # no compression, which would shrink the padding to nothing
        slow = await open_client(url, max_queue=1, rcvbuf=65536, compression=None)
        stalled_state = await open_client(url, max_queue=1, rcvbuf=65536, compression=None)
        await fast.subscribe("BTC-USDT@trades")
        await slow.subscribe("BTC-USDT@trades")
        await slow.subscribe("okx:BTC-USDT@ticker")
        await stalled_state.subscribe("okx:BTC-USDT@ticker")
        ids: list[str] = []
        got: list[dict[str, Any]] = []
        max_seen = [0]  # the longest queue of any connection, the slow one's included while it lived
        for _ in range(n // batch):  # the writer keeps pace with the fast client, not with the slow ones
            ids += await asyncio.to_thread(xadd, redis_db, "BTC-USDT@trades", {"pad": pad}, batch)
            await asyncio.to_thread(xadd, redis_db, "okx:BTC-USDT@ticker", {"pad": pad}, batch)
            got += await events(fast, batch)
            max_seen[0] = max(max_seen[0], gw.stats()["max_queued"])
        assert [m["id"] for m in got] == ids  # the fast client got everything, in order
        stats = await asyncio.to_thread(wait_for, "the slow client to be closed",
                                        lambda: gw.stats()["slow_closed"] == 1 and gw.stats(), 60)
        assert stats["connections"] == 2  # fast and the state-only client are still connected
        # bounded: the cap plus one XREAD's entries of the channel (the check runs before a fan-out appends)
        assert all(c.max_queued <= queue_max + READ_COUNT + 2 for c in gw.gateway.connections)
        assert max_seen[0] <= queue_max + READ_COUNT + 2
        # the state-only client's backlog is at most one state: reading now ends at the newest ticker
        last_ticker = redis_db.xrevrange("stream:okx:BTC-USDT@ticker", count=1)[0][0]
        seen, read = None, 0
        while seen != last_ticker:
            seen = (await stalled_state.recv())["id"]
            read += 1
        assert read < n // 2  # what the socket buffers held, then the newest: not every one of the n states
        # the slow client, reading at last: buffered events, then the error, then the close
        errors = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                msg = await slow.recv(60)
                if "code" in msg:
                    errors.append(msg["code"])
        assert errors == [Code.SLOW_CONSUMER]
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4103

    with gateway_server(redis_server.url, push_queue_max=queue_max) as gw:
        run(body(gw.url, gw))


def test_gateway_restart_clients_reconnect_and_resume(redis_server: RedisServer, redis_db: redis.Redis) -> None:
    """The gateway holds nothing a client depends on: after a restart, ``since`` = the last id received gives
    exactly the events written meanwhile, then the live ones, nothing twice."""
    from cryptoflow.servers import free_port

    port = free_port()
    written: list[str] = []

    async def first(url: str) -> tuple[Client, str]:
        c = await open_client(url)
        await c.subscribe("BTC-USDT@trades")
        written.extend(await asyncio.to_thread(xadd, redis_db, "BTC-USDT@trades", {"p": "1"}, 50))
        got = await events(c, 50)
        assert [m["id"] for m in got] == written
        return c, got[-1]["id"]

    async def second(url: str, since: str) -> None:
        c = await open_client(url)
        await c.subscribe("BTC-USDT@trades", since=since)
        missed = written[50:]
        got = await events(c, len(missed))
        assert [m["id"] for m in got] == missed
        live = await asyncio.to_thread(xadd, redis_db, "BTC-USDT@trades", {"p": "3"}, 5)
        assert [m["id"] for m in await events(c, 5)] == live

    with gateway_server(redis_server.url, port=port) as gw:
        _, last = asyncio.run(first(gw.url))
    # the gateway is gone; the dataflows write on
    written.extend(xadd(redis_db, "BTC-USDT@trades", {"p": "2"}, 30))
    with gateway_server(redis_server.url, port=port) as gw:
        asyncio.run(second(gw.url, last))
