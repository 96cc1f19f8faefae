"""``python -m bytewax.run dataflows.market_data``: tickers and klines from OKX, Binance and Bybit.

Wiring only (docs/CONTRACTS.md ``ticker:*``, ``kline:*``, ``ticker``/``kline`` measurements):

* sources (:func:`connectors.market_source.market_sources`): one per venue connection family
  (``MARKET_DATA_VENUES``), pairs from ``config:trading_pairs`` diffed live, frames parsed on the worker;
* ``trades`` -> :func:`operators.kline_steps.aggregate_klines` (``bucket`` -> ``minute`` event-time window
  aligned to UTC -> ``rollup`` to every ``KLINE_TIMEFRAMES``; late trades counted and logged) -> Redis latest
  (every batch) + InfluxDB (closed klines, stamped with their open time);
* ``trades`` -> price-alert matching (``PRICE_ALERTS_ENABLED``; :class:`connectors.alerts.matcher.PriceAlertSink`);
* tickers (+ Bybit best bid/ask from ``orderbook.1``) -> ``merge_ticker`` -> Redis (TTL 300 s) + InfluxDB;
* venue klines (closed) + the pipeline's closed klines -> ``reconcile``: a complete kline is compared
  (``system:monitoring`` counters ``kline_reconciled``, ``kline_mismatches``, a warning with both values on a
  mismatch); an incomplete one (trade-id gap, :mod:`operators.trade_ids`) is replaced by the venue's
  (``source=venue``, ``complete=true``; counter ``kline_replaced`` and a log line); one that overlaps minutes
  not watched (the gap of a reconnect or a restart) is held back from the sinks (counter ``kline_held_back``).

Runs with any ``-w`` and as several processes: shards split across workers, klines keyed by
``venue:instrument`` (one worker per instrument, so klines do not depend on the worker count).
"""

from __future__ import annotations

from typing import Any, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream

from connectors import stopping
from connectors.influx import InfluxPoint, InfluxSink
from connectors.influx_sync import SyncInfluxSink
from connectors.kline_reports import report_check, report_correction, report_late, report_replaced, report_unknown
from connectors.local.source import LocalTradesSource
from connectors.market_sinks import MarketRedisItem, MarketWriter, kline_point, ticker_point
from connectors.market_source import MarketSourceItem, MarketStats, market_sources
from connectors.monitoring import MonitorReport
from connectors.redis_sink import RedisPipelineSink
from connectors.rest_klines.repair import KlineRepairSink
from cryptoflow.connector_configs import (
    influx_config,
    influx_enabled,
    local_config,
    market_source_config,
    price_alert_sink,
    repair_config,
    repair_enabled,
)
from cryptoflow.entry import lazy_flow
from cryptoflow.logs import configure_logging, get_logger
from cryptoflow.settings import LOCAL_VENUE, Settings, settings_or_exit
from operators.events import BestQuote, Kline, Ticker, Trade, iso_ms
from operators.kline_steps import InstrumentRemoved, KlineOut, ReconcileLogic, aggregate_klines, reconcilable
from operators.tickers import TickerState, merge_ticker
from operators.trade_ticker import update_trade_ticker

log = get_logger("dataflows.market_data")
DATAFLOW = "market_data"


def _value(kv: tuple[str, Any]) -> Any:
    return kv[1]


def _same_batch(batch: list[Any]) -> list[Any]:
    return batch


def _key(x: Trade | Ticker | BestQuote | Kline) -> str:
    return f"{x.venue}:{x.instrument}"


def shard_report(stats: MarketStats) -> MonitorReport:
    """One shard's share of its venue's gauges (summed over the live shards of every worker and process by
    :mod:`connectors.monitoring`; its connections also count in ``websocket_connections``, the sum over
    dataflows) and its counters (HINCRBY)."""
    v = stats.venue
    latest = (("market_last_config_check", iso_ms(stats.last_config_check_ms)),) \
        if stats.last_config_check_ms else ()
    return MonitorReport(
        f"{DATAFLOW}/{stats.source}/shard-{stats.shard}",
        sums=((f"market_{v}_connections", stats.connections), (f"market_{v}_reconnects", stats.reconnects),
              (f"market_{v}_topics", stats.topics), ("websocket_connections", stats.connections)),
        latest=latest, counters=stats.counters)


def _merge_ticker(state: TickerState | None, ev: Ticker | BestQuote) -> tuple[TickerState, tuple[Ticker, bool] | None]:
    st, ticker = merge_ticker(state, ev)
    return st, None if ticker is None else (ticker, isinstance(ev, Ticker))


