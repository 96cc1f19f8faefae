"""The analysis dataflow's logic with TestingSource + run_main, writing to a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis
from bytewax.testing import TestingSource, cluster_main, run_main

from connectors.okx.books import parse_books_frame
from connectors.redis.analysis_sink import AnalysisRedisSink, hash_fields, influx_points
from connectors.redis.book_sink import book_fields
from cryptoflow.analysis_settings import analysis_params
from cryptoflow.servers import free_port, start_redis, stop_process
from cryptoflow.settings import load_settings
from dataflows.orderbook_analysis import build
from operators.analysis import AnalysisOutput, InstrumentAnalyzer
from operators.analysis.step import AnalyseLogic
from operators.events import AlertEvent, AnalysisResult, BookStatus
from operators.orderbook import OrderBook
from tests.fixtures.redis import RedisServer
from tests.okx_frames import market

T0 = 1_700_000_000_000
FIELDS = {
    "instrument_id", "analysis_time", "support_level_1", "support_level_2", "resistance_level_1",
    "resistance_level_2", "large_buy_orders", "large_sell_orders", "large_order_trend", "depth_anomaly_score",
    "depth_anomaly_alert", "liquidity_index", "liquidity_alert", "book_status",
}


def settings_for(server: RedisServer, **kw: object):  # type: ignore[no-untyped-def]
    base = {"redis_url": server.url, "analysis_depth_window": 5, "analysis_liquidity_window": 10,
            "analysis_alert_emails": "ops@example.com,risk@example.com", "analysis_alert_cooldown": 60,
            "alerts_history_max": 3}
    base.update(kw)
    return load_settings(**base)


def test_params_come_from_settings(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANALYSIS_LARGE_ORDER_MIN_SIZE", '{"BTC-USDT": "5"}')
    monkeypatch.setenv("ANALYSIS_BIN_WIDTH", "10")
    s = settings_for(redis_server)
    p = analysis_params(s)
    assert p.depth_window_ms == 5_000 and p.liquidity_window_ms == 10_000 and p.alert_cooldown_ms == 60_000
    assert p.min_size("BTC-USDT") == 5.0 and p.bin_width is not None and float(p.bin_width) == 10.0
    assert (p.window_buckets, p.window_min_fill, p.depth_min_std_pct) == (60, 0.5, 0.1)  # defaults
    assert (p.trend_margin, p.trend_hold_ms, p.band_pct, p.large_order_k) == (0.2, 10_000, 1.0, 5.0)


@pytest.mark.parametrize("workers", [1, 2])
def test_dataflow_writes_hashes_alerts_history_and_email_jobs(
    redis_server: RedisServer, redis_db: redis.Redis, workers: int,
) -> None:
    frames = market(["BTC-USDT", "ETH-USDT"], seconds=20, rate=10, start_ms=T0, depth=100, events={15.0: 0.3})
    frames.insert(5, b'{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"}}')
    frames.insert(6, b"not json")
    flow = build(settings_for(redis_server), source=TestingSource(frames, batch_size=50))
    if workers == 1:
        run_main(flow)
    else:  # one reading partition, the instruments spread over two workers, each in order
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    for inst in ("BTC-USDT", "ETH-USDT"):
        h = redis_db.hgetall(f"analysis:{inst}")
        assert set(h) == FIELDS
        assert h["instrument_id"] == inst and h["book_status"] == "valid"
        assert h["analysis_time"] == "2023-11-14T22:13:40.000Z"  # the last frame's exchange time (T0 + 20 s)
        assert float(h["support_level_1"]) < 10_000.0 < float(h["resistance_level_1"])
        assert h["liquidity_alert"] == "alert" and float(h["liquidity_index"]) < 0.5
        assert h["large_order_trend"] in ("bullish", "bearish", "neutral")
    history = [orjson.loads(x) for x in redis_db.lrange("alerts:history", 0, -1)]
    assert len(history) == 3  # capped at ALERTS_HISTORY_MAX
    assert {(h["alert_type"], h["level"]) for h in history} >= {("liquidity_shrink", "alert")}
    jobs = [orjson.loads(x) for x in redis_db.lrange("queue:email", 0, -1)]
    assert {j["to"] for j in jobs} == {"ops@example.com", "risk@example.com"}
    shrink = [j for j in jobs if "liquidity shrink alert" in j["subject"]]
    assert {j["to"] for j in shrink} == {"ops@example.com", "risk@example.com"}
    assert {tuple(sorted(j)) for j in jobs} == {
        ("alert_id", "attempts", "body", "created_at", "id", "subject", "to")}
    # exactly the drain at T0 + 15 s: depth anomaly and liquidity shrink alerts, per instrument and recipient
    assert sorted((j["subject"], j["to"], j["created_at"]) for j in jobs) == sorted(
        (f"[cryptoflow] {inst}: {kind} alert", to, "2023-11-14T22:13:35.000Z")
        for inst in ("BTC-USDT", "ETH-USDT") for kind in ("depth anomaly", "liquidity shrink")
        for to in ("ops@example.com", "risk@example.com"))


def test_an_invalid_book_shows_its_status_and_keeps_the_last_values(
    redis_server: RedisServer, redis_db: redis.Redis,
) -> None:
    frames = market(["BTC-USDT"], seconds=2, rate=10, start_ms=T0, depth=50)
    good = frames[:-1]
    gap = orjson.loads(frames[-1])
    gap["data"][0]["prevSeqId"] = 1  # breaks the chain
    run_main(build(settings_for(redis_server), source=TestingSource([*good, orjson.dumps(gap)])))
    h = redis_db.hgetall("analysis:BTC-USDT")
    assert h["book_status"] == "resyncing"
    assert h["support_level_1"] != "" and h["analysis_time"] == "2023-11-14T22:13:21.900Z"


def collector_hash(r: redis.Redis, frames: list[bytes]) -> int:
    """Write ``orderbook:{inst}`` as the collector would after ``frames``; returns its seq_id."""
    book = OrderBook("BTC-USDT")
    for f in frames:
        parsed = parse_books_frame(f, recv_ns=0)
        assert isinstance(parsed, tuple)
        for d in parsed:
            book.apply(d)
    r.hset("orderbook:BTC-USDT", mapping=book_fields(book.view()))
    assert book.seq_id is not None
    return book.seq_id


@pytest.mark.parametrize("case", ["late_start", "gap"])
def test_a_book_without_its_chain_resyncs_from_the_collector_hash(
    redis_server: RedisServer, redis_db: redis.Redis, case: str,
) -> None:
    frames = market(["BTC-USDT"], seconds=6, rate=10, start_ms=T0, depth=100)
    if case == "late_start":  # no snapshot in the list: it was consumed before this reader existed
        fed = frames[10:]
        collector_hash(redis_db, frames[:15])  # the hash is ahead of the first frame read
    else:  # frame 30 was trimmed from the list; the collector's hash has moved on meanwhile
        fed = frames[:30] + frames[31:]
        collector_hash(redis_db, frames[:35])
    run_main(build(settings_for(redis_server), source=TestingSource(fed, batch_size=5)))
    params = analysis_params(settings_for(redis_server))
    reference = InstrumentAnalyzer("BTC-USDT", OrderBook("BTC-USDT"), params)
    for f in frames:
        parsed = parse_books_frame(f, recv_ns=0)
        assert isinstance(parsed, tuple)
        for d in parsed:
            want = reference.on_delta(d, params)
    h = redis_db.hgetall("analysis:BTC-USDT")
    assert h["book_status"] == "valid" and h["analysis_time"] == "2023-11-14T22:13:26.000Z"
    fields = hash_fields(want.result)
    for name in ("support_level_1", "support_level_2", "resistance_level_1", "resistance_level_2",
                 "large_buy_orders", "large_sell_orders"):
        assert h[name] == fields[name], name  # the same book as an uninterrupted reader's


def test_analysis_points_are_rate_limited_per_instrument_but_alerts_always_pass(redis_server: RedisServer) -> None:
    params = analysis_params(settings_for(redis_server))
    logic = AnalyseLogic(params, None, None, points_every_ms=1_000)
    frames = market(["BTC-USDT"], seconds=12, rate=10, start_ms=T0, depth=50, events={10.0: 0.2})
    deltas = [d for f in frames for d in parse_books_frame(f, recv_ns=0)]  # type: ignore[union-attr]
    outs = [o for d in deltas for o in logic.on_batch([d])[0]]
    assert len(outs) == len(deltas)  # one batch per delta here: every output reaches the hash sink
    with_points = [o for o in outs if influx_points(o)]
    stamps = [o.result.analysis_ms - T0 for o in with_points]
    assert stamps == list(range(0, 12_001, 1_000))  # one per second of event time (10 s: the alerting one)
    alerting = [o for o in outs if o.alerts]
    assert alerting and all(influx_points(o) for o in alerting)
    assert {p.measurement for o in alerting for p in influx_points(o)} == {"analysis_results", "alerts"}
    restored = AnalyseLogic(params, logic.snapshot(), None)  # the snapshot is the pickled analyzer
    assert restored.analyzer is not None and restored.analyzer.last == logic.analyzer.last  # type: ignore[union-attr]


def test_inconsistent_thresholds_stop_start_up_with_one_line() -> None:
    env = {**os.environ, "ANALYSIS_LIQUIDITY_WARNING": "0.4", "ANALYSIS_LIQUIDITY_ALERT": "0.5"}
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.orderbook_analysis"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "cryptoflow: invalid ANALYSIS_* settings: invalid analysis parameters: expected "
        "0 < liquidity_alert <= liquidity_warning"]


def test_a_book_without_frames_for_stale_after_is_marked_stale(redis_server: RedisServer) -> None:
    logic = AnalyseLogic(analysis_params(settings_for(redis_server)), None, None, stale_after_s=30)
    assert logic.notify_at() is None  # nothing yet
    deltas = [d for f in market(["BTC-USDT"], seconds=1, rate=10, start_ms=T0, depth=20)
              for d in parse_books_frame(f, recv_ns=0)]  # type: ignore[union-attr]
    logic.on_batch(deltas)
    due = logic.notify_at()
    assert due is not None and 29 < (due - datetime.now(UTC)).total_seconds() <= 30
    (out,), _ = logic.on_notify()
    assert out.result.book_status is BookStatus.STALE and not out.analysed
    assert out.result.support_level_1 is not None  # the last values stay
    assert logic.notify_at() is None  # stale: nothing more to report until frames come back
    more = [d for f in market(["BTC-USDT"], seconds=2, rate=10, start_ms=T0, depth=20)[11:]
            for d in parse_books_frame(f, recv_ns=0)]  # type: ignore[union-attr]
    (back,), _ = logic.on_batch(more)
    assert back.result.book_status is BookStatus.VALID


def test_the_redis_sink_holds_a_batch_until_redis_is_back(tmp_path: Path) -> None:
    port = free_port()
    event = AlertEvent(instrument="BTC-USDT", alert_type="liquidity_shrink", level="alert", value=0.4,
                       threshold=0.5, message="liquidity index 0.40 below 0.50", ts_ms=T0)
    out = AnalysisOutput(AnalysisResult(instrument="BTC-USDT", analysis_ms=T0, book_status=BookStatus.VALID),
                         (event,))
    part = AnalysisRedisSink(f"redis://127.0.0.1:{port}/0", recipients=("ops@example.com",)).build("s", 0, 1)
    writer = threading.Thread(target=part.write_batch, args=([out],), daemon=True)
    writer.start()  # nobody listens on the port yet: the sink keeps retrying
    time.sleep(4)  # past the client's own retries (~3 s), after which the batch used to be lost with an error
    assert writer.is_alive()
    server = start_redis(port, tmp_path / "redis")
    try:
        writer.join(60)
        assert not writer.is_alive()
        client = redis.Redis(port=port, decode_responses=True)
        assert client.hgetall("analysis:BTC-USDT")["analysis_time"] == "2023-11-14T22:13:20.000Z"
        (entry,) = client.lrange("alerts:history", 0, -1)
        assert orjson.loads(entry)["alert_type"] == "liquidity_shrink"
        assert orjson.loads(client.lindex("queue:email", 0))["to"] == "ops@example.com"
        client.close()
    finally:
        part.close()
        stop_process(server)
