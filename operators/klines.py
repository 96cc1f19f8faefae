"""Kline (OHLCV) aggregation from trades: pure, exact (Decimal prices and volumes, integer epoch ms).

The shape of the computation (see ``operators/kline_steps.py`` for the Bytewax steps around it):

1. :func:`bucket_trades` folds the trades of one source batch into one :class:`Bucket` per instrument and
   UTC minute — a partial 1-minute kline. Windowing buckets instead of trades makes the per-item cost of
   Bytewax's window operator a per-batch cost.
2. Buckets of one minute are merged (:func:`merge`) by a 1-minute event-time window; its closed result is the
   1-minute kline.
3. :class:`Rollup` derives every longer timeframe (5m, 1h, 1d, ...) from the closed 1-minute klines, and fills
   minutes without trades with flat klines (open = high = low = close = previous close, volume 0). Merging
   minutes gives exactly the kline a window over the raw trades would give: open is the first trade of the
   earliest minute, close the last of the latest, high/low the extremes, volumes and counts the sums.

Windows are aligned to the UNIX epoch, hence to UTC midnight: every timeframe divides a day.
Order inside a window is event time (then arrival order for equal times), so a trade that arrives a little
late (within the allowed lateness) still lands at its place in open/close.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal

import msgspec

from operators.events import Kline, Trade

TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}
MINUTE_MS = 60_000
_ZERO = Decimal(0)


def window_start(ts_ms: int, tf_ms: int) -> int:
    """Start of the UTC-aligned window of length ``tf_ms`` that contains ``ts_ms``."""
    return ts_ms - ts_ms % tf_ms


class Bucket(msgspec.Struct, frozen=True):
    """Trades of one instrument within one window: a partial kline with the event-time span it covers."""

    venue: str
    instrument: str
    start_ms: int  # window start
    first_ms: int  # event time of the trade that gave `open`
    last_ms: int  # event time of the trade that gave `close`
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int
    gaps: int = 0  # trades that may have others missing right before them (Trade.gap): the kline is incomplete
    gap_open: bool = False  # the trade that gave `open` may have others missing right before it

    @property
    def key(self) -> str:
        return f"{self.venue}:{self.instrument}"


def merge(a: Bucket, b: Bucket) -> Bucket:
    """``a`` then ``b`` (arrival order): open from the earlier event time, close from the later (ties: ``b``)."""
    first_a = a.first_ms <= b.first_ms
    last_b = b.last_ms >= a.last_ms
    return Bucket(
        a.venue,
        a.instrument,
        a.start_ms,
        a.first_ms if first_a else b.first_ms,
        b.last_ms if last_b else a.last_ms,
        a.open if first_a else b.open,
        a.high if a.high >= b.high else b.high,
        a.low if a.low <= b.low else b.low,
        b.close if last_b else a.close,
        a.volume + b.volume,
        a.quote_volume + b.quote_volume,
        a.trades + b.trades,
        a.gaps + b.gaps,
        a.gap_open if first_a else b.gap_open,
    )


class _Acc:
    __slots__ = ("close", "first_ms", "gap_open", "gaps", "high", "last_ms", "low", "open", "quote_volume", "trades",
                 "volume")

    def __init__(self, t: Trade) -> None:
        self.first_ms = self.last_ms = t.ts_ms
        self.open = self.high = self.low = self.close = t.price
        self.volume = t.size
        self.quote_volume = t.price * t.size
        self.trades = t.count
        self.gaps = 1 if t.gap else 0
        self.gap_open = t.gap


def bucket_trades(trades: Iterable[Trade], window_ms: int = MINUTE_MS,
                  lateness_ms: int | None = None) -> list[Bucket]:
    """One :class:`Bucket` per (venue, instrument, window) of ``trades``, in order of first appearance.

    With ``lateness_ms``, a trade older than the newest trade of its instrument seen so far in the batch by
    more than ``lateness_ms`` is not merged into its window's bucket but gets a bucket of its own, placed
    after the newer ones: the window then judges it late exactly as if it had come in a batch of its own
    (a replay at full speed delivers whole minutes in one batch).
    """
    accs: dict[tuple[str, str, int, int], _Acc] = {}
    newest: dict[tuple[str, str], int] = {}
    stragglers = 0
    for t in trades:
        ts = t.ts_ms
        start = ts - ts % window_ms
        key = (t.venue, t.instrument, start, 0)
        if lateness_ms is not None:
            inst = (t.venue, t.instrument)
            top = newest.get(inst)
            if top is None or ts > top:
                newest[inst] = ts
            elif ts < top - lateness_ms:
                stragglers += 1
                accs[(t.venue, t.instrument, start, stragglers)] = _Acc(t)
                continue
        cur = accs.get(key)
        if cur is None:
            accs[key] = _Acc(t)
            continue
        price = t.price
        if ts < cur.first_ms:
            cur.first_ms = ts
            cur.open = price
            cur.gap_open = t.gap
        if ts >= cur.last_ms:
            cur.last_ms = ts
            cur.close = price
        if price > cur.high:
            cur.high = price
        elif price < cur.low:
            cur.low = price
        cur.volume += t.size
        cur.quote_volume += price * t.size
        cur.trades += t.count
        if t.gap:
            cur.gaps += 1
    return [
        Bucket(venue, inst, start, a.first_ms, a.last_ms, a.open, a.high, a.low, a.close, a.volume,
               a.quote_volume, a.trades, a.gaps, a.gap_open)
        for (venue, inst, start, _), a in accs.items()
    ]


def to_kline(b: Bucket, timeframe: str, *, closed: bool) -> Kline:
    tf_ms = TIMEFRAME_MS[timeframe]
    return Kline(b.venue, b.instrument, timeframe, b.start_ms, b.start_ms + tf_ms, b.open, b.high, b.low,
                 b.close, b.volume, b.quote_volume, b.trades, closed, complete=b.gaps == 0)


def from_kline(k: Kline) -> Bucket:
    """A closed kline as a bucket spanning its window (for rolling it up into a longer timeframe)."""
    return Bucket(k.venue, k.instrument, k.open_ms, k.open_ms, k.close_ms - 1, k.open, k.high, k.low, k.close,
                  k.volume, k.quote_volume, k.trades, 0 if k.complete else 1)


def flat_kline(venue: str, instrument: str, timeframe: str, start_ms: int, price: Decimal) -> Kline:
    """The kline of an interval without trades: every price the previous close, no volume."""
    return Kline(venue, instrument, timeframe, start_ms, start_ms + TIMEFRAME_MS[timeframe], price, price, price,
                 price, _ZERO, _ZERO, 0, True)


class Rollup(msgspec.Struct):
    """Derived timeframes of one instrument, fed with 1-minute klines in minute order.

    ``feed_closed`` takes the closed 1-minute kline of a minute and returns the closed klines it completes
    (flat 1-minute klines for skipped minutes first, then the minute itself, then every longer timeframe
    whose last minute it is). ``updating`` returns the current kline of every timeframe given the latest
    state of a still-open minute. State is small and picklable (Bytewax snapshots it).

    Trades may be missing before a trade flagged ``gap`` (a dropped message, a reconnect, a restart): the
    minutes between the last trade seen and it were not watched, so they are *unknown* — never filled flat
    (that would publish "no trades" for minutes the venue may have traded in). The minute holding the last
    trade before the gap (``tainted``) and every kline that overlaps an unknown minute are incomplete and
    :meth:`is_unknown`: the venue's kline (reconciliation, backfill, repair) is the record for them.
    """

    venue: str
    instrument: str
    timeframes: tuple[str, ...]  # longer than 1m
    accs: dict[str, Bucket] = msgspec.field(default_factory=dict)
    last_minute_ms: int | None = None  # start of the last closed minute
    last_close: Decimal | None = None
    first_full_ms: int | None = None  # windows starting at or after this were seen from their start
    unknown: tuple[int, int] | None = None  # the latest [start, end) of minutes not watched (see class doc)

    def _fold(self, minute: Kline) -> Iterator[Kline]:
        b = from_kline(minute)
        end = minute.close_ms
        for tf in self.timeframes:
            tf_ms = TIMEFRAME_MS[tf]
            acc = self.accs.get(tf)
            start = window_start(minute.open_ms, tf_ms)
            if acc is not None and acc.start_ms != start:  # defensive: an interval left unclosed
                yield to_kline(acc, tf, closed=True)
                acc = None
            if acc is None:
                acc = msgspec.structs.replace(b, start_ms=start)
                if self._overlaps_unknown(start, start + tf_ms):  # it began in minutes not watched
                    acc = msgspec.structs.replace(acc, gaps=acc.gaps + 1)
            else:
                acc = merge(acc, b)
            if end % tf_ms == 0:
                self.accs.pop(tf, None)
                yield to_kline(acc, tf, closed=True)
            else:
                self.accs[tf] = acc

    def _take(self, minute: Kline) -> Iterator[Kline]:
        self.last_minute_ms = minute.open_ms
        self.last_close = minute.close
        yield minute
        yield from self._fold(minute)

    def flat_until(self, end_ms: int, max_minutes: int) -> list[Kline]:
        """Flat 1-minute klines (and what they close) for every minute after the last closed one that ends
        at or before ``end_ms`` — at most ``max_minutes`` of them. Empty before the first trade."""
        out: list[Kline] = []
        if self.last_minute_ms is None or self.last_close is None:
            return out
        start = self.last_minute_ms + MINUTE_MS
        while start + MINUTE_MS <= end_ms and len(out) < max_minutes:
            flat = flat_kline(self.venue, self.instrument, "1m", start, self.last_close)
            out.extend(self._take(flat))
            start += MINUTE_MS
        return out

    def feed_closed(self, minute: Kline, max_gap_minutes: int = 1440, *, gap_open: bool = False,
                    tainted: bool = False) -> list[Kline]:
        """Take the closed kline of one minute; returns all klines it closes (see class doc).

        ``gap_open``: the minute's first trade follows a gap, so the empty minutes before it are unknown, not
        flat. ``tainted``: a later trade follows a gap and this minute holds the last trade before it, so trades
        may be missing from its end: it is incomplete and unknown."""
        if self.first_full_ms is None:
            self.first_full_ms = minute.close_ms
        last = self.last_minute_ms
        if last is not None and minute.open_ms <= last:
            return []  # that minute is already closed (a flat one filled in by the timer): caller reports it
        if gap_open and last is not None:
            out: list[Kline] = []
            if minute.open_ms > last + MINUTE_MS:
                self._mark_unknown(last + MINUTE_MS, minute.open_ms)
                self.last_minute_ms = minute.open_ms - MINUTE_MS
        else:
            out = self.flat_until(minute.open_ms, max_gap_minutes)
        if tainted:
            self._mark_unknown(minute.open_ms, minute.close_ms)
            minute = msgspec.structs.replace(minute, complete=False)
        out.extend(self._take(minute))
        return out

    def _mark_unknown(self, start_ms: int, end_ms: int) -> None:
        """Minutes ``[start_ms, end_ms)`` were not watched: the open longer intervals holding them are incomplete."""
        if self.unknown is not None and self.unknown[1] >= start_ms:  # contiguous with the last span: extend it
            start_ms = min(start_ms, self.unknown[0])
        self.unknown = (start_ms, end_ms)
        for tf, acc in self.accs.items():
            self.accs[tf] = msgspec.structs.replace(acc, gaps=acc.gaps + 1)

    def _overlaps_unknown(self, start_ms: int, end_ms: int) -> bool:
        return self.unknown is not None and start_ms < self.unknown[1] and end_ms > self.unknown[0]

    def is_unknown(self, k: Kline) -> bool:
        """Whether ``k`` overlaps minutes that were not watched (a closed one is then not ours to publish)."""
        return self._overlaps_unknown(k.open_ms, k.close_ms)

    def updating(self, open_minutes: Iterable[Kline]) -> list[Kline]:
        """Current (not closed) klines of every longer timeframe, given the open minutes' latest state."""
        out: list[Kline] = []
        mins = sorted(open_minutes, key=lambda k: k.open_ms)
        for tf in self.timeframes:
            tf_ms = TIMEFRAME_MS[tf]
            acc = self.accs.get(tf)
            for m in mins:
                start = window_start(m.open_ms, tf_ms)
                b = from_kline(m)
                if acc is None or acc.start_ms != start:
                    acc = msgspec.structs.replace(b, start_ms=start)
                else:
                    acc = merge(acc, b)
            if acc is not None:
                out.append(to_kline(acc, tf, closed=False))
        return out

    def is_complete(self, k: Kline) -> bool:
        """Whether ``k`` covers its whole interval (not the partial first one after start)."""
        return self.first_full_ms is not None and k.open_ms >= self.first_full_ms


def kline_fields_equal(ours: Kline, venue: Kline) -> bool:
    """Reconciliation rule: open/high/low/close/volume equal as numbers; trade counts when the venue has one."""
    same = (ours.open == venue.open and ours.high == venue.high and ours.low == venue.low
            and ours.close == venue.close and ours.volume == venue.volume)
    if venue.trades > 0 or ours.trades == 0:
        same = same and ours.trades == venue.trades
    return same
