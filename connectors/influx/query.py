"""InfluxDB history reads: InfluxQL on ``/query``, which InfluxDB 1.x and 2.x (v1-compatible API) both serve.

Queries are built here from typed values only: identifiers go through :func:`ident`, string literals through
:func:`literal`, times are integers with an ``ms`` unit. Callers validate user input (instrument ids, venues,
timeframes) before it reaches a builder, and the builders quote it anyway, so no user text is ever pasted
into a statement.

Transport: one ``aiohttp`` session per process (keep-alive), ``epoch=ms`` so times come back as integer
epoch milliseconds, ``Authorization: Token <INFLUX_TOKEN>`` when a token is set. Connection errors, timeouts
and 5xx/401/403 answers raise :class:`InfluxUnavailable`; a query the server refuses raises
:class:`InfluxQueryError`. Nothing is cached: the next request after an outage simply tries again.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

from cryptoflow.logs import get_logger

log = get_logger("connectors.influx.query")

_IDENT_ESCAPE = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
_STRING_ESCAPE = str.maketrans({"\\": "\\\\", "'": "\\'", "\n": "\\n"})


class InfluxUnavailable(Exception):
    """InfluxDB cannot be reached, timed out, or refused us (5xx, 401, 403)."""


class InfluxQueryError(Exception):
    """InfluxDB answered but refused the statement (the message is the server's)."""


def ident(name: str) -> str:
    """A double-quoted InfluxQL identifier (measurement, tag or field name)."""
    return '"' + name.translate(_IDENT_ESCAPE) + '"'


def literal(value: str) -> str:
    """A single-quoted InfluxQL string literal."""
    return "'" + value.translate(_STRING_ESCAPE) + "'"


@dataclass(frozen=True)
class TimeRange:
    """``[start_ms, end_ms)``; ``start_ms=None`` asks for the newest rows before ``end_ms``."""

    start_ms: int | None
    end_ms: int


def select(measurement: str, fields: tuple[str, ...], tags: dict[str, str], when: TimeRange, limit: int) -> str:
    """``SELECT`` of ``fields`` where every tag equals its value and time is in ``when``, at most ``limit`` rows.

    Oldest first from ``start_ms``; without a start, the newest ``limit`` rows (``ORDER BY time DESC``; the
    caller reverses them)."""
    columns = ", ".join(ident(f) for f in fields) if fields else "*"
    where = [f"{ident(k)} = {literal(v)}" for k, v in sorted(tags.items())]
    if when.start_ms is not None:
        where.append(f"time >= {int(when.start_ms)}ms")
    where.append(f"time < {int(when.end_ms)}ms")
    order = "ASC" if when.start_ms is not None else "DESC"
    return (f"SELECT {columns} FROM {ident(measurement)} WHERE {' AND '.join(where)} "
            f"ORDER BY time {order} LIMIT {int(limit)}")


@dataclass(frozen=True)
class Series:
    """One result series: column names (``time`` first) and rows of values as JSON decoded them."""

    columns: tuple[str, ...]
    values: list[list[Any]]


def num_text(value: float | int | None) -> str | None:
    """A number InfluxDB returned as JSON, back to plain decimal text (never exponent notation).

    ``repr`` of a float is the shortest text that reads back as the same float, so a price written as
    ``"60000.7"`` comes back ``"60000.7"``; only trailing zeros the venue sent (``"60000.70"``) are lost,
    because InfluxDB stores a float64."""
    if value is None:
        return None
    if isinstance(value, int):
        return str(value)
    text = repr(value)
    if "e" in text or "E" in text:
        return format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


class InfluxQuery:
    """The ``/query`` client of one database (``INFLUX_BUCKET``). Create and close it inside the event loop."""

    def __init__(self, url: str, database: str, token: str = "", *, timeout: float = 10.0) -> None:
        self._url = url.rstrip("/") + "/query"
        self._ping_url = url.rstrip("/") + "/ping"
        self._database = database
        self._headers = {"Authorization": f"Token {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(2.0, timeout))
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    async def query(self, statement: str) -> list[Series]:
        """Every series of the (single) statement's result; an empty list when there is no data."""
        params = {"db": self._database, "epoch": "ms", "q": statement}
        try:
            async with self._http().get(self._url, params=params) as resp:
                body = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise InfluxUnavailable(type(err).__name__) from err
        if status >= 500 or status in (401, 403):
            log.warning("influx_query_refused", status=status, body=body[:200].decode(errors="replace"))
            msg = f"HTTP {status}"
            raise InfluxUnavailable(msg)
        return _series(status, body)

    async def ping(self) -> bool:
        """Whether InfluxDB answers ``/ping`` (204 on 1.x and 2.x)."""
        try:
            async with self._http().get(self._ping_url) as resp:
                return resp.status < 300
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _series(status: int, body: bytes) -> list[Series]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        msg = f"InfluxDB answered HTTP {status} with a body that is not JSON: {body[:120]!r}"
        raise InfluxQueryError(msg) from None
    if "error" in doc:
        raise InfluxQueryError(str(doc["error"]))
    result = (doc.get("results") or [{}])[0]
    if "error" in result:
        if str(result["error"]).startswith("database not found"):
            return []  # nothing was ever written to this bucket: no history yet
        raise InfluxQueryError(str(result["error"]))
    return [Series(tuple(s["columns"]), s.get("values") or []) for s in result.get("series", [])]
