"""Kline aggregation: pure operators (hypothesis against a naive model) and the Bytewax steps (run_main)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import bytewax.operators as op
import msgspec
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.events import Kline, Trade
from operators.kline_clock import minute_clock
from operators.kline_reconcile import ReconcileLogic
from operators.kline_steps import (
    InstrumentRemoved,
    KlineOut,
    Minute,
    RollupLogic,
    aggregate_klines,
)
from operators.klines import Bucket, Rollup, bucket_trades, kline_fields_equal, merge, to_kline

T0 = 1_723_161_600_000  # 2024-08-09 00:00:00 UTC


def trade(ts: int, price: str, size: str = "1", inst: str = "BTC-USDT", count: int = 1) -> Trade:
    return Trade("binance", inst, str(ts), Decimal(price), Decimal(size), "buy", ts, 0, count)


def naive(trades: list[Trade], tf_ms: int) -> dict[int, tuple[object, ...]]:
    """OHLCV per window, by event time then arrival order — written out longhand."""
    groups: dict[int, list[tuple[int, int, Trade]]] = defaultdict(list)
    for i, t in enumerate(trades):
        groups[t.ts_ms - t.ts_ms % tf_ms].append((t.ts_ms, i, t))
    out = {}
    for start, rows in groups.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        ts = [r[2] for r in rows]
        out[start] = (ts[0].price, max(t.price for t in ts), min(t.price for t in ts), ts[-1].price,
                      sum((t.size for t in ts), Decimal(0)), sum((t.price * t.size for t in ts), Decimal(0)),
                      sum(t.count for t in ts))
    return out


def ohlcv(k: Kline | Bucket) -> tuple[object, ...]:
    return (k.open, k.high, k.low, k.close, k.volume, k.quote_volume, k.trades)


trades_st = st.lists(
    st.builds(
        trade,
        st.integers(T0, T0 + 5 * 60_000),
        st.decimals("0.01", "1000", places=2).map(str),
        st.decimals("0.001", "10", places=3).map(str),
        count=st.integers(1, 5),
    ),
    min_size=1,
    max_size=60,
)


@given(trades_st, st.lists(st.integers(1, 7), min_size=1, max_size=20))
@settings(max_examples=200, deadline=None)
def test_buckets_merged_in_any_batching_equal_naive(trades: list[Trade], cuts: list[int]) -> None:
    batches, i = [], 0
    for n in cuts * 20:
        if i >= len(trades):
            break
        batches.append(trades[i : i + n])
        i += n
    merged: dict[int, Bucket] = {}
    for batch in batches:
        for b in bucket_trades(batch):
            merged[b.start_ms] = merge(merged[b.start_ms], b) if b.start_ms in merged else b
    assert {s: ohlcv(b) for s, b in merged.items()} == naive(trades, 60_000)


@given(trades_st)
@settings(max_examples=100, deadline=None)
def test_rollup_of_minutes_equals_direct_aggregation(trades: list[Trade]) -> None:
    trades = sorted(trades, key=lambda t: t.ts_ms)
    minutes = {b.start_ms: b for b in bucket_trades(trades)}
    r = Rollup("binance", "BTC-USDT", ("5m", "1h"))
    out: list[Kline] = []
    for start in sorted(minutes):
        out.extend(r.feed_closed(to_kline(minutes[start], "1m", closed=True)))
    out.extend(r.flat_until(T0 + 3_600_000, 1440))  # close the hour
    fives = {k.open_ms: ohlcv(k) for k in out if k.timeframe == "5m" and k.trades}
    assert fives == naive(trades, 300_000)
    (hour,) = [k for k in out if k.timeframe == "1h"]
    assert ohlcv(hour) == naive(trades, 3_600_000)[T0]
    ones = sorted(k.open_ms for k in out if k.timeframe == "1m")
    assert ones == list(range(ones[0], T0 + 3_600_000, 60_000))  # every minute, trades or not


def test_empty_minutes_are_flat_at_previous_close() -> None:
    r = Rollup("binance", "BTC-USDT", ("5m",))
    k0 = to_kline(bucket_trades([trade(T0 + 5, "10"), trade(T0 + 9, "12")])[0], "1m", closed=True)
    k3 = to_kline(bucket_trades([trade(T0 + 180_000, "11")])[0], "1m", closed=True)
    r.feed_closed(k0)
    out = r.feed_closed(k3)
    flats = [k for k in out if k.timeframe == "1m" and k.trades == 0]
    assert [k.open_ms for k in flats] == [T0 + 60_000, T0 + 120_000]
    assert all(ohlcv(k) == (Decimal(12),) * 4 + (Decimal(0), Decimal(0), 0) and k.closed for k in flats)


def minute(ts: int, price: str, *, closed: bool) -> Minute:
    return Minute(bucket_trades([trade(ts, price)])[0], closed)


def test_rollup_timer_closes_an_empty_minute_flat() -> None:
    wall = [datetime(2026, 1, 1, tzinfo=UTC)]
    logic = RollupLogic(("1m", "5m"), None, now=lambda: wall[0])
    logic.on_batch([minute(T0 + 1000, "100", closed=False)])
    logic.on_batch([minute(T0 + 1000, "100", closed=True)])
    due = logic.notify_at()
    assert due == wall[0] + timedelta(seconds=61)
    wall[0] = due
    out, _ = logic.on_notify()
    (flat,) = [o.kline for o in out]
    assert flat.open_ms == T0 + 60_000 and flat.closed and flat.trades == 0 and flat.close == Decimal(100)
    # trades arrived for the next minute: the timer waits for its window instead of filling it
    logic.on_batch([minute(T0 + 120_500, "101", closed=False)])
    wall[0] = logic.notify_at() or wall[0]
    assert list(logic.on_notify()[0]) == []


def test_a_removed_pair_gets_no_flat_minutes_and_restarts_fresh() -> None:
    wall = [datetime(2026, 1, 1, tzinfo=UTC)]
    logic = RollupLogic(("1m", "5m"), None, now=lambda: wall[0])
    logic.on_batch([minute(T0 + 1000, "100", closed=True)])
    assert logic.notify_at() is not None
    logic.on_batch([InstrumentRemoved("binance", "BTC-USDT")])
    assert logic.notify_at() is None  # no flat minutes for a pair nobody watches
    out, _ = logic.on_batch([minute(T0 + 3_600_000, "90", closed=False)])  # back, an hour later
    assert [o.kline.timeframe for o in out] == ["1m", "5m"]
    out, _ = logic.on_batch([minute(T0 + 3_600_000, "90", closed=True)])
    # no 59 flat minutes for the hour it was away; the first interval back is partial again
    closed = [(o.kline.timeframe, o.kline.open_ms, o.complete) for o in out if o.kline.closed]
    assert closed == [("1m", T0 + 3_600_000, False)]


def test_rollup_reports_a_minute_closed_after_its_flat_fill_as_correction() -> None:
    wall = [datetime(2026, 1, 1, tzinfo=UTC)]
    logic = RollupLogic(("1m",), None, now=lambda: wall[0])
    logic.on_batch([minute(T0, "100", closed=True)])
    wall[0] = logic.notify_at() or wall[0]
    logic.on_notify()
    out, _ = logic.on_batch([minute(T0 + 60_001, "99", closed=True)])
    (o,) = out
    assert o.correction and o.kline.close == Decimal(99)


def test_reconcile_pairs_and_compares() -> None:
    ours = to_kline(bucket_trades([trade(T0, "10", count=3)])[0], "1m", closed=True)
    same = Kline(**{**{f: getattr(ours, f) for f in ours.__struct_fields__}, "source": "venue"})
    other = Kline(**{**{f: getattr(ours, f) for f in ours.__struct_fields__}, "source": "venue",
                     "close": Decimal(11)})
    logic = ReconcileLogic(None)
    assert list(logic.on_item(same)[0]) == []
    (check,) = logic.on_item(ours)[0]
    assert check.match and check.ours == ours and check.venue == same
    logic.on_item(ours)
    (check,) = logic.on_item(other)[0]
    assert not check.match
    # venues without trade counts (OKX, Bybit candles) are compared on prices and volume only
    no_count = Kline(**{**{f: getattr(ours, f) for f in ours.__struct_fields__}, "source": "venue", "trades": 0})
    assert kline_fields_equal(ours, no_count)


def test_clock_wakes_exactly_when_the_watermark_reaches_a_close() -> None:
    wall = [datetime(2026, 1, 1, tzinfo=UTC)]
    clock = minute_clock(2.0, lambda: wall[0]).build(None)
    clock.before_batch()
    b = bucket_trades([trade(T0 + 30_000, "1")])[0]  # event time 2024, wall time 2026: a replay
    _, _wm = clock.on_item(b)
    wake = clock.to_system_utc(datetime.fromtimestamp((T0 + 60_000) / 1000, UTC))
    assert wake == wall[0] + timedelta(seconds=32)
    wall[0] = wake
    assert clock.on_notify() == datetime.fromtimestamp((T0 + 60_000) / 1000, UTC)


def run(trades: list[Trade], batch_size: int = 10) -> tuple[list[KlineOut], list[Bucket]]:
    flow = Dataflow("t")
    ks = aggregate_klines(op.input("inp", flow, TestingSource(trades, batch_size=batch_size)), ("1m", "5m"), 2.0)
    got: list[KlineOut] = []
    late: list[Bucket] = []
    op.output("out", op.map("s1", ks.klines, lambda kv: kv[1]), TestingSink(got))
    op.output("late", op.map("s2", ks.late, lambda kv: kv[1]), TestingSink(late))
    run_main(flow)
    return got, late


@pytest.mark.parametrize("batch_size", [1, 100])
def test_late_trade_is_reported_not_aggregated(batch_size: int) -> None:
    """The same whether the late trade comes alone or in one batch with the trades it is late against."""
    trades = [trade(T0 + 1_000, "10"), trade(T0 + 65_000, "11"), trade(T0 + 30_000, "99", "5"),
              trade(T0 + 64_000, "12")]
    got, late = run(trades, batch_size=batch_size)
    assert [(b.first_ms, b.close, b.trades) for b in late] == [(T0 + 30_000, Decimal(99), 1)]
    closed = {o.kline.open_ms: o.kline for o in got if o.kline.closed and o.kline.timeframe == "1m"}
    assert closed[T0].high == Decimal(10) and closed[T0].trades == 1
    # within the lateness a trade still lands at its event-time place in open/close
    assert (closed[T0 + 60_000].open, closed[T0 + 60_000].close) == (Decimal(12), Decimal(11))


def test_trades_of_several_instruments_and_an_empty_minute() -> None:
    trades = [trade(T0 + 1_000, "10"), trade(T0 + 2_000, "5", inst="ETH-USDT"),
              trade(T0 + 130_000, "11"), trade(T0 + 130_000, "6", inst="ETH-USDT")]
    got, late = run(trades)
    assert late == []
    btc = {o.kline.open_ms: o.kline for o in got
           if o.kline.closed and o.kline.timeframe == "1m" and o.kline.instrument == "BTC-USDT"}
    assert sorted(btc) == [T0, T0 + 60_000, T0 + 120_000]
    assert ohlcv(btc[T0 + 60_000]) == (Decimal(10),) * 4 + (Decimal(0), Decimal(0), 0)
    assert all(o.kline.venue == "binance" for o in got)


def test_merge_ticker_fills_bid_ask_from_best_quotes_only_where_missing() -> None:
    from operators.events import BestQuote, Ticker
    from operators.tickers import merge_ticker

    bybit = Ticker("bybit", "BTC-USDT", Decimal(100), None, None, Decimal(5), Decimal(1), Decimal(101),
                   Decimal(99), T0)
    st, out = merge_ticker(None, BestQuote("bybit", "BTC-USDT", Decimal("99.9"), Decimal("100.1"), T0 - 1))
    assert out is None  # no ticker yet
    st, out = merge_ticker(st, bybit)
    assert out is not None and (out.bid, out.ask, out.ts_ms) == (Decimal("99.9"), Decimal("100.1"), T0)
    st, out = merge_ticker(st, BestQuote("bybit", "BTC-USDT", Decimal("99.8"), Decimal("100.2"), T0 + 5))
    assert out is not None and (out.bid, out.ask, out.price, out.ts_ms) == (
        Decimal("99.8"), Decimal("100.2"), Decimal(100), T0 + 5)
    okx = Ticker("okx", "BTC-USDT", Decimal(100), Decimal(99), Decimal(101), Decimal(5), None, Decimal(101),
                 Decimal(99), T0)
    st2, out = merge_ticker(None, okx)
    assert out == okx
    assert merge_ticker(st2, BestQuote("okx", "BTC-USDT", Decimal(1), Decimal(2), T0))[1] is None


# --------------------------------------------------------------------- minutes not watched (a gap: reconnect, restart)
def gap_minute(ts: int, price: str, *, closed: bool) -> Minute:
    """A minute whose first trade follows a trade-id gap (operators/trade_ids.py)."""
    t = msgspec.structs.replace(trade(ts, price), gap=True)
    return Minute(bucket_trades([t, trade(ts + 1, price)])[0], closed)


def _restart(logic: RollupLogic, wall: list[datetime], down: timedelta) -> RollupLogic:
    state = logic.snapshot()
    wall[0] += down
    return RollupLogic(("1m", "5m"), state, now=lambda: wall[0])


@pytest.mark.parametrize("gap", [True, False], ids=["live feed, trades missed", "exact replay"])
def test_a_restart_leaves_the_minutes_it_missed_to_the_venue_only_after_a_gap(gap: bool) -> None:
    wall = [datetime(2026, 1, 1, tzinfo=UTC)]
    logic = RollupLogic(("1m", "5m"), None, now=lambda: wall[0])
    logic.on_batch([minute(T0 + 1000, "100", closed=False), minute(T0 + 1000, "100", closed=True)])
    logic.on_batch([minute(T0 + 61_000, "101", closed=False)])  # minute 1 is open at the snapshot (then kill -9)
    logic = _restart(logic, wall, timedelta(minutes=3))
    first = (gap_minute if gap else minute)(T0 + 241_000, "110", closed=False)  # minute 4, after the restart
    out, _ = logic.on_batch([first, minute(T0 + 61_000, "101", closed=True)])  # the window: inserts, then closes
    (one,) = [o for o in out if o.kline.closed]
    assert one.kline.open_ms == T0 + 60_000
    assert (one.unknown, one.kline.complete) == ((True, False) if gap else (False, True))
    wall[0] += timedelta(seconds=70)  # a minute passes with minute 4 open: the timer fills nothing before it
    assert [o.kline.open_ms for o in logic.on_notify()[0]] == ([] if gap else [T0 + 120_000])
    out, _ = logic.on_batch([(gap_minute if gap else minute)(T0 + 241_000, "110", closed=True)])
    closed = {(o.kline.timeframe, o.kline.open_ms): o for o in out if o.kline.closed}
    five = closed.pop(("5m", T0))  # minute 4 is the last of the 5m window 0..5
    if gap:  # minutes 2 and 3 are not made up; minute 4 is published, incomplete (the venue's replaces it)
        assert sorted(closed) == [("1m", T0 + 240_000)]
        assert not closed["1m", T0 + 240_000].unknown and not closed["1m", T0 + 240_000].kline.complete
    else:  # the replay resumed exactly: the empty minutes were watched, flat
        assert sorted(closed) == [("1m", T0 + 180_000), ("1m", T0 + 240_000)]
    assert (five.unknown, five.kline.complete) == ((True, False) if gap else (False, True))

def test_a_gap_after_a_long_quiet_spell_marks_only_the_minute_before_it() -> None:
    """Minutes with no trade before the last trade seen were watched: only the span after it is unknown."""
    r = Rollup("binance", "BTC-USDT", ("5m",))
    k0 = to_kline(bucket_trades([trade(T0 + 5, "10")])[0], "1m", closed=True)
    k2 = to_kline(bucket_trades([trade(T0 + 120_000, "12")])[0], "1m", closed=True)
    r.feed_closed(k0)
    out = r.feed_closed(k2, tainted=True)  # a later minute's first trade follows a gap
    assert [(k.open_ms, k.trades, k.complete) for k in out if k.timeframe == "1m"] == \
        [(T0 + 60_000, 0, True), (T0 + 120_000, 1, False)]
    assert [r.is_unknown(k) for k in out] == [False, True]
    k6 = to_kline(bucket_trades([msgspec.structs.replace(trade(T0 + 360_000, "13"), gap=True)])[0], "1m",
                  closed=True)
    out = r.feed_closed(k6, gap_open=True)
    # no flat minutes 3..5; the 5m window 0..5 closes incomplete and unknown, minute 6 incomplete but published
    assert [(k.timeframe, k.open_ms, k.complete, r.is_unknown(k)) for k in out] == \
        [("1m", T0 + 360_000, False, False), ("5m", T0, False, True)]
