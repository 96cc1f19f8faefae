"""``--pregenerate N``: a market served from a precomputed cycle of book steps, for throughput benchmarks.

N steps are generated once; the cycle then serves them undone in reverse (back to the starting book) and again
forward (back to the end), for ever. The book a client keeps stays exactly the simulator's book, seqIds keep
increasing, and every step object is reused, so venues can keep its encoded text (``Step.memo``) from the
first lap: later laps cost a string join per frame. Books only: such a market makes no trades (no trades,
tickers or kline updates) and takes no market faults.
"""

from __future__ import annotations

from simulator.market import Step, SyntheticMarket


def _undo(step: Step) -> Step:
    out = Step(step.ts_ms)
    for (is_bid, tick), lots in step.before.items():
        (out.bids if is_bid else out.asks)[tick] = lots
    out.memo = {}
    return out


class Cycle:
    def __init__(self, market: SyntheticMarket, steps: int, now_ms: int) -> None:
        market.record_before = True
        forward = [market.step(now_ms) for _ in range(steps)]
        market.record_before = False
        for step in forward:
            step.trades, step.closed, step.memo = [], [], {}
        self.market = market
        self.steps = [_undo(s) for s in reversed(forward)] + forward
        self.pos = 0

    def next(self, ts_ms: int) -> Step:
        step = self.steps[self.pos]
        self.pos = (self.pos + 1) % len(self.steps)
        bids, asks = self.market.bids, self.market.asks
        for tick, lots in step.bids.items():
            bids.set(tick, lots)
        for tick, lots in step.asks.items():
            asks.set(tick, lots)
        step.ts_ms = ts_ms
        return step
