"""Junk in -> only typed values or typed rejections out, for every parser of untrusted text.

Every parser (OKX books and REST books, OKX/Binance/Bybit market data, the venues' WebSocket ``classify``
hooks, alert hashes) gets deeply nested values (1,000 and 10,000 levels, arrays and objects, inside ``data``
and under unknown keys), a 5 MB frame, and hypothesis-generated junk; none may raise. The processors that
run them count each rejection (``rejected_<reason>`` and ``<dataflow>:rejected_<reason>``) and keep going.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from connectors import untrusted
from connectors.alerts.store import AlertStore, AlertUnreadable, parse_alert_hash
from connectors.binance.market import parse_binance_frame
from connectors.binance.protocol import BinanceHooks
from connectors.bybit.market import parse_bybit_frame
from connectors.bybit.protocol import BybitHooks
from connectors.market.frames import MARKET_REASONS, ParseError
from connectors.market.source import MarketProcessor, MarketStats, _binance_parse
from connectors.okx.book_source import BookState, BufferFrame, OkxBookProcessor, ShardStats
from connectors.okx.books import PARSE_REASONS, parse_books_frame, parse_rest_books
from connectors.okx.market import parse_okx_market_frame
from connectors.okx.protocol import OkxHooks
from connectors.redis.analysis_sink import AnalysisRedisSink, RejectCounts
from connectors.untrusted import Rejected, RejectTally
from connectors.ws.events import Disconnected, Frame, Subscribed, TopicsChecked
from connectors.ws.hooks import Ack, Ignored, Notice, Pong, Reject
from operators.alerts import Alert
from operators.book_checksum import okx_checksum
from operators.events import BestQuote, BookDelta, Kline, Level, Ticker, Trade

DATA = Path(__file__).parent / "data"
SYMBOLS = {"BTCUSDT": "BTC-USDT", "ETHUSDT": "ETH-USDT"}


# ------------------------------------------------------------------------------------------- poison
def nested_arrays(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_objects(depth: int) -> str:
    return '{"x":' * depth + "1" + "}" * depth


def nested_in_data(depth: int) -> str:
    return '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":' + nested_arrays(depth) + "}"


def bare_data(depth: int) -> str:
    return '{"data":' + nested_arrays(depth) + "}"


def nested_unknown_key(depth: int) -> str:
    """A well-formed book frame with one unknown key holding a deep value (skipped by the typed decoder)."""
    good = BOOK_UPDATE[:-1]
    return good + ',"extra":' + nested_objects(depth) + "}"


def five_mb() -> str:
    head = '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":[],"bids":[],"ts":"'
    return head + "1" * (5 * 1024 * 1024) + '"}]}'


BOOK_SNAPSHOT = orjson.dumps({"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "snapshot", "data": [{
    "asks": [["11", "1", "0", "1"]], "bids": [["10", "1", "0", "1"]], "ts": "1700000000000",
    "checksum": okx_checksum([Level("10", "1")], [Level("11", "1")]), "prevSeqId": -1, "seqId": 100}]}).decode()
BOOK_UPDATE = orjson.dumps({"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "update", "data": [{
    "asks": [], "bids": [["10", "2", "0", "1"]], "ts": "1700000000001", "checksum": 0, "prevSeqId": 100,
    "seqId": 101}]}).decode()

POISON: dict[str, str] = {
    "arrays_1k": nested_arrays(1000),
    "arrays_10k": nested_arrays(10_000),
    "objects_1k": nested_objects(1000),
    "objects_10k": nested_objects(10_000),
    "data_1k": nested_in_data(1000),
    "data_10k": nested_in_data(10_000),
    "bare_data_1k": bare_data(1000),
    "unknown_key_1k": nested_unknown_key(1000),
    "unclosed_100k": "[" * 100_000,
}
DEEP_REASONS = {"too_deep", "unknown_message", "wrong_type", "malformed_json"}  # how each shape can be refused


# ---------------------------------------------------------------------------------------- the parsers
NON_BOOK = (Ack, Reject, Notice, Pong, Ignored)  # every parser's non-data results: the machinery's control types


def books(raw: str | bytes) -> list[Any]:
    out = parse_books_frame(raw, recv_ns=1)
    return list(out) if isinstance(out, tuple) else [out]


def rest(raw: str | bytes) -> list[Any]:
    return [parse_rest_books(raw, instrument="BTC-USDT", recv_ns=1)]


def okx_market(raw: str | bytes) -> list[Any]:
    return parse_okx_market_frame(raw, recv_ns=1)


def binance(raw: str | bytes) -> list[Any]:
    return parse_binance_frame(raw, recv_ns=1, symbols=SYMBOLS)


def bybit(raw: str | bytes) -> list[Any]:
    return parse_bybit_frame(raw, recv_ns=1, symbols=SYMBOLS)


PARSERS: dict[str, Callable[[str | bytes], list[Any]]] = {
    "okx_books": books, "okx_rest_books": rest, "okx_market": okx_market, "binance": binance, "bybit": bybit,
}
TYPED = (BookDelta, Trade, Ticker, BestQuote, Kline, *NON_BOOK)
HOOKS = {"okx": OkxHooks("ws://x", channel="books"), "okx_multi": OkxHooks("ws://x"),
         "binance": BinanceHooks("ws://x"), "bybit": BybitHooks("ws://x")}


def only_typed(items: list[Any]) -> list[Rejected]:
    """Every item is a domain value, a typed control message or a Rejected with a known reason."""
    rejected = []
    for item in items:
        if isinstance(item, Rejected):
            assert item.reason in PARSE_REASONS or item.reason in MARKET_REASONS, item
            assert len(item.sample) <= untrusted.SAMPLE_CHARS + 1 and len(item.detail) <= untrusted.SAMPLE_CHARS
            rejected.append(item)
        else:
            assert isinstance(item, TYPED), item
    return rejected


@pytest.mark.parametrize("name", sorted(POISON))
@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_nested_poison_is_a_typed_rejection(parser: str, name: str) -> None:
    for raw in (POISON[name], POISON[name].encode()):
        rejected = only_typed(PARSERS[parser](raw))
        assert len(rejected) == 1, (parser, name)
        assert rejected[0].reason in DEEP_REASONS, (parser, name, rejected[0])


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_a_5_mb_frame_is_rejected_unread(parser: str) -> None:
    (r,) = only_typed(PARSERS[parser](five_mb()))
    assert r.reason == "too_large" and r.sample.startswith('{"arg"') and r.sample.endswith("…")


def test_deep_values_are_too_deep_and_known_reasons_stay() -> None:
    for name in ("objects_1k", "objects_10k", "data_1k", "data_10k", "unknown_key_1k"):
        (r,) = books(POISON[name])
        assert isinstance(r, ParseError) and r.reason == "too_deep", (name, r)
        assert r.raw == r.sample  # the old field name still reads
    (neg,) = books(BOOK_UPDATE.replace('"2"', '"-2"'))
    assert isinstance(neg, ParseError) and neg.reason == "negative_size"
    (chan,) = books(BOOK_UPDATE.replace('"books"', '"trades"'))
    assert isinstance(chan, ParseError) and chan.reason == "unknown_channel"
    (lst,) = books(POISON["arrays_10k"])  # not an object: refused at the first byte, however deep
    assert isinstance(lst, ParseError) and lst.reason == "unknown_message"
    assert books("pong") == [Pong()]
    (deep,) = binance('{"stream":"btcusdt@trade","data":' + nested_objects(1000) + "}")
    assert isinstance(deep, ParseError) and deep.reason == "too_deep" and deep.venue == "binance"


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_classify_on_the_io_thread_never_raises(hook: str) -> None:
    for raw in [*POISON.values(), five_mb(), "pong", "", "{", '{"event":' + nested_arrays(5000) + "}"]:
        HOOKS[hook].classify(raw)  # a control answer or None (the data parser decides); never an exception


# --------------------------------------------------------------------------------------- hypothesis
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["arg", "data", "event", "channel", "instId", "stream", "topic", "op", "e", "s", "p",
                         "q", "asks", "bids", "ts", "code", "action", "x"]), children, max_size=5),
    max_leaves=20,
)


def _fixture_frames() -> list[str]:
    frames = [BOOK_SNAPSHOT, BOOK_UPDATE]
    for path in [DATA / "okx_market_frames.jsonl", DATA / "bybit_market_frames.jsonl"]:
        if path.exists():
            for line in path.read_text().splitlines()[:30]:
                obj = json.loads(line)
                frames.append(obj["data"] if isinstance(obj, dict) and "data" in obj and isinstance(obj["data"], str)
                              else line)
    return frames


FIXTURE_FRAMES = _fixture_frames()


@st.composite
def mutated_frames(draw: st.DrawFn) -> str:
    """A real frame with a slice replaced by junk, nesting or a huge number."""
    base = draw(st.sampled_from(FIXTURE_FRAMES))
    start = draw(st.integers(0, len(base)))
    end = draw(st.integers(start, len(base)))
    junk = draw(st.one_of(st.text(max_size=12), st.sampled_from(
        ["[" * 2000, '{"x":' * 1500, '"1e999999999"', '"NaN"', '"-0.5"', '"\\u0661"', "null", "[]", "{}"])))
    return base[:start] + junk + base[end:]


junk = st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                 json_values.map(lambda v: json.dumps(v)), mutated_frames())


@given(junk)
def test_junk_in_only_typed_out(raw: str) -> None:
    for parse in PARSERS.values():
        only_typed(parse(raw))
        only_typed(parse(raw.encode("utf-8", "surrogatepass")))
    for hooks in HOOKS.values():
        hooks.classify(raw)


fields_strategy = st.dictionaries(
    st.sampled_from(["id", "crypto", "price", "direction", "email", "created_at", "status", "fired_price",
                     "fired_at", "x"]),
    st.one_of(st.text(max_size=20), st.sampled_from(["BTC-USDT", "1e999999", "NaN", "-1", "true", "x" * 5000])),
)


@given(fields_strategy)
def test_alert_hash_junk_in_only_typed_out(fields: dict[str, str]) -> None:
    assert isinstance(parse_alert_hash(fields), Alert | Rejected)


# ------------------------------------------------------------------------------------------- tallies
class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))


def test_reject_tally_counts_per_dataflow_and_logs_once_per_reason() -> None:
    log = Log()
    tally = RejectTally(log, "market_data", event="market_parse_error")
    for _ in range(3):
        tally.add(untrusted.rejected("too_deep", "deep", POISON["arrays_10k"]))
    tally.add(untrusted.rejected("malformed_json", "bad", "{"))
    assert tally.drain() == {"rejected_messages": 4, "rejected_too_deep": 3, "rejected_malformed_json": 1,
                             "market_data:rejected_messages": 4, "market_data:rejected_too_deep": 3,
                             "market_data:rejected_malformed_json": 1}
    assert tally.drain() == {}
    assert [(e, kw["reason"]) for e, kw in log.lines] == [("market_parse_error", "too_deep"),
                                                           ("market_parse_error", "malformed_json")]
    assert len(log.lines[0][1]["sample"]) <= untrusted.SAMPLE_CHARS + 1


class Control:
    connections = 1
    reconnects = 0

    def resubscribe(self, topic: str) -> None: ...

    def fetch(self, topic: str) -> None: ...


def test_the_book_processor_counts_poison_and_applies_the_next_frame() -> None:
    p = OkxBookProcessor(0, Control(), channel="books")
    p.on_events([TopicsChecked(1, True, ("BTC-USDT",), ("BTC-USDT",)), Subscribed(0, "BTC-USDT")])
    frames = [Frame(POISON["data_10k"], 1, 0), Frame(BOOK_SNAPSHOT, 2, 0), Frame(five_mb(), 3, 0),
              Frame(POISON["objects_1k"], 4, 0), Frame(BOOK_UPDATE, 5, 0)]
    out = p.on_events(frames)
    assert [i.text for i in out if isinstance(i, BufferFrame)] == [BOOK_SNAPSHOT, BOOK_UPDATE]
    view = [i for i in out if not isinstance(i, BufferFrame | BookState | ShardStats)][-1]
    assert view.bids == (Level("10", "2"),)  # the update after the poison was applied
    out += p.on_events([Disconnected(0, "ConnectionClosedError: sent 1009", ("BTC-USDT",), rejected="too_large")])
    counters: dict[str, int] = {}
    for item in [*out, *p.on_tick(10**18)]:  # every stats item (a gauge change reports early) adds its counters
        if isinstance(item, ShardStats):
            for name, n in item.counters:
                counters[name] = counters.get(name, 0) + n
    assert counters["rejected_too_deep"] == 2 and counters["orderbook_collector:rejected_too_deep"] == 2
    assert counters["rejected_too_large"] == 2 and counters["orderbook_collector:rejected_too_large"] == 2
    assert counters["rejected_messages"] == 4


def test_the_market_processor_counts_poison_and_passes_the_next_trade() -> None:
    p = MarketProcessor("binance", "binance", 0, Control(), _binance_parse, primary="trade")
    trade = ('{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"1.5","q":"2",'
             '"T":5,"m":false,"M":true}}')
    out = p.on_events([TopicsChecked(1, True, ("trade:BTC-USDT",), ("trade:BTC-USDT",)),
                       Frame(POISON["data_1k"], 1, 0), Frame(five_mb(), 2, 0), Frame(trade, 3, 0)])
    # The pair's first trade: its id is the seq, flagged as a gap (nothing before it was seen).
    assert out == [Trade("binance", "BTC-USDT", "7", Decimal("1.5"), Decimal(2), "buy", 5, 3, seq=7, gap=True)]
    (stats,) = p.on_tick(10**18)
    assert isinstance(stats, MarketStats)
    c = dict(stats.counters)
    assert c["market_data:rejected_too_large"] == 1 and c["rejected_messages"] == 2
    assert c["market_data:rejected_too_deep"] + c.get("market_data:rejected_wrong_type", 0) == 1


# ------------------------------------------------------------------------------------ real Redis reads
def test_the_analysis_sink_counts_rejections_in_system_monitoring(redis_server: Any, redis_db: redis.Redis) -> None:
    part = AnalysisRedisSink(redis_server.url).build("s", 0, 1)
    try:
        bad = [books(POISON[n])[0] for n in ("objects_1k", "data_1k", "objects_10k")]
        part.write_batch([*bad, parse_books_frame(five_mb(), recv_ns=1),
                          RejectCounts((("rejected_messages", 1), ("orderbook_analysis:rejected_too_large", 1)))])
    finally:
        part.close()
    mon = redis_db.hgetall("system:monitoring")
    assert mon["orderbook_analysis:rejected_too_deep"] == "3" and mon["rejected_too_deep"] == "3"
    assert mon["orderbook_analysis:rejected_too_large"] == "2" and mon["rejected_messages"] == "5"


def test_alert_store_reads_skip_a_poisoned_hash(redis_db: redis.Redis, redis_server: Any) -> None:
    store = AlertStore.from_url(redis_server.url)
    a1, a2, a3, a4 = ("a" * 31 + str(i) for i in range(1, 5))
    good = {"id": a1, "crypto": "BTC-USDT", "price": "40000", "direction": "true", "email": "a@example.com",
            "created_at": "2026-01-01T00:00:00Z", "status": "active"}
    redis_db.hset(f"alert:{a1}", mapping=good)
    redis_db.hset(f"alert:{a2}", mapping={**good, "id": a2, "email": "x" * (5 * 1024 * 1024)})
    redis_db.hset(f"alert:{a3}", mapping={**good, "id": a3, "price": nested_arrays(10_000)})
    redis_db.hset(f"alert:{a4}", mapping={**good, "id": a4, "price": "[[[1]]]"})
    assert [a.id for a in store.iter_all()] == [a1]
    with pytest.raises(AlertUnreadable) as err:
        store.get(a2)
    assert err.value.rejected.reason == "too_large"
    with pytest.raises(AlertUnreadable) as err:
        store.get(a4)
    assert err.value.rejected.reason == "wrong_type"
    assert store.get(a1).price == Decimal(40000)


def test_times_beyond_the_year_2286_are_rejected_not_passed_on() -> None:
    """A huge time would overflow a datetime conversion in a sink, far from the parser: refused here."""
    far = "9" * 20
    (okx,) = okx_market('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
                        f'"tradeId":"1","px":"1","sz":"1","side":"buy","ts":"{far}"}}]}}')
    (bn,) = binance('{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"1.5","q":"2",'
                    f'"T":{far},"m":false,"M":true}}}}')
    (by,) = bybit('{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1,"data":[{"i":"1","T":' + far
                  + ',"p":"1","v":"1","S":"Buy","s":"BTCUSDT"}]}')
    assert [r.reason for r in (okx, bn, by)] == ["invalid_number", "wrong_type", "wrong_type"], (okx, bn, by)
    (big,) = okx_market('{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
                        '"tradeId":"1","px":"1e999999","sz":"1","side":"buy","ts":"1"}]}')
    assert isinstance(big, ParseError) and big.reason == "invalid_number"


def test_the_rest_fetcher_reads_at_most_the_limit() -> None:
    """A real loopback HTTP server answering a small body, then a 5 MB one: the second is refused unread."""
    import asyncio

    from aiohttp import web

    from connectors.okx.rest import OkxBooksFetcher, OkxRestError
    from cryptoflow.servers import free_port

    async def run() -> None:
        bodies = {"BTC-USDT": '{"code":"0","data":[]}', "ETH-USDT": '{"code":"0","data":"' + "1" * FIVE + '"}'}

        async def books_handler(request: web.Request) -> web.Response:
            return web.Response(text=bodies[request.query["instId"]])

        app = web.Application()
        app.router.add_get("/api/v5/market/books", books_handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        fetch = OkxBooksFetcher(f"http://127.0.0.1:{port}")
        try:
            assert await fetch("BTC-USDT") == bodies["BTC-USDT"]
            with pytest.raises(OkxRestError, match="too_large"):
                await fetch("ETH-USDT")
        finally:
            await fetch.close()
            await runner.cleanup()

    asyncio.run(run())


FIVE = 5 * 1024 * 1024
