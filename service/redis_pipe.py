"""One Redis connection with the commands of many requests pipelined on it, for the hot live reads.

redis-py's asyncio client takes a pooled connection per command and wraps it in layers (retry, timeouts,
observability hooks): about 110-150 us of CPU per ``HMGET`` on the benchmark machine, half the budget of a
3,000 requests/s worker. Here a command is packed, written with the other commands of the same turn of the
event loop, and answered by a future the protocol's ``data_received`` resolves (hiredis parses); replies come
back in the order sent, so a FIFO of futures matches them. About 50 us. Concurrent requests share the
connection, so there is no pool to wait on either; the price is that a reply waits behind the ones before it,
harmless for replies of a few kilobytes such as these.

Errors are redis-py's, so the service's handlers answer them as before: a refused or dropped connection is
``redis.exceptions.ConnectionError``, no reply within ``timeout`` is ``TimeoutError`` (both 503), an error
reply is ``ResponseError``. A command on a dropped connection is sent once more on a new one (these reads are
idempotent); the connection is opened again on the next command after an outage, so recovery needs nothing.

Only ``redis://`` (TCP, with optional user, password and database); ``rediss://``, ``unix://`` and
``redis+sentinel://`` go through redis-py (:class:`ViaRedisPy`).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from typing import Any, Protocol

import hiredis
import redis.asyncio as aioredis
import redis.exceptions
from redis.connection import parse_url

from connectors.redis.client import is_sentinel_url

Arg = str | int


class RedisCalls(Protocol):
    async def call(self, *args: Arg) -> Any: ...

    async def script(self, source: str, keys: list[str], args: list[Arg]) -> Any: ...

    async def aclose(self) -> None: ...


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8")  # as decode_responses=True
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.unsent: list[bytes] = []  # the commands of this turn of the event loop, written as one

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP connection's transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                waiter = self.waiting.popleft()
                if not waiter.done():  # done: its caller timed out (the connection is being dropped)
                    waiter.set_result(reply)
        except hiredis.ProtocolError:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(redis.exceptions.ConnectionError("Redis closed the connection"))

    def send(self, args: tuple[Arg, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        if self.closed:  # lost between the caller's check and now: fail at once, not at the timeout
            waiter.set_exception(redis.exceptions.ConnectionError("Redis closed the connection"))
            return waiter
        # Written at the end of this turn of the loop with the other requests' commands: one system call for
        # them all (a send costs tens to hundreds of us of CPU here), not one each.
        if not self.unsent:
            loop.call_soon(self._flush)
        self.unsent.append(hiredis.pack_command(args))  # type: ignore[arg-type]  # the stub's tuple has one item
        self.waiting.append(waiter)
        return waiter

    def _flush(self) -> None:
        data, self.unsent = b"".join(self.unsent), []
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()  # connection_lost fails whatever still waits


class RedisPipe:
    """``await pipe.call("HMGET", key, *fields)`` -> the decoded reply; see the module."""

    def __init__(self, host: str, port: int, *, db: int = 0, username: str | None = None,
                 password: str | None = None, connect_timeout: float = 2.0, timeout: float = 5.0) -> None:
        self.host, self.port = host, port
        self.handshake: list[tuple[Arg, ...]] = []
        if password is not None:
            self.handshake.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self.handshake.append(("SELECT", db))
        self.connect_timeout, self.timeout = connect_timeout, timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._shas: dict[str, str] = {}

    async def call(self, *args: Arg) -> Any:
        try:
            reply = await self._send(args)
        except redis.exceptions.ConnectionError:  # e.g. dropped by a Redis restart: once more, on a new one
            reply = await self._send(args)
        if isinstance(reply, hiredis.ReplyError):
            raise redis.exceptions.ResponseError(str(reply))
        return reply

    async def _send(self, args: tuple[Arg, ...]) -> Any:
        conn = await self._connection()
        try:
            async with asyncio.timeout(self.timeout):
                return await conn.send(args)
        except TimeoutError:
            conn.close()  # the replies still due can no longer be matched to their commands
            msg = "Timeout reading from Redis"
            raise redis.exceptions.TimeoutError(msg) from None

    async def script(self, source: str, keys: list[str], args: list[Arg]) -> Any:
        """EVALSHA, or EVAL once when Redis does not know the script (a restart, SCRIPT FLUSH)."""
        sha = self._shas.get(source) or self._shas.setdefault(source, hashlib.sha1(source.encode()).hexdigest())
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except redis.exceptions.ResponseError as err:
            if not str(err).startswith("NOSCRIPT"):
                raise
        return await self.call("EVAL", source, len(keys), *keys, *args)

    async def aclose(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.close()

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:  # one connect for all the callers waiting on it
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, task: asyncio.Task[_Connection]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            self._conn = task.result()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
                for command in self.handshake:
                    reply = await conn.send(command)
                    if isinstance(reply, hiredis.ReplyError):
                        conn.close()
                        msg = f"Redis refused {command[0]}: {reply}"
                        raise redis.exceptions.ConnectionError(msg)
        except (OSError, TimeoutError) as err:
            msg = f"cannot connect to Redis at {self.host}:{self.port}: {err or type(err).__name__}"
            raise redis.exceptions.ConnectionError(
                msg) from None
        return conn


class ViaRedisPy:
    """The same calls through a redis-py client: for the URLs :class:`RedisPipe` does not speak."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._scripts: dict[str, Any] = {}

    async def call(self, *args: Arg) -> Any:
        return await self.client.execute_command(*args)  # type: ignore[no-untyped-call]

    async def script(self, source: str, keys: list[str], args: list[Arg]) -> Any:
        script = self._scripts.get(source) or self._scripts.setdefault(source, self.client.register_script(source))
        return await script(keys=keys, args=args)

    async def aclose(self) -> None:
        return None  # the client is the app's; the app closes it


def redis_calls(url: str, client: aioredis.Redis) -> RedisCalls:
    """A :class:`RedisPipe` for a ``redis://`` URL, else (``rediss://``, ``unix://``, ``redis+sentinel://``) the
    app's redis-py ``client``."""
    if is_sentinel_url(url):  # the master moves: the client follows it through the sentinels
        return ViaRedisPy(client)
    parts = parse_url(url)  # type: ignore[no-untyped-call]
    if "connection_class" in parts or "host" not in parts:
        return ViaRedisPy(client)
    return RedisPipe(parts["host"], int(parts.get("port", 6379)), db=int(parts.get("db", 0)),
                     username=parts.get("username"), password=parts.get("password"))
