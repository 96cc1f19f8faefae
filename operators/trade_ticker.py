"""A rolling 24 h ticker computed from trades, for a venue that sends no ticker of its own (``local``).

Input: the per-batch minute :class:`operators.klines.Bucket` s of one instrument (already computed for the
klines, so the ticker costs a few operations per batch and instrument, not per trade). State: one
``[minute, open, high, low, volume]`` entry per minute with trades in the last 24 h (at most 1,440) and the
running volume. Output per update: ``price`` = the newest trade's price (by event time), ``high_24h`` /
``low_24h`` / ``volume_24h`` over the minutes that start within 24 h of the newest trade's minute,
``change_24h`` = (price - open of the oldest such minute) / that open in percent. No bid/ask (an exchange's
trade stream has no book). Minute resolution, as the venues' own rolling tickers.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal

import msgspec

from operators.events import Ticker
from operators.klines import MINUTE_MS, Bucket

DAY_MS = 86_400_000


class _Minute(msgspec.Struct, array_like=True):
    start_ms: int
    first_ms: int  # event time of `open` (a later bucket of the same minute may carry an earlier trade)
    open: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal


class TradeTicker(msgspec.Struct):
    """Per instrument (keyed upstream); ``update`` folds one batch's buckets in and returns the ticker."""

    minutes: deque[_Minute] = msgspec.field(default_factory=deque)
    volume: Decimal = Decimal(0)
    price: Decimal | None = None
    last_ms: int = 0
    # max high / min low over ``minutes``, kept as minutes change (None: to recompute, after the expiry of a
    # minute that held one, or state from before these fields): the ticker does not scan up to 1,440 minutes
    # on every batch
    high: Decimal | None = None
    low: Decimal | None = None

    def update(self, b: Bucket) -> Ticker | None:
        if b.last_ms >= self.last_ms:
            self.price, self.last_ms = b.close, b.last_ms
        self._add(b)
        self._expire()
        return self.ticker(b.venue, b.instrument)

    def _add(self, b: Bucket) -> None:
        ms = self.minutes
        m: _Minute | None = ms[-1] if ms and ms[-1].start_ms == b.start_ms else next(
            (x for x in reversed(ms) if x.start_ms == b.start_ms), None)
        if m is None:
            if ms and b.start_ms < ms[-1].start_ms:  # a late bucket of a minute without trades so far
                if b.start_ms <= self.last_ms - DAY_MS:
                    return  # older than the window: nothing to count
                i = next(i for i, x in enumerate(ms) if x.start_ms > b.start_ms)
                ms.insert(i, _Minute(b.start_ms, b.first_ms, b.open, b.high, b.low, b.volume))
            else:
                ms.append(_Minute(b.start_ms, b.first_ms, b.open, b.high, b.low, b.volume))
            self.volume += b.volume
            self._extremes(b)
            return
        if b.first_ms < m.first_ms:
            m.first_ms, m.open = b.first_ms, b.open
        if b.high > m.high:
            m.high = b.high
        if b.low < m.low:
            m.low = b.low
        m.volume += b.volume
        self.volume += b.volume
        self._extremes(b)

    def _extremes(self, b: Bucket) -> None:
        """A minute's high only rises and its low only falls: the running extremes follow exactly."""
        if self.high is not None and self.low is not None:
            if b.high > self.high:
                self.high = b.high
            if b.low < self.low:
                self.low = b.low

    def _expire(self) -> None:
        ms = self.minutes
        horizon = self.last_ms - self.last_ms % MINUTE_MS - DAY_MS  # minutes starting after this are kept
        while ms and ms[0].start_ms <= horizon:
            gone = ms.popleft()
            self.volume -= gone.volume
            if gone.high == self.high or gone.low == self.low:
                self.high = self.low = None

    def ticker(self, venue: str, instrument: str) -> Ticker | None:
        if self.price is None or not self.minutes:
            return None
        ms = self.minutes
        first_open = ms[0].open
        change = (self.price - first_open) * 100 / first_open if first_open else None
        if self.high is None or self.low is None:
            self.high, self.low = max(m.high for m in ms), min(m.low for m in ms)
        return Ticker(venue, instrument, self.price, None, None, self.volume, change, self.high, self.low,
                      self.last_ms)


def update_trade_ticker(state: TradeTicker | None, b: Bucket) -> tuple[TradeTicker, Ticker | None]:
    """``op.stateful_map`` form of :meth:`TradeTicker.update` (keyed by instrument)."""
    st = state or TradeTicker()
    return st, st.update(b)
