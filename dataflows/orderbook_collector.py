"""``python -m bytewax.run dataflows.orderbook_collector``: live OKX books for ``config:trading_pairs``.

Wiring only (DESIGN.md "Order books"): ``okx_books`` (:func:`connectors.okx.book_source.okx_books_source`:
WebSocket shards, parse + book + integrity + resync on the worker) -> the items go to Redis in one pipeline
per batch (:class:`connectors.book_sinks.CollectorRedisSink`); the shards' stats are summed by one keyed
step (``aggregate``) into ``system:monitoring``; book samples and ``ws_metrics`` go to InfluxDB when
``INFLUX_URL`` is set. Runs with any ``-w`` and as several processes: each shard lives on one worker.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from connectors.book_sinks import CollectorRedisSink, MonitorUpdate, RedisItem
from connectors.influx import InfluxPoint, InfluxSink, influx_enabled
from connectors.okx.book_source import BookSample, CollectorItem, ShardStats, okx_books_source
from cryptoflow.entry import lazy_flow
from cryptoflow.logs import configure_logging, get_logger
from cryptoflow.settings import Settings, settings_or_exit

log = get_logger("dataflows.orderbook_collector")
_FRESH_MS = 10_000  # a shard that has not reported for this long no longer counts in the gauges


def aggregate(state: dict[int, ShardStats] | None, stats: ShardStats) -> tuple[dict[int, ShardStats], MonitorUpdate]:
    """Latest stats per shard -> collector-wide gauges; counters pass through (HINCRBY is additive)."""
    shards = dict(state or {})
    shards[stats.shard] = stats
    fresh = [s for s in shards.values() if stats.ts_ms - s.ts_ms <= _FRESH_MS]
    lat = [s.latency_ms for s in fresh if s.latency_ms]
    update = MonitorUpdate(
        ts_ms=stats.ts_ms,
        connections=sum(s.connections for s in fresh),
        active_pairs=sum(s.active_pairs for s in fresh),
        reconnects=sum(s.reconnects for s in fresh),
        messages=sum(s.messages for s in fresh),
        latency_ms=sum(lat) / len(lat) if lat else 0.0,
        influx_rate=float(sum(s.influx_points for s in fresh)),  # per stats interval (1 s)
        counters=stats.counters,
        last_config_check_ms=max(s.last_config_check_ms for s in fresh),
    )
    return shards, update


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


def ws_point(up: MonitorUpdate) -> InfluxPoint:
    return InfluxPoint("ws_metrics", (("exchange", "okx"),),
                       (("connections", up.connections), ("reconnects", up.reconnects),
                        ("messages", up.messages), ("latency_ms", round(up.latency_ms, 3))), up.ts_ms)


def _is_redis_item(item: CollectorItem) -> bool:
    return not isinstance(item, ShardStats | BookSample)


def build(settings: Settings) -> Dataflow:
    flow = Dataflow("orderbook_collector")
    items = op.input("okx_books", flow, okx_books_source(settings))
    stats = op.filter_map("stats", items, lambda x: x if isinstance(x, ShardStats) else None)
    totals = op.stateful_map("aggregate", op.key_on("by_venue", stats, lambda _: "okx"), aggregate)
    updates = op.map("unkey", totals, lambda kv: kv[1])
    books = op.filter_map("book_items", items, lambda x: x if _is_redis_item(x) else None)
    to_redis: Stream[RedisItem] = op.merge("to_redis", books, updates)
    op.output("redis", to_redis, CollectorRedisSink(str(settings.redis_url), settings.orderbook_buffer_key,
                                                    settings.orderbook_buffer_max))
    if influx_enabled(settings):
        levels = settings.influx_book_levels
        samples = op.flat_map("book_points", items,
                              lambda x: book_points(x, levels) if isinstance(x, BookSample) else [])
        metrics = op.map("ws_points", updates, ws_point)
        op.output("influx", op.merge("points", samples, metrics), InfluxSink(settings))
    return flow


def _main() -> Dataflow:
    settings = settings_or_exit()
    configure_logging(settings.log_level, settings.log_format)
    log.info("collector_starting", channel=settings.okx_book_channel.value, max_pairs=settings.max_trading_pairs,
             pairs_per_connection=settings.okx_pairs_per_connection)
    return build(settings)


__getattr__ = lazy_flow(__name__, _main)
