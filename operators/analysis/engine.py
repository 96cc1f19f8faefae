"""Per-instrument analysis state: the shared book operator, the index beside it, the windows and alerts.

:class:`InstrumentAnalyzer` is the one value kept per instrument in Bytewax state. Each
:class:`~operators.events.BookDelta` goes to the book-sync machine (:mod:`operators.book_sync` with the OKX
rules, the same machine the collector runs: it skips what the book already holds, buffers while a snapshot is
fetched, re-syncs after a gap); when the book is ``valid`` afterwards the four analyses run and an
:class:`AnalysisOutput` carries the result and any alert transitions. When it is not valid, the output repeats
the last values with the current ``book_status`` and the windows are not fed.

Pickling drops the index (derived data, rebuilt from the book on the next update), so snapshots hold the
book, four bucketed windows, the trend clock and the alert levels.
"""

from __future__ import annotations

from typing import Any

import msgspec

from operators.analysis.alerts import AlertTracker
from operators.analysis.depth_anomaly import DepthAnomaly
from operators.analysis.index import BookIndex
from operators.analysis.large_orders import TrendTracker, large_total
from operators.analysis.liquidity import LiquidityShrink
from operators.analysis.params import AnalysisParams
from operators.analysis.support_resistance import bin_width_for, support_resistance, to_price
from operators.book_sequencing import OKX
from operators.book_sync import BookSync, Fed, FetchSnapshot, Invalidated, SnapshotFetched, SyncConfig, Tick
from operators.events import AlertEvent, AnalysisResult, BookDelta, BookStatus
from operators.orderbook import OrderBook


def _machine(instrument: str, book: OrderBook, fetch_snapshots: bool) -> BookSync:
    """The sync machine of one analysed book: OKX rules; no timers of its own (the step marks staleness by
    wall-clock time); re-synced by fetching a snapshot, or by waiting for one in the input."""
    sync = BookSync(OKX, SyncConfig(depth=book.depth, stale_after_ns=None, snapshot_wait_ns=None,
                                    resync_by="fetch" if fetch_snapshots else "none",
                                    fetch_missing=fetch_snapshots))
    sync.track(instrument, 0, book=book)  # its outputs: InstrumentAnalyzer._settle
    return sync


class AnalysisOutput(msgspec.Struct, frozen=True):
    result: AnalysisResult
    alerts: tuple[AlertEvent, ...] = ()
    analysed: bool = True  # False: the book was not valid, ``result`` repeats the last values
    points: bool = True  # False: no analysis_results points for this one (the dataflow's Influx rate limit)


