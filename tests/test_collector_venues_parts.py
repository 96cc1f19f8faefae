"""The multi-venue collector's parts: topics mapped per venue, the monitoring owners and ws_metrics per venue,
the one Redis sink writing every venue's books and ``bbo:{inst}`` (real Redis), and the Binance snapshot
fetcher's request weight against the simulator's Binance REST (a real process)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
import redis

from connectors.binance.book_source import BinanceDepthFetcher, BinanceRestError
from connectors.books.items import BookState, BufferFrame, ShardStats
from connectors.books.outputs import aggregate, shard_report, ws_point
from connectors.books.source import InstrumentTopics
from connectors.bybit.protocol import BybitHooks
from connectors.redis.book_sink import CollectorRedisSink
from operators.bbo import Bbo, VenueLine
from operators.events import BookStatus, BookView, Level
from tests.fixtures.simulator import Simulator
from tests.simulator_helpers import http_json


def test_instrument_topics_subscribe_the_venue_kind_and_name_the_instruments() -> None:
    hooks = InstrumentTopics(BybitHooks("ws://x"), "orderbook.50")
    insts = [f"C{i:02d}-USDT" for i in range(12)]
    reqs = hooks.requests("subscribe", insts, 3)
    assert [r.topics for r in reqs] == [tuple(insts[:10]), tuple(insts[10:])]  # Bybit: 10 args per request
    assert json.loads(reqs[1].text)["args"] == ["orderbook.50.C10USDT", "orderbook.50.C11USDT"]
    assert hooks.venue == "bybit" and hooks.limits.topics_per_request == 10


def test_monitoring_owner_and_ws_metrics_per_venue() -> None:
    stats = ShardStats(3, 1_000, 1, 7, 2, 50, (("gaps", 1),), venue="binance")
    report = shard_report(stats)
    assert report.owner == "orderbook_collector/binance/shard-3" and report.venue == "binance"
    assert dict(report.sums)["book_binance_pairs"] == 7 and "active_pairs" not in dict(report.sums)
    assert dict(shard_report(ShardStats(0, 1_000, 1, 4, 0, 5)).sums)["active_pairs"] == 4  # OKX as before
    _, totals = aggregate(None, stats)
    assert ws_point(totals).tags == (("exchange", "binance"),)


def view(venue: str, inst: str, bid: str, ask: str, seq: int) -> BookView:
    return BookView(venue, inst, BookStatus.VALID, (Level(bid, "1"),), (Level(ask, "2"),), 1_700_000_000_000,
                    1, 0, seq)


def test_one_sink_writes_every_venue_book_and_the_bbo(redis_db: redis.Redis, redis_server) -> None:
    sink = CollectorRedisSink(redis_server.url, "buf", 0).build("redis", 0, 1)
    bbo = Bbo("ETH-USDT", "100.2", "binance", "100.3", "okx",
              (("okx", VenueLine("100.1", "100.3", 12, "valid")), ("binance", VenueLine("100.2", "100.4", 3, "valid")),
               ("bybit", VenueLine("100.5", "100.6", 9000, "valid"))), ("bybit",), 1_700_000_000_123)
    try:
        sink.write_batch([view("okx", "ETH-USDT", "100.1", "100.3", 5), BufferFrame("{}"),
                          view("binance", "ETH-USDT", "100.2", "100.4", 77), view("bybit", "ETH-USDT", "99", "101", 3),
                          BookState("ETH-USDT", BookStatus.RESYNCING, venue="bybit"), bbo])
        okx, binance, bybit = (redis_db.hgetall(k) for k in ("orderbook:ETH-USDT", "orderbook:binance:ETH-USDT",
                                                              "orderbook:bybit:ETH-USDT"))
        assert (okx["seq_id"], json.loads(okx["bids"])) == ("5", [["100.1", "1"]])
        assert (binance["seq_id"], binance["status"], json.loads(binance["asks"])) == ("77", "valid", [["100.4", "2"]])
        assert bybit["status"] == "resyncing"  # the state after the view wins, as for OKX
        got = redis_db.hgetall("bbo:ETH-USDT")
        assert {k: got[k] for k in ("bid", "bid_venue", "ask", "ask_venue", "timestamp")} == {
            "bid": "100.2", "bid_venue": "binance", "ask": "100.3", "ask_venue": "okx",
            "timestamp": "2023-11-14T22:13:20.123Z"}
        assert json.loads(got["excluded"]) == ["bybit"]
        assert json.loads(got["venues"])["bybit"] == {"bid": "100.5", "ask": "100.6", "age_ms": 9000, "status": "valid"}
        assert redis_db.lrange("buf", 0, -1) == ["{}"]  # OKX's frames only: no other venue has any
        streams = {k for k in redis_db.keys("stream:*")}
        assert streams and all(k.startswith("stream:ETH-USDT@") for k in streams)  # the push streams: OKX's book
        sink.write_batch([BookState("ETH-USDT", BookStatus.SYNCING, removed=True, venue="binance"),
                          Bbo("ETH-USDT", "", "", "", "", (), (), 1, removed=True)])
        assert not redis_db.exists("orderbook:binance:ETH-USDT") and not redis_db.exists("bbo:ETH-USDT")
        assert redis_db.exists("orderbook:ETH-USDT") and redis_db.exists("orderbook:bybit:ETH-USDT")
    finally:
        sink.close()


def test_binance_fetcher_sends_nothing_after_a_429_until_retry_after(start_simulator: Callable[..., Simulator]) -> None:
    sim = start_simulator("--pairs", "BTC-USDT", "--binance-rest-limit", "80/600")

    async def scenario() -> list[str]:
        fetcher = BinanceDepthFetcher(sim.binance_rest_url)
        out = []
        try:
            body = await fetcher("BTC-USDT")  # weight 50 of 80
            out.append(str(json.loads(body)["lastUpdateId"] > 0))
            with pytest.raises(BinanceRestError, match="HTTP 429"):
                await fetcher("BTC-USDT")  # 100 > 80
            try:  # the answer's Retry-After (the simulator's window: minutes) holds every next request back
                await asyncio.wait_for(fetcher("BTC-USDT"), 1.0)
            except TimeoutError:
                out.append("held back")
        finally:
            await fetcher.close()
        return out

    assert asyncio.run(scenario()) == ["True", "held back"]
    rest = http_json(f"{sim.control_url}/rest")["binance"]
    assert rest["by_status"] == {"200": 1, "429": 1} and rest["max_used"] <= rest["limit"]


def test_binance_fetcher_keeps_its_own_weight_budget(start_simulator: Callable[..., Simulator]) -> None:
    """Within the venue's limit, a fetcher still spends no more than its share: 100 per minute = 2 snapshots."""
    sim = start_simulator("--pairs", "BTC-USDT")

    async def scenario() -> bool:
        fetcher = BinanceDepthFetcher(sim.binance_rest_url, weight_per_minute=100)
        try:
            await fetcher("BTC-USDT")
            await fetcher("BTC-USDT")
            try:
                await asyncio.wait_for(fetcher("BTC-USDT"), 1.0)
            except TimeoutError:
                return True  # waiting for its minute
            return False
        finally:
            await fetcher.close()

    assert asyncio.run(scenario())
    rest = http_json(f"{sim.control_url}/rest")["binance"]
    assert rest["by_status"] == {"200": 2}
