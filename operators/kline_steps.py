"""The Bytewax logic of kline aggregation (no I/O): event-time clock, 1-minute window, rollup, reconciliation.

Wiring (``dataflows/market_data.py``): trades -> :func:`operators.klines.bucket_trades` per batch -> keyed
``venue:instrument`` -> ``windowing.window`` with :func:`minute_clock`, a ``TumblingWindower`` of one minute
aligned to midnight UTC and :class:`MinuteLogic` -> ``stateful_batch`` with :class:`RollupLogic` (1m klines
plus every longer timeframe, flat klines for empty minutes) -> sinks; closed klines also go to
:class:`ReconcileLogic` with the venues' own closed klines.

Why one window and a rollup instead of one window per timeframe: each windower costs a full per-item pass
(BYTEWAX_NOTES.md); merging closed minutes into longer intervals gives exactly the same klines (see
``operators/klines.py``) at the cost of one small merge per minute.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
import bytewax.operators.windowing as win
import msgspec
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream, StatefulBatchLogic, StatefulLogic
from bytewax.operators.windowing import (
    Clock,
    ClockLogic,
    EventClock,
    TumblingWindower,
    WindowLogic,
)

from operators.events import Kline, Trade
from operators.klines import (
    MINUTE_MS,
    TIMEFRAME_MS,
    Bucket,
    Rollup,
    bucket_trades,
    kline_fields_equal,
    merge,
    to_kline,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIDNIGHT_UTC = EPOCH  # every UTC midnight is a whole number of minutes/hours/days from the epoch


def _utcnow() -> datetime:
    return datetime.now(UTC)


def ms_to_dt(ts_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ts_ms)


def _never() -> bool:
    return False


def _bucket_time(b: Bucket) -> datetime:
    return EPOCH + timedelta(milliseconds=b.last_ms)


class _ExactWakeClockLogic(ClockLogic[Any, Any]):
    """Bytewax's ``EventClock`` logic, asked to wake up exactly when the watermark reaches a close time.

    ``EventClock``'s default ``to_system_utc`` (identity) busy-loops a core until the watermark catches up
    (BYTEWAX_NOTES.md); ``ts + wait`` fixes that for live data only. Here the last watermark and the system
    time it was computed at give the exact system time of any later watermark (it advances with the system
    clock), so replays of old data and live data both sleep until the window really closes.
    """

    def __init__(self, inner: ClockLogic[Any, Any], now: Callable[[], datetime], *, held: bool = False,
                 hold_at_eof: Callable[[], bool] = _never) -> None:
        self._inner = inner
        self._hold_at_eof = hold_at_eof
        self._now_getter = now
        self._now = now()
        self._watermark: datetime | None = None
        self._held = held  # resumed from a snapshot: the watermark waits for the first item (see ExactWakeEventClock)

    def _hold(self) -> None:
        """Keep the restored watermark where it is: no system time has passed since the "max event"."""
        state = getattr(self._inner, "state", None)
        system_now = getattr(self._inner, "_system_now", None)
        if state is not None and system_now is not None and system_now > state.system_time_of_max_event:
            state.system_time_of_max_event = system_now

    def before_batch(self) -> None:
        self._inner.before_batch()
        if self._held:
            self._hold()
        self._now = self._now_getter()

    def on_item(self, value: Any) -> tuple[datetime, datetime]:
        ts, watermark = self._inner.on_item(value)
        self._held = False
        self._watermark = watermark
        return ts, watermark

    def on_notify(self) -> datetime:
        if self._held and hasattr(self._inner, "state"):
            self._inner.before_batch()
            self._hold()
            watermark: datetime = self._inner.state.watermark_base
        else:
            watermark = self._inner.on_notify()
        self._now = self._now_getter()
        self._watermark = watermark
        return watermark

    def on_eof(self) -> datetime:
        """The end of time when the input really ended (a replay, a test), else the watermark of now.

        A dataflow stopped by SIGINT/SIGTERM (``connectors/stopping.py``) ends its input too, but the minutes
        still open are not over: ``EventClock.on_eof`` would jump to ``UTC_MAX`` and make the window operator
        close them all, publishing partial klines as closed and dropping them from the recovery snapshot.
        Held, only the windows whose time really passed close; the open ones stay in the state (and the
        snapshot), and a restart with recovery continues them as after ``kill -9``.
        """
        if self._hold_at_eof():
            return self.on_notify()
        return self._inner.on_eof()

    def to_system_utc(self, timestamp: datetime) -> datetime | None:
        if self._watermark is None:
            return timestamp
        try:
            return self._now + (timestamp - self._watermark)
        except OverflowError:
            return timestamp

    def snapshot(self) -> Any:
        return self._inner.snapshot()


@dataclass(frozen=True)
class ExactWakeEventClock(Clock[Any, Any]):
    """An :class:`EventClock` (same watermark, same state) that wakes exactly when a window can close.

    Resumed from a snapshot (Bytewax recovery), the watermark does NOT advance with the system time that
    passed while the dataflow was down, nor while it waits for the first item of its key after the restart:
    it stays at the snapshot's watermark until an item arrives, then runs on as before. So a feed that
    resends from before the snapshot (a replay; deduplicated by the source, see
    ``connectors.market_source.MarketProcessor``) or a live feed that resumes a little later does not turn
    the trades right after the snapshot into late ones; the windows open at the snapshot close when the
    first later trade (or the system time after it) moves the watermark past them.

    At the end of input the windows all close (Bytewax's ``EventClock``), unless ``hold_at_eof()`` says the
    input ended only because the dataflow is stopping: then the open ones stay open (see ``on_eof``).
    """

    inner: EventClock[Any]
    now: Callable[[], datetime] = field(default=_utcnow)
    hold_at_eof: Callable[[], bool] = field(default=_never)

    def build(self, resume_state: Any | None) -> ClockLogic[Any, Any]:
        return _ExactWakeClockLogic(self.inner.build(resume_state), self.now, held=resume_state is not None,
                                    hold_at_eof=self.hold_at_eof)


def minute_clock(lateness_s: float, now: Callable[[], datetime] = _utcnow, *,
                 hold_at_eof: Callable[[], bool] = _never) -> ExactWakeEventClock:
    """Event time = the newest trade of a bucket; windows close ``lateness_s`` after the watermark passes
    (and all of them at the end of input, unless ``hold_at_eof()``)."""
    wait = timedelta(seconds=lateness_s)
    return ExactWakeEventClock(EventClock(_bucket_time, wait_for_system_duration=wait, now_getter=now), now,
                               hold_at_eof)


def minute_windower() -> TumblingWindower:
    return TumblingWindower(length=timedelta(minutes=1), align_to=MIDNIGHT_UTC)


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


class KlineCheck(msgspec.Struct, frozen=True):
    """A pipeline kline paired with the venue's own closed kline of the same interval: compared (``match``)
    when ours is complete, else ``replaced`` — the venue's kline is published in its place."""

    ours: Kline
    venue: Kline
    match: bool
    replaced: bool = False

    @property
    def replacement(self) -> KlineOut:
        """The venue's kline as ours would be published (complete: the venue saw every trade)."""
        return KlineOut(msgspec.structs.replace(self.venue, complete=True), complete=True)


def reconcilable(o: KlineOut) -> Kline | None:
    """A closed pipeline kline as :class:`ReconcileLogic` takes it (``None``: not one to pair); ``complete``
    only if gap-free (``Kline.complete``) and watched from its start (``KlineOut.complete``)."""
    k = o.kline
    if not k.closed or o.correction:
        return None
    return k if o.complete or not k.complete else msgspec.structs.replace(k, complete=False)


class ReconcileLogic(StatefulLogic[Kline, KlineCheck, dict[tuple[str, int, str], Kline]]):
    """Pairs closed klines of one instrument by (timeframe, open time) across sources.

    Items are closed pipeline klines and the venue's closed klines; whichever comes first waits (at most
    ``keep`` per instrument, oldest dropped: a venue timeframe we do not aggregate simply never pairs). A
    complete pipeline kline is compared with the venue's; an incomplete one (a trade-id gap, or an interval
    not watched from its start) is replaced by the venue's. Complete ones are never replaced: when we saw
    every trade, our kline is the record (with its quote volume), and a disagreement is a mismatch to report.
    """

    def __init__(self, state: dict[tuple[str, int, str], Kline] | None, keep: int = 256) -> None:
        self.pending: dict[tuple[str, int, str], Kline] = dict(state or {})
        self.keep = keep

    def on_item(self, value: Kline) -> tuple[Iterable[KlineCheck], bool]:
        other_source = "venue" if value.source == "pipeline" else "pipeline"
        other = self.pending.pop((value.timeframe, value.open_ms, other_source), None)
        if other is None:
            self.pending[(value.timeframe, value.open_ms, value.source)] = value
            if len(self.pending) > self.keep:  # the longest waiting one (insertion order): O(1)
                del self.pending[next(iter(self.pending))]
            return (), False
        ours, venue = (value, other) if value.source == "pipeline" else (other, value)
        if not ours.complete:
            return (KlineCheck(ours, venue, False, replaced=True),), False
        return (KlineCheck(ours, venue, kline_fields_equal(ours, venue)),), False

    def snapshot(self) -> dict[tuple[str, int, str], Kline]:
        return dict(self.pending)


@dataclass(frozen=True)
class KlineStreams:
    klines: KeyedStream[KlineOut]  # updating and closed klines of every timeframe
    late: KeyedStream[Bucket]  # trades (bucketed per batch and minute) later than the allowed lateness
    buckets: Stream[Bucket]  # every batch's trades per instrument and minute (a ticker from trades uses them)


def aggregate_klines(trades: Stream[Trade], timeframes: tuple[str, ...], lateness_s: float,
                     *, now: Callable[[], datetime] = _utcnow,
                     removals: Stream[InstrumentRemoved] | None = None,
                     hold_at_eof: Callable[[], bool] = _never) -> KlineStreams:
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
