"""Live reads from the Redis hashes the dataflows write: order books, analyses, tickers, system status.

The hot path (``/v1/orderbook``, ``/v1/tickers``; well-formed requests are answered by :mod:`service.fastpath`
with the same functions) is one Redis round trip on the pipelined connection of :mod:`service.redis_pipe` and
a response built as bytes: the stored level arrays are cut at ``depth`` without decoding the 400 levels (only
the kept part is parsed, which also checks it) and embedded as they are, so prices and sizes are the venue's
exact strings.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Annotated, Any, cast

import orjson
import redis.asyncio as aioredis
import redis.exceptions
from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import State

from connectors.redis.keys import MONITORING, analysis_key, bbo_key, venue_book_key
from connectors.redis.monitoring import refresh
from cryptoflow.logs import get_logger
from operators.instruments import InvalidInstrument, validate_instrument
from service.errors import ApiError, invalid, not_found
from service.redis_pipe import RedisCalls

log = get_logger("service.routes.live")
router = APIRouter(tags=["live"])

MAX_DEPTH = 400
DEFAULT_DEPTH = 20
BOOK_FIELDS = ("bids", "asks", "seq_id", "status", "latest_timestamp", "checksum")


class BookExchange(StrEnum):
    OKX = "okx"
    BINANCE = "binance"
    BYBIT = "bybit"


class TickerExchange(StrEnum):
    OKX = "okx"
    BINANCE = "binance"
    BYBIT = "bybit"
    LOCAL = "local"


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def instrument(value: str, field: str = "inst") -> str:
    """A well-formed instrument id, or 422 naming ``field``."""
    try:
        return validate_instrument(value)
    except InvalidInstrument as err:
        raise invalid(field, str(err)) from None


def top_levels(raw: str | None, depth: int) -> orjson.Fragment:
    """The first ``depth`` levels of a stored ``[[price, size], ...]`` array, as JSON to embed.

    Each level is one flat array of two scalars, so the ``depth``-th ``]`` after the opening bracket ends the
    kept part; only that part is parsed (a check that it is JSON), never the whole book."""
    if not raw:
        return orjson.Fragment(b"[]")
    end = raw.find("[") + 1
    for _ in range(depth):
        nxt = raw.find("]", end)
        if nxt < 0:
            break
        end = nxt + 1
    kept = raw[:end] + "]" if raw.find("]", end) >= 0 else raw
    try:
        orjson.loads(kept)
    except orjson.JSONDecodeError:
        log.error("orderbook_hash_corrupt", sample=raw[:80])
        raise ApiError(500, "corrupt_book", "the stored book is not valid JSON") from None
    return orjson.Fragment(kept)


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.lstrip("-").isdigit() else None


def _redis(request: Request) -> aioredis.Redis:
    return cast(aioredis.Redis, request.app.state.redis)


async def read_book(client: RedisCalls, exchange: BookExchange, inst: str) -> list[str | None]:
    """The stored fields of one book (:data:`BOOK_FIELDS` order); ``inst`` already validated."""
    return await client.call("HMGET", venue_book_key(exchange.value, inst), *BOOK_FIELDS)  # type: ignore[no-any-return]


def book_body(inst: str, exchange: BookExchange, depth: int, found: list[str | None]) -> bytes:
    """The JSON of ``GET /v1/orderbook/{inst}`` from :func:`read_book`'s fields, or 404 when there is no book."""
    bids, asks, seq_id, status, ts, checksum = found
    if status is None and bids is None:
        what = f"order book {exchange.value}:{inst}"
        raise not_found(what)
    return orjson.dumps({
        "instrument_id": inst, "exchange": exchange.value, "status": status, "timestamp": ts,
        "seq_id": _int_or_none(seq_id), "checksum": _int_or_none(checksum),
        "bids": top_levels(bids, depth), "asks": top_levels(asks, depth),
    })


# Served by service.fastpath when the request is well-formed; this declaration is the OpenAPI entry and the
# path of every other request (bad parameters, keys required), so both must answer alike.
@router.get("/v1/orderbook/{inst}", summary="Live order book (top `depth` levels per side)")
async def orderbook(request: Request, inst: str,
                    depth: Annotated[int, Query(ge=1, le=MAX_DEPTH)] = DEFAULT_DEPTH,
                    exchange: BookExchange = BookExchange.OKX) -> Response:
    inst = instrument(inst)
    found = await read_book(request.app.state.redis_calls, exchange, inst)
    return Response(book_body(inst, exchange, depth, found), media_type="application/json")


async def _live_hash(request: Request, key: str, what: str) -> dict[str, str]:
    """A live hash, or 404 naming ``what`` when the dataflow has not written it."""
    fields = await _redis(request).hgetall(key)
    if not fields:
        raise not_found(what)
    return cast(dict[str, str], fields)  # the app's client decodes responses


