"""The FastAPI app of ``cryptoflow serve``: :func:`create_app` builds it from the settings.

State (``app.state``), opened by the lifespan and closed after the last request:

* ``settings`` — the frozen :class:`~cryptoflow.settings.Settings`;
* ``redis`` — one ``redis.asyncio`` client (pool) with ``decode_responses=True``; it reconnects by itself;
* ``redis_calls`` — the hot live reads' pipelined connection (:mod:`service.redis_pipe`), reconnecting too;
* ``db`` — :class:`service.db.Database` (``DATABASE_URL``; migrations run at start);
* ``influx`` — :class:`connectors.influx.query.InfluxQuery`, or ``None`` when ``INFLUX_URL`` is unset.

The alert reconciler (:func:`service.alerts.reconcile_forever`) runs as a task for the app's lifetime; the
push gateway (``GET /ws``, :mod:`service.push.gateway`) resolves ``{"op":"auth"}`` keys through the same SQL
users as the REST routes. The service keeps no state of its own, so any number of replicas can run behind a
load balancer.

``GET /v1/orderbook/{inst}`` and ``GET /v1/tickers`` are answered by :mod:`service.fastpath` before FastAPI's
routing when public reads are on and the request is plainly well-formed; the routes here answer all the rest.
``GET /metrics``: Prometheus (:mod:`service.metrics`: requests by route and status, push clients and messages).

Route order matters: the history routes (``/v1/analysis/history``, ``/v1/alerts/analysis``) come before the
routes with a path parameter at the same place (``/v1/analysis/{inst}``, ``/v1/alerts/{id}``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from connectors.influx.query import InfluxQuery
from connectors.redis.client import async_client
from cryptoflow import heap
from cryptoflow.logs import get_logger
from cryptoflow.settings import Settings, mask_url, settings_or_exit
from service import handlers
from service import metrics as service_metrics
from service.alerts import reconcile_forever
from service.auth import public_reader
from service.db import Database
from service.fastpath import FastPath
from service.metrics import ServiceMetrics
from service.push import gateway
from service.redis_pipe import redis_calls
from service.routes import alerts, history, live, pairs
from service.users import principal_for_key

log = get_logger("service.app")
WEB_DIST = Path(__file__).resolve().parents[1] / "web" / "dist"


def redis_from_settings(settings: Settings) -> aioredis.Redis:
    # Short timeouts and two quick retries (connection and failover errors, connectors.redis.client): a request
    # during a Redis outage gets its 503 within seconds, and the pool reconnects (to the new master after a
    # Sentinel failover) on the first request after Redis is back.
    return async_client(str(settings.redis_url), retries=2, decode_responses=True, socket_connect_timeout=2,
                        socket_timeout=5)


def influx_from_settings(settings: Settings) -> InfluxQuery | None:
    if settings.influx_url is None:
        log.info("influx_disabled", reason="INFLUX_URL is unset: history routes answer 503")
        return None
    return InfluxQuery(str(settings.influx_url), settings.influx_bucket, settings.influx_token.get_secret_value())


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    app.state.redis = redis_from_settings(settings)
    app.state.redis_calls = redis_calls(str(settings.redis_url), app.state.redis)  # the hot reads' connection
    app.state.influx = influx_from_settings(settings)
    try:
        app.state.db = await Database.open(settings.database)
    except BaseException:  # the start fails (uvicorn says so); the clients opened above must not leak
        await _close_clients(app)
        raise
    app.state.push_authenticate = _push_authenticate(app.state.db)
    tasks = [asyncio.create_task(reconcile_forever(app.state.db, app.state.redis, settings.alert_sync_interval),
                                 name="alert-reconciler")]
    heap.settle()  # after every start-up object exists: see cryptoflow.heap
    log.info("service_started", redis=mask_url(str(settings.redis_url)), database=mask_url(settings.database),
             influxdb=mask_url(str(settings.influx_url)) if settings.influx_url else "")
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await gateway.close_gateway(app)
        await app.state.db.close()
        await _close_clients(app)


async def _close_clients(app: FastAPI) -> None:
    if app.state.influx is not None:
        await app.state.influx.close()
    await app.state.redis_calls.aclose()
    await app.state.redis.aclose()


def _push_authenticate(db: Database) -> Callable[[str], Awaitable[str | None]]:
    """The push gateway's ``{"op":"auth"}``: an API key -> the user's id (as text), or None."""

    async def authenticate(key: str) -> str | None:
        user = await principal_for_key(db, key)
        return None if user is None else str(user.id)

    return authenticate


class App(FastAPI):
    """FastAPI, with the hot live reads answered before its machinery (:mod:`service.fastpath`), and every HTTP
    request counted for ``/metrics`` (:mod:`service.metrics`), the fast path's too."""

    fastpath: FastPath | None = None
    metrics: ServiceMetrics | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.metrics is not None:
            await self.metrics.track(scope, receive, send, self._answer)
        else:
            await self._answer(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fastpath is None or not await self.fastpath(scope, receive, send):
            await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    app = App(title="cryptoflow", version="0.1.0", lifespan=lifespan,
              description="Live order books, analyses, tickers and klines; price alerts; system status.")
    app.state.settings = settings
    handlers.install(app)
    app.add_middleware(handlers.BodyLimit, max_bytes=settings.api_max_body)
    # Market-data reads need a key only when API_PUBLIC_READS=false. With public reads the dependency could only
    # look up a key it then ignores, so it is left out of the hot path. The history router first (see above).
    reads = [] if settings.api_public_reads else [Depends(public_reader)]
    for router in (history.router, live.router):
        app.include_router(router, dependencies=reads)
    for router in (pairs.router, alerts.router, gateway.router):
        app.include_router(router)
    if settings.api_public_reads:  # with keys, the SQL lookup per request dwarfs what the fast path saves
        app.fastpath = FastPath(app)
    app.metrics = service_metrics.install(app)  # GET /metrics, before the web app's mount at /
    _mount_web(app)
    return app


def _mount_web(app: FastAPI) -> None:
    """The built browser monitor at ``/`` (``web/dist``), or a redirect to the API docs until it is built."""
    if (WEB_DIST / "index.html").is_file():
        app.mount("/", StaticFiles(directory=WEB_DIST, html=True), name="web")
        return

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")


def app_from_env() -> FastAPI:
    """The factory ``uvicorn --factory service.app:app_from_env`` (and each worker of ``--workers N``) calls."""
    from cryptoflow.logs import configure_logging

    settings = settings_or_exit()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
