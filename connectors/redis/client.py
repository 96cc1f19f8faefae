"""Every Redis client of the project is made here: plain URLs and Redis Sentinel, one retry policy.

``REDIS_URL`` forms:

* ``redis://[[user]:password@]host:port/db``, ``rediss://...``, ``unix:///path?db=N`` — redis-py's ``from_url``;
* ``redis+sentinel://[[user]:password@]host:port[,host:port...]/<service>/<db>[?sentinel_password=...]`` —
  the sentinels at those addresses are asked for the master of ``<service>`` (redis-py's
  :class:`redis.sentinel.Sentinel` ``master_for``, or the asyncio one); the user and password (percent-encoded
  in the URL) are the master's, ``sentinel_password`` the sentinels' own (``requirepass`` in sentinel.conf).
  A client follows a failover: its connections to the old master are dropped and the next connection asks the
  sentinels again. Neither password appears in a log line or a ``repr``.

Retry policy (:func:`retry_policy`, the same for every client): a command that fails with one of
:data:`RETRYABLE` (connection refused or dropped, timeouts, ``MasterNotFoundError`` while the sentinels elect,
``LOADING``, ``READONLY`` from a demoted master, ``MASTERDOWN`` from a replica) is sent again on a new
connection, with jittered exponential backoff (50 ms doubling, capped at 1 s), ``retries`` times (default 3:
about 2 s). A failover takes longer than that (the sentinels' ``down-after-milliseconds`` plus the election),
so whoever loops on Redis (sinks, list and stream sources, pollers) also catches :data:`RETRYABLE` (or asks
:func:`is_retryable`, which also accepts ``NOREPLICAS`` when ``min-replicas-to-write`` refuses a write) and
tries again later without raising: a Bytewax source or sink that raises stops its dataflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import MasterDownError, ReadOnlyError, RedisError, ResponseError
from redis.retry import Retry

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_DEFAULT_PORT = 26379
RETRYABLE: tuple[type[RedisError], ...] = (
    redis.ConnectionError,  # also MasterNotFoundError (sentinels electing), BusyLoadingError (LOADING)
    redis.TimeoutError,
    ReadOnlyError,  # READONLY: a connection still on a master that was demoted
    MasterDownError,  # MASTERDOWN: a replica that lost its master
)
RETRIES = 3
_BACKOFF = {"base": 0.05, "cap": 1.0}


def is_retryable(err: BaseException) -> bool:
    """A failure that a failover or an outage explains (try again later), not a bug or a bad command."""
    if isinstance(err, RETRYABLE):
        return True
    return isinstance(err, ResponseError) and str(err).startswith(("NOREPLICAS", "TRYAGAIN"))


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed ``redis+sentinel://`` URL (passwords kept out of ``repr``)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    return url.split(":", 1)[0].lower() == SENTINEL_SCHEME


def parse_sentinel_url(url: str) -> SentinelUrl:
    """``redis+sentinel://[[user]:pw@]h1:p1[,h2:p2]/<service>[/<db>][?sentinel_password=..]``; the port defaults
    to 26379. Raises ``ValueError`` naming what is wrong (never the password)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != SENTINEL_SCHEME:
        msg = f"expected a {SENTINEL_SCHEME}:// URL, got scheme {parts.scheme!r}"
        raise ValueError(msg)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_pw, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if has_pw else None
    sentinels: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, port = _host_port(item.strip())
        sentinels.append((host, port))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        msg = f"expected /<service>/<db> after the sentinels, got path {parts.path!r}"
        raise ValueError(msg)
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            msg = f"expected a database number after the service, got {path[1]!r}"
            raise ValueError(msg)
        db = int(path[1])
    query = parse_qs(parts.query)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        msg = f"unknown {SENTINEL_SCHEME} URL option(s) {sorted(unknown)}; known: sentinel_password"
        raise ValueError(msg)
    spw = query.get("sentinel_password", [None])[-1]
    return SentinelUrl(tuple(sentinels), unquote(path[0]), db, username, password, spw)


