"""Trade-id continuity (operators/trade_ids.py) -> ``complete`` klines -> the venue's kline replaces an incomplete one.

* unit: which trades are flagged, against the generator's own record of what it dropped (hypothesis);
* klines: a flagged trade makes its minute and every longer interval holding it incomplete;
* reconcile: incomplete -> replaced, complete -> compared;
* the Redis writer: a replacement never pushes the ``kline:`` hash back to an older interval (real Redis);
* end to end: a ``trade_gap`` injected by the simulator -> that minute's kline is published ``complete=false``,
  then replaced by the venue's closed kline (``source=venue``, the hidden trades counted) in Redis' counters and
  InfluxDB (VictoriaMetrics).
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import Redis

from connectors.redis.market_sink import MarketWriter, kline_fields
from connectors.redis.push_streams import kline_channel, stream_key
from operators.events import Kline, Trade
from operators.kline_reconcile import ReconcileLogic
from operators.kline_steps import KlineOut
from operators.klines import Rollup, bucket_trades, merge, to_kline
from operators.trade_ids import TradeIds
from tests.fixtures.influx import private_victoria
from tests.test_market_data_sim import start_flow  # noqa: F401 - a fixture
from tests.waiting import wait_for

D = Decimal
T0 = 1_723_161_600_000  # 2024-08-09 00:00 UTC


def trade(seq: int | None, ts: int = T0, inst: str = "BTC-USDT", count: int = 1, price: str = "1") -> Trade:
    return Trade("binance", inst, str(seq), D(price), D(1), "buy", ts, count=count, seq=seq)


# ------------------------------------------------------------------------------------------------- unit
@given(st.lists(st.tuples(st.integers(1, 5), st.booleans()), min_size=1, max_size=60), st.integers(0, 10**12))
@settings(max_examples=200, deadline=None)
def test_flagged_trades_are_the_first_and_those_after_a_dropped_run(events: list[tuple[int, bool]],
                                                                    start: int) -> None:
    """Events of ``count`` ids each, numbered without holes; some are dropped in transit. Expected flags come
    from the generator: the first delivered event, and each delivered event right after a dropped one."""
    ids, seq, delivered, expected = TradeIds(), start, [], []
    dropped_before = False
    for count, dropped in events:
        seq += count
        if dropped:
            dropped_before = True
            continue
        delivered.append(trade(seq, count=count))
        expected.append(not expected or dropped_before)
        dropped_before = False
    got = [ids.check(t).gap for t in delivered]
    assert got == expected
    assert ids.gaps == sum(expected[1:])


def test_no_ids_flag_only_the_first_and_restored_state_continues() -> None:
    ids = TradeIds()
    assert [ids.check(trade(None)).gap for _ in range(3)] == [True, False, False]  # Bybit: unknown start only
    # ... and after a restart: without contiguous ids nothing shows that no trade was missed while down
    assert TradeIds(ids.snapshot()).check(trade(None)).gap
    ids = TradeIds()
    assert [ids.check(trade(s)).gap for s in (10, 11)] == [True, False]
    resumed = TradeIds(ids.snapshot())  # a restart with recovery: the first trade is checked, not assumed
    assert [resumed.check(trade(s)).gap for s in (11, 12, 14)] == [False, False, True]  # 11: resent, ignored
    resumed.forget("BTC-USDT")
    assert resumed.check(trade(15)).gap  # a pair that came back starts afresh


# ------------------------------------------------------------------------------------------------ klines
def test_a_gap_makes_its_minute_and_the_longer_intervals_holding_it_incomplete() -> None:
    ids = TradeIds({"BTC-USDT": 0})
    trades = [ids.check(t) for t in (trade(1, T0 + 1_000), trade(2, T0 + 61_000), trade(4, T0 + 62_000),
                                     trade(5, T0 + 121_000))]
    buckets = bucket_trades(trades)
    minutes = [to_kline(b, "1m", closed=True) for b in buckets]
    assert [(k.open_ms - T0, k.complete) for k in minutes] == [(0, True), (60_000, False), (120_000, True)]
    rollup = Rollup("binance", "BTC-USDT", ("5m",))
    out = [k for m in minutes for k in rollup.feed_closed(m)]
    assert [k.complete for k in out if k.timeframe == "1m"] == [True, False, True]
    (open5,) = rollup.updating([])
    assert not open5.complete and open5.trades == 4
    assert merge(buckets[0], buckets[1]).gaps == 1


def venue(start: int, close: str, n: int) -> Kline:
    return Kline("binance", "BTC-USDT", "1m", start, start + 60_000, D(1), D(2), D(1), D(close), D(4), D(0), n,
                 True, "venue")


def test_reconcile_replaces_incomplete_and_compares_complete() -> None:
    logic = ReconcileLogic(None)
    ours_gap = msgspec.structs.replace(venue(T0, "1", 3), source="pipeline", complete=False, trades=2)
    ours_ok = msgspec.structs.replace(venue(T0 + 60_000, "1", 3), source="pipeline")
    assert list(logic.on_item(ours_gap)[0]) == []
    (replaced,) = logic.on_item(venue(T0, "1", 3))[0]
    assert replaced.replaced and replaced.replacement.kline == venue(T0, "1", 3)
    logic.on_item(venue(T0 + 60_000, "1.5", 3))
    (check,) = logic.on_item(ours_ok)[0]
    assert not check.replaced and not check.match  # complete: compared (close differs), never replaced


def test_a_replacement_never_pushes_the_hash_back(redis_db: Redis) -> None:
    writer = MarketWriter(refresh_fraction=0.0)
    ours_m0 = msgspec.structs.replace(venue(T0, "1", 2), source="pipeline", complete=False)
    ours_m1 = msgspec.structs.replace(venue(T0 + 60_000, "1", 2), source="pipeline", closed=False)
    key = "kline:binance:BTC-USDT:1m"

    def write(*klines: Kline) -> dict[str, str]:
        pipe = redis_db.pipeline()
        writer(pipe, [KlineOut(k) for k in klines])
        pipe.execute()
        return dict(redis_db.hgetall(key))

    assert write(ours_m0)["complete"] == "false" and redis_db.hget(key, "source") == "trades"
    got = write(venue(T0, "1.25", 3))  # the hash still holds that minute: replaced
    assert got == {**kline_fields(venue(T0, "1.25", 3)), "source": "venue", "complete": "true"}
    assert got["trades"] == "3" and 0 < redis_db.ttl(key) <= 3600
    write(ours_m1)
    got = write(venue(T0, "1.5", 3))  # the hash moved on to the next minute: left alone
    assert got["open_time"] == "2024-08-09T00:01:00.000Z" and got["source"] == "trades"



def test_a_minute_closed_after_the_next_opened_never_pushes_the_hash_back(redis_db: Redis) -> None:
    """The clock closes minute 0 in the batch after minute 1's first trade: the hash keeps minute 1, while the
    closed minute 0 is still pushed on its channel (and, in the dataflow, written as a point)."""
    writer = MarketWriter(refresh_fraction=0.0)
    m0_closed = msgspec.structs.replace(venue(T0, "1", 2), source="pipeline")
    m1_open = msgspec.structs.replace(venue(T0 + 60_000, "2", 1), source="pipeline", closed=False)
    key = "kline:binance:BTC-USDT:1m"
    for batch in ([KlineOut(m1_open)], [KlineOut(m0_closed)]):
        pipe = redis_db.pipeline()
        writer(pipe, batch)
        pipe.execute()
    assert redis_db.hgetall(key) == kline_fields(m1_open)
    pushed = [msgspec.json.decode(fields["d"])
              for _, fields in redis_db.xrange(stream_key(kline_channel("binance", "BTC-USDT", "1m")))]
    assert [(e["open_time"], e["closed"]) for e in pushed] == [
        ("2024-08-09T00:01:00.000Z", "false"), ("2024-08-09T00:00:00.000Z", "true")]

# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_simulated_trade_id_gap_marks_the_kline_incomplete_then_the_venue_replaces_it(
        start_simulator: Any, start_flow: Any, redis_server: Any, redis_db: Redis, tmp_path: Path) -> None:  # noqa: F811
    sim = start_simulator("--pairs", "BTC-USDT", "--seed", "3", "--rate", "20")
    redis_db.sadd("config:trading_pairs", "BTC-USDT")
    key = "kline:binance:BTC-USDT:1m"
    with private_victoria(tmp_path / "vm") as vm:
        start_flow({**sim.env(), "REDIS_URL": redis_server.url, "INFLUX_URL": vm.url, "INFLUX_TOKEN": "t",
                    "INFLUX_FLUSH_INTERVAL": "0.2", "MARKET_DATA_VENUES": "binance",
                    "BINANCE_TRADE_STREAM": "trade", "KLINE_TIMEFRAMES": "1m", "KLINE_ALLOWED_LATENESS": "1"})
        first = wait_for("the first trades aggregated", lambda: redis_db.hget(key, "open_time"), timeout=30)

        def gap_minute() -> str | None:
            """A minute after the first one (whose start was not seen), early enough in it that the next sent
            trade falls in the same minute as the hidden one."""
            k = redis_db.hgetall(key)
            second = int(time.time()) % 60
            return k["open_time"] if k.get("open_time") != first and 3 <= second <= 40 else None

        minute = wait_for("a later minute's start", gap_minute, timeout=130, every=0.2)
        sim.fault("trade_gap", inst="BTC-USDT", count=2)
        wait_for("that minute published incomplete",
                 lambda: redis_db.hget(key, "open_time") == minute
                 and redis_db.hget(key, "complete") == "false", timeout=30)
        open_ms = int(_iso_ms(minute))

        def replaced() -> dict[str, set[float]] | None:
            got = {f: {v for ts, v in _samples(vm, f) if ts == open_ms} for f in ("complete", "trades")}
            return got if got["complete"] == {0.0, 1.0} else None

        got = wait_for("the venue's kline written over ours", replaced, timeout=90)
        ours, theirs = sorted(got["trades"])
        assert theirs - ours == 2  # the two hidden trades: the venue counted them, we could not
        mon = wait_for("counters", lambda: (m := redis_db.hgetall("system:monitoring"))
                       and "kline_replaced" in m and "market_trade_id_gaps" in m and m)
        assert int(mon["market_trade_id_gaps"]) >= 1 and int(mon["kline_replaced"]) >= 1
    logs = "".join(p.read_text() for p in tmp_path.glob("flow-*.log"))
    assert '"kline_replaced"' in logs


def _iso_ms(iso: str) -> int:
    from datetime import datetime
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _samples(vm: Any, field: str) -> list[tuple[int, float]]:
    selector = f'{{__name__="kline_{field}",exchange="binance",symbol="BTC-USDT",timeframe="1m"}}'
    return [(ts, v) for row in vm.export(selector) for ts, v in zip(row["timestamps"], row["values"], strict=True)]
