"""kill -9 of the analysis dataflow in the middle of a replay, restart with recovery: no frame lost, windows
resumed (the final analysis equals an uninterrupted run's), each alert published once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
import redis

from connectors.analysis_sink import hash_fields
from connectors.okx.books import parse_books_frame
from cryptoflow.settings import load_settings
from dataflows.orderbook_analysis import analysis_params
from operators.analysis import InstrumentAnalyzer
from operators.events import AnalysisResult
from operators.orderbook import OrderBook
from tests.fixtures.redis import RedisServer
from tests.okx_frames import market
from tests.waiting import wait_for

T0 = 1_700_000_000_000
INSTS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
ROOT = Path(__file__).resolve().parents[1]
ENV = {"ANALYSIS_DEPTH_WINDOW": "5", "ANALYSIS_LIQUIDITY_WINDOW": "10", "ANALYSIS_ALERT_COOLDOWN": "600",
       "ANALYSIS_ALERT_EMAILS": "ops@example.com", "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}


def reference(frames: list[bytes]) -> dict[str, AnalysisResult]:
    """The same frames through the pure operators, uninterrupted."""
    params = analysis_params(load_settings(**{k.lower(): v for k, v in ENV.items() if k.startswith("ANALYSIS")}))
    analyzers: dict[str, InstrumentAnalyzer] = {}
    last: dict[str, AnalysisResult] = {}
    for frame in frames:
        parsed = parse_books_frame(frame, recv_ns=0)
        assert isinstance(parsed, tuple)
        for d in parsed:
            a = analyzers.setdefault(d.instrument, InstrumentAnalyzer(d.instrument, OrderBook(d.instrument), params))
            last[d.instrument] = a.on_delta(d, params).result
    return last


def start_flow(server: RedisServer, recovery: Path, log: Path, workers: int = 1) -> subprocess.Popen[bytes]:
    env = {**os.environ, **ENV, "REDIS_URL": server.url, "PYTHONPATH": str(ROOT)}
    env.pop("INFLUX_URL", None)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "dataflows.orderbook_analysis", "-r", str(recovery),
             "-s", "1", "-b", "0", "-w", str(workers)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def kill9(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            kill9(proc)


@pytest.mark.slow
def test_kill9_mid_replay_resumes_with_nothing_lost(
    redis_server: RedisServer, redis_db: redis.Redis, tmp_path: Path,
) -> None:
    frames = market(INSTS, seconds=40, rate=10, start_ms=T0, depth=100, events={12.0: 0.3, 30.0: 3.0})
    expected = reference(frames)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=ROOT)
    log = tmp_path / "flow.log"

    pushed = threading.Event()
    crashed = threading.Event()
    half = len(frames) // 2

    def push() -> None:  # a producer LPUSHing ~200 frames/s, across the crash
        client = redis_server.client()
        for i in range(0, len(frames), 10):
            if i >= half:  # the rest only after the kill, so the crash is mid-replay however slow the machine
                crashed.wait(120)
            client.lpush("okex_orderbook", *frames[i:i + 10])
            time.sleep(0.05)
        pushed.set()

    proc = start_flow(redis_server, recovery, log)
    producer = threading.Thread(target=push, daemon=True)
    producer.start()
    try:
        offset = lambda: int(redis_db.get("okex_orderbook:processing:0:offset") or 0)  # noqa: E731
        wait_for("a third of the frames taken", lambda: offset() > len(frames) // 3)
        time.sleep(1.2)  # let at least one snapshot (every 1 s) commit, then die mid-replay
        kill9(proc)
        crashed.set()
        taken_at_crash = offset()
        assert 0 < taken_at_crash < len(frames), "the crash must happen mid-replay"
        proc = start_flow(redis_server, recovery, log, workers=2)  # resume may change the worker count
        wait_for("the producer to finish", pushed.is_set)
        wait_for("every frame taken", lambda: offset() == len(frames) and redis_db.llen("okex_orderbook") == 0)

        def done() -> bool:
            return all(redis_db.hget(f"analysis:{i}", "analysis_time") == "2023-11-14T22:14:00.000Z"
                       for i in INSTS)

        wait_for("the last frame of every instrument analysed", done)
    finally:
        crashed.set()
        stop(proc)
        producer.join(30)
    text = log.read_text()
    assert "redis_list_resume_gap" not in text and "frame_rejected" not in text
    assert "redis_list_redeliver" in text  # frames taken after the last committed snapshot were replayed
    for inst in INSTS:
        got = redis_db.hgetall(f"analysis:{inst}")
        want = hash_fields(expected[inst])
        # a lost or doubly-counted frame breaks the seqId chain: the book would be `resyncing`
        assert got["book_status"] == "valid"
        for field in ("support_level_1", "support_level_2", "resistance_level_1", "resistance_level_2",
                      "large_order_trend", "depth_anomaly_alert", "liquidity_alert", "analysis_time"):
            assert got[field] == want[field], field
        for field in ("large_buy_orders", "large_sell_orders", "liquidity_index", "depth_anomaly_score"):
            assert float(got[field]) == pytest.approx(float(want[field]), rel=1e-6, abs=1e-6), field
    # windows resumed: the liquidity index is computed against the pre-crash baseline, so it is defined
    assert all(redis_db.hget(f"analysis:{i}", "liquidity_index") for i in INSTS)
    # each alert once (replayed alerts are deduplicated): the drain at 12 s and the spike at 30 s
    history = [orjson.loads(x) for x in redis_db.lrange("alerts:history", 0, -1)]
    keys = sorted((h["instrument_id"], h["alert_type"], h["level"], h["timestamp"]) for h in history)
    assert len(keys) == len(set(keys))
    assert {(k[0], k[1]) for k in keys} == {(i, t) for i in INSTS for t in ("depth_anomaly", "liquidity_shrink")}
    jobs = [orjson.loads(x) for x in redis_db.lrange("queue:email", 0, -1)]
    assert sorted(j["alert_id"] for j in jobs) == sorted(h["id"] for h in history)
