"""kill -9 of the analysis dataflow in the middle of a replay, restart with recovery: no frame lost, windows
resumed (the final analysis equals an uninterrupted run's), each alert published once.

No sleeps and no races: the test reads what Bytewax has committed from its recovery store (the sqlite files
under the recovery directory) and arranges the crash from that:

1. run A (snapshot every 1 s) takes the frames up to 11 s; we wait until a committed snapshot covers exactly
   them, then kill -9 it (nothing uncommitted);
2. run B resumes from that snapshot with an epoch so long (1 h) that it commits nothing more; it takes the
   frames up to 20 s, the liquidity drain at 12 s among them, and publishes the six alerts; kill -9;
3. run C (two workers) resumes from the same snapshot, so the frames 11-20 s are delivered again (the alerts
   are regenerated and must be deduplicated), then takes the rest.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from connectors.okx.books import parse_books_frame
from connectors.redis.analysis_sink import hash_fields
from cryptoflow.analysis_settings import analysis_params
from cryptoflow.settings import load_settings
from operators.analysis import InstrumentAnalyzer
from operators.events import AnalysisResult, iso_ms
from operators.orderbook import OrderBook
from tests.dataflow_helpers import log_events, start_dataflow
from tests.fixtures.redis import RedisServer
from tests.okx_frames import market
from tests.waiting import wait_for

T0 = 1_700_000_000_000
INSTS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
ROOT = Path(__file__).resolve().parents[1]
ENV = {"ANALYSIS_DEPTH_WINDOW": "5", "ANALYSIS_LIQUIDITY_WINDOW": "10", "ANALYSIS_ALERT_COOLDOWN": "600",
       "ANALYSIS_ALERT_EMAILS": "ops@example.com", "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
SOURCE_STEP = "orderbook_analysis.read"  # the flow's id + the input step's id: where the source's offset is kept
OFFSET_KEY = "okex_orderbook:processing:0:offset"

Alert = tuple[str, str, str, str]  # instrument, type, level, timestamp: what alerts:history says


def reference(frames: list[bytes]) -> tuple[dict[str, AnalysisResult], list[tuple[int, Alert]]]:
    """The same frames through the pure operators, uninterrupted: the last result per instrument, and every
    alert with the index of the frame that raised it."""
    params = analysis_params(load_settings(**{k.lower(): v for k, v in ENV.items() if k.startswith("ANALYSIS")}))
    analyzers: dict[str, InstrumentAnalyzer] = {}
    last: dict[str, AnalysisResult] = {}
    alerts: list[tuple[int, Alert]] = []
    for i, frame in enumerate(frames):
        parsed = parse_books_frame(frame, recv_ns=0)
        assert isinstance(parsed, tuple)
        for d in parsed:
            a = analyzers.setdefault(d.instrument, InstrumentAnalyzer(d.instrument, OrderBook(d.instrument), params))
            out = a.on_delta(d, params)
            last[d.instrument] = out.result
            alerts += [(i, (e.instrument, e.alert_type, e.level, iso_ms(e.ts_ms))) for e in out.alerts]
    return last, alerts


def committed_offset(recovery: Path) -> int | None:
    """The source offset in the newest snapshot Bytewax has committed: where a resume starts reading.

    ``commits.commit_epoch`` is the newest epoch whose snapshots are all durable; the resume loads, per state
    key, the newest snapshot of an epoch at or before it (read-only: the store is in WAL mode, readers never
    block the writer)."""
    uri = f"file:{recovery / 'part-0.sqlite3'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        (epoch,) = db.execute("SELECT MIN(commit_epoch) FROM commits").fetchone()
        if epoch is None:
            return None
        row = db.execute("SELECT ser_change FROM snaps WHERE step_id = ? AND state_key = '0' AND snap_epoch <= ? "
                         "ORDER BY snap_epoch DESC LIMIT 1", (SOURCE_STEP, epoch)).fetchone()
    return None if row is None or row[0] is None else int(pickle.loads(row[0]))


def start_flow(server: RedisServer, recovery: Path, log: Path, *, workers: int = 1,
               snapshot_every_s: int = 1) -> subprocess.Popen[bytes]:
    return start_dataflow("orderbook_analysis", {**ENV, "REDIS_URL": server.url, "PYTHONPATH": str(ROOT)}, log,
                          "-r", str(recovery), "-s", str(snapshot_every_s), "-b", "0", "-w", str(workers))


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
    expected, expected_alerts = reference(frames)
    ts = [orjson.loads(f)["data"][0]["ts"] for f in frames]
    first = sum(int(t) < T0 + 11_000 for t in ts)  # run A: up to 11 s (whole ticks)
    crash = sum(int(t) <= T0 + 20_000 for t in ts)  # run B: up to 20 s
    alert_frames = {i for i, _ in expected_alerts}
    # the data's premise: six alerts (two per instrument), all raised by frames run B takes and run C replays
    assert len(expected_alerts) == 6 and alert_frames and first <= min(alert_frames) and max(alert_frames) < crash
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=ROOT)
    logs = {run: tmp_path / f"flow-{run}.log" for run in "ABC"}

    def taken() -> int:
        return int(redis_db.get(OFFSET_KEY) or 0)

    def analysed_up_to(i: int) -> bool:
        want = iso_ms(int(ts[i - 1]))
        return all(redis_db.hget(f"analysis:{inst}", "analysis_time") == want for inst in INSTS)

    proc = start_flow(redis_server, recovery, logs["A"])
    try:
        redis_db.lpush("okex_orderbook", *frames[:first])
        wait_for("a committed snapshot covering the first frames", lambda: committed_offset(recovery) == first)
        kill9(proc)
        assert taken() == first

        proc = start_flow(redis_server, recovery, logs["B"], snapshot_every_s=3600)  # commits nothing more
        redis_db.lpush("okex_orderbook", *frames[first:crash])
        wait_for("run B to analyse every frame up to the crash point", lambda: analysed_up_to(crash))
        published = sorted(orjson.loads(x)["id"] for x in redis_db.lrange("alerts:history", 0, -1))
        assert len(published) == len(expected_alerts)  # all published before the crash
        kill9(proc)
        assert (taken(), committed_offset(recovery)) == (crash, first), "the crash must leave uncommitted frames"

        proc = start_flow(redis_server, recovery, logs["C"], workers=2)  # resume may change the worker count
        redis_db.lpush("okex_orderbook", *frames[crash:])
        wait_for("every frame taken", lambda: taken() == len(frames) and redis_db.llen("okex_orderbook") == 0)
        wait_for("the last frame of every instrument analysed", lambda: analysed_up_to(len(frames)))
    finally:
        stop(proc)
    for run, log in logs.items():
        text = log.read_text()
        assert "redis_list_resume_gap" not in text and "frame_rejected" not in text, run
    assert not log_events(logs["A"], "redis_list_redeliver") and not log_events(logs["B"], "redis_list_redeliver")
    # run C got back exactly the frames taken after the committed snapshot
    assert [e["items"] for e in log_events(logs["C"], "redis_list_redeliver")] == [crash - first]
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
    # every alert of the uninterrupted run, each exactly once, although run C regenerated all of them
    history = [orjson.loads(x) for x in redis_db.lrange("alerts:history", 0, -1)]
    got_alerts = sorted((h["instrument_id"], h["alert_type"], h["level"], h["timestamp"]) for h in history)
    assert got_alerts == sorted(a for _, a in expected_alerts)
    assert sorted(h["id"] for h in history) == published
    jobs = [orjson.loads(x) for x in redis_db.lrange("queue:email", 0, -1)]
    assert sorted(j["alert_id"] for j in jobs) == published  # one recipient: one job per alert
