"""``python -m bytewax.run dataflows.orderbook_collector``: live OKX books for ``config:trading_pairs``.

Wiring only (docs/CONTRACTS.md "Order books"): ``okx_books`` (:func:`connectors.okx.book_source.okx_books_source`:
WebSocket shards, parse + book + integrity + resync on the worker) -> the items go to Redis in one pipeline
per batch (:class:`connectors.book_sinks.CollectorRedisSink`); each shard's stats become its own share of the
``system:monitoring`` gauges (``shard_report``, :mod:`connectors.monitoring`) on the same path as its books;
book samples and ``ws_metrics`` (the shards' stats summed by one keyed step, ``aggregate``) go to InfluxDB
when ``INFLUX_URL`` is set. Runs with any ``-w`` and as several processes: each shard lives on one worker.
"""

from __future__ import annotations

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow, Stream

from connectors.book_sinks import CollectorRedisSink, RedisItem
from connectors.influx import InfluxPoint, InfluxSink
from connectors.monitoring import MonitorReport
from connectors.okx.book_source import BookSample, CollectorItem, ShardStats, okx_books_source
from cryptoflow.connector_configs import influx_config, influx_enabled, okx_books_config
from cryptoflow.entry import lazy_flow
from cryptoflow.logs import configure_logging, get_logger
from cryptoflow.settings import Settings, settings_or_exit
from operators.events import iso_ms

log = get_logger("dataflows.orderbook_collector")
_FRESH_MS = 10_000  # ws_metrics: a shard that has not reported for this long no longer counts
DATAFLOW = "orderbook_collector"


def shard_report(stats: ShardStats) -> MonitorReport:
    """One shard's share of the ``system:monitoring`` gauges (summed over the live shards of every process by
    :mod:`connectors.monitoring`) and its counters (HINCRBY)."""
    latest = (("last_config_check", iso_ms(stats.last_config_check_ms)),) if stats.last_config_check_ms else ()
    return MonitorReport(
        f"{DATAFLOW}/okx/shard-{stats.shard}",
        sums=(("websocket_connections", stats.connections), ("collector_connections", stats.connections),
              ("active_pairs", stats.active_pairs), ("influxdb_write_rate", round(stats.influx_rate, 1))),
        latest=latest, counters=stats.counters)


def redis_item(item: CollectorItem) -> RedisItem | None:
    """What the Redis sink gets, in the shard's order (a shard's gauges never trail its books)."""
    if isinstance(item, ShardStats):
        return shard_report(item)
    return None if isinstance(item, BookSample) else item


class WsTotals(msgspec.Struct, frozen=True):
    """The collector's WebSocket totals over its fresh shards, for the ``ws_metrics`` point."""

    ts_ms: int
    connections: int
    reconnects: int
    messages: int
    latency_ms: float


def aggregate(state: dict[int, ShardStats] | None, stats: ShardStats) -> tuple[dict[int, ShardStats], WsTotals]:
    """Latest stats per shard -> collector-wide totals for ``ws_metrics`` (one key: one worker sees all)."""
    shards = dict(state or {})
    shards[stats.shard] = stats
    fresh = [s for s in shards.values() if stats.ts_ms - s.ts_ms <= _FRESH_MS]
    lat = [s.latency_ms for s in fresh if s.latency_ms]
    return shards, WsTotals(ts_ms=stats.ts_ms, connections=sum(s.connections for s in fresh),
                            reconnects=sum(s.reconnects for s in fresh), messages=sum(s.messages for s in fresh),
                            latency_ms=sum(lat) / len(lat) if lat else 0.0)


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
    return InfluxPoint("ws_metrics", (("exchange", "okx"),),
                       (("connections", up.connections), ("reconnects", up.reconnects),
                        ("messages", up.messages), ("latency_ms", round(up.latency_ms, 3))), up.ts_ms)


def build(settings: Settings) -> Dataflow:
    flow = Dataflow("orderbook_collector")
    items = op.input("okx_books", flow, okx_books_source(okx_books_config(settings)))
    to_redis: Stream[RedisItem] = op.filter_map("redis_items", items, redis_item)
    op.output("redis", to_redis, CollectorRedisSink(str(settings.redis_url), settings.orderbook_buffer_key,
                                                    settings.orderbook_buffer_max, dataflow=DATAFLOW,
                                                    stream_maxlen=settings.stream_maxlen))
    if influx_enabled(settings):
        levels = settings.influx_book_levels
        samples = op.flat_map("book_points", items,
                              lambda x: book_points(x, levels) if isinstance(x, BookSample) else [])
        stats = op.filter_map("stats", items, lambda x: x if isinstance(x, ShardStats) else None)
        totals = op.stateful_map("aggregate", op.key_on("by_venue", stats, lambda _: "okx"), aggregate)
        metrics = op.map("ws_points", totals, lambda kv: ws_point(kv[1]))
        op.output("influx", op.merge("points", samples, metrics), InfluxSink(influx_config(settings)))
    return flow


def _main() -> Dataflow:
    settings = settings_or_exit()
    configure_logging(settings.log_level, settings.log_format)
    log.info("collector_starting", channel=settings.okx_book_channel.value, max_pairs=settings.max_trading_pairs,
             pairs_per_connection=settings.okx_pairs_per_connection)
    return build(settings)


__getattr__ = lazy_flow(__name__, _main)
