"""The gateway's own WebSocket frames (service.push.wire): each entry framed once and shared by every client,
written straight to uvicorn's websockets-sansio transport; any other protocol gets the same messages through
ASGI. Real uvicorn, Redis and ``websockets`` clients, with and without permessage-deflate negotiated."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from cryptoflow.servers import free_port
from cryptoflow.settings import load_settings
from service.push.wire import frame_of, text_frame, text_of
from tests.fixtures.redis import RedisServer
from tests.push_helpers import gateway_server, open_client
from tests.test_push_gateway import events, run, xadd
from tests.waiting import wait_for


def _parse(data: bytes) -> Frame:
    """websockets' own parser, as a client reads a server frame (unmasked)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("the frame was not complete")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frames_parse_back_at_every_length_boundary(size: int) -> None:
    text = ("é" + "x" * size)[:size] if size else ""
    frame = _parse(frame_of(text))
    assert (frame.opcode, frame.fin, frame.rsv1) == (Opcode.TEXT, True, False)
    assert frame.data.decode() == text
    assert text_of(text_frame(text.encode())) == text


_LEGACY_WARNS = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # uvicorn's legacy protocol and
                 pytest.mark.filterwarnings("ignore:The `websockets` implementation is deprecated")]  # its own


@pytest.mark.parametrize("ws", ["auto", pytest.param("websockets", marks=_LEGACY_WARNS)])
def test_same_messages_direct_and_through_asgi(redis_server: RedisServer, redis_db: redis.Redis, ws: str) -> None:
    """``auto`` is uvicorn's websockets-sansio protocol (the frames written directly), ``websockets`` its legacy
    protocol (one ASGI send per message): the same events in order, replies in their place, to a client that
    negotiated compression and to one that did not."""

    async def body(url: str, gw: Any) -> None:
        deflate = await open_client(url)
        plain = await open_client(url, compression=None)
        for c in (deflate, plain):
            await c.subscribe("BTC-USDT@trades")
            await c.subscribe("okx:BTC-USDT@ticker")
        assert gw.stats()["direct"] == (2 if ws == "auto" else 0)
        ids = await asyncio.to_thread(xadd, redis_db, "BTC-USDT@trades", {"price": "1.5", "pad": "é" * 200}, 500)
        last = (await asyncio.to_thread(xadd, redis_db, "okx:BTC-USDT@ticker", {"last": "2"}, 3))[-1]
        for c in (deflate, plain):
            got = await events(c, 500)
            assert [(m["event"], m["id"], m["data"]["i"]) for m in got] == \
                [("BTC-USDT@trades", i, n) for n, i in enumerate(ids)]
            assert got[0]["data"]["pad"] == "é" * 200
            seen = None
            while seen != last:  # the ticker conflates: at most the 3 states, ending with the newest
                msg = await c.recv()
                assert msg["event"] == "okx:BTC-USDT@ticker", msg
                seen = msg["id"]
            await c.send({"op": "ping"})
            assert await c.recv() == {"op": "pong"}
        assert gw.stats()["sent"] >= 2 * (2 + 500 + 1 + 1)

    with gateway_server(redis_server.url, ws=ws) as gw:
        run(body(gw.url, gw))


def test_the_service_app_writes_directly(redis_server: RedisServer, tmp_path: Path) -> None:
    """The app ``cryptoflow serve`` builds (its handlers, middleware and lifespan) under uvicorn's default protocol
    takes the direct path: a middleware that wrapped ASGI ``receive`` would hide uvicorn's protocol from it and
    quietly send every message through ASGI again."""
    from service.app import create_app

    port = free_port()
    app = create_app(load_settings(redis_url=redis_server.url, database_url=f"sqlite+aiosqlite:///{tmp_path}/db"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        wait_for("the service to listen", lambda: server.started, timeout=60)

        async def body() -> None:
            c = await open_client(f"ws://127.0.0.1:{port}/ws")
            await c.subscribe("BTC-USDT@trades")
            stats = app.state.push_gateway.stats()
            assert stats["direct"] == 1 and stats["writes"] >= 1, stats

        run(body())
    finally:
        server.should_exit = True
        thread.join(30)
