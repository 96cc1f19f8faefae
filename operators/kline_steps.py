"""The Bytewax logic of kline aggregation (no I/O): 1-minute window and rollup.

Wiring (``dataflows/market_data.py``): trades -> :func:`operators.klines.bucket_trades` per batch -> keyed
``venue:instrument`` -> ``windowing.window`` with :func:`operators.kline_clock.minute_clock`, a
``TumblingWindower`` of one minute aligned to midnight UTC and :class:`MinuteLogic` -> ``stateful_batch`` with
:class:`RollupLogic` (1m klines plus every longer timeframe, flat klines for empty minutes) -> sinks; closed
klines also go to :class:`operators.kline_reconcile.ReconcileLogic` with the venues' own closed klines.

Why one window and a rollup instead of one window per timeframe: each windower costs a full per-item pass
(BYTEWAX_NOTES.md); merging closed minutes into longer intervals gives exactly the same klines (see
``operators/klines.py``) at the cost of one small merge per minute.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import bytewax.operators as op
import bytewax.operators.windowing as win
import msgspec
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream, StatefulBatchLogic
from bytewax.operators.windowing import WindowLogic

from operators.events import Kline, Trade
from operators.kline_clock import minute_clock, minute_windower, never, utcnow
from operators.klines import (
    MINUTE_MS,
    TIMEFRAME_MS,
    Bucket,
    Rollup,
    bucket_trades,
    merge,
    to_kline,
)


class Minute(msgspec.Struct, frozen=True):
    """The state of one minute window after a bucket (``closed=False``) or when it closes."""

    bucket: Bucket
    closed: bool


class MinuteLogic(WindowLogic[Bucket, Minute, "Bucket | None"]):
    """Merges the buckets of one minute; emits the running state per bucket and the final one on close."""

    def __init__(self, state: Bucket | None) -> None:
        self.state = state

    def on_value(self, value: Bucket) -> Iterable[Minute]:
        self.state = value if self.state is None else merge(self.state, value)
        return (Minute(self.state, False),)

    def on_merge(self, original: MinuteLogic) -> Iterable[Minute]:  # tumbling windows never merge
        if original.state is not None:
            self.state = original.state if self.state is None else merge(original.state, self.state)
        return ()

    def on_close(self) -> Iterable[Minute]:
        return () if self.state is None else (Minute(self.state, True),)

    def snapshot(self) -> Bucket | None:
        return self.state  # frozen


class KlineOut(msgspec.Struct, frozen=True):
    """A kline for the sinks; ``complete`` when its interval was watched from its start (for reconciliation);
    ``correction`` when it replaces a flat kline already published for that minute; ``unknown`` when it
    overlaps minutes not watched (:meth:`operators.klines.Rollup.is_unknown`): only reconciled, never published
    — the venue's kline of that interval (over WebSocket, or the REST backfill and repair) is the record."""

    kline: Kline
    complete: bool = False
    correction: bool = False
    unknown: bool = False


@dataclass
class RollupState:
    rollup: Rollup
    open_minutes: dict[int, Kline]
    last_close_wall: datetime | None = None
    idle_fills: int = 0
    removed: bool = False  # the pair left the monitored set: no flat minutes until its trades resume
    gap_open_ms: int | None = None  # an open minute whose first trade follows a gap: the minutes before are unknown


class InstrumentRemoved(msgspec.Struct, frozen=True):
    """The instrument left the monitored set (``config:trading_pairs``): stop filling its empty minutes."""

    venue: str
    instrument: str


