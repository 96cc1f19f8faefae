"""Unit tests of the generic WebSocket machinery's pure parts, the OKX hooks, the pairs poller and the
collector's Redis sink (against the real Redis of the ``redis_server`` fixture)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import redis

from connectors.books.outputs import aggregate, shard_report
from connectors.okx.book_source import BookState, BufferFrame, ShardStats
from connectors.okx.protocol import OkxHooks
from connectors.redis.book_sink import CollectorRedisSink, book_fields
from connectors.redis.pairs import PairsPoller
from connectors.ws.budget import Backoff, Budget, per_second
from connectors.ws.hooks import Ack, Notice, Pong, Reject
from connectors.ws.shard import shard_of
from cryptoflow.servers import free_port, start_redis, stop_process
from operators.events import BookStatus, BookView, Level

ROOT = Path(__file__).resolve().parents[1]


# --- budgets and backoff -------------------------------------------------------------------------------------
def test_budget_allows_limit_per_window_then_frees_up() -> None:
    b = Budget(3, 1.0)
    assert [b.take(10.0), b.take(10.1), b.take(10.2), b.take(10.3)] == [True, True, True, False]
    assert b.wait_time(10.3) == pytest.approx(0.7)
    assert b.take(11.0) and not b.take(11.05)
    hourly = Budget(480, 3600.0)
    assert sum(hourly.take(t * 0.1) for t in range(1000)) == 480


def test_fractional_rate_budget() -> None:
    b = per_second(1.5)  # a process's 3 connections/s split over 2 shards
    assert b.take(0.0) and not b.take(0.5) and b.take(1.0)
    assert per_second(0.5).window == 2.0


def test_backoff_is_capped_jittered_and_resets() -> None:
    bo = Backoff(0.5, 8.0, random.Random(1))
    delays = [bo.next_delay() for _ in range(30)]
    assert all(0.25 <= d <= 8.0 for d in delays)
    assert max(delays[10:]) > 4.0  # it grows to the cap
    assert len(set(delays)) > 20  # jittered
    bo.reset()
    assert bo.next_delay() <= 0.5


# --- OKX hooks ----------------------------------------------------------------------------------------------
def test_okx_requests_are_batched_with_ids() -> None:
    hooks = OkxHooks("ws://x/ws/v5/public", channel="books")
    topics = [f"C{i}-USDT" for i in range(25)]
    reqs = hooks.requests("subscribe", topics, 7)
    assert [len(r.topics) for r in reqs] == [20, 5]
    assert len({r.req_id for r in reqs}) == 2
    body = orjson.loads(reqs[1].text)
    assert body == {"id": reqs[1].req_id, "op": "subscribe",
                    "args": [{"channel": "books", "instId": t} for t in topics[20:]]}


def test_okx_classify_answers() -> None:
    hooks = OkxHooks("ws://x", channel="books")
    assert hooks.classify('{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[]}') is None
    assert hooks.classify("pong") == Pong()
    assert hooks.classify('{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"},"connId":"a"}') \
        == Ack("subscribe", ("BTC-USDT",), None)
    assert hooks.classify('{"id":"12","event":"unsubscribe","arg":{"channel":"books","instId":"X-Y"}}') \
        == Ack("unsubscribe", ("X-Y",), "12")
    rej = hooks.classify('{"event":"error","code":"60018","msg":"Wrong URL or channel:books,instId:FOO-BAR '
                         "doesn't exist.\",\"connId\":\"a\"}")
    assert isinstance(rej, Reject) and rej.topics == ("FOO-BAR",) and rej.reason.startswith("60018")
    assert hooks.classify('{"event":"notice","code":"64008","msg":"upgrade"}') == Notice("64008 upgrade", True)
    info = hooks.classify('{"event":"channel-conn-count","channel":"books","connCount":"2","connId":"a"}')
    assert isinstance(info, Notice) and not info.reconnect
    assert hooks.classify("not json") is None  # left to the data parser, which counts it


def test_okx_multi_channel_topics() -> None:
    hooks = OkxHooks("ws://x")
    body = orjson.loads(hooks.requests("subscribe", ["trades:BTC-USDT"], 1)[0].text)
    assert body["args"] == [{"channel": "trades", "instId": "BTC-USDT"}]
    assert hooks.classify('{"event":"subscribe","arg":{"channel":"trades","instId":"BTC-USDT"}}') \
        == Ack("subscribe", ("trades:BTC-USDT",), None)


def _crc32(data: bytes) -> int:
    """CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) bit by bit: the test's own oracle, not zlib's."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


