"""History reads from InfluxDB (InfluxQL on ``/query``): klines, analysis results, analysis alerts.

Every route takes ``start``/``end`` (epoch ms or ISO-8601; a time without an offset is UTC), ``limit``
(≤ 1000, default 500) and ``format=json|csv``. Rows are oldest first in ``[start, end)``; without ``start``
they are the newest ``limit`` rows before ``end``. Paging: a full page carries ``X-Next-Start`` (its last
time + 1 ms), the ``start`` of the next page. Numbers come back as decimal text (``"60000.7"``), as the live
hashes have them.

``/v1/klines`` appends the live bar of the ``kline:`` hash when it is in range, newer than the last stored
bar, and the page is not full (so paging never skips a stored bar).
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Awaitable, Iterable, Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal, cast

import redis.asyncio as aioredis
from fastapi import APIRouter, Query, Request, Response

from connectors.influx.query import InfluxQuery, Series, TimeRange, num_text, select
from cryptoflow.settings import TIMEFRAMES
from operators.events import epoch_ms
from service.errors import ApiError, invalid
from service.routes.live import TickerExchange, instrument, json_response

router = APIRouter(tags=["history"])

MAX_TIME_MS = 9_223_372_036_853  # InfluxDB keeps int64 nanoseconds: 2262-04-11
MAX_LIMIT = 1000
DEFAULT_LIMIT = 500
Interval = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
AnalysisType = Literal["support_resistance", "large_orders", "depth_anomaly", "liquidity_shrink"]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
KLINE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "trades", "closed")
KLINE_FIELDS = ("open", "high", "low", "close", "volume", "trades")
ANALYSIS_TAGS = ("instrument_id", "analysis_type")
ANALYSIS_FIELDS = ("support_level_1", "support_level_2", "resistance_level_1", "resistance_level_2",
                   "large_buy_orders", "large_sell_orders", "anomaly_score", "liquidity_index", "alert_triggered")
ALERT_TAGS = ("instrument_id", "alert_type", "level")
ALERT_FIELDS = ("value", "threshold", "message")


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"


def parse_time(value: str, field: str) -> int:
    """Epoch milliseconds or ISO-8601 (``Z``/offset; none means UTC) -> epoch milliseconds, or 422."""
    text = value.strip()
    if text.isdigit():
        ms = int(text)
    else:
        try:
            ms = epoch_ms(text)
        except ValueError:
            why = f"expected epoch milliseconds or ISO-8601, got {text[:40]!r}"
            raise invalid(field, why) from None
    if not 0 <= ms <= MAX_TIME_MS:
        why = f"must be between 1970 and 2262 (InfluxDB's time range), got {text[:40]!r}"
        raise invalid(field, why)
    return ms


def time_range(start: str | None, end: str | None, default_span_ms: int) -> TimeRange:
    end_ms = parse_time(end, "end") if end is not None else int(time.time() * 1000) + default_span_ms
    start_ms = parse_time(start, "start") if start is not None else None
    if start_ms is not None and start_ms >= end_ms:
        why = f"must be after start ({start_ms} ms), got {end_ms} ms"
        raise invalid(field="end", why=why)
    return TimeRange(start_ms, end_ms)


def _influx(request: Request) -> InfluxQuery:
    influx = request.app.state.influx
    if influx is None:
        raise ApiError(503, "influxdb_unavailable", "InfluxDB is not configured (INFLUX_URL is unset): no history")
    return cast(InfluxQuery, influx)


def _rows(series: Sequence[Series], when: TimeRange) -> list[list[Any]]:
    rows = [row for s in series for row in s.values]
    return rows if when.start_ms is not None else rows[::-1]  # newest-first query -> oldest first


def _page(body: list[Any], when: TimeRange, last_time: int | None, limit: int, count: int, fmt: Format,
          header: Sequence[str], csv_rows: Iterable[Sequence[Any]]) -> Response:
    response = json_response(body) if fmt is Format.JSON else _csv(header, csv_rows)
    if when.start_ms is not None and count >= limit and last_time is not None:
        response.headers["X-Next-Start"] = str(last_time + 1)
    return response


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else ("true" if v is True else "false" if v is False else v) for v in row]
                     for row in rows)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8")


@router.get("/v1/klines", summary="Klines from InfluxDB, oldest first, and the live bar from Redis last")
async def klines(request: Request, symbol: str, exchange: TickerExchange = TickerExchange.OKX,
                 interval: Interval = "1m", start: str | None = None, end: str | None = None,
                 limit: Limit = DEFAULT_LIMIT, format: Format = Format.JSON) -> Response:
    symbol = instrument(symbol, "symbol")
    step = TIMEFRAMES[interval]
    when = time_range(start, end, step)
    tags = {"exchange": exchange.value, "symbol": symbol, "timeframe": interval}
    client = cast(aioredis.Redis, request.app.state.redis)
    stored, live = await asyncio.gather(
        _influx(request).query(select("kline", KLINE_FIELDS, tags, when, limit)),
        cast("Awaitable[dict[str, str]]", client.hgetall(f"kline:{exchange.value}:{symbol}:{interval}")),
    )
    rows = [[t, num_text(o), num_text(h), num_text(lo), num_text(c), num_text(v), trades, True]
            for t, o, h, lo, c, v, trades in _rows(stored, when)]
    bar = _live_bar(live, when, rows, limit)
    if bar is not None:
        rows = [*rows[len(rows) + 1 - limit:], bar] if when.start_ms is None else [*rows, bar]
    last = rows[-1][0] if rows else None
    return _page(rows, when, last, limit, len(rows), format, KLINE_COLUMNS, rows)


def _live_bar(fields: dict[str, str], when: TimeRange, rows: list[list[Any]], limit: int) -> list[Any] | None:
    """The ``kline:`` hash as a row, when it belongs at the end of this page (see the module docstring)."""
    if not fields or "open_time" not in fields:
        return None
    try:
        open_ms = parse_time(fields["open_time"], "open_time")
        trades = int(fields.get("trades") or 0)
    except (ApiError, ValueError):
        return None
    in_range = (when.start_ms is None or open_ms >= when.start_ms) and open_ms < when.end_ms
    newer = not rows or open_ms > rows[-1][0]
    page_open = when.start_ms is None or len(rows) < limit
    if not (in_range and newer and page_open):
        return None
    return [open_ms, fields.get("open"), fields.get("high"), fields.get("low"), fields.get("close"),
            fields.get("volume"), trades, fields.get("closed") == "true"]


def _objects(series: Sequence[Series], when: TimeRange, columns: Sequence[str],
             numeric: frozenset[str]) -> list[dict[str, Any]]:
    """Rows of an explicit ``SELECT`` as objects ``{"time": ms, column: value}``, numbers as decimal text."""
    out = []
    for row in _rows(series, when):
        item: dict[str, Any] = {"time": row[0]}
        for name, value in zip(columns, row[1:], strict=True):
            item[name] = num_text(value) if name in numeric and not isinstance(value, bool) else value
        out.append(item)
    return out


@router.get("/v1/analysis/history", summary="Analysis results of one instrument from InfluxDB")
async def analysis_history(request: Request, inst: str, type: AnalysisType | None = None,
                           start: str | None = None, end: str | None = None, limit: Limit = DEFAULT_LIMIT,
                           format: Format = Format.JSON) -> Response:
    tags = {"instrument_id": instrument(inst)}
    if type is not None:
        tags["analysis_type"] = type
    when = time_range(start, end, 1)
    columns = (*ANALYSIS_TAGS, *ANALYSIS_FIELDS)
    series = await _influx(request).query(select("analysis_results", columns, tags, when, limit))
    items = _objects(series, when, columns, frozenset(ANALYSIS_FIELDS) - {"alert_triggered"})
    return _object_page(items, when, limit, format, columns)


@router.get("/v1/alerts/analysis", summary="Analysis alerts (depth anomaly, liquidity) from InfluxDB")
async def analysis_alerts(request: Request, inst: str | None = None, start: str | None = None,
                          end: str | None = None, limit: Limit = DEFAULT_LIMIT,
                          format: Format = Format.JSON) -> Response:
    tags = {"instrument_id": instrument(inst)} if inst is not None else {}
    when = time_range(start, end, 1)
    columns = (*ALERT_TAGS, *ALERT_FIELDS)
    series = await _influx(request).query(select("alerts", columns, tags, when, limit))
    items = _objects(series, when, columns, frozenset({"value", "threshold"}))
    return _object_page(items, when, limit, format, columns)


def _object_page(items: list[dict[str, Any]], when: TimeRange, limit: int, fmt: Format,
                 columns: Sequence[str]) -> Response:
    header = ("time", *columns)
    last = items[-1]["time"] if items else None
    return _page(items, when, last, limit, len(items), fmt, header, ([i[c] for c in header] for i in items))
