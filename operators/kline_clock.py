"""The event-time clock and windower of kline aggregation (no I/O): a minute window aligned to UTC midnight.

:func:`minute_clock` is Bytewax's ``EventClock`` over each bucket's newest trade, wrapped so that it wakes exactly
when a window can close (:class:`ExactWakeEventClock`), holds its watermark across a recovery restart, and can
keep the open minutes open at the end of input when the dataflow is only stopping. Used by
:func:`operators.kline_steps.aggregate_klines`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.operators.windowing import Clock, ClockLogic, EventClock, TumblingWindower

from operators.klines import Bucket

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIDNIGHT_UTC = EPOCH  # every UTC midnight is a whole number of minutes/hours/days from the epoch


def utcnow() -> datetime:
    return datetime.now(UTC)


def ms_to_dt(ts_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ts_ms)


def never() -> bool:
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
                 hold_at_eof: Callable[[], bool] = never) -> None:
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
    ``connectors.market.source.MarketProcessor``) or a live feed that resumes a little later does not turn
    the trades right after the snapshot into late ones; the windows open at the snapshot close when the
    first later trade (or the system time after it) moves the watermark past them.

    At the end of input the windows all close (Bytewax's ``EventClock``), unless ``hold_at_eof()`` says the
    input ended only because the dataflow is stopping: then the open ones stay open (see ``on_eof``).
    """

    inner: EventClock[Any]
    now: Callable[[], datetime] = field(default=utcnow)
    hold_at_eof: Callable[[], bool] = field(default=never)

    def build(self, resume_state: Any | None) -> ClockLogic[Any, Any]:
        return _ExactWakeClockLogic(self.inner.build(resume_state), self.now, held=resume_state is not None,
                                    hold_at_eof=self.hold_at_eof)


def minute_clock(lateness_s: float, now: Callable[[], datetime] = utcnow, *,
                 hold_at_eof: Callable[[], bool] = never) -> ExactWakeEventClock:
    """Event time = the newest trade of a bucket; windows close ``lateness_s`` after the watermark passes
    (and all of them at the end of input, unless ``hold_at_eof()``)."""
    wait = timedelta(seconds=lateness_s)
    return ExactWakeEventClock(EventClock(_bucket_time, wait_for_system_duration=wait, now_getter=now), now,
                               hold_at_eof)


def minute_windower() -> TumblingWindower:
    return TumblingWindower(length=timedelta(minutes=1), align_to=MIDNIGHT_UTC)
