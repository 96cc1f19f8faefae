"""Prices reach Redis exactly as each venue wrote them, even when another venue writes an equal number
differently (``60000.7`` on OKX, ``60000.70000000`` on Binance): no cache keyed on Decimal equality.

Wire frames go through the venues' real parsers, then the market-data dataflow's real Redis sink
(:class:`connectors.redis.sink.RedisPipelineSink` + :class:`connectors.redis.market_sink.MarketWriter`); alerts
through the real Lua matcher. Real redis-server (tests/fixtures/redis.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from connectors.alerts.matcher import AlertMatcher
from connectors.alerts.store import AlertStore
from connectors.binance.market import parse_binance_frame
from connectors.bybit.market import parse_bybit_frame
from connectors.market.frames import symbol_map
from connectors.okx.market import parse_okx_market_frame
from connectors.redis.market_sink import MarketWriter, _num, trade_event
from connectors.redis.sink import RedisPipelineSink
from operators.alerts import create_alert, parse_new_alert, render_email
from operators.events import Kline, Ticker, Trade, iso_ms
from operators.kline_steps import KlineOut

SYMS = symbol_map(["BTC-USDT"])
TS = 1_763_715_600_000  # 2025-11-21T09:00:00Z, a minute boundary


def okx_ticker(last: str, bid: str, ask: str) -> Ticker:
    data = {"instId": "BTC-USDT", "last": last, "bidPx": bid, "askPx": ask, "open24h": "59000",
            "high24h": "61000.5", "low24h": "58000.1", "vol24h": "1234.5", "ts": str(TS)}
    (t,) = parse_okx_market_frame(orjson.dumps({"arg": {"channel": "tickers", "instId": "BTC-USDT"},
                                                "data": [data]}), recv_ns=0)
    assert isinstance(t, Ticker)
    return t


def binance_ticker(last: str, bid: str, ask: str) -> Ticker:
    data = {"e": "24hrTicker", "E": TS, "s": "BTCUSDT", "p": "1000.70000000", "P": "1.696", "w": "60000.00000000",
            "x": "59000.00000000", "c": last, "Q": "0.10000000", "b": bid, "B": "1.00000000", "a": ask,
            "A": "1.00000000", "o": "59000.00000000", "h": "61000.50000000", "l": "58000.10000000",
            "v": "1234.50000000", "q": "74070000.00000000", "O": 0, "C": 86400000, "F": 0, "L": 18150, "n": 18151}
    (t,) = parse_binance_frame(orjson.dumps({"stream": "btcusdt@ticker", "data": data}), recv_ns=0, symbols=SYMS)
    assert isinstance(t, Ticker)
    return t


def bybit_ticker(last: str) -> Ticker:
    data = {"symbol": "BTCUSDT", "lastPrice": last, "highPrice24h": "61000.50", "lowPrice24h": "58000.10",
            "prevPrice24h": "59000.00", "volume24h": "1234.500", "turnover24h": "74070000.00",
            "price24hPcnt": "0.0169"}
    (t,) = parse_bybit_frame(orjson.dumps({"topic": "tickers.BTCUSDT", "ts": TS, "type": "snapshot", "data": data}),
                             recv_ns=0, symbols=SYMS)
    assert isinstance(t, Ticker)
    return t


def okx_kline(o: str, h: str, lo: str, c: str) -> KlineOut:
    row = [str(TS), o, h, lo, c, "12.5", "750000.1", "750000.1", "0"]
    (k,) = parse_okx_market_frame(orjson.dumps({"arg": {"channel": "candle1m", "instId": "BTC-USDT"},
                                                "data": [row]}), recv_ns=0)
    assert isinstance(k, Kline)
    return KlineOut(k)


def binance_kline(o: str, h: str, lo: str, c: str) -> KlineOut:
    body = {"t": TS, "T": TS + 59_999, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 2, "o": o, "c": c, "h": h, "l": lo,
            "v": "12.50000000", "n": 2, "x": False, "q": "750000.10000000", "V": "6.00000000",
            "Q": "360000.00000000", "B": "0"}
    (k,) = parse_binance_frame(orjson.dumps({"stream": "btcusdt@kline_1m",
                                             "data": {"e": "kline", "E": TS, "s": "BTCUSDT", "k": body}}),
                               recv_ns=0, symbols=SYMS)
    assert isinstance(k, Kline)
    return KlineOut(k)


def write(redis_server: Any, items: list[Any]) -> None:
    part = RedisPipelineSink(redis_server.url, MarketWriter()).build_part("redis", "0", None)
    try:
        part.write_batch([items])
    finally:
        part.close()


def fields(redis_db: Any, key: str, names: tuple[str, ...]) -> tuple[str, ...]:
    h = redis_db.hgetall(key)
    return tuple(h[n] for n in names)


PRICES = ("price", "bid", "ask", "high_24h", "low_24h", "volume_24h")
OHLC = ("open", "high", "low", "close")


def test_equal_prices_written_differently_keep_each_venues_string_in_one_batch(redis_server: Any,
                                                                               redis_db: Any) -> None:
    writer_items = [binance_ticker("60000.70000000", "60000.60000000", "60000.80000000"),
                    okx_ticker("60000.7", "60000.6", "60000.8"), bybit_ticker("60000.70"),
                    binance_kline("60000.70000000", "60001.00000000", "60000.10000000", "60000.70000000"),
                    okx_kline("60000.7", "60001", "60000.1", "60000.7")]
    write(redis_server, writer_items)
    assert fields(redis_db, "ticker:binance:BTC-USDT", PRICES) == (
        "60000.70000000", "60000.60000000", "60000.80000000", "61000.50000000", "58000.10000000", "1234.50000000")
    assert fields(redis_db, "ticker:okx:BTC-USDT", PRICES) == (
        "60000.7", "60000.6", "60000.8", "61000.5", "58000.1", "1234.5")
    assert fields(redis_db, "ticker:bybit:BTC-USDT", ("price", "high_24h", "low_24h", "volume_24h")) == (
        "60000.70", "61000.50", "58000.10", "1234.500")
    assert fields(redis_db, "kline:binance:BTC-USDT:1m", (*OHLC, "volume")) == (
        "60000.70000000", "60001.00000000", "60000.10000000", "60000.70000000", "12.50000000")
    assert fields(redis_db, "kline:okx:BTC-USDT:1m", (*OHLC, "volume")) == (
        "60000.7", "60001", "60000.1", "60000.7", "12.5")


def test_equal_prices_written_differently_keep_each_venues_string_across_batches(redis_server: Any,
                                                                                 redis_db: Any) -> None:
    # One sink, as in the dataflow: the first batch's strings must not be reused for the second's equal numbers.
    part = RedisPipelineSink(redis_server.url, MarketWriter()).build_part("redis", "0", None)
    try:
        part.write_batch([[binance_ticker("60000.70000000", "60000.60000000", "60000.80000000"),
                           binance_kline("60000.70000000", "60001.00000000", "60000.10000000", "60000.70000000")]])
        part.write_batch([[okx_ticker("60000.7", "60000.6", "60000.8"),
                           okx_kline("60000.7", "60001", "60000.1", "60000.7")]])
        part.write_batch([[bybit_ticker("60000.70")]])
        part.write_batch([[binance_ticker("60000.7000", "60000.6", "60000.80")]])  # a venue changing its width
    finally:
        part.close()
    assert fields(redis_db, "ticker:okx:BTC-USDT", ("price", "bid", "ask")) == ("60000.7", "60000.6", "60000.8")
    assert fields(redis_db, "kline:okx:BTC-USDT:1m", OHLC) == ("60000.7", "60001", "60000.1", "60000.7")
    assert fields(redis_db, "kline:binance:BTC-USDT:1m", OHLC) == (
        "60000.70000000", "60001.00000000", "60000.10000000", "60000.70000000")
    assert redis_db.hget("ticker:bybit:BTC-USDT", "price") == "60000.70"
    assert fields(redis_db, "ticker:binance:BTC-USDT", ("price", "bid", "ask")) == ("60000.7000", "60000.6",
                                                                                    "60000.80")


def test_trades_events_are_each_trades_own_bytes_in_order(redis_server: Any, redis_db: Any) -> None:
    # The @trades events of a batch go to Redis as one packed argument per channel (push_streams._XADD_MANY):
    # each entry must still be exactly trade_event's bytes, in order, whatever the length or the characters.
    trades = [Trade("local", "BTC-USDT", tid, Decimal(price), Decimal("0.00100000"), "buy", TS + i)
              for i, (tid, price) in enumerate([("1", "60000.70000000"), ("x" * 300, "60000.7"),
                                                 ("é-\u00e9-\"q\"", "6E+4"), ("4", "0.00000001")])]
    trades.append(Trade("local", "ETH-USDT", "5", Decimal("3000.5"), Decimal("2"), "sell", TS))
    write(redis_server, trades)
    for inst in ("BTC-USDT", "ETH-USDT"):
        got = [f["d"] for _, f in redis_db.xrange(f"stream:{inst}@trades")]
        assert got == [trade_event(t).decode() for t in trades if t.instrument == inst]


def test_fired_price_is_the_trades_own_string(redis_db: Any) -> None:
    store = AlertStore(redis_db)
    first, second = (create_alert(parse_new_alert({"crypto": "BTC-USDT", "price": "60000", "direction": True,
                                                   "email": "a@b.example"}), TS, alert_id=f"{i:032x}")
                     for i in (1, 2))
    matcher = AlertMatcher(redis_db)
    store.add(first)
    assert matcher.match([("BTC-USDT", Decimal("60000.70000000"), TS)], now_ms=TS) == [first.id]
    store.add(second)
    assert matcher.match([("BTC-USDT", Decimal("60000.7"), TS + 1)], now_ms=TS + 1) == [second.id]
    assert redis_db.hget(f"alert:{first.id}", "fired_price") == "60000.70000000"
    assert redis_db.hget(f"alert:{second.id}", "fired_price") == "60000.7"
    jobs = {j["alert_id"]: j for j in map(orjson.loads, redis_db.lrange("queue:email", 0, -1))}
    for alert, price, ts in ((first, "60000.70000000", TS), (second, "60000.7", TS + 1)):
        subject, body = render_email(alert.id, "BTC-USDT", True, "60000", price, iso_ms(ts))
        assert (jobs[alert.id]["subject"], jobs[alert.id]["body"]) == (subject, body)


# A finite Decimal, written plainly, with 0-8 extra trailing zeros: equal values, different exponents.
_plain = st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("-1e12"), max_value=Decimal("1e12"),
                     places=None)


def _spellings(v: Decimal, zeros: list[int]) -> list[Decimal]:
    """``v`` itself, with extra trailing zeros, and normalized (``6E+4``): equal values, different exponents."""
    text = format(v, "f")
    point = "" if "." in text else "."
    return [v, v.normalize(), *(Decimal(f"{text}{point}{'0' * z}") for z in zeros)]


@st.composite
def _interleaved(draw: st.DrawFn) -> list[Decimal]:
    out: list[Decimal] = []
    for v in draw(st.lists(_plain, min_size=1, max_size=30)):
        out += _spellings(v, draw(st.lists(st.integers(1, 8), min_size=1, max_size=3)))
    return draw(st.permutations(out))


@given(_interleaved())
def test_num_formats_the_very_decimal_it_gets(values: list[Decimal]) -> None:
    assert any(a == b and format(a, "f") != format(b, "f") for a in values for b in values)  # not trivial
    for d in values:
        assert _num(d) == format(d, "f")
