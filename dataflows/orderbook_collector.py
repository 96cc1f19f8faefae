"""``python -m bytewax.run dataflows.orderbook_collector``: live OKX books for ``config:trading_pairs``.

Wiring only (docs/CONTRACTS.md "Order books"): ``okx_books`` (:func:`connectors.okx.book_source.okx_books_source`:
WebSocket shards, parse + book + integrity + resync on the worker) -> the items go to Redis in one pipeline
per batch (:class:`connectors.book_sinks.CollectorRedisSink`); each shard's stats become its own share of the
``system:monitoring`` gauges (:mod:`connectors.collector_outputs`) on the same path as its books; book samples
and ``ws_metrics`` (the shards' stats summed by one keyed step, ``aggregate``) go to InfluxDB when
``INFLUX_URL`` is set. Runs with any ``-w`` and as several processes: each shard lives on one worker.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from connectors.book_sinks import CollectorRedisSink, RedisItem
from connectors.collector_outputs import DATAFLOW, aggregate, book_points, redis_item, ws_point
from connectors.influx import InfluxSink
from connectors.okx.book_source import BookSample, ShardStats, okx_books_source
from cryptoflow.connector_configs import influx_config, influx_enabled, okx_books_config
from cryptoflow.entry import lazy_flow
from cryptoflow.logs import configure_logging, get_logger
from cryptoflow.settings import Settings, settings_or_exit

log = get_logger("dataflows.orderbook_collector")


def build(settings: Settings) -> Dataflow:
    flow = Dataflow("orderbook_collector")
    items = op.input("okx_books", flow, okx_books_source(okx_books_config(settings)))
    to_redis: Stream[RedisItem] = op.filter_map("redis_items", items, redis_item)
    op.output("redis", to_redis, CollectorRedisSink(str(settings.redis_url), settings.orderbook_buffer_key,
                                                    settings.orderbook_buffer_max, dataflow=DATAFLOW,
                                                    stream_maxlen=settings.stream_maxlen,
                                                    hash_interval=settings.orderbook_hash_interval))
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
