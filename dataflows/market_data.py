"""``python -m bytewax.run dataflows.market_data``: tickers and klines from OKX, Binance, Bybit and our own trades.

Wiring only (docs/CONTRACTS.md ``ticker:*``, ``kline:*``): sources -> trades -> price alerts and klines; tickers.
Runs with any ``-w`` and as several processes: klines are keyed by ``venue:instrument``, not by worker.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from connectors import stopping
from connectors.influx.sync import SyncInfluxSink
from connectors.influx.writer import InfluxSink
from connectors.local.source import LocalTradesSource
from connectors.market.klines import reconcile_klines, reported_klines
from connectors.market.outputs import closed_kline_point, redis_batches, ticker_update_point
from connectors.market.source import MarketSourceItem, MarketStats, market_sources
from connectors.rest_klines.repair import KlineRepairSink
from cryptoflow.connector_configs import (
    influx_config,
    influx_enabled,
    local_config,
    market_redis_sink,
    market_source_config,
    price_alert_sink,
    repair_config,
    repair_enabled,
)
from cryptoflow.entry import lazy_flow
from cryptoflow.logs import configure_logging, get_logger
from cryptoflow.settings import LOCAL_VENUE, Settings, settings_or_exit
from operators.events import Trade
from operators.ticker_steps import ticker_steps

log = get_logger("dataflows.market_data")


def wire(items: Stream[MarketSourceItem], settings: Settings) -> None:
    """Everything after the sources (tests feed ``items`` from a replay or a ``TestingSource``)."""
    split = op.branch("split_trades", items, lambda x: isinstance(x, Trade))
    trades: Stream[Trade] = split.trues  # type: ignore[assignment]  # the hot path passes one test; the rest are few
    items = split.falses
    if settings.price_alerts_enabled:
        # Price alerts (ALERTS, issue 7): atomic Lua matching per batch of trades -> queue:email.
        op.output("price_alerts", trades, price_alert_sink(settings))

    reported = reported_klines(trades, items, settings.kline_timeframes, settings.kline_allowed_lateness,
                               hold_at_eof=stopping.stop_requested)
    tickers = ticker_steps(items, reported.buckets, LOCAL_VENUE)
    reported = reconcile_klines(reported, items)
    stats = op.filter_map("stats", items, lambda x: x if isinstance(x, MarketStats) else None)
    if repair_enabled(settings):  # KLINE_BACKFILL > 0: backfill at start, refetch what a reconnect missed (REST)
        op.output("repair_klines", stats, KlineRepairSink(repair_config(settings)))
    redis_sink = market_redis_sink(settings)  # partitioned: its snapshot() waits for the epoch's writes
    to_redis = redis_batches(tickers.tickers, reported.published, reported.reports, stats, trades, redis_sink.split)
    op.output("redis", to_redis, redis_sink)
    if influx_enabled(settings):
        closed = op.filter_map("closed_klines", reported.published, closed_kline_point)
        # closed klines in InfluxDB before their epoch commits (a partitioned sink): exactly once after kill -9
        klines_sink = SyncInfluxSink(influx_config(settings))
        op.output("influx_klines", op.flat_map_batch("influx_batch", closed, klines_sink.split), klines_sink)
        ticks = op.filter_map("ticker_points", tickers.pairs, ticker_update_point)
        op.output("influx", ticks, InfluxSink(influx_config(settings)))


def build(settings: Settings) -> Dataflow:
    flow = Dataflow("market_data")
    inputs = [op.input(step, flow, source) for step, source in market_sources(market_source_config(settings))]
    if LOCAL_VENUE in settings.market_data_venues:  # the exchange's own trades (Redis Streams), as venue local
        inputs.append(op.input("local", flow, LocalTradesSource(local_config(settings))))
    if not inputs:
        msg = "MARKET_DATA_VENUES selects no venue"
        raise ValueError(msg)
    items = inputs[0] if len(inputs) == 1 else op.merge("items", *inputs)
    wire(items, settings)
    return flow


def _main() -> Dataflow:
    settings = settings_or_exit()
    configure_logging(settings.log_level, settings.log_format)
    log.info("market_data_starting", venues=list(settings.market_data_venues),
             timeframes=list(settings.kline_timeframes), lateness_s=settings.kline_allowed_lateness,
             trade_stream=settings.binance_trade_stream.value, price_alerts=settings.price_alerts_enabled)
    return build(settings)


__getattr__ = lazy_flow(__name__, _main)
