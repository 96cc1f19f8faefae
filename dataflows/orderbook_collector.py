"""``python -m bytewax.run dataflows.orderbook_collector``: live books of ``BOOK_VENUES`` for ``config:trading_pairs``.

Wiring only (docs/CONTRACTS.md "Order books", DESIGN "More venues' books"): one source per venue
(``<venue>_books``, :func:`cryptoflow.connector_configs.book_sources`: WebSocket shards, parse + book +
integrity + resync on the worker, :class:`connectors.books.processor.BookProcessor`) -> their items, merged,
go to Redis in one pipeline per batch (:class:`connectors.redis.book_sink.CollectorRedisSink`); with more than one
venue each book's view or state also feeds ``bbo`` (keyed by instrument, :class:`connectors.books.bbo_step.BboLogic`:
the best bid and ask across venues, a silent venue left out by its own deadline), written by the same sink.
Each shard's stats become its own share of the ``system:monitoring`` gauges (:mod:`connectors.books.outputs`)
on the same path as its books; OKX's book samples and ``ws_metrics`` (each venue's shards summed by one keyed
step, ``aggregate``) go to InfluxDB when ``INFLUX_URL`` is set. Runs with any ``-w`` and as several processes.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from connectors.books.bbo_step import BboLogic, quote_of
from connectors.books.items import BookSample, ShardStats
from connectors.books.outputs import DATAFLOW, aggregate, bbo_item, book_points, redis_item, ws_point
from connectors.influx.writer import InfluxSink
from connectors.redis.book_sink import CollectorRedisSink, RedisItem
from cryptoflow.connector_configs import book_sources, influx_config, influx_enabled
from cryptoflow.entry import lazy_flow
from cryptoflow.logs import configure_logging, get_logger
from cryptoflow.settings import Settings, settings_or_exit

log = get_logger("dataflows.orderbook_collector")


def build(settings: Settings) -> Dataflow:
    flow = Dataflow("orderbook_collector")
    inputs = [op.input(f"{venue}_books", flow, source) for venue, source in book_sources(settings)]
    items = inputs[0] if len(inputs) == 1 else op.merge("books", *inputs)
    to_redis: Stream[RedisItem] = op.filter_map("redis_items", items, redis_item)
    if len(inputs) > 1:  # a best bid/offer across venues (one venue: its own book says it, at no extra cost)
        quotes = op.filter_map("quotes", items, quote_of)  # small: crosses to the instrument's worker
        max_age = settings.bbo_max_age_ms
        bbo = op.stateful("bbo", op.key_on("by_inst", quotes, lambda q: q.instrument), lambda _: BboLogic(max_age))
        to_redis = op.merge("with_bbo", to_redis, op.map("bbo_out", bbo, bbo_item))
    op.output("redis", to_redis, CollectorRedisSink(str(settings.redis_url), settings.orderbook_buffer_key,
                                                    settings.orderbook_buffer_max, dataflow=DATAFLOW,
                                                    stream_maxlen=settings.stream_maxlen,
                                                    hash_interval=settings.orderbook_hash_interval))
    if influx_enabled(settings):
        levels = settings.influx_book_levels
        samples = op.flat_map("book_points", items,
                              lambda x: book_points(x, levels) if isinstance(x, BookSample) else [])
        stats = op.filter_map("stats", items, lambda x: x if isinstance(x, ShardStats) else None)
        totals = op.stateful_map("aggregate", op.key_on("by_venue", stats, lambda s: s.venue), aggregate)
        metrics = op.map("ws_points", totals, lambda kv: ws_point(kv[1]))
        op.output("influx", op.merge("points", samples, metrics), InfluxSink(influx_config(settings)))
    return flow


def _main() -> Dataflow:
    settings = settings_or_exit()
    configure_logging(settings.log_level, settings.log_format)
    log.info("collector_starting", venues=[v.value for v in settings.book_venues],
             channel=settings.okx_book_channel.value, max_pairs=settings.max_trading_pairs,
             pairs_per_connection=settings.okx_pairs_per_connection, bybit_depth=settings.bybit_book_depth,
             bbo_max_age_ms=settings.bbo_max_age_ms)
    return build(settings)


__getattr__ = lazy_flow(__name__, _main)
