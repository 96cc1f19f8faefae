"""Market-data parsers of OKX, Binance and Bybit: one fixture per wire shape, junk -> typed errors only."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from hypothesis import given, settings

from connectors.binance.market import parse_binance_frame
from connectors.bybit.market import parse_bybit_frame
from connectors.market.frames import ParseError, symbol_map
from connectors.okx.market import parse_okx_market_frame
from connectors.ws.hooks import Ack, Chatter, Ignored, Notice, Pong, Reject
from operators.events import BestQuote, Kline, Ticker, Trade
from tests.junk_frames import junk_frames

DATA = Path(__file__).parent / "data"
SYMS = symbol_map(["BTC-USDT", "FTM-USDT", "SXP-BTC", "XMR-BTC", "BADGER-BTC", "NKN-USDT", "LRC-BTC",
                   "BLZ-ETH", "RUNE-EUR", "OP-USDC", "ETH-USDT", "UNI-USD-SWAP"])


def frames(path: Path) -> list[str]:
    return [json.loads(line)["data"] for line in path.read_text().splitlines() if line.strip()]


def test_symbol_map_keeps_spot_ids_only() -> None:
    assert symbol_map(["BTC-USDT", "UNI-USD-SWAP", "BTC-USD-220527"]) == {"BTCUSDT": "BTC-USDT"}


# ------------------------------------------------------------------------------------------------ Binance
def test_binance_recorded_aggtrades_and_klines() -> None:
    items = [i for f in frames(DATA / "binance/binance-2021-08-14-aggtrade-kline.jsonl")
             for i in parse_binance_frame(f, recv_ns=1, symbols=SYMS)]
    assert all(isinstance(i, Trade | Kline) for i in items)
    trades = [i for i in items if isinstance(i, Trade)]
    assert trades[0] == Trade("binance", "FTM-USDT", "31718372", Decimal("0.33993000"), Decimal("99.90000000"),
                              "sell", 1628952396572, 1, 1, seq=38248910)  # seq: the last underlying id l
    (two,) = [t for t in trades if t.trade_id == "14455219"]  # f=17567412, l=17567413
    assert two.count == 2 and two.instrument == "SXP-BTC" and two.side == "buy"
    closed = [k for k in items if isinstance(k, Kline) and k.closed]
    assert [(k.instrument, k.open_ms, k.close_ms, k.trades, k.close) for k in closed] == [
        ("FTM-USDT", 1628952360000, 1628952420000, 82, Decimal("0.33964000")),
        ("SXP-BTC", 1628952360000, 1628952420000, 15, Decimal("0.00007483")),
    ]
    assert all(k.source == "venue" and k.timeframe == "1m" for k in items if isinstance(k, Kline))


def test_binance_trade_ticker_and_control() -> None:
    (t,) = parse_binance_frame(frames(DATA / "binance/binance-2021-10-12-aggtrade-kline.jsonl")[0], recv_ns=5,
                               symbols=SYMS)
    assert isinstance(t, Trade) and t.instrument == "NKN-USDT" and t.side == "buy"
    trade = ('{"stream":"ethusdt@trade","data":{"e":"trade","E":1723161255612,"s":"ETHUSDT","t":1520538925,'
             '"p":"2683.80000000","q":"0.00200000","T":1723161255611,"m":true,"M":true}}')
    assert parse_binance_frame(trade, recv_ns=0, symbols=SYMS) == [
        Trade("binance", "ETH-USDT", "1520538925", Decimal("2683.8"), Decimal("0.002"), "sell", 1723161255611,
              seq=1520538925)]
    ticker = ('{"stream":"btcusdt@ticker","data":{"e":"24hrTicker","E":1672515782136,"s":"BTCUSDT","p":"0.0015",'
              '"P":"250.00","w":"0.0018","x":"0.0009","c":"0.0025","Q":"10","b":"0.0024","B":"10","a":"0.0026",'
              '"A":"100","o":"0.0010","h":"0.0025","l":"0.0010","v":"10000","q":"18","O":0,"C":86400000,"F":0,'
              '"L":18150,"n":18151}}')
    assert parse_binance_frame(ticker, recv_ns=0, symbols=SYMS) == [
        Ticker("binance", "BTC-USDT", Decimal("0.0025"), Decimal("0.0024"), Decimal("0.0026"), Decimal(10000),
               Decimal(250), Decimal("0.0025"), Decimal("0.0010"), 1672515782136)]
    assert parse_binance_frame('{"result":null,"id":3}', recv_ns=0, symbols=SYMS) == [Ack(None, (), "3")]
    (err,) = parse_binance_frame('{"error":{"code":2,"msg":"Invalid request"},"id":4}', recv_ns=0, symbols=SYMS)
    assert err == Reject("2 Invalid request", (), "4")
    shutdown = '{"stream":"btcusdt@trade","data":{"e":"serverShutdown","E":1}}'
    assert parse_binance_frame(shutdown, recv_ns=0, symbols=SYMS)[0] == Notice("serverShutdown", reconnect=True)
    (unknown,) = parse_binance_frame(trade.replace("ETHUSDT", "DOGEUSDT"), recv_ns=0, symbols=SYMS)
    assert isinstance(unknown, ParseError) and unknown.reason == "not_subscribed"


# ------------------------------------------------------------------------------------------------ OKX
def test_okx_recorded_trades_and_tickers() -> None:
    items = [i for f in frames(DATA / "okx/okx-2022-05-13-books-trades-tickers.jsonl")
             for i in parse_okx_market_frame(f, recv_ns=0)]
    assert not [i for i in items if isinstance(i, ParseError)]
    trades = [i for i in items if isinstance(i, Trade)]
    tickers = [i for i in items if isinstance(i, Ticker)]
    assert len(trades) >= 74 and len(tickers) == 28
    assert Trade("okx", "UNI-USD-SWAP", "12883020", Decimal("5.123"), Decimal(100), "sell", 1652459215150,
                 seq=12883020) in trades
    t = next(t for t in tickers if t.instrument == "BTC-USD-220527")
    assert (t.price, t.bid, t.ask, t.high_24h, t.low_24h, t.volume_24h, t.ts_ms) == (
        Decimal("30218.8"), Decimal("30210.4"), Decimal("30220.1"), Decimal("31003.3"), Decimal("27930.8"),
        Decimal(779573), 1652459223003)
    assert t.change_24h == (Decimal("30218.8") - Decimal("29571.4")) * 100 / Decimal("29571.4")
    assert {type(i) for i in items if isinstance(i, Chatter)} == {Ack, Ignored}


def test_okx_candles_events_and_count() -> None:
    items = [i for f in frames(DATA / "okx_market_frames.jsonl") for i in parse_okx_market_frame(f, recv_ns=0)]
    klines = [i for i in items if isinstance(i, Kline)]
    assert [(k.timeframe, k.open_ms, k.close_ms, k.closed, k.volume, k.quote_volume) for k in klines] == [
        ("1m", 1699999980000, 1700000040000, True, Decimal("12.5"), Decimal("462551.25")),
        ("1m", 1700000040000, 1700000100000, False, Decimal("0.5"), Decimal(18501)),
        ("1d", 1699920000000, 1700006400000, False, Decimal("9000.5"), Decimal(333000000)),
    ]
    assert all(k.source == "venue" and k.trades == 0 for k in klines)
    (trade,) = [i for i in items if isinstance(i, Trade)]
    assert trade.count == 3
    assert Ack("subscribe", ("candle1m:BTC-USDT",)) in items  # topics as the market source's hooks name them
    errors = [i for i in items if isinstance(i, Reject)]
    assert errors and "60018" in errors[0].reason
    assert parse_okx_market_frame("pong", recv_ns=0) == [Pong()]


# ------------------------------------------------------------------------------------------------ Bybit
def test_bybit_frames() -> None:
    items = [i for f in frames(DATA / "bybit_market_frames.jsonl") for i in parse_bybit_frame(f, recv_ns=7,
                                                                                               symbols=SYMS)]
    assert not [i for i in items if isinstance(i, ParseError)]
    trades = [i for i in items if isinstance(i, Trade)]
    assert trades == [
        Trade("bybit", "BTC-USDT", "2290000000007764263", Decimal("16578.50"), Decimal("0.001"), "buy",
              1672304486865, 7),
        Trade("bybit", "BTC-USDT", "2290000000007764264", Decimal("16578.00"), Decimal("0.010"), "sell",
              1672304486866, 7),
    ]
    (ticker,) = [i for i in items if isinstance(i, Ticker)]
    assert (ticker.bid, ticker.ask, ticker.change_24h, ticker.volume_24h) == (
        None, None, Decimal("1.96"), Decimal("6780.866843"))
    (kline,) = [i for i in items if isinstance(i, Kline)]
    assert (kline.open_ms, kline.close_ms, kline.closed, kline.quote_volume) == (
        1672324800000, 1672324860000, True, Decimal("34666.4005"))
    (quote,) = [i for i in items if isinstance(i, BestQuote)]
    assert (quote.bid, quote.ask) == (Decimal("16493.50"), Decimal("16611.00"))
    assert [i for i in items if isinstance(i, Chatter)] == [
        Ack("subscribe"), Pong(), Reject("Invalid symbol :[tickers.FOOUSDT]", (), None, "subscribe")]


def test_bybit_recorded_orderbook1() -> None:
    items = [i for f in frames(DATA / "bybit/bybit-2025-06-13-orderbook1-spot.jsonl")
             for i in parse_bybit_frame(f, recv_ns=0, symbols=SYMS | {"OPUSDC": "OP-USDC"})]
    quotes = [i for i in items if isinstance(i, BestQuote)]
    assert quotes and all(q.bid < q.ask for q in quotes)
    assert BestQuote("bybit", "OP-USDC", Decimal("0.579"), Decimal("0.58"), 1749833472906) in quotes
    # symbols nobody subscribed are reported, not guessed
    assert all(isinstance(i, BestQuote | Chatter) or i.reason == "not_subscribed" for i in items)


# ------------------------------------------------------------------------------------------------ junk
ALL_FRAMES = (frames(DATA / "okx_market_frames.jsonl") + frames(DATA / "bybit_market_frames.jsonl")
              + frames(DATA / "binance/binance-2021-10-12-aggtrade-kline.jsonl")[:4])
MARKET_KEYS = ("stream", "data", "arg", "topic", "e", "s", "p", "q", "event", "op", "id", "ts", "channel", "instId",
               "k", "success", "px", "sz")


@given(junk_frames(ALL_FRAMES, MARKET_KEYS, cut_max=400, max_leaves=15, max_keys=5))
@settings(max_examples=400, deadline=None)
def test_junk_gives_typed_items_never_exceptions(raw: bytes | str) -> None:
    for parse in (lambda r: parse_okx_market_frame(r, recv_ns=0),
                  lambda r: parse_binance_frame(r, recv_ns=0, symbols=SYMS),
                  lambda r: parse_bybit_frame(r, recv_ns=0, symbols=SYMS)):
        for item in parse(raw):
            assert isinstance(item, Trade | Ticker | BestQuote | Kline | Chatter | ParseError)
            if isinstance(item, Trade):
                assert item.price.is_finite() and item.size.is_finite() and item.count >= 1
