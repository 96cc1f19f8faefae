"""The Bytewax logic of the analysis step (no I/O of its own): one :class:`InstrumentAnalyzer` per key.

``stateful_batch("analyse", keyed, lambda resume: AnalyseLogic(params, resume, ...))``. Per batch it emits the
newest output plus every output that carries alerts (the hash sink keeps the newest per instrument anyway).
``snapshot()`` returns the pickled analyzer: immutable bytes, without the derived index.

* Re-sync: the analyzer's book-sync machine (:mod:`operators.book_sync`) decides when a book needs a snapshot
  (an update before any, a gap; retries spaced out by its backoff, on the wall clock read here once per
  batch); this step executes that command with the injected :class:`SnapshotProvider` (the collector's
  ``orderbook:{inst}`` hash in production) and feeds the answer back; the updates met meanwhile are buffered
  and replayed after it. Without a provider a book waits for a snapshot in its input.
* Stale: when no frame has arrived for ``stale_after_s`` seconds of wall-clock time, the book is marked
  ``stale`` and an output with that status is emitted (event time cannot tell that nothing arrives).
* Influx rate limit: ``points=False`` on outputs within ``points_every_ms`` (event time) of the last one that
  had points, unless it carries alerts.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import msgspec
from bytewax.operators import StatefulBatchLogic

from operators.analysis.engine import AnalysisOutput, InstrumentAnalyzer
from operators.analysis.params import AnalysisParams
from operators.events import BookDelta, BookStatus
from operators.orderbook import OrderBook


class StatusReport(msgspec.Struct, frozen=True):
    """A book status reported by the source (the WebSocket source: re-syncing, removed from the set)."""

    instrument: str
    status: BookStatus


BookInput = BookDelta | StatusReport


class SnapshotProvider(Protocol):
    def fetch(self, instrument: str) -> BookDelta | None: ...


class AnalyseLogic(StatefulBatchLogic[BookInput, AnalysisOutput, bytes]):
    def __init__(
        self, params: AnalysisParams, resume: bytes | None, snapshots: SnapshotProvider | None = None,
        points_every_ms: int = 0, stale_after_s: float | None = None,
    ) -> None:
        self.params = params
        self.analyzer: InstrumentAnalyzer | None = None if resume is None else pickle.loads(resume)
        if self.analyzer is not None:
            self.analyzer.set_snapshot_fetching(snapshots is not None)
        self.snapshots = snapshots
        self.points_every_ms = points_every_ms
        self.next_points_ms = 0  # event time from which the next analysis_results points are written
        self.stale_after = None if stale_after_s is None else timedelta(seconds=stale_after_s)
        self.deadline: datetime | None = None

    def _analyzer(self, first: BookInput) -> InstrumentAnalyzer:
        if self.analyzer is None:
            inst = first.instrument
            self.analyzer = InstrumentAnalyzer(inst, OrderBook(inst, depth=self.params.book_depth), self.params,
                                               fetch_snapshots=self.snapshots is not None)
        return self.analyzer

    def on_batch(self, values: list[BookInput]) -> tuple[Iterable[AnalysisOutput], bool]:
        analyzer = self._analyzer(values[0])
        now = time.time_ns()
        analyzer.on_tick(now)
        out: list[AnalysisOutput] = []
        last: AnalysisOutput | None = None
        for value in values:
            if isinstance(value, StatusReport):
                last = analyzer.on_status(value.status, now)
            else:
                last = analyzer.on_delta(value, self.params, now)
                if self.snapshots is not None and analyzer.wants_snapshot:  # the machine's command, executed
                    last = analyzer.on_snapshot(self.snapshots.fetch(analyzer.instrument), self.params, now)
            if last.alerts:
                out.append(last)
        if last is not None and (not out or out[-1] is not last):
            out.append(last)
        if self.stale_after is not None:
            self.deadline = datetime.now(UTC) + self.stale_after
        return [self._points_due(o) for o in out], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        analyzer = self.analyzer
        if analyzer is None or analyzer.book.status is not BookStatus.VALID:
            return None
        return self.deadline

    def on_notify(self) -> tuple[Iterable[AnalysisOutput], bool]:
        self.deadline = None
        if self.analyzer is None or self.analyzer.book.status is not BookStatus.VALID:
            return [], StatefulBatchLogic.RETAIN
        return [self.analyzer.on_status(BookStatus.STALE)], StatefulBatchLogic.RETAIN

    def _points_due(self, out: AnalysisOutput) -> AnalysisOutput:
        if not out.analysed:
            return out
        ts = out.result.analysis_ms
        if out.alerts or ts >= self.next_points_ms:
            self.next_points_ms = ts + self.points_every_ms
            return out
        return msgspec.structs.replace(out, points=False)

    def snapshot(self) -> bytes:
        return pickle.dumps(self.analyzer, protocol=pickle.HIGHEST_PROTOCOL)
