"""Order-book analysis dataflow: raw OKX book frames -> book -> four analyses -> Redis / InfluxDB / alerts.

``python -m bytewax.run dataflows.orderbook_analysis`` (add ``-r DIR -s 5 -b 0`` for recovery after creating
the store with ``python -m bytewax.recovery DIR 1``).

Input (``ORDERBOOK_SOURCE``):

* ``redis`` (default): the buffer list ``ORDERBOOK_BUFFER_KEY`` (raw OKX v5 ``books`` frames, LPUSHed by the
  collector or any external producer, consumed FIFO) through ONE reliable partition of
  :class:`connectors.redis_list.ReliableRedisListSource` in ``recovery`` mode: a frame taken from the list sits
  in a processing list until a committed snapshot covers it, and frames consumed after the last committed
  snapshot are delivered again on resume. With recovery on: no frame lost after ``kill -9``, every frame
  counted exactly once in the analysis state, outputs at-least-once (alerts deduplicated by id).
* ``ws``: the OKX WebSocket directly, through the collector's OKX books source
  (:func:`connectors.okx.book_source.okx_books_source`: subscriptions from ``config:trading_pairs``, integrity
  checks and re-syncs); the raw frames it applied feed our analyzers, its status changes mark their books.
  At-most-once (a crash loses the frames in flight; the books re-sync from fresh snapshots on restart).

A book that cannot go on (no snapshot yet after a start without recovery state, or a gap in the list) is
re-synced from the collector's ``orderbook:{inst}`` hash (:mod:`connectors.book_snapshots`); frames older than
the book are skipped.

Frames are parsed (``connectors.okx.books.parse_books_frame``, bounded: a frame that cannot be used becomes a
typed rejection, counted by the Redis sink as ``rejected_<reason>`` / ``orderbook_analysis:rejected_<reason>`` in
``system:monitoring`` and logged once per reason; the next frames go on), keyed by instrument (so each instrument's
frames stay in order on one worker while instruments spread over workers) and fed to one
:class:`operators.analysis.InstrumentAnalyzer` per instrument (the shared ``operators.orderbook.OrderBook``
plus the analyses' windows), kept in Bytewax state and snapshotted as pickled bytes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source

from connectors.analysis_sink import AnalysisRedisSink, AnalysisSinkItem, RejectCounts, influx_points
from connectors.book_snapshots import HashBookSnapshots
from connectors.influx import InfluxSink
from connectors.okx.book_source import BookState, BufferFrame, ShardStats, okx_books_source
from connectors.okx.books import OkxParseError, parse_books_frame
from connectors.redis_list import AckMode, ListItem, ReliableRedisListSource
from connectors.untrusted import Rejected
from cryptoflow.connector_configs import influx_config, okx_books_config
from cryptoflow.entry import lazy_flow
from cryptoflow.logs import configure_logging, get_logger
from cryptoflow.settings import OrderbookSource, Settings, settings_or_exit
from operators.analysis import AnalysisOutput, AnalysisParams
from operators.analysis.step import AnalyseLogic, BookInput, StatusReport
from operators.events import BookDelta, BookStatus

log = get_logger("orderbook_analysis")
POLL_INTERVAL_S = 0.001  # an idle list is polled every 1 ms (one cheap round trip): latency over idle CPU


def analysis_params(settings: Settings) -> AnalysisParams:
    """The analyses' parameters from the settings (every ``ANALYSIS_*`` knob)."""
    return AnalysisParams(
        bin_width=settings.analysis_bin_width,
        large_order_k=settings.analysis_large_order_k,
        large_order_min_size=tuple(sorted(settings.analysis_large_order_min_size.items())),
        trend_margin=settings.analysis_trend_margin,
        trend_hold_ms=int(settings.analysis_trend_hold * 1000),
        band_pct=settings.analysis_band_pct,
        depth_window_ms=int(settings.analysis_depth_window * 1000),
        depth_warning_z=settings.analysis_depth_warning_z,
        depth_alert_z=settings.analysis_depth_alert_z,
        liquidity_window_ms=int(settings.analysis_liquidity_window * 1000),
        liquidity_warning=settings.analysis_liquidity_warning,
        liquidity_alert=settings.analysis_liquidity_alert,
        alert_cooldown_ms=int(settings.analysis_alert_cooldown * 1000),
        window_buckets=settings.analysis_window_buckets,
        window_min_fill=settings.analysis_window_min_fill,
        depth_min_std_pct=settings.analysis_depth_min_std_pct,
    )


Parsed = BookInput | Rejected | RejectCounts


def parse_frame(item: ListItem | bytes | str) -> Iterable[BookDelta | Rejected]:
    """One raw frame -> its book deltas; protocol chatter is dropped; a frame that cannot be used -> its typed
    rejection (the Redis sink counts it and logs it once per reason). Never raises on the frame's content."""
    raw = item.raw if isinstance(item, ListItem) else item
    parsed = parse_books_frame(raw, recv_ns=time.time_ns())
    if isinstance(parsed, tuple):
        return parsed
    if isinstance(parsed, OkxParseError):
        return (parsed,)
    return ()


def from_collector(item: object) -> Iterable[Parsed]:
    """``ORDERBOOK_SOURCE=ws``: the collector source's applied raw frames (REST re-syncs arrive as rendered
    snapshot frames) become deltas for our analyzers' books; its status changes mark them; the rejections its
    processor counted go to the Redis sink."""
    if isinstance(item, BufferFrame):
        return item.deltas or parse_frame(item.text)
    if isinstance(item, BookState):
        return (StatusReport(item.instrument, BookStatus.STALE if item.removed else item.status),)
    if isinstance(item, ShardStats):
        rejected = tuple(kv for kv in item.counters if "rejected_" in kv[0] and kv[0] != "rejected_pairs")
        return (RejectCounts(rejected),) if rejected else ()
    return ()


def _is_rejection(item: Parsed) -> bool:
    return isinstance(item, Rejected | RejectCounts)


def build(
    settings: Settings,
    *,
    source: Source[Any] | None = None,
    on_written: Callable[[list[AnalysisOutput]], None] | None = None,
) -> Dataflow:
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
    split = op.branch("rejected", parsed, _is_rejection)
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
    try:
        analysis_params(settings)
    except ValueError as err:  # a rule across two settings, e.g. the warning above the alert threshold
        print(f"cryptoflow: invalid ANALYSIS_* settings: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    log.info("starting", source=settings.orderbook_source.value, buffer_key=settings.orderbook_buffer_key,
             alert_recipients=len(settings.analysis_alert_emails))
    return build(settings)


__getattr__ = lazy_flow(__name__, _flow_from_env)
