"""Market-data dataflow logic in-process: venue hooks, the Redis/Influx sinks on real servers, ``wire()`` over
scripted items (late trade, empty minute, reconciliation, Bybit bid/ask), and worker-count independence."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from connectors.binance.protocol import BinanceHooks
from connectors.bybit.protocol import BybitHooks
from connectors.redis.market_sink import write_market
from connectors.ws.hooks import Ack, Notice, Pong, Reject
from cryptoflow.settings import load_settings
from dataflows.market_data import wire
from operators.events import BestQuote, Kline, Ticker, Trade
from operators.kline_steps import InstrumentRemoved, KlineOut, aggregate_klines
from tests.test_klines_golden import DATA, _lines, _parse, replay_now, settled

T0 = 1_723_161_600_000  # 2024-08-09 00:00 UTC
D = Decimal


# ------------------------------------------------------------------------------------------------ hooks
def test_binance_hooks_requests_and_answers() -> None:
    hooks = BinanceHooks("ws://x:1/")
    assert hooks.url() == "ws://x:1/stream"
    topics = [f"trade:C{i}-USDT" for i in range(250)]
    reqs = hooks.requests("subscribe", topics, 3)
    assert [len(r.topics) for r in reqs] == [100, 100, 50]
    assert reqs[0].text.startswith('{"method":"SUBSCRIBE","params":["c0usdt@trade"')
    assert hooks.limits.topics_per_connection == 1024 and hooks.limits.control_per_second == 5
    assert hooks.limits.max_age is not None and hooks.limits.max_age < 24 * 3600
    assert hooks.classify('{"result":null,"id":300}') == Ack("subscribe", (), "300")
    rej = hooks.classify('{"error":{"code":2,"msg":"Invalid request: unknown stream \'c1usdt@trade\'"},"id":301}')
    assert isinstance(rej, Reject) and rej.topics == () and rej.req_id == "301"  # the whole request failed
    assert hooks.classify('{"stream":"c0usdt@trade","data":{"e":"trade"}}') is None
    assert hooks.classify('{"e":"serverShutdown","E":1}') == Notice("serverShutdown", reconnect=True)


def test_bybit_hooks_requests_and_answers() -> None:
    hooks = BybitHooks("ws://x:1/v5/public/spot")
    reqs = hooks.requests("subscribe", [f"tickers:C{i}-USDT" for i in range(23)] + ["kline.1:BTC-USDT"], 1)
    assert [len(r.topics) for r in reqs] == [10, 10, 4]  # at most 10 args per subscribe
    assert '"args":["kline.1.BTCUSDT"]' not in reqs[-1].text and "kline.1.BTCUSDT" in reqs[-1].text
    assert hooks.keepalive.ping_text == '{"op":"ping"}' and hooks.keepalive.interval == 20
    assert hooks.classify('{"op":"pong","args":["1"],"conn_id":"a"}') == Pong()
    assert hooks.classify('{"success":true,"ret_msg":"pong","op":"ping"}') == Pong()
    assert hooks.classify('{"success":true,"ret_msg":"subscribe","req_id":"100","op":"subscribe"}') == Ack(
        "subscribe", (), "100")
    rej = hooks.classify('{"success":false,"ret_msg":"Invalid symbol :[tickers.C3USDT]","req_id":"100",'
                         '"op":"subscribe"}')
    assert isinstance(rej, Reject) and rej.topics == () and rej.req_id == "100"
    assert hooks.classify('{"topic":"publicTrade.BTCUSDT","data":[]}') is None


# ------------------------------------------------------------------------------------------------ sinks
def trade(ts: int, price: str, size: str = "1", inst: str = "BTC-USDT", venue: str = "binance") -> Trade:
    return Trade(venue, inst, str(ts), D(price), D(size), "buy", ts)


def venue_kline(start: int, o: str, h: str, lo: str, c: str, v: str, n: int) -> Kline:
    return Kline("binance", "BTC-USDT", "1m", start, start + 60_000, D(o), D(h), D(lo), D(c), D(v), D(0), n, True,
                 "venue")


def test_wire_writes_tickers_klines_and_monitoring(redis_server: Any, redis_db: Any, victoria: Any) -> None:
    settings = load_settings(redis_url=redis_server.url, influx_url=victoria.url, influx_bucket="wire_test",
                             price_alerts_enabled=False, kline_timeframes="1m,5m")
    items: list[Any] = [
        trade(T0 - 30_000, "100"),  # the minute before: makes minute 0 complete (reconcilable)
        trade(T0 + 1_000, "100"), trade(T0 + 30_000, "105", "2"), trade(T0 + 50_000, "99"),
        trade(T0 + 61_000, "101"), trade(T0 + 90_000, "102"),
        # minute 2: no trade
        trade(T0 + 185_000, "103"),
        trade(T0 + 100_000, "500", "7"),  # late: minute 1 closed 2 s after the watermark passed it
        trade(T0 + 239_000, "106"),
        venue_kline(T0, "100", "105", "99", "99", "4", 3),  # equal
        venue_kline(T0 + 60_000, "101", "102", "101", "101", "2", 2),  # close differs: a mismatch
        venue_kline(T0 + 120_000, "102", "102", "102", "102", "0", 0),  # the flat minute, equal
        Ticker("bybit", "BTC-USDT", D("100.5"), None, None, D(1000), D("1.5"), D(110), D(90), T0),
        BestQuote("bybit", "BTC-USDT", D("100.4"), D("100.6"), T0 + 5),
        Ticker("okx", "BTC-USDT", D(100), D("99.9"), D("100.1"), D(5), None, D(101), D(98), T0 + 7),
    ]
    flow = Dataflow("wire")
    wire(op.input("inp", flow, TestingSource(items, batch_size=1)), settings)
    run_main(flow)

    r = redis_db
    bybit = r.hgetall("ticker:bybit:BTC-USDT")
    assert (bybit["price"], bybit["bid"], bybit["ask"], bybit["change_24h"]) == ("100.5", "100.4", "100.6", "1.5000")
    assert bybit["timestamp"] == "2024-08-09T00:00:00.005Z"
    assert 0 < r.ttl("ticker:bybit:BTC-USDT") <= 300 and 0 < r.ttl("ticker:okx:BTC-USDT") <= 300
    assert "change_24h" not in r.hgetall("ticker:okx:BTC-USDT")
    k1 = r.hgetall("kline:binance:BTC-USDT:1m")
    assert k1["open_time"] == "2024-08-09T00:03:00.000Z" and k1["closed"] == "true"
    assert (k1["open"], k1["high"], k1["close"], k1["trades"]) == ("103", "106", "106", "2")
    assert 3500 < r.ttl("kline:binance:BTC-USDT:1m") <= 3600
    mon = r.hgetall("system:monitoring")
    assert mon["kline_late_trades"] == "1"
    assert (mon["kline_reconciled"], mon["kline_mismatches"]) == ("3", "1")

    closes = victoria.series("kline", "close", exchange="binance", symbol="BTC-USDT", timeframe="1m")
    assert closes == {T0 - 60_000: 100.0, T0: 99.0, T0 + 60_000: 102.0, T0 + 120_000: 102.0, T0 + 180_000: 106.0}
    vols = victoria.series("kline", "volume", exchange="binance", symbol="BTC-USDT", timeframe="1m")
    assert vols[T0 + 120_000] == 0.0 and vols[T0 + 60_000] == 2.0  # the late trade is not in minute 1
    fives = victoria.series("kline", "high", exchange="binance", symbol="BTC-USDT", timeframe="5m")
    assert fives == {T0 - 300_000: 100.0}  # 00:00-00:05 is not over (minute 4 never closed)
    # a ticker point per venue ticker (not per best-quote refresh)
    assert victoria.series("ticker", "price", exchange="bybit", symbol="BTC-USDT") == {T0: 100.5}
    assert victoria.series("ticker", "bid", exchange="okx", symbol="BTC-USDT") == {T0 + 7: 99.9}


def test_write_market_keeps_the_newest_per_key(redis_db: Any, redis_server: Any) -> None:
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis_server.url)
    older = KlineOut(venue_kline(T0, "1", "1", "1", "1", "1", 1))
    newer = KlineOut(Kline("binance", "BTC-USDT", "1m", T0 + 60_000, T0 + 120_000, D(2), D(2), D(2), D(2), D(1),
                           D(2), 1, False))
    pipe = client.pipeline(transaction=False)
    write_market(pipe, [newer, older])
    pipe.execute()
    assert redis_db.hget("kline:binance:BTC-USDT:1m", "open") == "2"
    client.close()


# ------------------------------------------------------------------------------------------------ workers
def _closed_klines(trades: list[Trade], workers: int) -> dict[tuple[str, str, int], Kline]:
    flow = Dataflow("klines")
    ks = aggregate_klines(op.input("inp", flow, TestingSource(trades, batch_size=500)), ("1m", "5m", "1h"), 2.0,
                          now=replay_now)  # the watermark follows the trades, not the machine's speed
    got: list[KlineOut] = []
    op.output("out", op.map("strip", ks.klines, lambda kv: kv[1]), TestingSink(got))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return {(o.kline.instrument, o.kline.timeframe, o.kline.open_ms): o.kline for o in got if o.kline.closed}


def test_two_workers_give_the_klines_of_one() -> None:
    eth = [t for t in _parse(_lines(DATA / "binance-2024-08-08-ethusdt-trade.jsonl.gz"), {"ETHUSDT": "ETH-USDT"})
           if isinstance(t, Trade)]
    # a second and third instrument (same prices, other ids) so that keys spread over the workers
    trades = [x for t in eth[:12000] for x in (t, Trade(t.venue, "ETH-BTC", t.trade_id, t.price, t.size, t.side,
                                                       t.ts_ms), Trade("okx", "ETH-USDT", t.trade_id, t.price,
                                                                       t.size, t.side, t.ts_ms))]
    one = settled(_closed_klines(trades, 1), trades)
    two = settled(_closed_klines(trades, 2), trades)
    assert len(one) > 15 and one == two


def test_market_writer_refreshes_ttls_without_an_expire_per_batch(redis_db: Any, redis_server: Any) -> None:
    import redis as redis_lib

    from connectors.redis.market_sink import MarketWriter

    now = [1000.0]
    writer = MarketWriter(clock=lambda: now[0])
    client = redis_lib.Redis.from_url(redis_server.url)
    ticker = Ticker("okx", "BTC-USDT", D(1), D(1), D(1), D(1), None, D(1), D(1), T0)
    sent = []
    for step in (0.0, 10.0, 31.0):  # ticker TTL 300 s: refreshed after 30 s
        now[0] += step
        pipe = client.pipeline(transaction=False)
        writer(pipe, [ticker])
        cmd, _push = pipe.command_stack  # the hashes' EVAL, then the push streams' EVAL (issue 12)
        sent.append(cmd[0][4])  # EVAL script 1 key ttl ...: the ttl argument (0: no EXPIRE)
        pipe.execute()
    assert sent == [300, 0, 300]
    assert 290 < redis_db.ttl("ticker:okx:BTC-USDT") <= 300
    client.close()


# ------------------------------------------------------------------------------------------------ source parts
class _Control:
    connections = 1
    reconnects = 0

    def resubscribe(self, topic: str) -> None: ...

    def fetch(self, topic: str) -> None: ...


def test_market_processor_maps_symbols_from_topics_and_counts_junk() -> None:
    from connectors.market.source import MarketProcessor, MarketStats, _binance_parse
    from connectors.ws.events import Frame, TopicsChecked

    proc = MarketProcessor("binance", "binance", 0, _Control(), _binance_parse, primary="trade")
    trade_frame = ('{"stream":"ethusdt@trade","data":{"e":"trade","E":1,"s":"ETHUSDT","t":7,"p":"1.5","q":"2",'
                   '"T":5,"m":false,"M":true}}')
    assert proc.on_events([Frame(trade_frame, 9, 0)]) == []  # not subscribed yet: reported, not guessed
    out = proc.on_events([TopicsChecked(100, True, ("trade:ETH-USDT", "ticker:ETH-USDT"), ("trade:ETH-USDT",)),
                          Frame(trade_frame, 9, 0), Frame("junk", 10, 0), Frame('{"result":null,"id":1}', 11, 0)])
    # the first trade of the pair: what came before it is unknown (operators/trade_ids.py)
    assert out == [Trade("binance", "ETH-USDT", "7", D("1.5"), D(2), "buy", 5, 9, seq=7, gap=True)]
    (stats,) = proc.on_tick(10**18)
    assert isinstance(stats, MarketStats) and stats.topics == 2 and stats.last_config_check_ms == 100
    assert dict(stats.counters) == {"rejected_messages": 2, "rejected_not_subscribed": 1, "rejected_malformed_json": 1,
                                    "market_data:rejected_messages": 2, "market_data:rejected_not_subscribed": 1,
                                    "market_data:rejected_malformed_json": 1, "subscription_changes": 1,
                                    "market_frames_received": 4}
    assert proc.on_tick(10**18 + 1) == []  # at most one stats item per interval
    removed = proc.on_events([TopicsChecked(200, True, ("ticker:ETH-USDT",), (), ("trade:ETH-USDT",))])
    assert removed == [InstrumentRemoved("binance", "ETH-USDT")]  # the pair left: its klines stop filling


def test_channel_topics_spot_only_and_rejections(redis_server: Any, redis_db: Any) -> None:
    import asyncio

    from connectors.market.source import ChannelTopics
    from connectors.redis.pairs import PairsPoller

    redis_db.sadd("config:trading_pairs", "BTC-USDT", "UNI-USD-SWAP", "bad id")
    poller = PairsPoller(redis_server.url, "config:trading_pairs", limit=10, interval=1.0, venue="bybit")
    topics = ChannelTopics(poller, ("publicTrade", "tickers"), spot_only=True, primary="publicTrade")

    async def run() -> frozenset[str] | None:
        got = await topics.poll()
        await topics.report_rejected("tickers:BTC-USDT", "no tickers here")  # secondary channel: logged only
        await topics.report_rejected("publicTrade:BTC-USDT", "Invalid symbol")  # the pair itself is refused
        await topics.close()
        return got

    assert asyncio.run(run()) == {"publicTrade:BTC-USDT", "tickers:BTC-USDT"}  # derivatives are OKX-only
    rejected = redis_db.hgetall("config:trading_pairs:rejected")
    assert rejected["BTC-USDT"] == "bybit: Invalid symbol" and "bad id" in rejected


def test_market_writer_forgets_keys_idle_for_a_whole_ttl(redis_server: Any) -> None:
    import redis as redis_lib

    from connectors.redis.market_sink import KLINE_TTL_S, MarketWriter

    now = [1000.0]
    writer = MarketWriter(clock=lambda: now[0])
    client = redis_lib.Redis.from_url(redis_server.url)
    for inst in ("AAA-USDT", "BBB-USDT"):
        pipe = client.pipeline(transaction=False)
        writer(pipe, [Ticker("okx", inst, D(1), D(1), D(1), D(1), None, D(1), D(1), T0)])
        pipe.execute()
    now[0] += KLINE_TTL_S  # a removed pair's keys expired in Redis long ago
    pipe = client.pipeline(transaction=False)
    writer(pipe, [Ticker("okx", "BBB-USDT", D(1), D(1), D(1), D(1), None, D(1), D(1), T0)])
    cmd, _push = pipe.command_stack  # the hashes' EVAL, then the push streams' EVAL (issue 12)
    assert cmd[0][4] == 300  # a due key still gets its TTL
    pipe.execute()
    assert set(writer._expired_at) == {"ticker:okx:BBB-USDT"}
    client.close()