@router.get("/v1/analysis/{inst}", summary="Live order-book analysis of one instrument")
async def analysis(request: Request, inst: str) -> Response:
    inst = instrument(inst)
    return json_response(await _live_hash(request, analysis_key(inst), f"analysis of {inst}"))


@router.get("/v1/bbo/{inst}", summary="Best bid and ask across the booked venues (the collector's bbo:{inst})")
async def bbo(request: Request, inst: str) -> Response:
    """The hash as the collector wrote it, with ``venues`` and ``excluded`` as JSON values, not JSON text."""
    inst = instrument(inst)
    what = f"bbo of {inst} (the collector writes it when BOOK_VENUES names more than one venue)"
    fields = await _live_hash(request, bbo_key(inst), what)
    return json_response({**fields, "venues": orjson.loads(fields.get("venues", "{}")),
                          "excluded": orjson.loads(fields.get("excluded", "[]"))})


# One round trip for the whole list: the monitored pairs (or the one asked for) x the venues asked for.
# KEYS[1] = the trading-pairs set. ARGV = n venues, the venues, then symbols (none: SMEMBERS KEYS[1]).
# Each row is encoded to JSON by Redis (cjson) and returned as symbol, venue, row: the service only sorts and
# joins instead of decoding ~360 fields and re-encoding them (in-process CPU per request was 2.4x the book
# route's, now about the same: RESULTS.md, the service).
# The hash's own fields win over the added exchange/symbol, as before.
_TICKERS = """
local n = tonumber(ARGV[1])
local symbols = {}
for i = n + 2, #ARGV do symbols[#symbols + 1] = ARGV[i] end
if #symbols == 0 then symbols = redis.call('SMEMBERS', KEYS[1]) end
local out = {}
for _, s in ipairs(symbols) do
  for v = 2, n + 1 do
    local h = redis.call('HGETALL', 'ticker:' .. ARGV[v] .. ':' .. s)
    if #h > 0 then
      local row = {exchange = ARGV[v], symbol = s}
      for j = 1, #h, 2 do row[h[j]] = h[j + 1] end
      out[#out + 1] = s
      out[#out + 1] = ARGV[v]
      out[#out + 1] = cjson.encode(row)
    end
  end
end
return out
"""


ALL_VENUES = [v.value for v in TickerExchange]


async def read_tickers(state: State, venues: list[str], symbols: list[str]) -> bytes:
    """The JSON of ``GET /v1/tickers``: one round trip (the script above), rows by symbol then venue."""
    calls: RedisCalls = state.redis_calls
    found = await calls.script(_TICKERS, [state.settings.redis_trading_pairs_key], [len(venues), *venues, *symbols])
    rows = sorted(zip(found[::3], found[1::3], found[2::3], strict=True))  # by symbol, then venue
    return ("[" + ",".join(row for _, _, row in rows) + "]").encode()


# Served by service.fastpath when the request is well-formed (see the order book above).
@router.get("/v1/tickers", summary="Live tickers of the monitored pairs (or of one symbol) on each venue")
async def tickers(request: Request, exchange: TickerExchange | None = None, symbol: str | None = None) -> Response:
    venues = [exchange.value] if exchange is not None else ALL_VENUES
    symbols = [instrument(symbol, "symbol")] if symbol is not None else []
    body = await read_tickers(request.app.state, venues, symbols)
    return Response(body, media_type="application/json")


@router.get("/v1/status", summary="system:monitoring and whether the service reaches Redis, SQL, InfluxDB")
async def status(request: Request) -> Response:
    """Always 200: ``stores`` says which backing store is reachable (``ok``/``unavailable``/``disabled``)."""
    monitoring, redis_ok = await _monitoring(_redis(request))
    database, influx = await asyncio.gather(_database_state(request), _influx_state(request))
    return json_response({"monitoring": monitoring,
                          "stores": {"redis": redis_ok, "database": database, "influxdb": influx}})


async def _monitoring(client: aioredis.Redis) -> tuple[dict[str, str] | None, str]:
    try:
        async with client.pipeline(transaction=False) as pipe:
            refresh(pipe)  # recompute the gauges from the live owners (queued; a stopped dataflow drops out)
            pipe.hgetall(MONITORING)
            _, fields = await pipe.execute()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return None, "unavailable"
    return cast(dict[str, str], fields), "ok"


async def _database_state(request: Request) -> str:
    try:
        await request.app.state.db.ping()
    except Exception as err:  # any failure of the ping means "not reachable" here
        log.warning("store_unavailable", store="database", error=type(err).__name__)
        return "unavailable"
    return "ok"


async def _influx_state(request: Request) -> str:
    influx = request.app.state.influx
    if influx is None:
        return "disabled"
    return "ok" if await influx.ping() else "unavailable"
