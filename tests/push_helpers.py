"""The push gateway under a real uvicorn on a free loopback port, in a thread of the test process (so a test
can read the gateway's queue sizes), and a small ``websockets`` client. No mocks: a real Redis, real sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect

from cryptoflow.servers import free_port
from cryptoflow.settings import load_settings
from service.push.gateway import Gateway, close_gateway, router
from tests.waiting import wait_for


class GatewayServer:
    def __init__(self, app: FastAPI, server: uvicorn.Server, thread: threading.Thread, port: int) -> None:
        self.app = app
        self.server = server
        self.thread = thread
        self.port = port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def gateway(self) -> Gateway | None:
        return getattr(self.app.state, "push_gateway", None)

    def stats(self) -> dict[str, Any]:
        gw = self.gateway
        return gw.stats() if gw is not None else {}


@contextmanager
def gateway_server(redis_url: str, users: dict[str, str] | None = None, port: int | None = None,
                   database_url: str | None = None, ws: str = "auto", **push: Any) -> Iterator[GatewayServer]:
    """``users``: API key -> user id for ``{"op":"auth"}``; or ``database_url``: the service's SQL users, keys
    and alert owners, as ``cryptoflow serve`` wires them; ``ws``: uvicorn's WebSocket protocol; ``push``:
    settings overrides (push_queue_max=...)."""
    keys = dict(users or {})

    async def authenticate(token: str) -> str | None:
        return keys.get(token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if database_url is not None:  # opened on the server's loop: an async engine belongs to one loop
            from service.db import Database
            from service.users import principal_for_key

            db = app.state.db = await Database.open(database_url)

            async def by_key(token: str) -> str | None:
                user = await principal_for_key(db, token)
                return None if user is None else str(user.id)

            app.state.push_authenticate = by_key
        yield
        await close_gateway(app)
        if database_url is not None:
            await app.state.db.close()

    app = FastAPI(lifespan=lifespan)
    app.include_router(router)
    app.state.settings = load_settings(redis_url=redis_url, **push)
    app.state.push_authenticate = authenticate

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", ws=ws))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    wait_for("uvicorn to listen", lambda: server.started, timeout=30)
    try:
        yield GatewayServer(app, server, thread, port)
    finally:
        server.should_exit = True
        thread.join(30)


class Client:
    """A ``websockets`` client that keeps events and replies apart."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, obj: Any) -> None:
        await self.ws.send(obj if isinstance(obj, str | bytes) else orjson.dumps(obj).decode())

    async def recv(self, timeout: float = 30.0) -> dict[str, Any]:
        return orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))  # type: ignore[no-any-return]

    async def request(self, obj: Any, timeout: float = 30.0) -> dict[str, Any]:
        """Send and return the next message that is not an event (a reply)."""
        await self.send(obj)
        while True:
            msg = await self.recv(timeout)
            if "event" not in msg:
                return msg

    async def subscribe(self, channel: str, since: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"op": "subscribe", "channel": channel}
        if since is not None:
            body["since"] = since
        await self.send(body)
        msg = await self.recv()
        assert msg == {"result": True, "channel": channel}, msg
        return msg


async def open_client(url: str, *, rcvbuf: int | None = None, **kw: Any) -> Client:
    """``rcvbuf``: a small kernel receive buffer, set before connecting (which also turns off Linux's
    autotuning, up to 32 MB here), for a client that stops reading to fill up as a slow one would."""
    if rcvbuf is not None:
        host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        kw["sock"] = sock
    return Client(await connect(url, open_timeout=30, **kw))
