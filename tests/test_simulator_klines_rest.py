"""The simulator's REST klines: equal to aggregating its trades, seeded history before its start, the same
market on the three venues' endpoints, and each venue's rate limit (fixed windows, its own refusal)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from decimal import Decimal

import orjson
import pytest
import urllib3
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from simulator.instrument import InstrumentSpec
from simulator.kline_history import Bar, KlineHistory
from simulator.klines_rest import KlinesRest
from simulator.market import SyntheticMarket, Trade
from simulator.rest_limits import Limit, RestLimits, VenueLimiter
from tests.fixtures.simulator import Simulator

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000 + 157_000  # 2 min 37 s into an hour: partial first minute
_http = urllib3.PoolManager()


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def _run(inst: str, seed: int, steps: list[int]) -> tuple[KlineHistory, list[Trade], Clock]:
    """A market stepped at the given times (ms), every step shown to a KlineHistory; returns its trades too."""
    market = SyntheticMarket(InstrumentSpec.for_instrument(inst, seed), seed, T0)
    clock = Clock(T0)
    history = KlineHistory({inst: market}, seed, clock)
    trades: list[Trade] = []
    for ts in steps:
        clock.ms = ts
        step = market.step(ts)
        history.on_step(inst, market, step)
        trades += step.trades
    return history, trades, clock


def _aggregate(trades: list[Trade], open_ms: int, span: int) -> tuple[int, int, int, int, int, int, int]:
    """The oracle: OHLCV straight from the trades of one window (no code shared with the simulator)."""
    mine = [t for t in trades if open_ms <= t.ts_ms < open_ms + span]
    return (mine[0].tick, max(t.tick for t in mine), min(t.tick for t in mine), mine[-1].tick,
            sum(t.lots for t in mine), sum(t.lots * t.tick for t in mine), len(mine))


def _ohlcv(b: Bar) -> tuple[int, int, int, int, int, int, int]:
    return (b.open, b.high, b.low, b.close, b.lots, b.quote, b.trades)


def test_live_minutes_are_the_aggregated_trades() -> None:
    history, trades, clock = _run("ETH-USDT", 3, list(range(T0, T0 + 6 * 60_000, 100)))
    first_full = T0 - T0 % 60_000 + 60_000
    bars = history.bars("ETH-USDT", "1m", first_full, first_full + 4 * 60_000 - 1)
    assert [b.open_ms for b in bars] == [first_full + i * 60_000 for i in range(4)]
    for bar in bars:
        assert _ohlcv(bar) == _aggregate(trades, bar.open_ms, 60_000)
    # the start minute holds only the trades after the start; a 5-minute bar is the trades of its 5 minutes
    start = history.bars("ETH-USDT", "1m", T0 - T0 % 60_000, T0)[0]
    assert _ohlcv(start) == _aggregate(trades, T0 - T0 % 60_000, 60_000)
    five = history.bars("ETH-USDT", "5m", T0 - T0 % 300_000, first_full + 4 * 60_000 - 1)[0]
    assert five.open_ms == T0 - T0 % 300_000 < T0 - T0 % 60_000 and clock.ms > five.open_ms + 300_000
    seeded = history.bars("ETH-USDT", "1m", five.open_ms, T0 - T0 % 60_000 - 1)
    got = _ohlcv(five)
    want = _aggregate(trades, five.open_ms, 300_000)
    assert got[1:3] == (max(want[1], *(b.high for b in seeded)), min(want[2], *(b.low for b in seeded)))
    assert got[3] == want[3] and got[4] == want[4] + sum(b.lots for b in seeded)


def test_a_minute_without_trades_is_flat_at_the_previous_close() -> None:
    steps = list(range(T0, T0 + 90_000, 100))  # trades until ~T0+90s, then nothing for two minutes
    history, trades, clock = _run("BTC-USDT", 5, steps)
    clock.ms = T0 + 5 * 60_000
    quiet = T0 - T0 % 60_000 + 3 * 60_000
    bar = history.bars("BTC-USDT", "1m", quiet, quiet)[0]
    assert (bar.open, bar.high, bar.low, bar.close, bar.lots, bar.trades) == (trades[-1].tick,) * 4 + (0, 0)


def test_seeded_history_is_deterministic_continuous_and_meets_the_live_market() -> None:
    a, _, _ = _run("SOL-USDT", 9, [])
    b, _, _ = _run("SOL-USDT", 9, [])
    start = T0 - T0 % 60_000
    day = a.bars("SOL-USDT", "1m", start - 86_400_000, start - 1)
    assert len(day) == 1440 and day == b.bars("SOL-USDT", "1m", start - 86_400_000, start - 1)
    assert all(x.close == y.open for x, y in itertools.pairwise(day))
    assert all(x.low <= min(x.open, x.close) and x.high >= max(x.open, x.close) and x.lots > 0 for x in day)
    market = SyntheticMarket(InstrumentSpec.for_instrument("SOL-USDT", 9), 9, T0)
    assert day[-1].close == market.anchor
    hours = a.bars("SOL-USDT", "1h", start - 86_400_000, start - 1)
    by_open = {x.open_ms: x for x in day}
    for hour in hours[1:]:  # the first hour starts before the day asked for
        minutes = [by_open[hour.open_ms + i * 60_000] for i in range(60) if hour.open_ms + i * 60_000 in by_open]
        assert (hour.open, hour.close, hour.lots) == (minutes[0].open, minutes[-1].close, sum(m.lots for m in minutes))
        assert (hour.high, hour.low) == (max(m.high for m in minutes), min(m.low for m in minutes))


def test_binance_limiter_429_then_418_when_ignored_and_a_new_window_serves() -> None:
    clock = Clock(1_000_000)
    lim = VenueLimiter("binance", Limit(4, 10.0), clock)
    assert [lim.check(2).status for _ in range(3)] == [200, 200, 429]
    told = lim.check  # asking again before Retry-After is over is a ban
    clock.ms += 1000
    assert told(2).status == 418
    clock.ms = 1_000_000 + 10_000 * 3 + 1  # the ban lasts two windows from the ignored request
    assert lim.check(2).status == 200
    assert lim.counters()["refused"] == 2 and lim.counters()["banned"] == 1 and lim.max_used == 4


def test_okx_and_bybit_limiters_refuse_with_their_status_and_reset_per_window() -> None:
    clock = Clock(2_000_000)
    okx, bybit = VenueLimiter("okx", Limit(2, 2.0), clock), VenueLimiter("bybit", Limit(1, 5.0), clock)
    assert [okx.check().status for _ in range(3)] == [200, 200, 429]
    assert [bybit.check().status for _ in range(2)] == [200, 403]
    clock.ms += 5000
    assert okx.check().status == 200 and bybit.check().status == 200 and okx.banned == 0


def _get(url: str) -> tuple[int, dict[str, str], object]:
    resp = _http.request("GET", url)
    return resp.status, dict(resp.headers), orjson.loads(resp.data)


@pytest.fixture
def sim(start_simulator: Callable[..., Simulator]) -> Simulator:
    return start_simulator("--pairs", "BTC-USDT,ETH-USDT", "--seed", "4", "--rate", "20",
                           "--okx-rest-limit", "3/60", "--binance-rest-limit", "100/60")


def test_the_three_venues_serve_the_same_market(sim: Simulator) -> None:
    base = sim.okx_rest_url
    code, headers, rows = _get(f"{base}/api/v3/klines?symbol=ETHUSDT&interval=1m&limit=50")
    assert code == 200 and headers["X-MBX-USED-WEIGHT-1M"] == "2" and isinstance(rows, list) and len(rows) == 50
    start, last = rows[0][0], rows[-2][0]  # the last one may still be open
    binance = {r[0]: [Decimal(x) for x in r[1:6]] for r in rows[:-1]}
    _, _, okx = _get(f"{base}/api/v5/market/history-candles?instId=ETH-USDT&bar=1m&before={start - 1}"
                     f"&after={last + 1}&limit=100")
    assert isinstance(okx, dict) and okx["code"] == "0"
    assert {int(r[0]): [Decimal(x) for x in r[1:6]] for r in okx["data"]} == binance
    assert all(r[8] == "1" for r in okx["data"])
    _, headers, bybit = _get(f"{base}/v5/market/kline?category=spot&symbol=ETHUSDT&interval=1&start={start}"
                             f"&end={last}&limit=1000")
    assert isinstance(bybit, dict) and bybit["retCode"] == 0 and headers["X-Bapi-Limit-Status"] == "599"
    assert [int(r[0]) for r in bybit["result"]["list"]] == sorted(binance, reverse=True)
    assert {int(r[0]): [Decimal(x) for x in r[1:6]] for r in bybit["result"]["list"]} == binance


def test_rate_limits_refuse_with_the_venue_shapes_and_are_counted(sim: Simulator) -> None:
    url = f"{sim.okx_rest_url}/api/v5/market/history-candles?instId=BTC-USDT&bar=1m&limit=1"
    answers = [_get(url) for _ in range(4)]
    assert [a[0] for a in answers] == [200, 200, 200, 429]
    assert answers[3][2] == {"msg": "Too Many Requests", "code": "50011"}
    _, _, counters = _get(f"{sim.control_url}/rest")
    assert isinstance(counters, dict)
    assert counters["okx"]["requests"] == 4 and counters["okx"]["refused"] == 1
    assert counters["binance"]["refused"] == 0
    code, _, err = _get(f"{sim.okx_rest_url}/api/v3/klines?symbol=NOPE&interval=1m")
    assert code == 400 and err == {"code": -1121, "msg": "Invalid symbol."}


def test_a_range_too_long_to_serve_is_the_venues_parameter_error() -> None:
    # 1,000 daily bars are more minutes than the history serves: each venue's own error, not an HTTP 500
    market = SyntheticMarket(InstrumentSpec.for_instrument("BTC-USDT", 5), 5, T0)
    rest = KlinesRest(KlineHistory({"BTC-USDT": market}, 5), {"BTC-USDT": market.spec}, RestLimits({}))

    async def ask() -> tuple[web.Response, web.Response]:
        binance = await rest.binance(make_mocked_request("GET", "/api/v3/klines?symbol=BTCUSDT&interval=1d&limit=1000"))
        bybit = await rest.bybit(make_mocked_request(
            "GET", "/v5/market/kline?category=spot&symbol=BTCUSDT&interval=D&limit=1000"))
        return binance, bybit

    binance, bybit = asyncio.run(ask())
    assert binance.status == 400 and isinstance(binance.body, bytes)
    assert orjson.loads(binance.body)["code"] == -1100 and "at most" in orjson.loads(binance.body)["msg"]
    assert bybit.status == 200 and isinstance(bybit.body, bytes)
    assert orjson.loads(bybit.body)["retCode"] == 10001 and "at most" in orjson.loads(bybit.body)["retMsg"]
