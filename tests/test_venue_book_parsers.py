"""The Binance and Bybit book parsers: one test per wire shape, and junk in -> only typed items out."""

from __future__ import annotations

import json

from hypothesis import given, settings

from connectors import untrusted
from connectors.binance.books import BookTicker, depth_weight, parse_binance_book_frame, parse_depth_snapshot
from connectors.bybit.books import parse_bybit_book_frame
from connectors.market.frames import MARKET_REASONS, ParseError
from connectors.ws.hooks import Ack, Control, Notice, Pong, Reject
from operators.events import BookDelta, Level
from tests.junk_frames import junk_frames

SYMS = {"ETHUSDT": "ETH-USDT", "XRPUSDT": "XRP-USDT"}
DEPTH = ('{"e":"depthUpdate","E":1723161255308,"s":"ETHUSDT","U":35346513499,"u":35346513505,'
         '"b":[["2683.80000000","3.02920000"],["2679.00000000","28.21530000"]],"a":[["2733.70000000","0.00000000"]]}')
WRAPPED = '{"stream":"ethusdt@depth@100ms","data":' + DEPTH + "}"
TICKER = ('{"stream":"ethusdt@bookTicker","data":{"u":35346513501,"s":"ETHUSDT","b":"2683.80000000",'
          '"B":"3.02920000","a":"2683.81000000","A":"31.43950000"}}')
REST = '{"lastUpdateId":35346513512,"bids":[["2683.80000000","3.02920000"]],"asks":[["2683.81000000","31.4395"]]}'
BYBIT_SNAP = ('{"topic":"orderbook.50.XRPUSDT","type":"snapshot","ts":1733011200691,"data":{"s":"XRPUSDT",'
              '"b":[["1.9531","6203"],["1.9530","2409"]],"a":[["1.9532","100"]],"u":20254869,"seq":130020238981},'
              '"cts":1733011200689}')
BYBIT_DELTA = ('{"topic":"orderbook.50.XRPUSDT","type":"delta","ts":1733011200791,"data":{"s":"XRPUSDT",'
               '"b":[["1.9531","0"]],"a":[["1.9533","7"]],"u":20254870,"seq":130020239261},"cts":1733011200789}')
ALL_FRAMES = [DEPTH, WRAPPED, TICKER, REST, BYBIT_SNAP, BYBIT_DELTA]


def test_binance_depth_bare_and_wrapped_keep_exact_strings() -> None:
    reordered = '{"data":' + DEPTH + ',"stream":"ethusdt@depth@100ms"}'
    for raw in (DEPTH, WRAPPED, WRAPPED.encode(), reordered):
        d = parse_binance_book_frame(raw, recv_ns=7, symbols=SYMS)
        assert d == BookDelta("binance", "ETH-USDT", "update",
                              (Level("2683.80000000", "3.02920000"), Level("2679.00000000", "28.21530000")),
                              (Level("2733.70000000", "0.00000000"),), 1723161255308, 7, 0, 35346513505,
                              35346513498)


def test_binance_rest_snapshot_ticker_and_controls() -> None:
    snap = parse_depth_snapshot(REST, instrument="ETH-USDT", recv_ns=5_000_000)
    assert snap == BookDelta("binance", "ETH-USDT", "snapshot", (Level("2683.80000000", "3.02920000"),),
                             (Level("2683.81000000", "31.4395"),), 5, 5_000_000, 0, 35346513512, None)
    err = parse_depth_snapshot('{"code":-1121,"msg":"Invalid symbol."}', instrument="X-Y", recv_ns=0)
    assert err == Reject("-1121 Invalid symbol.", ("X-Y",))
    assert parse_binance_book_frame(TICKER, recv_ns=3, symbols=SYMS) == BookTicker(
        "binance", "ETH-USDT", 35346513501, Level("2683.80000000", "3.02920000"),
        Level("2683.81000000", "31.43950000"), 3)
    bare_ticker = json.dumps(json.loads(TICKER)["data"])
    assert isinstance(parse_binance_book_frame(bare_ticker, recv_ns=3, symbols=SYMS), BookTicker)
    assert parse_binance_book_frame('{"result":null,"id":7}', recv_ns=0, symbols=SYMS) == Ack(None, (), "7")
    assert parse_binance_book_frame('{"result":null,"id":"7"}', recv_ns=0, symbols=SYMS) == Ack(None, (), "7")
    assert parse_binance_book_frame('{"error":{"code":2,"msg":"x"},"id":7}', recv_ns=0, symbols=SYMS) == \
        Reject("2 x", (), "7")
    assert parse_binance_book_frame('{"e":"serverShutdown","E":1}', recv_ns=0, symbols=SYMS) == \
        Notice("serverShutdown", reconnect=True)
    assert (depth_weight(100), depth_weight(500), depth_weight(1000), depth_weight(5000)) == (5, 25, 50, 250)


def _reason(item: object) -> str:
    assert isinstance(item, ParseError), item
    assert item.reason in MARKET_REASONS
    return item.reason


