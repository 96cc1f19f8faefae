"""The REST kline clients' pure parts: one fixture per wire shape (tests/data/rest_klines/), each venue's
refusals, junk in -> only typed outcomes out, the request budget, and the point a backfilled kline becomes."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.influx.writer import to_line
from connectors.redis.market_sink import kline_point
from connectors.rest_klines.backfill import VENUES, closed_range
from connectors.rest_klines.budget import Backoff, Budget, RequestBudget
from connectors.rest_klines.client import KlineClient
from connectors.rest_klines.store import backfill_point
from connectors.rest_klines.venue import RateLimited, UnsupportedTimeframe, VenueRefused
from connectors.untrusted import Rejected
from operators.events import Kline, epoch_ms, iso_ms

DATA = Path(__file__).parent / "data" / "rest_klines"
T = 1764374400000


def _read(venue: str, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> object:
    return VENUES[venue].read(status, headers or {}, body, inst="BTC-USDT", timeframe="1m")


def test_binance_klines_fixture() -> None:
    klines = _read("binance", (DATA / "binance_klines.json").read_bytes())
    assert isinstance(klines, list) and [k.open_ms for k in klines] == [T, T + 60_000, T + 120_000]
    k = klines[0]
    assert (k.venue, k.instrument, k.timeframe, k.close_ms, k.source, k.complete, k.closed) == (
        "binance", "BTC-USDT", "1m", T + 60_000, "venue", True, True)
    assert (k.open, k.high, k.low, k.close, k.volume, k.quote_volume, k.trades) == (
        Decimal("90912.01"), Decimal("90940"), Decimal("90890.55"), Decimal("90931.99"), Decimal("11.42017"),
        Decimal("1038402.4387561"), 2291)


def test_okx_candles_fixture_is_turned_oldest_first_without_the_open_candle() -> None:
    klines = _read("okx", (DATA / "okx_history_candles.json").read_bytes())
    assert isinstance(klines, list) and [k.open_ms for k in klines] == [T, T + 60_000, T + 120_000]
    k = klines[1]
    assert (k.open, k.high, k.low, k.close, k.volume, k.quote_volume, k.trades) == (
        Decimal("90932"), Decimal("90932"), Decimal("90850"), Decimal("90861.4"), Decimal("8.74109004"),
        Decimal("794528.05346322"), 0)


def test_bybit_kline_fixture_is_turned_oldest_first() -> None:
    klines = _read("bybit", (DATA / "bybit_kline.json").read_bytes())
    assert isinstance(klines, list) and [k.open_ms for k in klines] == [T, T + 60_000, T + 120_000]
    assert (klines[2].close, klines[2].volume, klines[2].quote_volume) == (
        Decimal("90899"), Decimal("1.962117"), Decimal("178326.8874201"))


def test_each_venue_says_too_many_requests_its_own_way() -> None:
    assert _read("binance", b'{"code":-1003,"msg":"Too much request weight used"}', 429, {"Retry-After": "7"}) == \
        RateLimited(429, 7.0, '{"code":-1003,"msg":"Too much request weight used"}')
    banned = _read("binance", b'{"code":-1003,"msg":"banned"}', 418, {"Retry-After": "120"})
    assert isinstance(banned, RateLimited) and banned.banned and banned.retry_after_s == 120
    three_days = _read("binance", b'{"code":-1003,"msg":"banned"}', 418, {"Retry-After": "259200"})
    assert isinstance(three_days, RateLimited) and three_days.retry_after_s == 259_200  # believed, not dropped
    for junk in ("nan", "inf", "-1", "soon"):
        assert _read("binance", b"{}", 429, {"Retry-After": junk}) == RateLimited(429, None, "{}")
    assert _read("okx", b'{"msg":"Too Many Requests","code":"50011"}', 429) == \
        RateLimited(429, None, '{"msg":"Too Many Requests","code":"50011"}')
    bybit = _read("bybit", b'{"retCode":10006,"retMsg":"Too many visits!","result":{}}', 403,
                  {"X-Bapi-Limit-Reset-Timestamp": "4102444800000"})  # far away: capped at a minute
    assert isinstance(bybit, RateLimited) and bybit.retry_after_s == 60.0


def test_a_wrong_request_is_refused_not_retried() -> None:
    assert _read("binance", b'{"code":-1121,"msg":"Invalid symbol."}', 400) == \
        VenueRefused(400, "-1121", "Invalid symbol.")
    assert _read("okx", b'{"code":"51001","msg":"Instrument ID does not exist","data":[]}') == \
        VenueRefused(200, "51001", "Instrument ID does not exist")
    assert _read("bybit", b'{"retCode":10001,"retMsg":"Not supported symbols","result":{}}') == \
        VenueRefused(200, "10001", "Not supported symbols")
    with pytest.raises(UnsupportedTimeframe, match="okx has no kline interval for timeframe '2m'"):
        VENUES["okx"].page_url("http://x", "BTC-USDT", "2m", T, T + 60_000)


def test_a_kline_that_is_not_a_kline_is_rejected() -> None:
    high_below_low = b'[[1764374400000,"10","9","11","10","1",1764374459999,"10",1,"0","0","0"]]'
    out = _read("binance", high_below_low)
    assert isinstance(out, Rejected) and out.reason == "invalid_kline"
    unaligned = b'{"code":"0","data":[["1764374400001","1","1","1","1","1","1","1","1"]]}'
    out = _read("okx", unaligned)
    assert isinstance(out, Rejected) and out.reason == "invalid_kline"
    nan = b'{"retCode":0,"result":{"list":[["1764374400000","NaN","1","1","1","1","1"]]}}'
    out = _read("bybit", nan)
    assert isinstance(out, Rejected) and out.reason == "invalid_number"



def test_a_kline_time_that_is_not_epoch_ms_is_rejected() -> None:
    # Arabic-Indic digits pass str.isdigit and int(); a Binance number past the year 2286 passed the decode
    arabic = "\u0661\u0667\u0666\u0664\u0663\u0667\u0664\u0664\u0660\u0660\u0660\u0660\u0660"
    okx = ('{"code":"0","data":[["' + arabic + '","1","1","1","1","1","1","1","1"]]}').encode()
    bybit = ('{"retCode":0,"result":{"list":[["' + arabic + '","1","1","1","1","1","1"]]}}').encode()
    binance = b'[[600000000000000000,"1","1","1","1","1",600000000059999,"1",1,"0","0","0"]]'
    for venue, body in (("okx", okx), ("bybit", bybit), ("binance", binance)):
        out = _read(venue, body)
        assert isinstance(out, Rejected) and out.reason == "invalid_number", (venue, out)

JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats()
                       | st.text(alphabet="0123456789.-eE", max_size=14),
                       lambda inner: st.lists(inner, max_size=12) | st.dictionaries(
                           st.sampled_from(["code", "msg", "data", "retCode", "result", "list", "x"]), inner,
                           max_size=5), max_leaves=40)


@settings(max_examples=200, deadline=None)
@given(venue=st.sampled_from(sorted(VENUES)), status=st.sampled_from([200, 400, 403, 418, 429]),
       body=st.one_of(st.binary(max_size=200), JSONISH.map(lambda v: json.dumps(v).encode())))
def test_junk_in_only_typed_outcomes_out(venue: str, status: int, body: bytes) -> None:
    out = _read(venue, body, status)
    assert isinstance(out, list | Rejected | RateLimited | VenueRefused)


@pytest.mark.parametrize("venue", sorted(VENUES))
def test_a_page_asks_for_exactly_its_open_times(venue: str) -> None:
    query = {k: v[0] for k, v in parse_qs(urlsplit(VENUES[venue].page_url("http://sim", "ETH-USDT", "5m", T,
                                                                           T + 600_000)).query).items()}
    if venue == "binance":
        assert query == {"symbol": "ETHUSDT", "interval": "5m", "startTime": str(T), "endTime": str(T + 599_999),
                         "limit": "1000"}
    elif venue == "okx":  # both bounds exclusive
        assert query == {"instId": "ETH-USDT", "bar": "5m", "after": str(T + 600_000), "before": str(T - 1),
                         "limit": "100"}
    else:
        assert query == {"category": "spot", "symbol": "ETHUSDT", "interval": "5", "start": str(T),
                         "end": str(T + 599_999), "limit": "1000"}


def test_closed_range_keeps_whole_closed_intervals() -> None:
    assert closed_range(T + 1, T + 10 * 60_000 + 5, "1m", T + 99 * 60_000) == (T + 60_000, T + 10 * 60_000)
    assert closed_range(T, T + 10 * 60_000, "1m", T + 5 * 60_000 + 30_000) == (T, T + 5 * 60_000)
    assert closed_range(T, T + 86_400_000 * 3, "1d", T + 86_400_000 * 3) == (T, T + 86_400_000 * 3)


def _kline(source: str, trades: int, complete: bool) -> Kline:
    d = Decimal
    return Kline("okx", "BTC-USDT", "1m", T, T + 60_000, d("1"), d("2"), d("0.5"), d("1.5"), d("3"), d("4"), trades,
                 closed=True, source=source, complete=complete)  # type: ignore[arg-type]


def test_a_backfilled_point_is_the_live_point_of_that_minute() -> None:
    live, venue = kline_point(_kline("pipeline", 42, False)), backfill_point(_kline("venue", 0, True))
    assert (venue.measurement, venue.tags, venue.ts_ms) == (live.measurement, live.tags, live.ts_ms)
    fields = dict(venue.fields)
    assert fields["source"] == "venue" and fields["complete"] is True
    assert "trades" not in fields  # OKX gives no count: the live point's stays
    assert to_line(venue) == ("kline,exchange=okx,symbol=BTC-USDT,timeframe=1m close=1.5,complete=true,high=2,"
                              "low=0.5,open=1,quote_volume=4,source=\"venue\",volume=3 1764374400000")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_holds_a_sliding_window_of_finished_requests() -> None:
    clock = FakeClock()
    budget = RequestBudget(Budget(4, 10.0), clock)

    async def spend(weight: int) -> None:
        await budget.acquire(weight)
        budget.release(weight)

    asyncio.run(spend(2))
    clock.now += 3
    asyncio.run(spend(2))
    assert budget.delay(1) == pytest.approx(7.001)  # the first one leaves the window 10 s after it finished
    clock.now += 7.001
    assert budget.delay(2) == 0 and budget.delay(3) == pytest.approx(3.0)
    budget.hold_until(5.0)  # told to wait 5 s: the whole budget is spent until then
    assert budget.delay(1) == pytest.approx(5.001)


def test_a_run_right_after_a_killed_one_asks_nothing_until_a_window_after_its_start() -> None:
    def client(clock: FakeClock) -> KlineClient:
        c = KlineClient(VENUES["okx"], "http://127.0.0.1:9", Budget(10, 1.0), timeout=15.0)
        c.budget = RequestBudget(Budget(10, 1.0), clock)
        return c

    clock = FakeClock()
    recent = client(clock)
    recent.follow_previous_run(3.0)  # a checkpoint 3 s old: its run's last request may still be in the window
    assert recent.budget.delay(1) == pytest.approx(1.001)
    clock.now += 0.5
    recent.follow_previous_run(0.1)  # a second symbol's checkpoint does not add a window
    assert recent.budget.delay(1) == pytest.approx(0.501)
    later = client(clock)
    clock.now += 0.7  # the first recent checkpoint read 0.7 s after the start: the window counts from the start
    later.follow_previous_run(1.0)
    assert later.budget.delay(1) == pytest.approx(0.301)
    old = client(FakeClock())
    old.follow_previous_run(16.0)  # older than a window plus the request timeout: nothing of it is in flight
    assert old.budget.delay(10) == 0


def test_backoff_grows_capped_with_jitter_and_resets() -> None:
    backoff = Backoff(1.0, 8.0)
    delays = [backoff.next() for _ in range(6)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, [1, 2, 4, 8, 8, 8], strict=True))
    backoff.reset()
    assert backoff.next() <= 1.0


def test_only_bybit_says_its_window_is_spent_before_refusing() -> None:
    reset = str(int(time.time() * 1000) + 1500)
    spent = VENUES["bybit"].pause_after({"X-Bapi-Limit-Status": "0", "X-Bapi-Limit-Reset-Timestamp": reset})
    assert spent is not None and 1.0 < spent <= 1.6
    assert VENUES["bybit"].pause_after({"X-Bapi-Limit-Status": "1", "X-Bapi-Limit-Reset-Timestamp": reset}) is None
    assert VENUES["okx"].pause_after({}) is None
    assert VENUES["binance"].pause_after({"X-MBX-USED-WEIGHT-1M": "1"}) is None


@given(st.integers(min_value=0, max_value=4_102_444_800_000))  # up to 2100
def test_epoch_ms_reads_back_what_iso_ms_writes(ms: int) -> None:
    assert epoch_ms(iso_ms(ms)) == ms


def test_epoch_ms_takes_a_time_without_offset_as_utc_and_refuses_junk() -> None:
    assert epoch_ms("2026-11-01T00:00:00") == epoch_ms("2026-11-01T00:00:00Z") == 1_793_491_200_000
    assert epoch_ms("2026-11-01T01:00:00+01:00") == 1_793_491_200_000
    with pytest.raises(ValueError):
        epoch_ms("yesterday")
