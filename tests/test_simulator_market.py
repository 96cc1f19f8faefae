"""The simulator's pure parts: the synthetic market's invariants, the pregenerated cycle, the ``--faults`` spec."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.faults import FaultError, parse_spec
from simulator.instrument import InstrumentSpec
from simulator.market import DEPTH, SyntheticMarket
from simulator.pregen import Cycle


def _market(inst: str = "BTC-USDT", seed: int = 1) -> SyntheticMarket:
    return SyntheticMarket(InstrumentSpec.for_instrument(inst, seed), seed, 1_700_000_000_000)


def _levels(m: SyntheticMarket) -> tuple[dict[int, int], dict[int, int]]:
    return dict(m.bids.levels), dict(m.asks.levels)


INSTS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "ABC-BTC", "UNI-USD-SWAP"]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), inst=st.sampled_from(INSTS))
def test_market_keeps_a_full_uncrossed_book_and_reports_every_change(seed: int, inst: str) -> None:
    m = _market(inst, seed)
    for i in range(300):
        before = _levels(m)
        step = m.step(1_700_000_000_000 + i * 50)
        bids, asks = _levels(m)
        assert len(bids) == len(asks) == DEPTH
        assert m.bids.best() < m.asks.best()
        assert m.bids.top(DEPTH) == sorted(bids, reverse=True) and m.asks.top(DEPTH) == sorted(asks)
        assert all(lots > 0 for lots in [*bids.values(), *asks.values()])
        # the step's changes are exactly the difference (size 0 = removed)
        for side_before, side_after, changes in ((before[0], bids, step.bids), (before[1], asks, step.asks)):
            for tick in set(side_before) | set(side_after):
                if side_before.get(tick) != side_after.get(tick):
                    assert changes[tick] == side_after.get(tick, 0)
        for trade in step.trades:  # a trade takes what was resting on the other side
            resting = before[1] if trade.side == "buy" else before[0]
            assert 0 < trade.lots <= resting[trade.tick]


def test_klines_are_built_from_the_trades() -> None:
    m = _market("ETH-USDT", 3)
    trades = []
    for i in range(400):
        trades += m.step(1_700_000_000_000 + i * 50).trades
    k = m.klines["1m"]
    mine = [t for t in trades if t.ts_ms >= k.open_ms]
    assert k.trades == len(mine) and k.lots == sum(t.lots for t in mine)
    assert k.close == mine[-1].tick and k.high == max(t.tick for t in mine) and k.low == min(t.tick for t in mine)


def test_cycle_returns_to_the_same_book_every_lap() -> None:
    m = _market("SOL-USDT", 5)
    cycle = Cycle(m, 50, 0)
    start = _levels(m)
    seen = []
    for _ in range(2):
        for _ in range(100):
            cycle.next(0)
            assert m.bids.best() < m.asks.best()
            seen.append(_levels(m))
        assert _levels(m) == start
    assert seen[:100] == seen[100:]


def test_drain_and_spike() -> None:
    m = _market("ETH-USDT", 2)
    m.start_drain(0, 0.05, 0.01)
    for i in range(50):
        m.step(i)
    mid = m.mid()
    near = [lots for side in (m.bids, m.asks) for t, lots in side.levels.items() if abs(t - mid) <= 0.01 * mid]
    assert near and max(near) < m.unit  # every near-mid level stays small while the drain lasts
    m.stop_drain(0)
    m.depth_spike(0, True, 500, 2)
    tick = m.bids.at(2)
    for i in range(50):
        m.step(i)
    assert m.bids.levels.get(tick, 0) >= m.unit * 400  # ordinary flow leaves the spike alone


def test_fault_spec() -> None:
    assert parse_spec("gap@3,inst=BTC-USDT; refuse,seconds=2.5") == [
        (3.0, {"kind": "gap", "inst": "BTC-USDT"}), (0.0, {"kind": "refuse", "seconds": 2.5})]
    for bad in ("explode", "gap@soon", "gap,inst"):
        with pytest.raises(FaultError):
            parse_spec(bad)


def test_rolling_24h_statistics_stay_bounded() -> None:
    m = _market("BTC-USDT", 4)
    t0 = 1_700_000_000_000
    for i in range(3000):  # two simulated days, a step every minute
        m.step(t0 + i * 60_000)
    assert len(m.window) <= 1440
    high, low = m.high_low_24h()
    recent = list(m.window)
    assert high >= max(b[1] for b in recent) and low <= min(b[2] for b in recent)
    lots, _ = m.volume_24h()
    assert lots == sum(b[3] for b in recent)  # the seeded day has faded out; only the last 24 h count
