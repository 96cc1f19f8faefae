"""What the order-book collector's items become on their way to its sinks (``dataflows/orderbook_collector.py``).

Redis (:class:`connectors.redis.book_sink.CollectorRedisSink`): books, states and buffer frames as they are, and each
shard's stats as its own share of the ``system:monitoring`` gauges (:func:`shard_report`,
:mod:`connectors.redis.monitoring`), in the shard's order. InfluxDB: ``orderbook_data`` points of the book samples
(:func:`book_points`) and one ``ws_metrics`` point per venue (tag ``exchange``) of that venue's shards' stats
summed by one keyed step (:func:`aggregate`, :func:`ws_point`).
"""

from __future__ import annotations

import msgspec

from connectors.books.items import BookSample, CollectorItem, ShardStats
from connectors.influx.writer import InfluxPoint
from connectors.redis.book_sink import RedisItem
from connectors.redis.monitoring import MonitorReport
from operators.bbo import Bbo
from operators.events import iso_ms

DATAFLOW = "orderbook_collector"
_FRESH_MS = 10_000  # ws_metrics: a shard that has not reported for this long no longer counts


def shard_report(stats: ShardStats) -> MonitorReport:
    """One shard's share of the ``system:monitoring`` gauges (summed over the live shards of every process by
    :mod:`connectors.redis.monitoring`) and its counters (HINCRBY)."""
    latest = (("last_config_check", iso_ms(stats.last_config_check_ms)),) if stats.last_config_check_ms else ()
    venue = stats.venue
    # active_pairs is the monitored pairs (OKX's books); the other venues' booked pairs are book_<venue>_pairs
    pairs = "active_pairs" if venue == "okx" else f"book_{venue}_pairs"
    return MonitorReport(
        f"{DATAFLOW}/{venue}/shard-{stats.shard}",
        sums=(("websocket_connections", stats.connections), ("collector_connections", stats.connections),
              ("collector_reconnects", stats.reconnects), (pairs, stats.active_pairs),
              ("influxdb_write_rate", round(stats.influx_rate, 1))),
        latest=latest, counters=stats.counters, venue=venue)


def redis_item(item: CollectorItem) -> RedisItem | None:
    """What the Redis sink gets, in the shard's order (a shard's gauges never trail its books)."""
    if isinstance(item, ShardStats):
        return shard_report(item)
    return None if isinstance(item, BookSample) else item


def bbo_item(kv: tuple[str, Bbo]) -> Bbo:
    return kv[1]


class WsTotals(msgspec.Struct, frozen=True):
    """The collector's WebSocket totals over its fresh shards, for the ``ws_metrics`` point."""

    ts_ms: int
    connections: int
    reconnects: int
    messages: int
    latency_ms: float
    venue: str = "okx"


def aggregate(state: dict[int, ShardStats] | None, stats: ShardStats) -> tuple[dict[int, ShardStats], WsTotals]:
    """Latest stats per shard -> one venue's totals for ``ws_metrics`` (keyed by venue: one worker sees all of
    a venue's shards)."""
    shards = dict(state or {})
    shards[stats.shard] = stats
    fresh = [s for s in shards.values() if stats.ts_ms - s.ts_ms <= _FRESH_MS]
    lat = [s.latency_ms for s in fresh if s.latency_ms]
    return shards, WsTotals(ts_ms=stats.ts_ms, connections=sum(s.connections for s in fresh),
                            reconnects=sum(s.reconnects for s in fresh), messages=sum(s.messages for s in fresh),
                            latency_ms=sum(lat) / len(lat) if lat else 0.0, venue=stats.venue)


def book_points(sample: BookSample, levels: int) -> list[InfluxPoint]:
    view = sample.view
    base = (("instrument_id", view.instrument),)
    points = []
    for side, book_side in (("buy", view.bids), ("sell", view.asks)):
        for depth, lv in enumerate(book_side[:levels], start=1):
            tags = (*base, ("side", side), ("data_type", sample.data_type), ("depth_level", str(depth)))
            points.append(InfluxPoint("orderbook_data", tags, (("price", float(lv.price)),
                                                                ("amount", float(lv.size))), view.ts_ms))
    return points


def ws_point(up: WsTotals) -> InfluxPoint:
    return InfluxPoint("ws_metrics", (("exchange", up.venue),),
                       (("connections", up.connections), ("reconnects", up.reconnects),
                        ("messages", up.messages), ("latency_ms", round(up.latency_ms, 3))), up.ts_ms)
