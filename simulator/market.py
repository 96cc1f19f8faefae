"""A seeded synthetic market for one instrument: a 400-level book on integer ticks, trades that consume it,
rolling 24 h ticker statistics and klines built from those trades. No venue format, no I/O.

Prices are integer ticks (``tick * tick_size``) and sizes integer lots (``lots * 10**-size_decimals``), so
nothing is ever a float key; :class:`simulator.instrument.InstrumentSpec` turns them into the exact strings a
venue sends. One :meth:`SyntheticMarket.step` is one book update: a :class:`Step` with the changed levels
(size 0 = removed) and the trades that caused them. A step with no change is a heartbeat.
"""

from __future__ import annotations

import random
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from simulator.instrument import InstrumentSpec
from simulator.side_book import BookViewLots, SideBook

DEPTH = 400

KLINE_INTERVALS_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000,
                      "1d_hk": 86_400_000}
# Intervals whose windows do not start at UTC midnight: OKX's plain daily candle (``candle1D``) follows Hong
# Kong time (UTC+8), so its day opens at 16:00 UTC. Every other interval is aligned to UTC.
KLINE_SHIFT_MS = {"1d_hk": 8 * 3_600_000}


def kline_start(interval: str, ts_ms: int) -> int:
    """Open time of the ``interval`` window holding ``ts_ms`` (UTC-aligned unless :data:`KLINE_SHIFT_MS`)."""
    return ts_ms - (ts_ms + KLINE_SHIFT_MS.get(interval, 0)) % KLINE_INTERVALS_MS[interval]


@dataclass(frozen=True)
class Trade:
    trade_id: int
    tick: int
    lots: int
    side: str  # taker side: "buy" or "sell"
    ts_ms: int


@dataclass
class Step:
    ts_ms: int
    bids: dict[int, int] = field(default_factory=dict)  # tick -> lots, 0 = removed
    asks: dict[int, int] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    closed: list[Kline] = field(default_factory=list)  # klines that this step's trades closed
    # (is_bid, tick) -> lots before this step; filled only while SyntheticMarket.record_before is set
    before: dict[tuple[bool, int], int] = field(default_factory=dict)
    memo: dict[str, Any] | None = None  # venues' pre-encoded text of a step that is served again (--pregenerate)

    @property
    def heartbeat(self) -> bool:
        return not self.bids and not self.asks


@dataclass
class Kline:
    interval: str
    open_ms: int
    open: int
    high: int
    low: int
    close: int
    lots: int = 0
    quote: float = 0.0
    trades: int = 0
    first_trade_id: int = 0
    last_trade_id: int = 0
    closed: bool = False

    @property
    def close_ms(self) -> int:
        return self.open_ms + KLINE_INTERVALS_MS[self.interval] - 1


