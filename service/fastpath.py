"""The two hottest reads, ``GET /v1/orderbook/{inst}`` and ``GET /v1/tickers``, answered in front of FastAPI.

FastAPI's per-request machinery (routing through ~20 routes, parameter models, the middleware stack) costs
several times the route itself; at one worker's target of 3,000 requests/s that is the whole budget. So a
well-formed request to either route is matched and parsed here, by hand, and answered with the very functions
the FastAPI routes call (:func:`service.routes.live.book_body`, :func:`~service.routes.live.read_tickers`).

Anything this layer is not sure of goes to FastAPI untouched, which then answers exactly as before: a parameter
that is not plainly valid (the 422 bodies stay FastAPI's), another method, a ``root_path``, a GET announcing a
body (:class:`~service.handlers.BodyLimit` judges it), and every request when ``API_PUBLIC_READS`` is false (the
key lookup is SQL, far dearer than the routing saved). Nor does FastAPI's OpenTelemetry middleware see these
requests (the project configures no OpenTelemetry provider). The FastAPI route
declarations stay, so OpenAPI is unchanged. An error raised while answering here is rendered by the handler the
app registered for it (:mod:`service.handlers`), found the way Starlette finds it, so the error bodies are too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from starlette.types import Receive, Scope, Send

from operators.instruments import InvalidInstrument, validate_instrument
from service.metrics import ROUTE_KEY
from service.routes.live import (
    ALL_VENUES,
    DEFAULT_DEPTH,
    MAX_DEPTH,
    BookExchange,
    TickerExchange,
    book_body,
    read_book,
    read_tickers,
)

BOOK_PREFIX = "/v1/orderbook/"
TICKERS_PATH = "/v1/tickers"
_BOOK_EXCHANGES = {e.value: e for e in BookExchange}
_TICKER_EXCHANGES = frozenset(e.value for e in TickerExchange)
_JSON = b"application/json"
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})

# What answers a request this layer took: the body of its 200, or an exception the app's handlers render.
Answer = Callable[[], Awaitable[bytes]]


class FastPath:
    """``await fast(scope, receive, send)`` -> True when it answered the request, False to hand it on."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._in_flight: dict[tuple[str, bytes], asyncio.Future[bytes]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path") or _has_body(scope):
            return False
        path, query = scope["path"], scope["query_string"]
        answer = self._route(path, query)
        if answer is None:
            return False
        scope[ROUTE_KEY] = TICKERS_PATH if path == TICKERS_PATH else f"{BOOK_PREFIX}{{inst}}"  # for /metrics
        try:
            body = await self._shared((path, query), answer)
        except Exception as exc:  # rendered as FastAPI would render it (the Exception handler included)
            await self._error(scope, receive, send, exc)
            return True
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(len(body)).encode()), (b"content-type", _JSON)]})
        await send({"type": "http.response.body", "body": body})
        return True

    async def _shared(self, key: tuple[str, bytes], answer: Answer) -> bytes:
        """The answer of the same path and query if one is in flight, else this request's own (single flight).

        Under load many clients poll the same book; overlapping identical requests then share one Redis read and
        one body. No cache: a request joins only a read still in flight, so what it gets was read at most one
        Redis round trip before it arrived. The first request reads inline (a task per read cost ~16 us of
        CPU, paid by every request that shares nothing); the others wait on its future, shielded, so one of
        them cancelled does not cancel it for the rest."""
        landed = self._in_flight.get(key)
        if landed is not None:
            try:
                return await asyncio.shield(landed)
            except asyncio.CancelledError:
                if not landed.cancelled() or _cancelling():
                    raise
                return await self._shared(key, answer)  # the first request was cancelled, not this one
        landed = self._in_flight[key] = asyncio.get_running_loop().create_future()
        try:
            body = await answer()
        except Exception as exc:
            landed.set_exception(exc)
            landed.exception()  # marked as retrieved: with nobody else waiting, asyncio would log it again
            raise
        except BaseException:
            landed.cancel()
            raise
        finally:
            del self._in_flight[key]
        landed.set_result(body)
        return body

    def _route(self, path: str, query_string: bytes) -> Answer | None:
        if path == TICKERS_PATH:
            return self._tickers(_query(query_string))
        if path.startswith(BOOK_PREFIX):
            inst = path[len(BOOK_PREFIX):]
            if inst and "/" not in inst:
                return self._book(inst, _query(query_string))
        return None

    def _book(self, inst: str, query: dict[str, str]) -> Answer | None:
        depth = _depth(query.get("depth"))
        exchange = _BOOK_EXCHANGES.get(query.get("exchange", BookExchange.OKX.value))
        if depth is None or exchange is None or not _well_formed(inst):
            return None
        state = self.app.state

        async def answer() -> bytes:
            found = await read_book(state.redis_calls, exchange, inst)
            return book_body(inst, exchange, depth, found)

        return answer

    def _tickers(self, query: dict[str, str]) -> Answer | None:
        exchange = query.get("exchange")
        symbol = query.get("symbol")
        if (exchange is not None and exchange not in _TICKER_EXCHANGES) or (
                symbol is not None and not _well_formed(symbol)):
            return None
        venues = ALL_VENUES if exchange is None else [exchange]
        symbols = [] if symbol is None else [symbol]
        state = self.app.state
        return lambda: read_tickers(state, venues, symbols)

    async def _error(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        handlers = self.app.exception_handlers
        found = next(handlers[cls] for cls in type(exc).__mro__ if cls in handlers)  # Exception is there
        handler = cast(Callable[[Request, Exception], Awaitable[Response]], found)  # all of ours are async
        scope["app"] = self.app  # what Request.app reads; Starlette sets it further in
        response = await handler(Request(scope, receive), exc)
        await response(scope, receive, send)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _has_body(scope: Scope) -> bool:
    # A GET announcing a body goes the long way, through BodyLimit (a huge Content-Length is a 413 there).
    return any(name in _BODY_HEADERS for name, _ in scope["headers"])


def _query(query_string: bytes) -> dict[str, str]:
    # As Starlette's QueryParams parses it; a repeated name keeps its last value, as FastAPI reads a scalar.
    return dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)) if query_string else {}


def _depth(value: str | None) -> int | None:
    """A plain decimal depth in range, else None (FastAPI then accepts or refuses it with its own 422)."""
    if value is None:
        return DEFAULT_DEPTH
    if not (0 < len(value) <= len(str(MAX_DEPTH)) and value.isascii() and value.isdigit()) or value[0] == "0":
        return None
    depth = int(value)
    return depth if depth <= MAX_DEPTH else None


def _well_formed(inst: str) -> bool:
    try:
        validate_instrument(inst)
    except InvalidInstrument:
        return False
    return True