SHARD_TOPICS = [*(f"C{i}-USDT" for i in range(40)), "BTC-USDT", "ETH-USDT", "SOL-USDT", "DOGE-USDT",
                "BTC-USD-SWAP", "trades:BTC-USDT", "btcusdt@aggTrade", "kline.1.BTCUSDT"]
_SHARDS_IN_CHILD = (
    "import json, sys; from connectors.ws.shard import shard_of; "
    "print(json.dumps([[shard_of(t, n) for n in (1, 2, 3, 4, 7)] for t in json.loads(sys.argv[1])]))"
)


def test_shard_assignment_is_crc32_in_every_process_and_independent_of_the_set() -> None:
    assert _crc32(b"123456789") == 0xCBF43926  # the standard CRC-32 check value: the oracle itself is right
    oracle = [[_crc32(t.encode()) % n for n in (1, 2, 3, 4, 7)] for t in SHARD_TOPICS]
    # Literal values, so that a change of the formula is seen even if the oracle were changed with it.
    assert {t: shard_of(t, 4) for t in ("BTC-USDT", "ETH-USDT", "SOL-USDT", "DOGE-USDT")} == {
        "BTC-USDT": 3, "ETH-USDT": 1, "SOL-USDT": 3, "DOGE-USDT": 0}
    assert [[shard_of(t, n) for n in (1, 2, 3, 4, 7)] for t in SHARD_TOPICS] == oracle
    # Other processes, with different string-hash salts (a salted ``hash()`` differs between them): the same.
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        child = subprocess.run([sys.executable, "-c", _SHARDS_IN_CHILD, json.dumps(SHARD_TOPICS)], cwd=ROOT,
                               env=env, capture_output=True, text=True, check=True, timeout=60)
        assert json.loads(child.stdout) == oracle, f"PYTHONHASHSEED={seed}"
    # per topic: a topic's shard does not depend on which other topics exist (adding one moves no other)
    assert {shard_of(f"C{i}-USDT", 4) for i in range(40)} == {0, 1, 2, 3}


# --- monitoring aggregation --------------------------------------------------------------------------------
def test_aggregate_sums_fresh_shards_and_passes_counters() -> None:
    state, up = aggregate(None, ShardStats(0, 1_000, 2, 3, 1, 50, (("gaps", 1),), 900))
    state, up = aggregate(state, ShardStats(1, 1_500, 1, 2, 0, 20, (("resyncs", 2),), 1_400))
    assert (up.connections, up.reconnects, up.messages) == (3, 1, 70)  # ws_metrics totals
    _, up = aggregate(state, ShardStats(1, 20_000, 1, 2, 0, 30, ()))  # shard 0 silent for 19 s: not counted
    assert up.connections == 1


# --- Redis sink ---------------------------------------------------------------------------------------------
def _view(inst: str, bid: str, seq: int, status: BookStatus = BookStatus.VALID) -> BookView:
    return BookView("okx", inst, status, (Level(bid, "1"),), (Level("101", "2"),), 1_700_000_000_123,
                    0, checksum=-5, seq_id=seq)


