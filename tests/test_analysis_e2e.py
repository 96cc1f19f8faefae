"""End to end: simulator -> orderbook_collector -> Redis buffer list -> orderbook_analysis -> Redis + VictoriaMetrics
-> email_sender -> SMTP, with the simulator's ``liquidity_drain`` and ``depth_spike`` faults. Every component is a
real process or server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from cryptoflow.servers import stop_process
from tests.collector_helpers import start_collector
from tests.fixtures.influx import VictoriaMetrics
from tests.fixtures.redis import RedisServer
from tests.fixtures.smtp import SmtpServer
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ["BTC-USDT", "ETH-USDT"]


def start_dataflow(tmp: Path, env: dict[str, str], name: str = "orderbook_analysis") -> subprocess.Popen[bytes]:
    full = {**os.environ, "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", **env}
    full.pop("INFLUX_URL", None) if "INFLUX_URL" not in env else None
    with (tmp / f"{name}.log").open("wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "bytewax.run", f"dataflows.{name}"], cwd=ROOT,
                                env=full, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def start_analysis(tmp: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return start_dataflow(tmp, env)


def history(r: redis.Redis) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in r.lrange("alerts:history", 0, -1)]


def alerts_since(r: redis.Redis, inst: str, kind: str, level: str, since_iso: str) -> list[dict[str, Any]]:
    return [h for h in history(r) if h["instrument_id"] == inst and h["alert_type"] == kind
            and h["level"] == level and h["timestamp"] >= since_iso]


def iso_now(offset_s: float = 0.0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + offset_s))


@pytest.mark.slow
def test_liquidity_drain_and_depth_spike_raise_alerts_end_to_end(
    start_simulator: Any, redis_server: RedisServer, redis_db: redis.Redis, victoria: VictoriaMetrics,
    smtp_server: SmtpServer, tmp_path: Path,
) -> None:
    sim = start_simulator("--pairs", ",".join(PAIRS), "--seed", "7", "--rate", "20")
    r = redis_db
    r.sadd("config:trading_pairs", *PAIRS)
    col = start_collector(tmp_path, {**sim.env(), "REDIS_URL": redis_server.url})
    analysis = start_analysis(tmp_path, {
        "REDIS_URL": redis_server.url, "INFLUX_URL": victoria.url, "INFLUX_TOKEN": "test",
        "ANALYSIS_DEPTH_WINDOW": "4", "ANALYSIS_LIQUIDITY_WINDOW": "6", "ANALYSIS_ALERT_COOLDOWN": "0",
        "ANALYSIS_ALERT_EMAILS": "ops@example.com",
    })
    sender: subprocess.Popen[bytes] | None = None
    try:
        def warmed() -> bool:
            hashes = [r.hgetall(f"analysis:{i}") for i in PAIRS]
            return all(h.get("book_status") == "valid" and h.get("liquidity_index") and h.get("depth_anomaly_score")
                       for h in hashes)

        wait_for("both books analysed with full windows", warmed, timeout=60)
        for inst in PAIRS:
            h = r.hgetall(f"analysis:{inst}")
            assert float(h["support_level_1"]) < float(h["resistance_level_1"])
            assert h["large_order_trend"] in ("bullish", "bearish", "neutral")

        since = iso_now(-1)
        sim.fault("liquidity_drain", inst="BTC-USDT", fraction=0.05, band=0.01)
        wait_for("a liquidity_shrink alert for BTC-USDT",
                 lambda: alerts_since(r, "BTC-USDT", "liquidity_shrink", "alert", since), timeout=30)
        h = r.hgetall("analysis:BTC-USDT")
        assert h["liquidity_alert"] in ("alert", "warning") and float(h["liquidity_index"]) < 0.7

        since = iso_now(-1)
        sim.fault("depth_spike", inst="ETH-USDT", side="bid", multiple=500, distance=2)
        wait_for("a depth_anomaly alert for ETH-USDT",
                 lambda: alerts_since(r, "ETH-USDT", "depth_anomaly", "alert", since), timeout=30)

        # the email jobs of those alerts are on queue:email, in docs/CONTRACTS.md's shape
        pipe = r.pipeline(transaction=True)  # one consistent view: each alert's entry and jobs are one Lua call
        pipe.lrange("queue:email", 0, -1)
        pipe.lrange("alerts:history", 0, -1)
        raw_jobs, raw_history = pipe.execute()
        jobs = [orjson.loads(x) for x in raw_jobs]
        assert {j["alert_id"] for j in jobs} == {orjson.loads(h)["id"] for h in raw_history}
        drained = [j for j in jobs if "BTC-USDT: liquidity shrink alert" in j["subject"]]
        spiked = [j for j in jobs if "ETH-USDT: depth anomaly alert" in j["subject"]]
        assert drained and spiked
        assert all(j["to"] == "ops@example.com" and j["attempts"] == 0 for j in drained + spiked)
        assert not [h for h in history(r) if h["instrument_id"] == "ETH-USDT" and h["alert_type"] == "liquidity_shrink"]

        # ... and in VictoriaMetrics: the index below 0.5 and the alert points
        def vm_has_drain() -> bool:
            series = victoria.series("analysis_results", "liquidity_index", instrument_id="BTC-USDT",
                                     analysis_type="liquidity_shrink")
            return bool(series) and min(series.values()) < 0.5

        wait_for("the drained liquidity index in VictoriaMetrics", vm_has_drain, timeout=30)
        wait_for("the depth alert point", lambda: victoria.series(
            "alerts", "value", instrument_id="ETH-USDT", alert_type="depth_anomaly", level="alert"), timeout=30)
        assert analysis.poll() is None and col.alive()

        # ... and the email sender delivers them to the SMTP server
        sender = start_dataflow(tmp_path, {"REDIS_URL": redis_server.url, "SMTP_HOST": "127.0.0.1",
                                           "SMTP_PORT": str(smtp_server.port)}, "email_sender")
        subjects = {j["subject"] for j in drained + spiked}

        def delivered() -> bool:
            got = {str(m["Subject"]) for m in smtp_server.messages if m["X-Envelope-To"] == "ops@example.com"}
            return subjects <= got

        wait_for("the alert emails at the SMTP server", delivered, timeout=30)
    finally:
        stop_process(analysis)
        col.stop()
        if sender is not None:
            stop_process(sender)
    log = (tmp_path / "orderbook_analysis.log").read_text(errors="replace")
    # the process was alive until we stopped it (asserted above); Bytewax prints the interrupt as a traceback
    before_stop = log.split("Traceback")[0]
    assert "Traceback" not in log or "KeyboardInterrupt" in log
    assert '"level":"error"' not in before_stop
    assert "frame_rejected" not in before_stop


@pytest.mark.slow
def test_orderbook_source_ws_analyses_the_okx_websocket_directly(
    start_simulator: Any, redis_server: RedisServer, redis_db: redis.Redis, tmp_path: Path,
) -> None:
    sim = start_simulator("--pairs", ",".join(PAIRS), "--seed", "3", "--rate", "20", "--checksum", "real")
    r = redis_db
    r.sadd("config:trading_pairs", *PAIRS)
    analysis = start_analysis(tmp_path, {
        **sim.env(), "REDIS_URL": redis_server.url, "ORDERBOOK_SOURCE": "ws", "TRADING_PAIRS_POLL_INTERVAL": "1",
        "ANALYSIS_DEPTH_WINDOW": "4", "ANALYSIS_LIQUIDITY_WINDOW": "6", "ANALYSIS_ALERT_COOLDOWN": "0",
    })
    try:
        wait_for("both books analysed", lambda: all(
            r.hget(f"analysis:{i}", "book_status") == "valid" and r.hget(f"analysis:{i}", "liquidity_index")
            for i in PAIRS), timeout=60)
        assert r.llen("okex_orderbook") == 0  # the buffer list is not involved
        since = iso_now(-1)
        sim.fault("gap", inst="BTC-USDT")  # the source re-syncs that book; analysis carries on after it
        sim.fault("liquidity_drain", inst="BTC-USDT", fraction=0.05, band=0.01)
        wait_for("a liquidity_shrink alert for BTC-USDT",
                 lambda: alerts_since(r, "BTC-USDT", "liquidity_shrink", "alert", since), timeout=30)
        assert r.hget("analysis:BTC-USDT", "book_status") == "valid"
        assert analysis.poll() is None
    finally:
        stop_process(analysis)
