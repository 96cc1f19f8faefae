"""Per-instrument analysis state: the shared book operator, the index beside it, the windows and alerts.

:class:`InstrumentAnalyzer` is the one value kept per instrument in Bytewax state. Each
:class:`~operators.events.BookDelta` goes to the book operator (``operators.orderbook``, shared with the
collector); when the book is ``valid`` afterwards the four analyses run and an :class:`AnalysisOutput`
carries the result and any alert transitions. When it is not valid, the output repeats the last values
with the current ``book_status`` and the windows are not fed.

Pickling drops the index (derived data, rebuilt from the book on the next update), so snapshots hold the
book, four bucketed windows, the trend clock and the alert levels.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from operators.analysis.alerts import AlertTracker
from operators.analysis.depth_anomaly import DepthAnomaly
from operators.analysis.index import BookIndex
from operators.analysis.large_orders import TrendTracker, large_total
from operators.analysis.liquidity import LiquidityShrink
from operators.analysis.params import AnalysisParams
from operators.analysis.support_resistance import bin_width_for, support_resistance, to_price
from operators.events import AlertEvent, AnalysisResult, BookDelta, BookStatus, BookView


class BookOperator(Protocol):
    """What the analyzer needs of ``operators.orderbook.OrderBook``."""

    @property
    def status(self) -> BookStatus: ...

    @property
    def seq_id(self) -> int | None: ...

    def apply(self, delta: BookDelta) -> Any: ...

    def view(self, levels: int = 400) -> BookView: ...

    def mark_stale(self) -> None: ...

    def mark_resyncing(self) -> None: ...


class AnalysisOutput(msgspec.Struct, frozen=True):
    result: AnalysisResult
    alerts: tuple[AlertEvent, ...] = ()
    analysed: bool = True  # False: the book was not valid, ``result`` repeats the last values
    points: bool = True  # False: no analysis_results points for this one (the dataflow's Influx rate limit)


class InstrumentAnalyzer:
    def __init__(self, instrument: str, book: BookOperator, params: AnalysisParams) -> None:
        self.instrument = instrument
        self.book = book
        self.index: BookIndex | None = None
        self.trend = TrendTracker()
        self.depth = DepthAnomaly(params)
        self.liquidity = LiquidityShrink(params)
        self.alerts = AlertTracker()
        self.last = AnalysisResult(instrument=instrument, analysis_ms=0, book_status=BookStatus.SYNCING)
        self.clock_ms = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["index"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _rebuild(self, params: AnalysisParams) -> BookIndex:
        view = self.book.view(params.book_depth)
        index = BookIndex.build(view.bids, view.asks, width=1.0, depth=params.book_depth)
        width = bin_width_for(index, params)
        if width is not None:
            index.rebin(width)
        return index

    def needs_snapshot(self, delta: BookDelta) -> bool:
        """True when ``delta`` cannot be applied before a snapshot (book syncing or re-syncing)."""
        return delta.action == "update" and self.book.status in (BookStatus.SYNCING, BookStatus.RESYNCING)

    def already_applied(self, delta: BookDelta) -> bool:
        """An update whose predecessor is older than the book (a replayed or duplicated frame, or one that a
        snapshot taken later already contains): skipping it keeps the book valid."""
        seq = self.book.seq_id
        return (delta.action == "update" and self.book.status is BookStatus.VALID and seq is not None
                and delta.prev_seq_id is not None and delta.seq_id is not None and delta.prev_seq_id < seq
                and delta.seq_id <= seq)

    def on_delta(self, delta: BookDelta, params: AnalysisParams) -> AnalysisOutput:
        if self.already_applied(delta):
            return AnalysisOutput(self.last, analysed=False)
        self.book.apply(delta)
        status = self.book.status
        if status is not BookStatus.VALID:
            self.index = None
            self.last = msgspec.structs.replace(
                self.last, book_status=status, recv_ns=delta.recv_ns, exchange_ms=delta.ts_ms,
            )
            return AnalysisOutput(self.last, analysed=False)
        index = self.index
        if index is None or delta.action == "snapshot" or index.updates >= params.index_rebuild_every:
            index = self.index = self._rebuild(params)
        else:
            index.apply(delta.bids, delta.asks)
        return self._analyse(index, delta, params)

    def on_status(self, status: BookStatus) -> AnalysisOutput:
        """The book's source reports a status change (the WebSocket source: re-syncing, stale, removed)."""
        if status is BookStatus.STALE:
            self.book.mark_stale()
        elif status is not BookStatus.VALID:
            self.book.mark_resyncing()
        self.index = None
        self.last = msgspec.structs.replace(self.last, book_status=self.book.status)
        return AnalysisOutput(self.last, analysed=False)

    def _analyse(self, index: BookIndex, delta: BookDelta, params: AnalysisParams) -> AnalysisOutput:
        ts = max(self.clock_ms, delta.ts_ms)
        self.clock_ms = ts
        s1, s2, r1, r2 = support_resistance(index, params)
        min_size = params.min_size(self.instrument)
        buy = large_total(index.bids, k=params.large_order_k, min_size=min_size)
        sell = large_total(index.asks, k=params.large_order_k, min_size=min_size)
        trend = self.trend.update(buy, sell, ts, margin=params.trend_margin, hold_ms=params.trend_hold_ms)
        bq, aq, bn, an, _mid = index.band(params.band_pct)
        score, depth_level = self.depth.update(ts, bq, aq, params)
        liq, liq_level = self.liquidity.update(ts, bn + an, params)
        result = AnalysisResult(
            instrument=self.instrument, analysis_ms=ts, book_status=BookStatus.VALID,
            support_level_1=s1, support_level_2=s2, resistance_level_1=r1, resistance_level_2=r2,
            large_buy_orders=to_price(buy, 8), large_sell_orders=to_price(sell, 8), large_order_trend=trend,
            depth_anomaly_score=score, depth_anomaly_alert=depth_level,
            liquidity_index=liq, liquidity_alert=liq_level, recv_ns=delta.recv_ns, exchange_ms=delta.ts_ms,
        )
        self.last = result
        events: list[AlertEvent] = []
        for alert_type, level, value, warning, alert, describe in (
            ("depth_anomaly", depth_level, score, params.depth_warning_z, params.depth_alert_z, "depth z-score"),
            ("liquidity_shrink", liq_level, liq, params.liquidity_warning, params.liquidity_alert, "liquidity index"),
        ):
            event = self.alerts.observe(
                self.instrument, alert_type, level, value=value, threshold=alert if level == "alert" else warning,
                ts_ms=ts, cooldown_ms=params.alert_cooldown_ms, describe=describe,
            )
            if event is not None:
                events.append(event)
        return AnalysisOutput(result, tuple(events))
