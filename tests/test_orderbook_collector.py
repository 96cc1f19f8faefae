"""End to end: ``python -m bytewax.run dataflows.orderbook_collector`` against the simulator and a real Redis.

Each test runs the dataflow as real processes (poll interval 1 s) and drives it only from outside: the Redis
set through ``redis-cli``, the simulator's control endpoint. No timed assertions: conditions are awaited with
generous deadlines.
"""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from cryptoflow.servers import free_port, start_redis, stop_process
from tests.book_helpers import naive_checksum
from tests.collector_helpers import (
    hash_book,
    monitoring,
    same_as_simulator,
    start_collector,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.slow
PAIRS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
MORE = ["ADA-USDT", "DOGE-USDT", "DOT-USDT", "LINK-USDT", "LTC-USDT", "TRX-USDT", "XRP-USDT", "AVAX-USDT",
        "BNB-USDT"]


def cli(port: int, *args: str) -> str:
    out = subprocess.run(["redis-cli", "-p", str(port), *args], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def valid(r, inst: str) -> bool:
    book = hash_book(r, inst)
    return bool(book and book.get("status") == "valid" and book["bids"] and book["asks"])


def test_subscriptions_follow_the_redis_set(start_simulator, redis_server, redis_db, tmp_path: Path) -> None:
    sim = start_simulator("--pairs", ",".join(PAIRS + MORE), "--seed", "3", "--rate", "5")
    r, port = redis_db, redis_server.port
    cli(port, "SADD", "config:trading_pairs", "BTC-USDT", "ETH-USDT")
    col = start_collector(tmp_path, {**sim.env(), "REDIS_URL": redis_server.url, "OKX_PAIRS_PER_CONNECTION": "2"})
    try:
        wait_for("BTC and ETH books", lambda: valid(r, "BTC-USDT") and valid(r, "ETH-USDT"))
        wait_for("active_pairs 2", lambda: monitoring(r).get("active_pairs") == "2")
        changes0 = int(monitoring(r)["subscription_changes"])
        assert changes0 >= 2

        cli(port, "SADD", "config:trading_pairs", "SOL-USDT")
        cli(port, "SREM", "config:trading_pairs", "ETH-USDT")
        wait_for("SOL book", lambda: valid(r, "SOL-USDT"))
        wait_for("ETH book removed", lambda: not r.exists("orderbook:ETH-USDT"))
        wait_for("simulator follows", lambda: {s["inst"] for s in sim.status()["subscriptions"]
                                               if s["venue"] == "okx"} == {"BTC-USDT", "SOL-USDT"})
        wait_for("subscription_changes moved", lambda: int(monitoring(r)["subscription_changes"]) >= changes0 + 2)
        assert monitoring(r)["active_pairs"] == "2"

        # An id the venue does not know, and a malformed one: rejected, listed, the others keep streaming.
        seq_before = int(hash_book(r, "BTC-USDT")["seq_id"])
        cli(port, "SADD", "config:trading_pairs", "FOO-BAR", "not a pair")
        rejected = wait_for("rejections", lambda: (h := r.hgetall("config:trading_pairs:rejected"))
                            and len(h) == 2 and h)
        assert rejected["FOO-BAR"].startswith("okx: 60018")
        assert "malformed instrument id" in rejected["not a pair"]
        wait_for("BTC keeps streaming", lambda: int(hash_book(r, "BTC-USDT")["seq_id"]) > seq_before)
        assert not r.exists("orderbook:FOO-BAR")
        assert valid(r, "SOL-USDT")

        # 11 valid pairs -> the first 10 in sorted order, a warning naming the 11th.
        cli(port, "SREM", "config:trading_pairs", "FOO-BAR", "not a pair")
        wait_for("rejections cleared", lambda: not r.exists("config:trading_pairs:rejected"))
        cli(port, "SADD", "config:trading_pairs", *MORE)
        wanted = sorted(["BTC-USDT", "SOL-USDT", *MORE])
        assert len(wanted) == 11
        wait_for("10 books", lambda: all(valid(r, i) for i in wanted[:10]), timeout=45)
        wait_for("active_pairs 10", lambda: monitoring(r).get("active_pairs") == "10")
        assert not r.exists(f"orderbook:{wanted[10]}")
        warnings = col.events("pairs_over_limit")
        assert warnings and warnings[-1]["skipped"] == wanted[10]  # a bounded sample of the skipped ids (8f0f580)
        # The buffer list carries raw OKX frames of subscribed instruments, newest first.
        newest = r.lindex("okex_orderbook", 0)
        assert newest.startswith('{"arg":{"channel":"books","instId":"')
        mon = monitoring(r)
        assert int(mon["websocket_connections"]) >= 5  # 10 pairs, 2 per connection
        assert float(mon["avg_processing_latency"]) >= 0
        assert int(mon["redis_memory_usage"]) > 0
        assert mon["last_config_check"].endswith("Z")
        assert col.alive()
    finally:
        col.stop()


def _settled(sim, r, inst: str) -> None:
    """Pause the market, wait until our book is valid at the simulator's seqId and identical, resume."""
    sim.pause()
    try:
        wait_for(f"{inst} equal to the simulator's book", lambda: same_as_simulator(r, sim, inst))
    finally:
        sim.resume()


FRAME_FAULTS = ["gap", "duplicate_frame", "reorder_frame", "seq_reset", "crossed_book", "malformed"]


def test_every_fault_heals_the_affected_book_only(start_simulator, redis_server, redis_db, tmp_path: Path) -> None:
    sim = start_simulator("--pairs", ",".join(PAIRS), "--seed", "7", "--rate", "20", "--checksum", "real")
    r = redis_db
    r.sadd("config:trading_pairs", *PAIRS)
    env = {**sim.env(), "REDIS_URL": redis_server.url, "OKX_PAIRS_PER_CONNECTION": "1",
           "WS_PING_INTERVAL": "0.5", "WS_PONG_TIMEOUT": "1", "WS_BACKOFF_INITIAL": "0.2", "WS_BACKOFF_MAX": "1"}
    col = start_collector(tmp_path, env)
    try:
        wait_for("books valid", lambda: all(valid(r, i) for i in PAIRS))
        for kind in FRAME_FAULTS:
            before = int(hash_book(r, "ETH-USDT")["seq_id"])
            sim.fault(kind, inst="BTC-USDT")
            wait_for(f"{kind} sent", lambda: not sim.pending_faults())  # settling before it would test nothing
            # The unaffected book keeps moving while the affected one heals.
            wait_for("ETH moves", lambda b=before: int(hash_book(r, "ETH-USDT")["seq_id"]) > b)
            _settled(sim, r, "BTC-USDT")
            assert valid(r, "ETH-USDT"), kind
        failed = {e["instrument"] for e in col.events("book_integrity_failed")}
        assert failed == {"BTC-USDT"}  # the gap, reorder and crossed book were caught, only on BTC
        assert {e["reason"] for e in col.events("bad_message_dropped")} >= {"malformed_json"}
        least = {"gaps": 2, "resyncs": 3, "rejected_messages": 1, "crossed_books": 1, "duplicate_frames": 1}

        def short() -> dict[str, str | None]:
            m = monitoring(r)
            return {k: m.get(k) for k, n in least.items() if int(m.get(k, 0)) < n}

        try:
            wait_for("counters", lambda: not short())
        except AssertionError as err:
            raise AssertionError(f"{err}; below their least: {short()}") from None

        # Connection-level faults: every book re-syncs after the reconnect.
        for kind, params in [("drop_connection", {}), ("shutdown_notice", {"close_after": 5}),
                             ("refuse", {"seconds": 2})]:
            reconnects = len(col.events("ws_reconnecting"))
            sim.fault(kind, **params)
            if kind == "refuse":
                sim.fault("drop_connection")
            wait_for(f"reconnect after {kind}", lambda n=reconnects: len(col.events("ws_reconnecting")) > n)
            for inst in PAIRS:
                _settled(sim, r, inst)
        notices = [e for e in col.events("ws_reconnecting") if "64008" in e["reason"]]
        assert notices and all(e["delay_s"] == 0 for e in notices)  # reconnected at once, before the close

        # Missing pong: a quiet line (paused market, heartbeats only each second) gets pinged, nobody answers.
        reconnects = len(col.events("ws_reconnecting"))
        sim.fault("no_pong")
        sim.pause()
        try:
            wait_for("reconnect on missing pong", lambda: any(
                "no pong" in e["reason"] for e in col.events("ws_reconnecting")[reconnects:]))
        finally:
            sim.clear_faults("no_pong")
            sim.resume()
        for inst in PAIRS:
            _settled(sim, r, inst)
        assert col.alive()
    finally:
        col.stop()


def test_books_without_a_snapshot_bootstrap_from_rest_and_reach_influx(start_simulator, redis_server, redis_db,
                                                                      victoria, tmp_path) -> None:
    sim = start_simulator("--pairs", "BTC-USDT,ETH-USDT", "--seed", "5", "--rate", "20", "--no-snapshot")
    r = redis_db
    r.sadd("config:trading_pairs", "BTC-USDT", "ETH-USDT")
    col = start_collector(tmp_path, {**sim.env(), "REDIS_URL": redis_server.url, "INFLUX_URL": victoria.url,
                                     "INFLUX_BOOK_LEVELS": "5"})
    try:
        for inst in ("BTC-USDT", "ETH-USDT"):
            _settled(sim, r, inst)
        assert {e["instrument"] for e in col.events("book_rest_bootstrap")} == {"BTC-USDT", "ETH-USDT"}
        # The buffer list shows a (rendered) snapshot for each, so a consumer can build the book too.
        snaps = [json.loads(f) for f in r.lrange("okex_orderbook", 0, -1) if '"action":"snapshot"' in f]
        assert {s["arg"]["instId"] for s in snaps} == {"BTC-USDT", "ETH-USDT"}
        # InfluxDB: the top levels per side (depth_level is a tag), and ws_metrics.
        sim.pause()
        try:
            wait_for("settled", lambda: same_as_simulator(r, sim, "BTC-USDT"))
            best_bid = float(hash_book(r, "BTC-USDT")["bids"][0][0])
            wait_for("orderbook_data", lambda: best_bid in victoria.series(
                "orderbook_data", "price", instrument_id="BTC-USDT", side="buy", depth_level="1").values())
        finally:
            sim.resume()
        assert not victoria.series("orderbook_data", "price", instrument_id="BTC-USDT", depth_level="6")
        wait_for("ws_metrics", lambda: victoria.series("ws_metrics", "connections", exchange="okx"))
        assert col.alive()
    finally:
        col.stop()


# --- replay of real OKX sessions ---------------------------------------------------------------------------
DATA = Path(__file__).parent / "data" / "okx"
RECORDINGS = {
    "books": DATA / "okx-2022-05-13-books-trades-tickers.jsonl",
    "books-l2-tbt": DATA / "okx-2021-07-22-books-l2-tbt.jsonl",
}


def rebuild(path: Path, channel: str) -> tuple[dict[str, dict[str, list[list[str]]]], dict[str, list[str]]]:
    """The recording's final books, rebuilt here with a plain dict + Decimal sort (not the product's code),
    verifying every recorded checksum on the way; and each instrument's book frames in order."""
    books: dict[str, dict[str, dict[str, str]]] = {}
    frames: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        raw = json.loads(line)["data"]
        msg = json.loads(raw)
        if msg.get("arg", {}).get("channel") != channel or "data" not in msg:
            continue
        inst = msg["arg"]["instId"]
        frames.setdefault(inst, []).append(raw)
        for entry in msg["data"]:
            if msg["action"] == "snapshot":
                books[inst] = {"bids": {}, "asks": {}}
            for side in ("bids", "asks"):
                for price, size, *_ in entry[side]:
                    if Decimal(size) == 0:
                        books[inst][side].pop(price, None)
                    else:
                        books[inst][side][price] = size
            b = sorted(books[inst]["bids"].items(), key=lambda kv: -Decimal(kv[0]))
            a = sorted(books[inst]["asks"].items(), key=lambda kv: Decimal(kv[0]))
            assert naive_checksum(b, a) == entry["checksum"]
    final = {}
    for inst, book in books.items():
        b = sorted(book["bids"].items(), key=lambda kv: -Decimal(kv[0]))[:400]
        a = sorted(book["asks"].items(), key=lambda kv: Decimal(kv[0]))[:400]
        final[inst] = {"bids": [list(x) for x in b], "asks": [list(x) for x in a]}
    return final, frames


def _replay_run(start_simulator, redis_server, r, tmp_path: Path, channel: str, *, workers: int = 1,
                processes: int = 1) -> None:
    expected, frames = rebuild(RECORDINGS[channel], channel)
    sim = start_simulator("--replay", str(RECORDINGS[channel]), "--speed", "8")
    r.sadd("config:trading_pairs", *expected)
    env = {**sim.env(), "REDIS_URL": redis_server.url, "OKX_BOOK_CHANNEL": channel,
           "OKX_PAIRS_PER_CONNECTION": "1"}
    col = start_collector(tmp_path, env, workers=workers, processes=processes)
    try:
        for inst, book in expected.items():
            wait_for(f"{inst} replayed", lambda i=inst, b=book: (h := hash_book(r, i)) is not None
                     and h.get("status") == "valid" and h["bids"] == b["bids"] and h["asks"] == b["asks"],
                     timeout=60)
            assert hash_book(r, inst)["checksum"] == str(json.loads(frames[inst][-1])["data"][0]["checksum"])
        # Every recorded frame went to the buffer list exactly as received, in order per instrument.
        total = sum(len(v) for v in frames.values())
        wait_for("all frames buffered", lambda: r.llen("okex_orderbook") >= total)
        buffered = list(reversed(r.lrange("okex_orderbook", 0, -1)))
        for inst, raws in frames.items():
            assert [f for f in buffered if f'"instId":"{inst}"' in f] == raws
        assert not col.events("book_integrity_failed")
        # frames_received (the browser monitor's frames/s) counts every data frame once, over every shard.
        wait_for("frames counted", lambda: monitoring(r).get("frames_received") == str(total))
        mon = monitoring(r)
        assert "resyncs" not in mon and "checksum_errors" not in mon and "gaps" not in mon
        assert col.alive()
    finally:
        col.stop()


@pytest.mark.parametrize(("workers", "processes"), [(1, 1), (2, 1), (1, 2)], ids=["1w", "2w", "2proc"])
def test_replay_books_recording_same_books_with_any_workers(start_simulator, redis_server, redis_db, tmp_path,
                                                            workers: int, processes: int) -> None:
    _replay_run(start_simulator, redis_server, redis_db, tmp_path, "books", workers=workers, processes=processes)


def test_replay_tick_by_tick_recording(start_simulator, redis_server, redis_db, tmp_path) -> None:
    _replay_run(start_simulator, redis_server, redis_db, tmp_path, "books-l2-tbt")


def test_redis_outage_keeps_the_subscriptions(start_simulator, tmp_path: Path) -> None:
    """Redis goes away: the collector neither stops nor drops its pairs; when Redis is back it writes again."""
    port = free_port()
    server = start_redis(port, tmp_path / "redis")
    sim = start_simulator("--pairs", "BTC-USDT,ETH-USDT", "--seed", "2", "--rate", "10")
    r = redis.Redis(port=port, decode_responses=True)
    r.sadd("config:trading_pairs", "BTC-USDT", "ETH-USDT")
    col = start_collector(tmp_path, {**sim.env(), "REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    try:
        wait_for("books", lambda: valid(r, "BTC-USDT") and valid(r, "ETH-USDT"))
        stop_process(server)
        wait_for("poll and write failures noticed", lambda: col.events("pairs_poll_failed")
                 and col.events("redis_write_failed"))
        frames = {s["inst"]: s["frames"] for s in sim.status()["subscriptions"]}
        wait_for("still subscribed and streaming", lambda: all(
            s["frames"] > frames.get(s["inst"], 0) for s in sim.status()["subscriptions"]
        ) and {s["inst"] for s in sim.status()["subscriptions"]} == {"BTC-USDT", "ETH-USDT"})
        server = start_redis(port, tmp_path / "redis")  # an empty Redis: the pairs must be added again
        r.sadd("config:trading_pairs", "BTC-USDT", "ETH-USDT")
        wait_for("books written again", lambda: valid(r, "BTC-USDT") and valid(r, "ETH-USDT"))
        wait_for("poll recovered", lambda: col.events("pairs_poll_recovered") and col.events("redis_write_recovered"))
        assert col.alive()
    finally:
        col.stop()
        stop_process(server)