class InstrumentAnalyzer:
    """One instrument: its book kept by the shared sync machine, the index beside it, the analyses' state.

    ``fetch_snapshots``: a book that cannot go on (no snapshot yet, a gap) asks for a snapshot
    (``wants_snapshot``; the caller answers with :meth:`on_snapshot`) and buffers its updates meanwhile;
    otherwise it waits for a snapshot in its input."""

    def __init__(self, instrument: str, book: OrderBook, params: AnalysisParams, *,
                 fetch_snapshots: bool = False) -> None:
        self.instrument = instrument
        self.wants_snapshot = False
        self.sync = _machine(instrument, book, fetch_snapshots)
        self._settle()
        self.index: BookIndex | None = None
        self.trend = TrendTracker()
        self.depth = DepthAnomaly(params)
        self.liquidity = LiquidityShrink(params)
        self.alerts = AlertTracker()
        self.last = AnalysisResult(instrument=instrument, analysis_ms=0, book_status=BookStatus.SYNCING)
        self.clock_ms = 0

    @property
    def book(self) -> OrderBook:
        book = self.sync.book(self.instrument)
        assert book is not None
        return book

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["index"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "sync" not in state:  # pickled before the sync machine: it held the book itself
            book = state.pop("book")
            state["sync"], state["wants_snapshot"] = _machine(state["instrument"], book, False), False
        self.__dict__.update(state)
        self._settle()

    def set_snapshot_fetching(self, fetch: bool) -> None:
        """After a resume: re-sync the way this run can (a snapshot provider, or none). The pickled machine may
        not know it (pickled before the machine, or with the other book source); a change starts a new machine
        on the same book (its status kept; one that lost sync re-syncs the new way)."""
        if (self.sync.resync_by == "fetch") is not fetch:
            self.wants_snapshot = False
            self.sync = _machine(self.instrument, self.book, fetch)
            self._settle()

    def _rebuild(self, params: AnalysisParams) -> BookIndex:
        view = self.book.view(params.book_depth)
        index = BookIndex.build(view.bids, view.asks, width=1.0, depth=params.book_depth)
        width = bin_width_for(index, params)
        if width is not None:
            index.rebin(width)
        return index

    def _settle(self) -> None:
        """The machine's outputs: a fetch becomes ``wants_snapshot``; states are read from the book."""
        for out in self.sync.drain():
            if type(out) is FetchSnapshot:
                self.wants_snapshot = True
        self.sync.counters.clear()  # the analysis reports no sync counters (the collector does)

    def on_delta(self, delta: BookDelta, params: AnalysisParams, now_ns: int | None = None) -> AnalysisOutput:
        fed = self.sync.on_delta(delta, now_ns=now_ns)
        self._settle()
        if fed is Fed.SKIPPED:  # already in the book (a replayed or duplicated frame, or held by a snapshot)
            return AnalysisOutput(self.last, analysed=False)
        if fed is not Fed.APPLIED:
            return self._not_valid(delta.recv_ns, delta.ts_ms)
        index = self.index
        if index is None or delta.action == "snapshot" or index.updates >= params.index_rebuild_every:
            index = self.index = self._rebuild(params)
        else:
            index.apply(delta.bids, delta.asks)
        return self._analyse(index, delta.ts_ms, delta.recv_ns, params)

    def on_snapshot(self, snapshot: BookDelta | None, params: AnalysisParams, now_ns: int) -> AnalysisOutput:
        """The answer to ``wants_snapshot`` (``None``: none to be had now; the machine asks again later)."""
        self.wants_snapshot = False
        self.sync.feed(SnapshotFetched(self.instrument, now_ns, snapshot, "" if snapshot else "no snapshot"))
        self._settle()
        book = self.book
        if book.status is not BookStatus.VALID:
            return self._not_valid(self.last.recv_ns, self.last.exchange_ms)
        index = self.index = self._rebuild(params)
        return self._analyse(index, book.ts_ms, book.recv_ns, params)

    def on_tick(self, now_ns: int) -> None:
        """Time passes: a re-sync spaced out by the machine's backoff may ask for its snapshot now."""
        self.sync.feed(Tick(now_ns))
        self._settle()

    def _not_valid(self, recv_ns: int, exchange_ms: int) -> AnalysisOutput:
        self.index = None
        self.last = msgspec.structs.replace(
            self.last, book_status=self.book.status, recv_ns=recv_ns, exchange_ms=exchange_ms,
        )
        return AnalysisOutput(self.last, analysed=False)

    def on_status(self, status: BookStatus, now_ns: int = 0) -> AnalysisOutput:
        """The book's source reports a status change (the WebSocket source: re-syncing, stale, removed)."""
        if status is not BookStatus.VALID:
            self.sync.feed(Invalidated(self.instrument, status, now_ns))
            self._settle()
        self.index = None
        self.last = msgspec.structs.replace(self.last, book_status=self.book.status)
        return AnalysisOutput(self.last, analysed=False)

    def _analyse(self, index: BookIndex, ts_ms: int, recv_ns: int, params: AnalysisParams) -> AnalysisOutput:
        ts = max(self.clock_ms, ts_ms)
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
            liquidity_index=liq, liquidity_alert=liq_level, recv_ns=recv_ns, exchange_ms=ts_ms,
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