def wire(items: Stream[MarketSourceItem], settings: Settings) -> None:
    """Everything after the sources (tests feed ``items`` from a replay or a ``TestingSource``)."""
    split = op.branch("split_trades", items, lambda x: isinstance(x, Trade))
    trades = cast("Stream[Trade]", split.trues)  # the hot path passes one test; the rest are few
    items = split.falses
    if settings.price_alerts_enabled:
        # Price alerts (ALERTS, issue 7): atomic Lua matching per batch of trades -> queue:email.
        op.output("price_alerts", trades, price_alert_sink(settings))

    removals = op.filter_map("removals", items, lambda x: x if isinstance(x, InstrumentRemoved) else None)
    # a SIGINT/SIGTERM stop ends the input but not the open minutes: they stay in the state (and the recovery
    # snapshot) instead of being closed and published as partial klines
    ks = aggregate_klines(trades, settings.kline_timeframes, settings.kline_allowed_lateness, removals=removals,
                          hold_at_eof=stopping.stop_requested)
    all_klines: Stream[KlineOut] = op.map("kline_values", ks.klines, _value)
    # a closed kline overlapping minutes not watched (a trade-id gap: reconnect, restart) is only reconciled: the
    # venue's kline of that interval (WebSocket, or the REST backfill and repair) is the one published
    unknown = op.branch("unknown_klines", all_klines, lambda o: o.unknown)
    klines = unknown.falses
    held = op.map("report_unknown", unknown.trues, report_unknown)
    late = op.map("report_late", op.map("late_values", ks.late, _value), report_late)
    corrections = op.map("report_corrections", op.filter("corrections", klines, lambda o: o.correction),
                         report_correction)

    quotes: Stream[Ticker | BestQuote] = op.filter_map(
        "quotes", items, lambda x: x if isinstance(x, Ticker | BestQuote) else None)
    # the exchange's own trades come with no ticker: a rolling 24 h one from the klines' per-batch buckets
    own = op.filter("own_ticker_buckets", ks.buckets, lambda b: b.venue == LOCAL_VENUE)
    trade_tickers = op.stateful_map("trade_ticker", op.key_on("key_trade_ticker", own, lambda b: b.key),
                                    update_trade_ticker)
    quotes = op.merge("all_quotes", quotes, op.filter_map("trade_ticker_values", trade_tickers, _value))
    merged = op.stateful_map("merge_ticker", op.key_on("key_ticker", quotes, _key), _merge_ticker)
    ticker_pairs = op.filter_map("ticker_values", merged, _value)
    tickers: Stream[Ticker] = op.map("tickers_out", ticker_pairs, lambda tp: tp[0])

    venue_klines = op.filter_map("venue_klines", items,
                                 lambda x: x if isinstance(x, Kline) and x.closed else None)
    ours = op.filter_map("complete_klines", all_klines, reconcilable)
    to_check = op.key_on("key_reconcile", op.merge("to_reconcile", ours, venue_klines), _key)
    checks = op.stateful("reconcile", to_check, lambda state: ReconcileLogic(state))
    pairs = op.branch("replaced", op.map("check_values", checks, _value), lambda c: c.replaced)
    checked = op.map("report_checks", pairs.falses, report_check)
    # the venue's kline replaces an incomplete one of ours: in the kline: hash (if still the latest) and point
    replacements: Stream[KlineOut] = op.map("replacements", pairs.trues, lambda c: c.replacement)
    replaced = op.map("report_replaced", pairs.trues, report_replaced)
    klines = op.merge("klines_out", klines, replacements)

    stats = op.filter_map("stats", items, lambda x: x if isinstance(x, MarketStats) else None)
    if repair_enabled(settings):  # KLINE_BACKFILL > 0: backfill at start, refetch what a reconnect missed (REST)
        op.output("repair_klines", stats, KlineRepairSink(repair_config(settings)))
    monitor = op.merge("monitor", late, corrections, held, checked, replaced,
                       op.map("shard_reports", stats, shard_report))

    # trades go to the Redis sink only for the @trades push stream (connectors/push_streams.py). A sink writes
    # each upstream batch on its own (one pipeline round trip each); ``flat_map_batch`` joins the batches of
    # one worker activation (tickers, klines, trades, reports) into one, so one source batch is one pipeline.
    to_redis: Stream[MarketRedisItem] = op.flat_map_batch(
        "redis_batch", op.merge("to_redis", tickers, klines, monitor, trades), _same_batch)
    op.output("redis", to_redis, RedisPipelineSink(str(settings.redis_url),
                                                   MarketWriter(stream_maxlen=settings.stream_maxlen)))
    if influx_enabled(settings):
        closed = op.filter_map("closed_klines", klines,
                               lambda o: kline_point(o.kline) if o.kline.closed else None)
        # klines are written before the epoch (and its recovery snapshot) ends: exactly once after kill -9
        op.output("influx_klines", closed, SyncInfluxSink(influx_config(settings)))
        ticks: Stream[InfluxPoint] = op.filter_map("ticker_points", ticker_pairs,
                                                   lambda tp: ticker_point(tp[0]) if tp[1] else None)
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