def test_binance_bad_frames_are_typed() -> None:
    p = parse_binance_book_frame
    assert _reason(p(DEPTH.replace("ETHUSDT", "BTCUSDT"), recv_ns=0, symbols=SYMS)) == "not_subscribed"
    assert _reason(p(DEPTH.replace('"U":35346513499', '"U":35346513599'), recv_ns=0, symbols=SYMS)) == "invalid_value"
    assert _reason(p(DEPTH.replace('"3.02920000"', '"-3.0292"'), recv_ns=0, symbols=SYMS)) == "invalid_number"
    assert _reason(p(DEPTH.replace('"2683.80000000"', '"\\u0661"'), recv_ns=0, symbols=SYMS)) == "invalid_number"
    assert _reason(p(DEPTH.replace('"2683.80000000"', '"1e5"'), recv_ns=0, symbols=SYMS)) == "invalid_number"
    assert _reason(p(WRAPPED.replace('"u":35346513505,', ""), recv_ns=0, symbols=SYMS)) == "wrong_type"
    assert _reason(p('{"stream":"ethusdt@trade","data":{}}', recv_ns=0, symbols=SYMS)) == "unknown_channel"
    assert _reason(p("[" * 5000 + "]" * 5000, recv_ns=0, symbols=SYMS)) in ("too_deep", "wrong_type")
    assert _reason(p(" " * (untrusted.MAX_FRAME_BYTES + 1), recv_ns=0, symbols=SYMS)) == "too_large"
    assert _reason(parse_depth_snapshot("{", instrument="ETH-USDT", recv_ns=0)) == "malformed_json"


def test_bybit_snapshot_delta_u1_and_controls() -> None:
    snap = parse_bybit_book_frame(BYBIT_SNAP, recv_ns=1, symbols=SYMS)
    assert snap == BookDelta("bybit", "XRP-USDT", "snapshot", (Level("1.9531", "6203"), Level("1.9530", "2409")),
                             (Level("1.9532", "100"),), 1733011200691, 1, 0, 20254869, None)
    delta = parse_bybit_book_frame(BYBIT_DELTA.encode(), recv_ns=2, symbols=SYMS)
    assert isinstance(delta, BookDelta) and delta.action == "update" and delta.bids == (Level("1.9531", "0"),)
    reset = parse_bybit_book_frame(BYBIT_DELTA.replace('"u":20254870', '"u":1'), recv_ns=2, symbols=SYMS)
    assert isinstance(reset, BookDelta) and reset.action == "snapshot" and reset.seq_id == 1
    reordered = json.dumps({"type": "delta", **{k: v for k, v in json.loads(BYBIT_DELTA).items() if k != "type"}})
    assert parse_bybit_book_frame(reordered, recv_ns=2, symbols=SYMS) == delta  # keys in another order
    assert parse_bybit_book_frame('{"op":"pong","args":["1"]}', recv_ns=0, symbols=SYMS) == Pong()
    ack = parse_bybit_book_frame('{"success":false,"ret_msg":"Invalid symbol","op":"subscribe"}', recv_ns=0,
                                 symbols=SYMS)
    assert ack == Reject("Invalid symbol", (), None, "subscribe")


def test_bybit_bad_frames_are_typed() -> None:
    p = parse_bybit_book_frame
    assert _reason(p(BYBIT_DELTA.replace("XRPUSDT", "DOGEUSDT"), recv_ns=0, symbols=SYMS)) == "not_subscribed"
    assert _reason(p(BYBIT_DELTA.replace('"delta"', '"weird"'), recv_ns=0, symbols=SYMS)) == "invalid_value"
    assert _reason(p(BYBIT_DELTA.replace("orderbook.50.XRPUSDT", "orderbook.50.ETHUSDT"), recv_ns=0,
                     symbols=SYMS)) == "invalid_value"
    assert _reason(p(BYBIT_DELTA.replace('"u":20254870', '"u":0'), recv_ns=0, symbols=SYMS)) == "invalid_value"
    assert _reason(p(BYBIT_DELTA.replace('"7"', '"-7"'), recv_ns=0, symbols=SYMS)) == "invalid_number"
    assert _reason(p(BYBIT_DELTA.replace('"ts":1733011200791', '"ts":-1'), recv_ns=0, symbols=SYMS)) == "wrong_type"
    assert _reason(p('{"topic":"tickers.XRPUSDT","data":{}}', recv_ns=0, symbols=SYMS)) == "unknown_channel"
    assert _reason(p('{"x":1}', recv_ns=0, symbols=SYMS)) == "unknown_message"


BOOK_KEYS = ("stream", "data", "topic", "type", "e", "E", "s", "U", "u", "b", "a", "B", "A", "ts", "lastUpdateId",
             "bids", "asks", "op", "success", "id", "code", "seq")


@given(junk_frames(ALL_FRAMES, BOOK_KEYS, cut_max=300))
@settings(max_examples=500, deadline=None)
def test_junk_gives_typed_items_never_exceptions(raw: bytes | str) -> None:
    items = [parse_binance_book_frame(raw, recv_ns=0, symbols=SYMS),
             parse_bybit_book_frame(raw, recv_ns=0, symbols=SYMS),
             parse_depth_snapshot(raw, instrument="ETH-USDT", recv_ns=0)]
    for item in items:
        assert isinstance(item, BookDelta | BookTicker | Control | ParseError)
        if isinstance(item, ParseError):
            assert item.reason in MARKET_REASONS and len(item.sample) <= untrusted.SAMPLE_CHARS + 1
        if isinstance(item, BookDelta):  # whatever got through is a level a book accepts
            for lv in (*item.bids, *item.asks):
                assert lv.price.replace(".", "", 1).isdigit() and lv.price.isascii()
                assert lv.size.replace(".", "", 1).isdigit() and lv.size.isascii()
