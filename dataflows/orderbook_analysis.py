"""Order-book analysis dataflow: raw OKX book frames -> book -> four analyses -> Redis / InfluxDB / alerts.

``python -m bytewax.run dataflows.orderbook_analysis`` (add ``-r DIR -s 5 -b 0`` for recovery after creating
the store with ``python -m bytewax.recovery DIR 1``).

Input (``ORDERBOOK_SOURCE``, :mod:`connectors.analysis_inputs`): ``redis`` (default), the buffer list through one
reliable partition in ``recovery`` mode (with recovery on: no frame lost after ``kill -9``, each counted exactly
once in the analysis state); or ``ws``, the collector's OKX books source (at-most-once). Frames are parsed, keyed by
instrument and fed to one :class:`operators.analysis.InstrumentAnalyzer` each (books re-sync from their hash).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source

from connectors.analysis_inputs import Parsed, from_collector, is_rejection, parse_frame
from connectors.influx.writer import InfluxSink
from connectors.okx.book_source import okx_books_source
from connectors.redis.analysis_sink import AnalysisRedisSink, AnalysisSinkItem, influx_points
from connectors.redis.book_snapshots import HashBookSnapshots
from connectors.redis.list_source import ReliableRedisListSource
from connectors.redis.lists import AckMode
from cryptoflow.analysis_settings import analysis_params, analysis_params_or_exit
from cryptoflow.connector_configs import influx_config, okx_books_config
from cryptoflow.entry import lazy_flow
from cryptoflow.logs import configure_logging, get_logger
from cryptoflow.settings import OrderbookSource, Settings, settings_or_exit
from operators.analysis import AnalysisOutput
from operators.analysis.step import AnalyseLogic, BookInput

log = get_logger("orderbook_analysis")
POLL_INTERVAL_S = 0.001  # an idle list is polled every 1 ms (one cheap round trip): latency over idle CPU


def build(settings: Settings, *, source: Source[Any] | None = None,
          on_written: Callable[[list[AnalysisOutput]], None] | None = None) -> Dataflow:
    """The dataflow; ``source`` replaces the configured input (tests: ``TestingSource`` of raw frames)."""
    params = analysis_params(settings)
    flow = Dataflow("orderbook_analysis")
    if source is None:
        if settings.orderbook_source is OrderbookSource.WS:
            source = okx_books_source(okx_books_config(settings), with_deltas=True, dataflow="orderbook_analysis")
        else:
            source = ReliableRedisListSource(
                str(settings.redis_url), settings.orderbook_buffer_key, partitions=1, ack=AckMode.RECOVERY,
                batch_size=1000, poll_interval=POLL_INTERVAL_S, max_deliveries=settings.list_max_deliveries,
            )
    frames = op.input("read", flow, source)
    via_ws = settings.orderbook_source is OrderbookSource.WS and not isinstance(source, ReliableRedisListSource)
    parsed: Stream[Parsed] = op.flat_map("parse", frames, from_collector if via_ws else parse_frame)
    split = op.branch("rejected", parsed, is_rejection)
    deltas: Stream[BookInput] = split.falses  # type: ignore[assignment]  # the branch took the rest
    keyed = op.key_on("key", deltas, lambda d: d.instrument)
    # From the buffer list: a book that lost its chain (late start, trimmed frame) re-syncs from the collector's
    # hash, and a list that stays silent for WS_STALE_AFTER marks the books stale. The WebSocket source does both.
    snapshots = None if via_ws else HashBookSnapshots(str(settings.redis_url))
    stale_after = None if via_ws else settings.ws_stale_after
    points_every_ms = int(settings.analysis_influx_interval * 1000)
    analysed = op.stateful_batch("analyse", keyed, lambda resume: AnalyseLogic(
        params, resume, snapshots, points_every_ms, stale_after))
    outputs = op.key_rm("unkey", analysed)
    to_redis: Stream[AnalysisSinkItem] = op.merge("to_redis", outputs, split.trues)
    op.output("redis", to_redis, AnalysisRedisSink(
        str(settings.redis_url), recipients=settings.analysis_alert_emails,
        history_max=settings.alerts_history_max, on_written=on_written, stream_maxlen=settings.stream_maxlen))
    points = op.flat_map("points", outputs, influx_points)
    op.output("influx", points, InfluxSink(influx_config(settings)))
    return flow


def _flow_from_env() -> Dataflow:
    settings = settings_or_exit()
    analysis_params_or_exit(settings)
    configure_logging(settings.log_level, settings.log_format)
    log.info("starting", source=settings.orderbook_source.value, buffer_key=settings.orderbook_buffer_key,
             alert_recipients=len(settings.analysis_alert_emails))
    return build(settings)


__getattr__ = lazy_flow(__name__, _flow_from_env)
