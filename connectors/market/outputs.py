"""What ``market_data``'s streams become on their way to its sinks (``dataflows/market_data.py``).

Redis (:class:`connectors.redis.market_sink.MarketWriter`): tickers, klines, ``system:monitoring`` reports (each
shard's stats as its own share of the venue's gauges, :func:`shard_report`) and trades, joined per worker
activation (:func:`redis_batches`). InfluxDB: closed klines (:func:`closed_kline_point`) and the tickers that
came from a ticker (:func:`ticker_update_point`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import bytewax.operators as op
from bytewax.dataflow import Stream

from connectors.influx.writer import InfluxPoint
from connectors.market.source import MarketStats
from connectors.redis.market_sink import MarketRedisItem, kline_point, ticker_point
from connectors.redis.monitoring import MonitorReport
from operators.events import Ticker, Trade, iso_ms
from operators.kline_steps import KlineOut

DATAFLOW = "market_data"


def shard_report(stats: MarketStats) -> MonitorReport:
    """One shard's share of its venue's gauges (summed over the live shards of every worker and process by
    :mod:`connectors.redis.monitoring`; its connections also count in ``websocket_connections``, the sum over
    dataflows) and its counters (HINCRBY)."""
    v = stats.venue
    latest = (("market_last_config_check", iso_ms(stats.last_config_check_ms)),) \
        if stats.last_config_check_ms else ()
    return MonitorReport(
        f"{DATAFLOW}/{stats.source}/shard-{stats.shard}",
        sums=((f"market_{v}_connections", stats.connections), (f"market_{v}_reconnects", stats.reconnects),
              (f"market_{v}_topics", stats.topics), ("websocket_connections", stats.connections)),
        latest=latest, counters=stats.counters, venue=v)


def redis_batches(tickers: Stream[Ticker], klines: Stream[KlineOut], reports: Iterable[Stream[MonitorReport]],
                  stats: Stream[MarketStats], trades: Stream[Trade],
                  split: Callable[[list[MarketRedisItem]], list[tuple[str, list[MarketRedisItem]]]],
                  ) -> Stream[tuple[str, list[MarketRedisItem]]]:
    """Steps ``shard_reports`` .. ``redis_batch``: what the Redis sink writes, one batch per worker activation:
    tickers, klines, the steps' ``reports`` and each shard's (:func:`shard_report`), trades.

    Trades go to the Redis sink only for the @trades push stream (connectors/redis/push_streams.py). A sink writes
    each upstream batch on its own; ``flat_map_batch`` joins the batches of one worker activation (tickers,
    klines, trades, reports) into one and ``split`` (the sink's :meth:`~connectors.redis.sink.RedisPipelineSink.split`)
    groups it into ``(partition, items)`` pairs, so one source batch is one pipeline."""
    monitor = op.merge("monitor", *reports, op.map("shard_reports", stats, shard_report))
    return op.flat_map_batch("redis_batch", op.merge("to_redis", tickers, klines, monitor, trades), split)


def closed_kline_point(o: KlineOut) -> InfluxPoint | None:
    return kline_point(o.kline) if o.kline.closed else None


def ticker_update_point(tp: tuple[Ticker, bool]) -> InfluxPoint | None:
    """The point of a ticker that came from a ticker (``None`` when a best quote only re-emitted it)."""
    return ticker_point(tp[0]) if tp[1] else None