def _host_port(item: str) -> tuple[str, int]:
    if not item:
        msg = "expected host:port for each sentinel, got an empty one"
        raise ValueError(msg)
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = item.partition(":")
    if not port_text:
        return host, SENTINEL_DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        msg = f"expected a port number for sentinel {host!r}, got {port_text!r}"
        raise ValueError(msg)
    return host, int(port_text)


def retry_policy(retries: int = RETRIES) -> Retry:
    return Retry(ExponentialWithJitterBackoff(**_BACKOFF), retries, supported_errors=RETRYABLE)


def async_retry_policy(retries: int = RETRIES) -> redis.asyncio.retry.Retry:
    return redis.asyncio.retry.Retry(ExponentialWithJitterBackoff(**_BACKOFF), retries, supported_errors=RETRYABLE)


def _sentinel_kwargs(parsed: SentinelUrl, options: dict[str, Any]) -> dict[str, Any]:
    """The sentinels themselves: short timeouts (a dead sentinel must not hold a reconnect), their own password."""
    timeout = min(float(options.get("socket_connect_timeout") or 1.0), 1.0)
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if parsed.sentinel_password is not None:
        kwargs["password"] = parsed.sentinel_password
    return kwargs


def _master_kwargs(parsed: SentinelUrl, options: dict[str, Any]) -> dict[str, Any]:
    kwargs = {"db": parsed.db, **options}
    if parsed.username is not None:
        kwargs.setdefault("username", parsed.username)
    if parsed.password is not None:
        kwargs.setdefault("password", parsed.password)
    return kwargs


class _SentinelConnection(redis.sentinel.SentinelManagedConnection):
    """Reconnects through the sentinels also when it is a client's only connection (``single_connection_client``):
    redis-py's reconnects a dropped one to the address it had (the dead master) when a command is sent on it,
    and only a connection taken from the pool asks the sentinels again."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self._sock:
            self.connect()  # type: ignore[no-untyped-call]  # asks the sentinels where the master is now
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class _AsyncSentinelConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]  # see _SentinelConnection
        await super().send_packed_command(command, check_health)


class _SentinelPool(redis.sentinel.SentinelConnectionPool):
    def disconnect(self, inuse_connections: bool = True) -> None:
        super().disconnect(inuse_connections)
        if inuse_connections:  # the client is being closed: close the sentinels' connections too
            for sentinel in self.sentinel_manager.sentinels:
                sentinel.close()


class _AsyncSentinelPool(redis.asyncio.sentinel.SentinelConnectionPool):
    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()


def sync_client(url: str, *, retries: int = RETRIES, **options: Any) -> redis.Redis:
    """A ``redis.Redis`` for ``url`` (plain or ``redis+sentinel://``) with the project's retry policy; ``options``
    are redis-py's (``decode_responses``, ``socket_timeout``, ``single_connection_client``...)."""
    options["retry"] = retry_policy(retries)
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    parsed = parse_sentinel_url(url)
    single = bool(options.pop("single_connection_client", False))
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.sentinels), sentinel_kwargs=_sentinel_kwargs(parsed, options))
    pool = _SentinelPool(parsed.service, sentinel, is_master=True,  # type: ignore[no-untyped-call]
                         connection_class=_SentinelConnection, **_master_kwargs(parsed, options))
    client = redis.Redis(connection_pool=pool, single_connection_client=single)
    client.auto_close_connection_pool = True
    return client


def async_client(url: str, *, retries: int = RETRIES, **options: Any) -> aioredis.Redis:
    """The asyncio twin of :func:`sync_client`."""
    options["retry"] = async_retry_policy(retries)
    if not is_sentinel_url(url):
        return aioredis.Redis.from_url(url, **options)
    parsed = parse_sentinel_url(url)
    single = bool(options.pop("single_connection_client", False))
    sentinel = redis.asyncio.sentinel.Sentinel(list(parsed.sentinels),  # type: ignore[no-untyped-call]
                                               sentinel_kwargs=_sentinel_kwargs(parsed, options))
    pool = _AsyncSentinelPool(parsed.service, sentinel, is_master=True,  # type: ignore[no-untyped-call]
                              connection_class=_AsyncSentinelConnection, **_master_kwargs(parsed, options))
    client = aioredis.Redis(connection_pool=pool, single_connection_client=single)
    client.auto_close_connection_pool = True
    return client
