"""Recovery of ``market_data`` without double counting: the pieces (the end-to-end kill -9 test is
``tests/test_market_data_recovery.py``).

* the market source processor snapshots, per instrument, the newest trade it passed on and, resumed, drops
  the trades up to it (a feed that resends from the start is not aggregated twice), until a newer one arrives;
* the resumed event clock keeps the snapshot's watermark until the first item arrives (neither the downtime
  nor the time a resent feed takes to catch up turns the next trades into late ones).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from connectors.market.source import MarketProcessor, MarketStats, _binance_parse
from connectors.ws.events import Frame, TopicsChecked
from operators.events import Trade
from operators.kline_clock import minute_clock
from operators.klines import Bucket


class _Control:
    connections = 1
    reconnects = 0

    def resubscribe(self, topic: str) -> None: ...

    def fetch(self, topic: str) -> None: ...


def _frame(tid: int, ts: int, price: str = "1.5", sym: str = "ETHUSDT") -> Frame:
    return Frame(f'{{"stream":"{sym.lower()}@trade","data":{{"e":"trade","E":{ts},"s":"{sym}","t":{tid},'
                 f'"p":"{price}","q":"2","T":{ts},"m":false,"M":true}}}}', 1, 0)


def _processor() -> MarketProcessor:
    proc = MarketProcessor("binance", "binance", 0, _Control(), _binance_parse, primary="trade")
    topics = ("trade:ETH-USDT", "trade:BTC-USDT")
    proc.on_events([TopicsChecked(1, True, topics, topics)])
    return proc


def _ids(items: list[Any]) -> list[tuple[str, str]]:
    return [(t.instrument, t.trade_id) for t in items if isinstance(t, Trade)]


def test_resumed_processor_drops_trades_counted_before_the_snapshot() -> None:
    first = _processor()
    feed = [_frame(8, 1000), _frame(9, 1000), _frame(10, 1000), _frame(11, 1500), _frame(5, 2000, sym="BTCUSDT")]
    assert _ids(first.on_events(feed[:3])) == [("ETH-USDT", "8"), ("ETH-USDT", "9"), ("ETH-USDT", "10")]
    state = first.snapshot()
    assert state[0] == {"ETH-USDT": (1000, 2, "10")}  # numeric ids compare as numbers (9 < 10)

    resumed = _processor()
    resumed.resume(state)
    # the feed starts again from the beginning: 8, 9, 10 were counted; 11 and BTC's 5 were not
    assert _ids(resumed.on_events(feed)) == [("ETH-USDT", "11"), ("BTC-USDT", "5")]
    # once past the restored mark, an older trade (a late one) is passed on again: the window judges it
    assert _ids(resumed.on_events([_frame(7, 900)])) == [("ETH-USDT", "7")]
    assert resumed.snapshot()[0] == {"ETH-USDT": (1500, 2, "11"), "BTC-USDT": (2000, 1, "5")}
    (stats,) = resumed.on_tick(10**18)
    assert isinstance(stats, MarketStats) and dict(stats.counters)["market_replayed_trades"] == 3


def test_processor_without_resume_passes_everything() -> None:
    proc = _processor()
    out = proc.on_events([_frame(3, 1000), _frame(2, 900), _frame(3, 1000)])
    assert _ids(out) == [("ETH-USDT", "3"), ("ETH-USDT", "2"), ("ETH-USDT", "3")]  # no state: no dedup
    assert proc.snapshot()[0] == {"ETH-USDT": (1000, 1, "3")}


def _bucket(last_ms: int) -> Bucket:
    one = Decimal(1)
    return Bucket("binance", "ETH-USDT", last_ms - last_ms % 60_000, last_ms, last_ms, one, one, one, one, one,
                  one, 1)


class _Now:
    def __init__(self) -> None:
        self.t = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t


def test_resumed_clock_holds_the_snapshot_watermark_until_the_first_item() -> None:
    now = _Now()
    clock = minute_clock(2.0, now)
    logic = clock.build(None)
    logic.before_batch()
    event = datetime(2024, 8, 8, 23, 59, 30, tzinfo=UTC)
    _ts, wm = logic.on_item(_bucket(int(event.timestamp() * 1000)))
    assert wm == event - timedelta(seconds=2)
    state = logic.snapshot()

    now.t += timedelta(seconds=100)  # down for 100 s
    resumed = clock.build(state)
    resumed.before_batch()
    assert resumed.on_notify() == event - timedelta(seconds=2)  # not advanced by the downtime
    now.t += timedelta(seconds=50)  # a resent feed catching up: still no new item
    resumed.before_batch()
    assert resumed.on_notify() == event - timedelta(seconds=2)
    later = event + timedelta(seconds=1)
    resumed.before_batch()
    assert resumed.on_item(_bucket(int(later.timestamp() * 1000)))[1] == later - timedelta(seconds=2)
    now.t += timedelta(seconds=5)  # from the first item on, the system time moves it as before
    assert resumed.on_notify() == later + timedelta(seconds=3)

    fresh = clock.build(None)  # without a snapshot nothing is held
    fresh.before_batch()
    fresh.on_item(_bucket(int(event.timestamp() * 1000)))
    now.t += timedelta(seconds=5)
    assert fresh.on_notify() == event + timedelta(seconds=3)


def test_resumed_rollup_restarts_its_flat_minute_timer() -> None:
    from operators.kline_steps import Minute, RollupLogic

    now = _Now()
    logic = RollupLogic(("1m", "5m"), None, now=now)
    t0 = 1_723_161_600_000
    logic.on_batch([Minute(_bucket(t0 + 10_000), True)])
    assert logic.notify_at() == now.t + timedelta(seconds=61)
    state = logic.snapshot()
    now.t += timedelta(seconds=600)  # down for 10 minutes
    resumed = RollupLogic(("1m", "5m"), state, now=now)
    assert resumed.notify_at() == now.t + timedelta(seconds=61)  # not at once: no flat minute for the downtime
