"""``GET /ws``: the push gateway's route (``router``, included by :mod:`service.app`).

One :class:`Gateway` per process, made on first use and kept on ``app.state.push_gateway``: a Redis client, the
stream tailer (:mod:`service.push.tailer`), the connections per client address, and the limits from the
settings (``PUSH_MAX_SUBSCRIPTIONS``, ``PUSH_MAX_CONNECTIONS_PER_IP``, ``PUSH_MAX_MESSAGE_BYTES``,
``PUSH_QUEUE_MAX``, read from ``app.state.settings`` when the app put them there). It keeps no state a client
depends on: streams are in Redis, so a gateway can restart or run as many replicas, and a client that
reconnects anywhere resumes with ``since``.

The per-address limit counts this process's connections (behind a load balancer, each replica enforces it
on its own share; ``ws.client.host`` is the proxy's address unless uvicorn is run with ``--proxy-headers``).
A connection over it is accepted, sent ``{"code": 4102, ...}`` and closed with code 4102, so the client
sees why rather than a bare HTTP 403.

Auth: ``{"op":"auth","token":<API key>}`` resolves the key with ``app.state.push_authenticate`` (an async
``key -> user id | None``; :mod:`service.app` sets it to the SQL key lookup). ``@my_alerts`` entries carry the
fired alert's id; its owner comes from ``app.state.push_alert_owners`` if set, else the ``alerts`` table on
``app.state.db`` (:mod:`service.push.owners`), and is compared with the authenticated user id.
"""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect

from connectors.redis.client import async_client
from cryptoflow.logs import get_logger
from cryptoflow.settings import Settings, load_settings
from service.push.connection import Authenticate, Connection
from service.push.owners import OwnerLookup, no_owners, sql_alert_owners
from service.push.protocol import CLOSE_TOO_MANY_CONNECTIONS, Code, Limits, error_frame
from service.push.tailer import StreamTailer

log = get_logger("service.push.gateway")
router = APIRouter()


class Gateway:
    def __init__(self, settings: Settings, authenticate: Authenticate, owners: OwnerLookup = no_owners) -> None:
        url = str(settings.redis_url)
        self.client = async_client(url)
        self._reader = async_client(url, single_connection_client=True)
        self.tailer = StreamTailer(self.client, self._reader, owners=owners)
        self.limits = Limits(settings.push_max_subscriptions, settings.push_max_message_bytes,
                             settings.push_queue_max)
        self._max_per_ip = settings.push_max_connections_per_ip
        self._authenticate = authenticate
        self.per_ip: dict[str, int] = {}
        self.connections: set[Connection] = set()
        self.slow_closed = 0
        self.sent_closed = self.writes_closed = 0  # messages and direct writes to connections that have ended
        self.refused = 0

    async def serve(self, ws: WebSocket) -> None:
        host = ws.client.host if ws.client is not None else "unknown"
        if self.per_ip.get(host, 0) >= self._max_per_ip:
            self.refused += 1
            await ws.accept()
            msg = f"too many connections from {host}: at most {self._max_per_ip}"
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await ws.send_text(error_frame(Code.TOO_MANY_CONNECTIONS, msg))
                await ws.close(CLOSE_TOO_MANY_CONNECTIONS, msg[:120])
            return
        self.per_ip[host] = self.per_ip.get(host, 0) + 1
        conn = Connection(ws, self.client, self.tailer, self.limits, self._authenticate)
        try:
            await ws.accept()
            self.connections.add(conn)
            await conn.run()
            if conn.closing:
                self.slow_closed += 1
        finally:
            self.connections.discard(conn)
            self.sent_closed += conn.sent
            self.writes_closed += conn.writes
            left = self.per_ip[host] - 1
            if left:
                self.per_ip[host] = left
            else:
                del self.per_ip[host]

    def stats(self) -> dict[str, Any]:
        """For tests, benchmarks and metrics: what this process holds right now."""
        closing = sum(1 for c in self.connections if c.closing)
        return {
            "connections": len(self.connections) - closing,
            "streams": self.tailer.streams,
            "entries_read": self.tailer.entries_read,
            "queued": sum(len(c.out) for c in self.connections),
            "max_queued": max((c.max_queued for c in self.connections), default=0),
            "slow_closed": self.slow_closed + closing,  # closed, or being closed, as slow consumers
            "sent": self.sent_closed + sum(c.sent for c in self.connections),  # messages, since the start
            "refused": self.refused,  # connections over the per-address limit
            "direct": sum(1 for c in self.connections if c.direct is not None),  # frames written without ASGI
            "writes": self.writes_closed + sum(c.writes for c in self.connections),  # their transport writes
        }

    async def close(self) -> None:
        await self.tailer.close()
        await self._reader.aclose()
        await self.client.aclose()


def gateway_for(app: FastAPI) -> Gateway:
    gw: Gateway | None = getattr(app.state, "push_gateway", None)
    if gw is None:
        settings: Settings = getattr(app.state, "settings", None) or load_settings()
        auth: Authenticate = getattr(app.state, "push_authenticate", None) or _refuse_all
        owners: OwnerLookup | None = getattr(app.state, "push_alert_owners", None)
        if owners is None:
            db = getattr(app.state, "db", None)
            owners = sql_alert_owners(db) if db is not None else no_owners
        gw = Gateway(settings, auth, owners)
        app.state.push_gateway = gw
    return gw


async def _refuse_all(token: str) -> str | None:
    return None  # an app without a key lookup: no one can authenticate


async def close_gateway(app: FastAPI) -> None:
    """For the app's lifespan shutdown: stop the tailer and close the Redis connections."""
    gw: Gateway | None = getattr(app.state, "push_gateway", None)
    if gw is not None:
        app.state.push_gateway = None
        await gw.close()


@router.websocket("/ws")
async def push(websocket: WebSocket) -> None:
    """The push gateway (docs/CONTRACTS.md "Push"): subscribe, unsubscribe, auth, ping over one socket."""
    await gateway_for(websocket.app).serve(websocket)