class SyntheticMarket:
    """The market of one instrument. Deterministic for a given seed and sequence of calls."""

    def __init__(self, spec: InstrumentSpec, seed: int, now_ms: int) -> None:
        self.spec = spec
        self.rng = random.Random(zlib.crc32(f"market:{seed}:{spec.inst_id}".encode()))
        rng = self.rng
        self.bids = SideBook(is_bid=True)
        self.asks = SideBook(is_bid=False)
        self.anchor = round(spec.initial_price * 10**spec.price_decimals)
        # typical level size: ~3,000 quote units
        self.unit = max(1, round(3000.0 / spec.initial_price * 10**spec.size_decimals))
        self.next_trade_id = rng.randrange(100_000_000, 900_000_000)
        self.drain: tuple[float, float] | None = None  # (fraction, band) while a liquidity drain lasts
        self._uncross: tuple[bool, int] | None = None
        self.pinned: set[tuple[bool, int]] = set()  # depth-spike levels that ordinary flow leaves alone
        self.record_before = False  # keep each step's prior sizes (Step.before), for pregen.Cycle
        self.hidden_trades = 0  # the trade_gap fault: trades still to leave out of Step.trades (ids skip them)
        mid = self.anchor
        for side, sign in ((self.bids, -1), (self.asks, 1)):
            tick = mid + sign * rng.randint(1, 2)
            while len(side) < DEPTH:
                side.set(tick, self._new_size(tick))
                tick += sign * rng.choice((1, 1, 1, 2, 3))
        # 24 h statistics: a seeded day before start, then the real trades of this run.
        self.open_24h = round(mid * rng.uniform(0.97, 1.03))
        self.high_24h = max(mid, self.open_24h) + round(mid * rng.uniform(0.002, 0.02))
        self.low_24h = min(mid, self.open_24h) - round(mid * rng.uniform(0.002, 0.02))
        self.base_lots_24h = self.unit * rng.randint(20_000, 60_000)
        self.base_quote_24h = self.base_lots_24h * mid
        # this run's trades per minute, for 24 h: [minute_ms, high, low, lots, quote]; bounded (1,440 entries)
        self.window: deque[list[int]] = deque()
        self.run_lots = 0
        self.run_quote = 0
        self.start_ms = now_ms
        self.last_trade: Trade = Trade(self.next_trade_id - 1, mid, self.unit, "buy", now_ms)
        self.trade_count = 0
        self.klines: dict[str, Kline] = {
            name: Kline(name, kline_start(name, now_ms), mid, mid, mid, mid) for name in KLINE_INTERVALS_MS
        }

    # --- state ----------------------------------------------------------------------------------------------
    def mid(self) -> float:
        return (self.bids.best() + self.asks.best()) / 2

    def view(self, depth: int) -> BookViewLots:
        """The top ``depth`` levels per side, tick -> lots (what a ``depth``-level channel shows now)."""
        return ({t: self.bids.levels[t] for t in self.bids.top(depth)},
                {t: self.asks.levels[t] for t in self.asks.top(depth)})

    def _new_size(self, tick: int) -> int:
        lots = max(1, int(self.unit * self.rng.expovariate(1.0)) + 1)
        return self._drained(tick, lots)

    def _drained(self, tick: int, lots: int) -> int:
        if self.drain is not None:
            fraction, band = self.drain
            mid = self.mid() if len(self.bids) and len(self.asks) else self.anchor
            if abs(tick - mid) <= band * mid:
                return max(1, int(lots * fraction))
        return lots

    # --- one update -----------------------------------------------------------------------------------------
    def step(self, now_ms: int) -> Step:
        out = Step(now_ms)
        rng = self.rng
        if self._uncross is not None:
            is_bid, tick = self._uncross
            self._uncross = None
            self._set(out, is_bid, tick, 0)
        if rng.random() < 0.03:
            return out  # no change this time: the venue sends a heartbeat
        if rng.random() < 0.35:
            # a market order walks the other side; pulled back towards the anchor price
            drift = (self.mid() - self.anchor) / self.anchor
            self._market_order(out, rng.random() < 0.5 - drift * 50, now_ms)
        for _ in range(rng.randint(2, 6)):
            is_bid = rng.random() < 0.5
            side = self.bids if is_bid else self.asks
            depth = min(int(rng.expovariate(0.15)), len(side) - 1)
            tick = side.at(depth) if rng.random() < 0.7 else side.best() + (depth if not is_bid else -depth)
            if (is_bid, tick) in self.pinned:
                continue
            if tick in side.levels and rng.random() < 0.3:
                self._set(out, is_bid, tick, 0)
            else:
                self._set(out, is_bid, tick, self._new_size(tick))
        self._refill(out)
        return out

    def _set(self, out: Step, is_bid: bool, tick: int, lots: int) -> None:
        side = self.bids if is_bid else self.asks
        if lots == 0 and tick not in side.levels:
            return
        if self.record_before and (is_bid, tick) not in out.before:
            out.before[(is_bid, tick)] = side.levels.get(tick, 0)
        side.set(tick, lots)
        (out.bids if is_bid else out.asks)[tick] = lots
        if lots == 0 and self.pinned:
            self.pinned.discard((is_bid, tick))

    def _market_order(self, out: Step, buy: bool, now_ms: int) -> None:
        side = self.asks if buy else self.bids
        want = max(1, int(self.unit * self.rng.expovariate(0.8)))
        while want > 0 and len(side) > 1:
            tick = side.best()
            have = side.levels[tick]
            take = min(have, want)
            want -= take
            self._set(out, not buy, tick, have - take)
            self._record_trade(out, tick, take, "buy" if buy else "sell", now_ms)

    def _record_trade(self, out: Step, tick: int, lots: int, side: str, now_ms: int) -> None:
        trade = Trade(self.next_trade_id, tick, lots, side, now_ms)
        self.next_trade_id += 1
        self.trade_count += 1
        if self.hidden_trades > 0:
            # happened (book, 24 h statistics and the venues' own klines count it) but no venue sends it: the
            # receivers see a hole in the trade ids
            self.hidden_trades -= 1
        else:
            out.trades.append(trade)
        self.last_trade = trade
        minute, window = now_ms - now_ms % 60_000, self.window
        if window and window[-1][0] == minute:
            bucket = window[-1]
            bucket[1], bucket[2] = max(bucket[1], tick), min(bucket[2], tick)
            bucket[3] += lots
            bucket[4] += lots * tick
        else:
            window.append([minute, tick, tick, lots, lots * tick])
            while window[0][0] <= now_ms - 86_400_000:
                old = window.popleft()
                self.run_lots -= old[3]
                self.run_quote -= old[4]
        self.run_lots += lots
        self.run_quote += lots * tick
        for kline in list(self.klines.values()):
            self._kline_add(out, kline, trade)

    def _kline_add(self, out: Step, kline: Kline, trade: Trade) -> None:
        ms = KLINE_INTERVALS_MS[kline.interval]
        if trade.ts_ms >= kline.open_ms + ms:
            kline.closed = True
            out.closed.append(kline)
            start = kline_start(kline.interval, trade.ts_ms)
            self.klines[kline.interval] = kline = Kline(kline.interval, start, trade.tick, trade.tick, trade.tick,
                                                        trade.tick)
        if kline.trades == 0:
            kline.open = kline.high = kline.low = trade.tick
            kline.first_trade_id = trade.trade_id
        kline.high = max(kline.high, trade.tick)
        kline.low = min(kline.low, trade.tick)
        kline.close = trade.tick
        kline.lots += trade.lots
        kline.quote += trade.lots * trade.tick
        kline.trades += 1
        kline.last_trade_id = trade.trade_id

    def _refill(self, out: Step) -> None:
        rng = self.rng
        for is_bid, side, sign in ((True, self.bids, -1), (False, self.asks, 1)):
            # keep the spread tight: a new best level when it opened up
            other = self.asks if is_bid else self.bids
            gap = (other.best() - side.best()) * -sign
            if gap > 3:
                tick = side.best() - sign * rng.randint(1, gap // 2)
                self._set(out, is_bid, tick, self._new_size(tick))
            while len(side) > DEPTH:
                self._set(out, is_bid, side.worst(), 0)
            while len(side) < DEPTH:
                tick = side.worst() + sign * rng.choice((1, 1, 2, 3))
                self._set(out, is_bid, tick, self._new_size(tick))

    # --- market faults --------------------------------------------------------------------------------------
    def start_drain(self, now_ms: int, fraction: float, band: float) -> Step:
        """Shrink every level within ``band`` of mid to ``fraction`` of its size, and keep new ones small."""
        out = Step(now_ms)
        self.drain = (fraction, band)
        mid = self.mid()
        for is_bid, side in ((True, self.bids), (False, self.asks)):
            for tick, lots in list(side.levels.items()):
                if abs(tick - mid) <= band * mid:
                    self._set(out, is_bid, tick, max(1, int(lots * fraction)))
        return out

    def stop_drain(self, now_ms: int) -> Step:
        out = Step(now_ms)
        if self.drain is None:
            return out
        _, band = self.drain
        self.drain = None
        mid = self.mid()
        for is_bid, side in ((True, self.bids), (False, self.asks)):
            for tick in list(side.levels):
                if abs(tick - mid) <= band * mid:
                    self._set(out, is_bid, tick, self._new_size(tick))
        return out

    def depth_spike(self, now_ms: int, is_bid: bool, multiple: float, distance: int) -> Step:
        """A very large order ``distance`` levels from the best on one side (``multiple`` x a usual level).

        It stays (only trades can eat into it) until :meth:`clear_spikes`."""
        out = Step(now_ms)
        side = self.bids if is_bid else self.asks
        tick = side.at(distance)
        self._set(out, is_bid, tick, max(side.levels[tick], int(self.unit * multiple)))
        self.pinned.add((is_bid, tick))
        return out

    def clear_spikes(self, now_ms: int) -> Step:
        out = Step(now_ms)
        for is_bid, tick in sorted(self.pinned):
            side = self.bids if is_bid else self.asks
            if tick in side.levels:
                self._set(out, is_bid, tick, self._new_size(tick))
        self.pinned.clear()
        return out

    def crossed(self, now_ms: int) -> Step:
        """A bid at the best ask price: a crossed book, taken back at the next step."""
        out = Step(now_ms)
        tick = self.asks.best()
        self._set(out, True, tick, self._new_size(tick))
        self._uncross = (True, tick)
        return out

    def high_low_24h(self) -> tuple[int, int]:
        """Highest and lowest price (ticks) of the rolling 24 h: the seeded day's range and this run's trades."""
        high = max((b[1] for b in self.window), default=self.high_24h)
        low = min((b[2] for b in self.window), default=self.low_24h)
        return max(high, self.high_24h), min(low, self.low_24h)

    def volume_24h(self) -> tuple[int, float]:
        """(lots, quote in tick*lot units) over the rolling 24 h: the seeded day, fading out, plus real trades."""
        now = self.last_trade.ts_ms if self.window else self.start_ms
        fade = max(0.0, 1.0 - (now - self.start_ms) / 86_400_000)
        return int(self.base_lots_24h * fade) + self.run_lots, self.base_quote_24h * fade + self.run_quote