class RollupLogic(StatefulBatchLogic["Minute | InstrumentRemoved", KlineOut, "RollupState | None"]):
    """Per instrument: 1-minute klines from the window, every longer timeframe, flat klines for empty minutes.

    An updating kline of every timeframe is emitted once per batch that touched an open minute. Minutes with
    no trade never open a window, so a timer fills them: when one minute's length (+ ``grace``) has passed on
    the wall clock since the last minute closed and the next minute has not opened, it is closed flat — for
    at most ``max_idle_minutes`` in a row. Empty minutes seen when trades resume are filled the same way —
    unless the first trade after them follows a trade-id gap (a reconnect, or a restart from a recovery
    snapshot while the venue kept trading): then they were not watched, and the minute that held the last
    trade before the gap is incomplete (:meth:`operators.klines.Rollup.feed_closed`). The window emits a new
    minute's first state before it closes older minutes (Bytewax ``_flush_queue``: inserts, then closes), so
    the gap is known here when the minute before it closes. A pair removed from the monitored set
    (:class:`InstrumentRemoved`) gets no flat minutes, and starts afresh (partial first interval, no gap
    filling) if it comes back.
    """

    def __init__(self, timeframes: tuple[str, ...], state: RollupState | None, *, now: Callable[[], datetime],
                 grace: timedelta = timedelta(seconds=1), max_idle_minutes: int = 1440) -> None:
        self.longer = tuple(tf for tf in timeframes if TIMEFRAME_MS[tf] > MINUTE_MS)
        self.emit_minutes = "1m" in timeframes
        if state is not None and state.last_close_wall is not None:
            # resumed from a snapshot: the flat-minute timer restarts with the dataflow (the downtime, or a
            # resent feed catching up, is not a minute without trades)
            state.last_close_wall = max(state.last_close_wall, now())
        self.state = state
        self.now = now
        self.grace = grace
        self.max_idle = max_idle_minutes

    def _out(self, st: RollupState, klines: Iterable[Kline]) -> list[KlineOut]:
        r = st.rollup
        return [KlineOut(k, r.is_complete(k), unknown=r.is_unknown(k)) for k in klines
                if self.emit_minutes or k.timeframe != "1m"]

    @staticmethod
    def _tainted(st: RollupState, k: Kline) -> bool:
        """Whether closing minute ``k`` holds the last trade before a later minute's gap (no trades between)."""
        g = st.gap_open_ms
        return g is not None and k.open_ms < g and not any(k.open_ms < o < g for o in st.open_minutes)

    def on_batch(self, values: list[Minute | InstrumentRemoved]) -> tuple[Iterable[KlineOut], bool]:
        out: list[KlineOut] = []
        touched = False
        for m in values:
            if isinstance(m, InstrumentRemoved):
                if self.state is not None:
                    self.state.removed = True
                continue
            if self.state is None or (self.state.removed and not m.closed):
                self.state = RollupState(Rollup(m.bucket.venue, m.bucket.instrument, self.longer), {})
            st = self.state
            k = to_kline(m.bucket, "1m", closed=m.closed)
            last = st.rollup.last_minute_ms
            if not m.closed:
                st.open_minutes[k.open_ms] = k
                touched = True
                if m.bucket.gap_open and (last is None or k.open_ms > last + MINUTE_MS):
                    g = st.gap_open_ms
                    st.gap_open_ms = k.open_ms if g is None else min(g, k.open_ms)
                continue
            st.open_minutes.pop(k.open_ms, None)
            if last is not None and k.open_ms <= last:
                out.append(KlineOut(k, False, True, unknown=st.rollup.is_unknown(k)))
                continue
            tainted = self._tainted(st, k)
            if st.gap_open_ms is not None and k.open_ms >= st.gap_open_ms:
                st.gap_open_ms = None
            out.extend(self._out(st, st.rollup.feed_closed(k, gap_open=m.bucket.gap_open, tainted=tainted)))
            st.last_close_wall = self.now()
            st.idle_fills = 0
        final = self.state
        if final is None:
            return out, False
        if touched and self.emit_minutes:
            out.extend(KlineOut(k) for k in final.open_minutes.values())
        out.extend(KlineOut(k) for k in final.rollup.updating(final.open_minutes.values()))
        return out, False

    def notify_at(self) -> datetime | None:
        st = self.state
        if st is None or st.removed or st.last_close_wall is None or st.idle_fills >= self.max_idle:
            return None
        return st.last_close_wall + timedelta(milliseconds=MINUTE_MS) + self.grace

    def on_notify(self) -> tuple[Iterable[KlineOut], bool]:
        st = self.state
        if st is None or st.last_close_wall is None or st.rollup.last_minute_ms is None:
            return (), False
        last = st.rollup.last_minute_ms
        st.last_close_wall += timedelta(milliseconds=MINUTE_MS)
        if (last + MINUTE_MS) in st.open_minutes:  # trades arrived for it: its window will close it
            return (), False
        if st.gap_open_ms is not None:  # a later minute's first trade follows a gap: this one is unknown, not flat
            return (), False
        st.idle_fills += 1
        return self._out(st, st.rollup.flat_until(last + 2 * MINUTE_MS, 1)), False

    def snapshot(self) -> RollupState | None:
        return copy.deepcopy(self.state)


@dataclass(frozen=True)
class KlineStreams:
    klines: KeyedStream[KlineOut]  # updating and closed klines of every timeframe
    late: KeyedStream[Bucket]  # trades (bucketed per batch and minute) later than the allowed lateness
    buckets: Stream[Bucket]  # every batch's trades per instrument and minute (a ticker from trades uses them)


def aggregate_klines(trades: Stream[Trade], timeframes: tuple[str, ...], lateness_s: float,
                     *, now: Callable[[], datetime] = utcnow,
                     removals: Stream[InstrumentRemoved] | None = None,
                     hold_at_eof: Callable[[], bool] = never) -> KlineStreams:
    """Trades -> klines of ``timeframes``, keyed ``venue:instrument`` (steps ``bucket`` .. ``rollup``);
    ``removals`` tell the rollup which pairs left the monitored set. At the end of input every open minute
    closes (a finite replay is over), unless ``hold_at_eof()`` is true then (a live dataflow that is stopping:
    the open minutes stay in the state, for the recovery snapshot)."""
    lateness_ms = round(lateness_s * 1000)

    def bucket(batch: list[Trade]) -> list[Bucket]:
        return bucket_trades(batch, MINUTE_MS, lateness_ms)

    buckets = op.flat_map_batch("bucket", trades, bucket)
    keyed = op.key_on("key_bucket", buckets, _bucket_key)
    clock = minute_clock(lateness_s, now, hold_at_eof=hold_at_eof)
    windows = win.window("minute", keyed, clock, minute_windower(), MinuteLogic, ordered=False)
    minutes = op.map_value("minute_value", windows.down, _second)
    late = op.map_value("late_value", windows.late, _second)

    def builder(state: RollupState | None) -> RollupLogic:
        return RollupLogic(timeframes, state, now=now)

    rollup_in: KeyedStream[Minute | InstrumentRemoved] = minutes
    if removals is not None:
        keyed_removals = op.key_on("key_removed", removals, lambda r: f"{r.venue}:{r.instrument}")
        rollup_in = op.merge("rollup_in", minutes, keyed_removals)
    klines = op.stateful_batch("rollup", rollup_in, builder)
    return KlineStreams(klines, late, buckets)


def _bucket_key(b: Bucket) -> str:
    return b.key


def _second(pair: tuple[int, Any]) -> Any:
    return pair[1]