def test_sink_coalesces_per_instrument_and_caps_the_buffer(redis_server, redis_db) -> None:
    sink = CollectorRedisSink(redis_server.url, "buf", 3).build("s", 0, 1)
    sink.write_batch([_view("A-B", "99", 1), BufferFrame("f1"), _view("A-B", "100", 2), BufferFrame("f2"),
                      _view("C-D", "5", 9), BookState("C-D", BookStatus.RESYNCING)])
    h = redis_db.hgetall("orderbook:A-B")
    assert h == {"instrument_id": "A-B", "latest_timestamp": "2023-11-14T22:13:20.123Z", "bids": '[["100","1"]]',
                 "asks": '[["101","2"]]', "checksum": "-5", "seq_id": "2", "status": "valid"}
    assert redis_db.hget("orderbook:C-D", "status") == "resyncing"
    sink.write_batch([BufferFrame("f3"), BufferFrame("f4"), BookState("C-D", BookStatus.SYNCING, removed=True)])
    assert redis_db.lrange("buf", 0, -1) == ["f4", "f3", "f2"]  # newest first, capped at 3
    assert not redis_db.exists("orderbook:C-D")
    up = shard_report(ShardStats(0, 1_700_000_000_000, 2, 3, 0, 10, (("gaps", 2), ("resyncs", 1)),
                                 1_700_000_000_000))
    sink.write_batch([up])
    sink.write_batch([up])  # the same owner again: its gauges replaced, its counters added
    mon = redis_db.hgetall("system:monitoring")
    assert (mon["websocket_connections"], mon["active_pairs"], mon["gaps"], mon["resyncs"]) == ("2", "3", "4", "2")
    assert mon["last_config_check"] == "2023-11-14T22:13:20.000Z" and int(mon["redis_memory_usage"]) > 0
    sink.close()


def test_sink_keeps_book_writes_of_batches_dropped_while_redis_is_down(tmp_path) -> None:
    port = free_port()
    sink = CollectorRedisSink(f"redis://127.0.0.1:{port}/0", "buf", 0).build("s", 0, 1)
    server = None
    try:
        sink.write_batch([_view("A-B", "99", 1), _view("C-D", "5", 2)])  # nobody listens: dropped, kept
        sink.write_batch([BookState("A-B", BookStatus.STALE), BookState("C-D", BookStatus.SYNCING, removed=True)])
        server = start_redis(port, tmp_path / "redis")
        client = redis.Redis(port=port, decode_responses=True)
        client.hset("orderbook:C-D", "status", "valid")  # left from before the outage
        deadline = time.monotonic() + 30
        while not client.exists("orderbook:A-B") and time.monotonic() < deadline:
            sink.write_batch([BufferFrame("f")])  # the sink retries Redis once a second
            time.sleep(0.05)
        h = client.hgetall("orderbook:A-B")
        assert (h["bids"], h["seq_id"], h["status"]) == ('[["99","1"]]', "1", "stale")
        assert not client.exists("orderbook:C-D")  # removed during the outage
        client.close()
    finally:
        sink.close()
        if server is not None:
            stop_process(server)


def test_book_fields_json_shape() -> None:
    f = book_fields(_view("A-B", "1.50", 3))
    assert json.loads(f["bids"]) == [["1.50", "1"]] and f["seq_id"] == "3"


# --- pairs poller --------------------------------------------------------------------------------------------
def test_pairs_poller_rules(redis_server, redis_db) -> None:
    async def run() -> None:
        p = PairsPoller(redis_server.url, "config:trading_pairs", limit=2, interval=1, venue="okx")
        redis_db.sadd("config:trading_pairs", "C-USDT", "A-USDT", "B-USDT", "bad id")
        assert await p.poll() == frozenset({"A-USDT", "B-USDT"})
        assert "malformed" in redis_db.hget("config:trading_pairs:rejected", "bad id")
        await p.report_rejected("A-USDT", "60018 nope")
        assert await p.poll() == frozenset({"B-USDT", "C-USDT"})  # the refused one frees its slot
        redis_db.hset("config:trading_pairs:rejected", "A-USDT", "binance: invalid symbol")  # another venue's
        assert await p.poll() == frozenset({"B-USDT", "C-USDT"})  # still refused here: no retry flip-flop
        redis_db.srem("config:trading_pairs", "A-USDT", "bad id")
        assert await p.poll() == frozenset({"B-USDT", "C-USDT"})
        assert not redis_db.exists("config:trading_pairs:rejected")  # ids gone from the set are forgotten
        await p.close()
        down = PairsPoller(f"redis://127.0.0.1:{free_port()}/0", "k", limit=2, interval=1, venue="okx")
        assert await down.poll() is None  # unreachable: the caller keeps its set
        await down.close()

    asyncio.run(run())
