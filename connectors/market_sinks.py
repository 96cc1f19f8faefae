"""Redis and InfluxDB output of the market-data dataflow (DESIGN.md ``ticker:*``, ``kline:*``, ``ticker``/``kline``).

Redis, one pipeline per batch (:class:`connectors.redis_sink.RedisPipelineSink` with :func:`write_market`):
per key only the newest value of the batch is written (a batch of 1,000 trades of one instrument is one HSET
per timeframe), ``ticker:{exchange}:{symbol}`` with TTL 300 s, ``kline:{exchange}:{symbol}:{tf}`` with TTL
3600 s; ``system:monitoring`` counters by HINCRBY, gauges by HSET. Delivery at-least-once; hashes make a
rewrite harmless.

InfluxDB: every closed kline as a ``kline`` point stamped with its open time (a rewrite — after recovery, or a
correction of a flat minute — overwrites the same point), every venue ticker as a ``ticker`` point.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import msgspec
from redis.client import Pipeline

from connectors.influx import InfluxPoint
from operators.events import Kline, Ticker
from operators.kline_steps import KlineOut

TICKER_TTL_S = 300
KLINE_TTL_S = 3600
MONITORING_KEY = "system:monitoring"


class MonitorDelta(msgspec.Struct, frozen=True):
    """Counters to add to and gauges to set in ``system:monitoring``."""

    counters: tuple[tuple[str, int], ...] = ()
    gauges: tuple[tuple[str, str], ...] = ()


MarketRedisItem = Ticker | KlineOut | MonitorDelta


def iso_ms(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def ticker_fields(t: Ticker) -> dict[str, str]:
    fields = {"price": _num(t.price), "volume_24h": _num(t.volume_24h), "high_24h": _num(t.high_24h),
              "low_24h": _num(t.low_24h), "timestamp": iso_ms(t.ts_ms)}
    if t.bid is not None:
        fields["bid"] = _num(t.bid)
    if t.ask is not None:
        fields["ask"] = _num(t.ask)
    if t.change_24h is not None:
        fields["change_24h"] = _num(t.change_24h.quantize(Decimal("0.0001")))
    return fields


def kline_fields(k: Kline) -> dict[str, str]:
    return {"open": _num(k.open), "high": _num(k.high), "low": _num(k.low), "close": _num(k.close),
            "volume": _num(k.volume), "quote_volume": _num(k.quote_volume), "open_time": iso_ms(k.open_ms),
            "close_time": iso_ms(k.close_ms), "trades": str(k.trades), "closed": "true" if k.closed else "false"}


def kline_key(k: Kline) -> str:
    return f"kline:{k.venue}:{k.instrument}:{k.timeframe}"


def write_market(pipe: Pipeline, items: list[MarketRedisItem]) -> None:
    """Queue one batch: the newest ticker and kline per key, monitoring deltas summed."""
    tickers: dict[str, Ticker] = {}
    klines: dict[str, Kline] = {}
    counters: dict[str, int] = {}
    gauges: dict[str, str] = {}
    for item in items:
        if isinstance(item, KlineOut):
            k = item.kline
            key = kline_key(k)
            cur = klines.get(key)
            if cur is None or (k.open_ms, k.closed) >= (cur.open_ms, cur.closed):
                klines[key] = k
        elif isinstance(item, Ticker):
            tickers[f"ticker:{item.venue}:{item.instrument}"] = item
        else:
            for name, n in item.counters:
                counters[name] = counters.get(name, 0) + n
            gauges.update(item.gauges)
    for key, t in tickers.items():
        pipe.hset(key, mapping=ticker_fields(t))  # type: ignore[arg-type]
        pipe.expire(key, TICKER_TTL_S)
    for key, k in klines.items():
        pipe.hset(key, mapping=kline_fields(k))  # type: ignore[arg-type]
        pipe.expire(key, KLINE_TTL_S)
    for name, n in counters.items():
        if n:
            pipe.hincrby(MONITORING_KEY, name, n)
    if gauges:
        pipe.hset(MONITORING_KEY, mapping=gauges)  # type: ignore[arg-type]


def kline_point(k: Kline) -> InfluxPoint:
    tags = (("exchange", k.venue), ("symbol", k.instrument), ("timeframe", k.timeframe))
    fields = (("open", k.open), ("high", k.high), ("low", k.low), ("close", k.close), ("volume", k.volume),
              ("quote_volume", k.quote_volume), ("trades", k.trades))
    return InfluxPoint("kline", tags, fields, k.open_ms)


def ticker_point(t: Ticker) -> InfluxPoint:
    tags = (("exchange", t.venue), ("symbol", t.instrument))
    fields = (("price", t.price), ("bid", t.bid), ("ask", t.ask), ("volume_24h", t.volume_24h),
              ("change_24h", t.change_24h), ("high_24h", t.high_24h), ("low_24h", t.low_24h))
    return InfluxPoint("ticker", tags, fields, t.ts_ms)
