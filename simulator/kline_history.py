"""Past klines of the synthetic market, for the venues' REST kline endpoints (``simulator/klines_rest.py``).

One source of truth, 1-minute bars in integer ticks and lots, and every longer interval merged from them:

* minutes before the simulator's first minute are **seeded history**: a deterministic function of
  ``(seed, instrument, minute)`` and of the start minute (a few slow waves plus per-minute noise, scaled so
  that the last seeded close is the live market's opening price); the same page asked twice is the same page;
* from the start minute on, the bars are the **live trades** themselves: each closed 1-minute kline of
  :class:`simulator.market.SyntheticMarket` (the ones its WebSocket kline channels publish) is kept, the open one
  is read from the market, and a past minute without a trade is flat at the previous close (volume 0).

So the klines a client fetches for a past interval are what aggregating the simulator's trades gives.
:class:`KlineHistory` is registered with the engine like a venue (it sees every step) but serves no socket.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from simulator.conn import Conn
from simulator.market import KLINE_SHIFT_MS, Step, SyntheticMarket

MINUTE_MS = 60_000
# interval name -> (length, shift of its window start); "1d_hk" is OKX's Hong Kong day (16:00 UTC)
INTERVALS_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
                "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "1d": 86_400_000, "1d_hk": 86_400_000}
MAX_MINUTES = 200_000  # a request covering more than this many minutes is refused (a day of 1d bars is 1,440)


class BadParameter(ValueError):
    """A request the venue would refuse (:mod:`simulator.klines_rest` answers it in the venue's error shape)."""


@dataclass(frozen=True)
class Bar:
    """One kline in the instrument's integer units: prices in ticks, volume in lots, quote in tick*lots."""

    open_ms: int
    open: int
    high: int
    low: int
    close: int
    lots: int
    quote: int
    trades: int


def window_start(interval: str, ts_ms: int) -> int:
    return ts_ms - (ts_ms + KLINE_SHIFT_MS.get(interval, 0)) % INTERVALS_MS[interval]


def merge(bars: list[Bar], open_ms: int) -> Bar:
    """The bars of one window (oldest first) as one kline stamped ``open_ms``."""
    return Bar(open_ms, bars[0].open, max(b.high for b in bars), min(b.low for b in bars), bars[-1].close,
               sum(b.lots for b in bars), sum(b.quote for b in bars), sum(b.trades for b in bars))


_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of ``x`` (cheaper than seeding a Random per minute)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class SeededHistory:
    """Deterministic 1-minute bars before ``start_minute`` (see the module docstring)."""

    def __init__(self, inst: str, seed: int, anchor: int, unit: int, start_minute: int) -> None:
        rng = random.Random(zlib.crc32(f"history:{seed}:{inst}".encode()))
        self._key = zlib.crc32(f"{seed}:{inst}".encode()) << 32
        # (amplitude, period in minutes, phase): an hour-scale ripple, a day-scale swing, a multi-day trend
        self._waves = [(rng.uniform(0.001, 0.003), rng.uniform(40, 120), rng.uniform(0, 2 * math.pi)),
                       (rng.uniform(0.005, 0.015), rng.uniform(600, 1800), rng.uniform(0, 2 * math.pi)),
                       (rng.uniform(0.02, 0.05), rng.uniform(4000, 9000), rng.uniform(0, 2 * math.pi))]
        self._anchor, self._unit = anchor, unit
        self._level = self._log_price(start_minute // MINUTE_MS)
        self.bar = lru_cache(maxsize=50_000)(self._bar)

    def _log_price(self, minute: int) -> float:
        noise = (self._uniform(minute, 0) - 0.5) * 0.0012
        return noise + sum(a * math.sin(2 * math.pi * minute / p + ph) for a, p, ph in self._waves)

    def _uniform(self, minute: int, salt: int) -> float:
        """A deterministic number in [0, 1) for (this instrument, minute, salt)."""
        return _mix(self._key ^ (minute * 8 + salt)) / 2**64

    def _tick(self, minute: int) -> int:
        return max(1, round(self._anchor * math.exp(self._log_price(minute) - self._level)))

    def _bar(self, open_ms: int) -> Bar:
        minute = open_ms // MINUTE_MS
        u = [self._uniform(minute, salt) for salt in range(1, 6)]
        first, last = self._tick(minute), self._tick(minute + 1)  # a close is the next minute's open
        wick = max(1, round(self._anchor * 0.0004))
        high = max(first, last) + int(u[0] * (wick + 1))
        low = max(1, min(first, last) - int(u[1] * (wick + 1)))
        lots = self._unit * (5 + int(u[2] * 56)) + int(u[3] * (self._unit + 1))
        return Bar(open_ms, first, high, low, last, lots, lots * ((high + low) // 2), 20 + int(u[4] * 381))


class KlineHistory:
    """Seeded history plus the live market's closed 1-minute klines, per instrument. Sees every step."""

    name = "kline_history"  # not a venue: it serves no connection, only ``bars()``

    def __init__(self, markets: dict[str, SyntheticMarket], seed: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._markets = markets
        self._clock = clock
        self.conns: set[Conn] = set()
        self.start_minute = {inst: window_start("1m", m.start_ms) for inst, m in markets.items()}
        self.seeded = {inst: SeededHistory(inst, seed, m.anchor, m.unit, self.start_minute[inst])
                       for inst, m in markets.items()}
        self.live: dict[str, dict[int, Bar]] = {inst: {} for inst in markets}

    # --- what the engine calls --------------------------------------------------------------------------------
    def on_step(self, inst: str, market: SyntheticMarket, step: Step) -> None:
        for k in step.closed:
            if k.interval == "1m" and k.trades:
                self.live[inst][k.open_ms] = Bar(k.open_ms, k.open, k.high, k.low, k.close, k.lots, int(k.quote),
                                                 k.trades)

    def on_idle(self, inst: str, market: SyntheticMarket) -> None:
        return None

    def book(self, inst: str) -> dict[str, Any]:
        msg = "kline_history has no book"
        raise KeyError(msg)

    def malformed(self, inst: str | None) -> int:
        return 0

    def raw(self, inst: str | None, text: str, count: int = 1) -> int:
        return 0

    def shutdown_notice(self) -> int:
        return 0

    # --- what the REST endpoints ask ----------------------------------------------------------------------
    def minute(self, inst: str, open_ms: int, previous: Bar | None) -> Bar:
        """The 1-minute bar opening at ``open_ms`` (``previous``: the bar before it, for a flat minute)."""
        if open_ms < self.start_minute[inst]:
            return self.seeded[inst].bar(open_ms)
        bar = self.live[inst].get(open_ms)
        if bar is not None:
            return bar
        k = self._markets[inst].klines["1m"]
        if k.open_ms == open_ms and k.trades:
            return Bar(k.open_ms, k.open, k.high, k.low, k.close, k.lots, int(k.quote), k.trades)
        close = previous.close if previous is not None else self._before(inst, open_ms)
        return Bar(open_ms, close, close, close, close, 0, 0, 0)

    def _before(self, inst: str, open_ms: int) -> int:
        """The close of the last bar before ``open_ms`` (a flat minute opens where the market last traded)."""
        k = self._markets[inst].klines["1m"]
        if k.trades and k.open_ms < open_ms:  # the open kline is the newest (closed only by a later trade)
            return k.close
        live = [t for t in self.live[inst] if t < open_ms]
        if live:
            return self.live[inst][max(live)].close
        start = self.start_minute[inst]
        return self.seeded[inst].bar(start - MINUTE_MS).close

    def bars(self, inst: str, interval: str, start_ms: int, end_ms: int) -> list[Bar]:
        """Klines of ``interval`` whose open time is in ``[start_ms, end_ms]``, oldest first, up to now
        (the last one may be the open, unfinished one)."""
        now_ms = int(self._clock() * 1000)
        first = window_start(interval, max(0, start_ms))
        if first < start_ms:
            first += INTERVALS_MS[interval]
        last = min(end_ms, now_ms)
        if last < first:
            return []
        if (last - first) // MINUTE_MS > MAX_MINUTES:
            msg = f"a request covers at most {MAX_MINUTES} minutes, this one {(last - first) // MINUTE_MS}"
            raise BadParameter(msg)
        out: list[Bar] = []
        previous: Bar | None = None
        step = INTERVALS_MS[interval]
        for open_ms in range(first, last + 1, step):
            minutes = []
            for m in range(open_ms, min(open_ms + step, now_ms - now_ms % MINUTE_MS + MINUTE_MS), MINUTE_MS):
                previous = self.minute(inst, m, previous)
                minutes.append(previous)
            out.append(merge(minutes, open_ms))
        return out
