"""The handlers that render every error of the service in the one shape (see :mod:`service.errors`), and
:class:`BodyLimit`. Kept apart from :mod:`service.errors` so the CLI, which shares ``ApiError`` with the routes
through the alert service, does not import FastAPI."""

from __future__ import annotations

from typing import Any

import orjson
import redis.exceptions
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.influx.query import InfluxQueryError, InfluxUnavailable
from cryptoflow.logs import get_logger
from service.errors import ApiError, unavailable

log = get_logger("service.errors")


def error_response(status: int, code: str, msg: str) -> Response:
    return Response(orjson.dumps({"code": code, "msg": msg}), status_code=status, media_type="application/json")


# Starlette's own HTTP errors (no route, wrong method, our BodyLimit) -> stable codes.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
_LOCATIONS = frozenset({"query", "path", "body", "header", "cookie"})


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in _LOCATIONS and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts) or "request"


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.msg)


async def _validation(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return error_response(422, "invalid_request", f"{_field(tuple(first.get('loc', ())))}: {msg}")


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    if exc.status_code == 404 and exc.detail == "Not Found":
        msg = f"no route {request.method} {request.url.path}"
    else:
        msg = str(exc.detail)
    return error_response(exc.status_code, code, msg)


async def _redis_down(request: Request, exc: Exception) -> Response:
    log.warning("store_unavailable", store="redis", path=request.url.path, error=type(exc).__name__)
    err = unavailable("redis")
    return error_response(err.status, err.code, err.msg)


async def _database_down(request: Request, exc: Exception) -> Response:
    log.warning("store_unavailable", store="database", path=request.url.path, error=type(exc).__name__)
    err = unavailable("database")
    return error_response(err.status, err.code, err.msg)


async def _influx_down(request: Request, exc: Exception) -> Response:
    log.warning("store_unavailable", store="influxdb", path=request.url.path, error=str(exc))
    err = unavailable("influxdb")
    return error_response(err.status, err.code, err.msg)


async def _influx_refused(request: Request, exc: Exception) -> Response:
    log.error("influx_query_failed", path=request.url.path, error=str(exc))
    return error_response(502, "influxdb_error", "InfluxDB refused the history query")


async def _internal(request: Request, exc: Exception) -> Response:
    log.error("request_failed", path=request.url.path, error=type(exc).__name__, exc_info=exc)
    return error_response(500, "internal_error", "internal error; the service log has the details")


def install(app: FastAPI) -> None:
    """Register every handler of the one error shape on ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(redis.exceptions.ConnectionError, _redis_down)
    app.add_exception_handler(redis.exceptions.TimeoutError, _redis_down)
    # a failover in progress (connectors.redis.client.RETRYABLE): a demoted master or a replica without one
    app.add_exception_handler(redis.exceptions.ReadOnlyError, _redis_down)
    app.add_exception_handler(redis.exceptions.MasterDownError, _redis_down)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(DBAPIError, _database_down)
    app.add_exception_handler(OSError, _database_down_or_internal)
    app.add_exception_handler(InfluxUnavailable, _influx_down)
    app.add_exception_handler(InfluxQueryError, _influx_refused)
    app.add_exception_handler(Exception, _internal)


async def _database_down_or_internal(request: Request, exc: Exception) -> Response:
    # asyncpg raises plain OSError/ConnectionRefusedError when PostgreSQL is down and no SQLAlchemy wrapper
    # applies (pool pre-ping, connect); anything else of the kind is a bug worth a 500.
    if isinstance(exc, ConnectionError):
        return await _database_down(request, exc)
    return await _internal(request, exc)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413: at once from ``Content-Length``, or while a chunked
    body streams in (the route's body read raises, and the handler renders it). Pure ASGI: no cost on GETs.
    Not FastAPI's ``max_body_size``: that one answers a too-long ``Content-Length`` in plain text, outside the
    one error shape (README "Written by hand, and why")."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                response = error_response(413, "payload_too_large",
                                          f"request body over {self.max_bytes} bytes (API_MAX_BODY)")
                await response(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, f"request body over {self.max_bytes} bytes (API_MAX_BODY)")
            return message

        await self.app(scope, counted, send)
