"""The demo's view (cryptoflow/demo_view.py) against a real Redis: every monitored pair, pairs added live, the
last analysis alert as one readable line, 120 columns, and plain lines without escape codes for a pipe."""

from __future__ import annotations

import io

import orjson
import redis
from rich.console import Console

from cryptoflow.demo_view import plain_lines, read_snapshot, render


def _seed(r: redis.Redis) -> None:
    r.sadd("config:trading_pairs", "BTC-USDT", "ETH-USDT", "bad id")
    r.hset("config:trading_pairs:rejected", "bad id", "malformed instrument id 'bad id'")
    r.hset("orderbook:BTC-USDT", mapping={"status": "valid", "bids": '[["60010.5","1.2"],["60010.1","3"]]',
                                          "asks": '[["60010.7","0.5"]]'})
    r.hset("analysis:BTC-USDT", mapping={"support_level_1": "59984.4", "resistance_level_1": "60024.5",
                                         "liquidity_index": "0.8123", "liquidity_alert": "normal",
                                         "depth_anomaly_score": "3.4142", "depth_anomaly_alert": "warning",
                                         "large_order_trend": "bullish"})
    r.hset("ticker:okx:BTC-USDT", mapping={"price": "60010.6", "change_24h": "0.1234"})
    for inst, kind, level, value, ts in (("BTC-USDT", "depth_anomaly", "warning", 4.0123, "2026-11-29T17:20:05.120Z"),
                                         ("ETH-USDT", "liquidity_shrink", "alert", 0.31, "2026-11-29T17:21:00.000Z"),
                                         ("BTC-USDT", "depth_anomaly", "alert", 6.5, "2026-11-29T17:22:10.000Z")):
        r.lpush("alerts:history", orjson.dumps({"id": "x", "instrument_id": inst, "alert_type": kind, "level": level,
                                                "value": value, "threshold": 4, "message": "m", "timestamp": ts}))


def test_snapshot_rows_last_alerts_and_live_added_pairs(redis_db: redis.Redis) -> None:
    _seed(redis_db)
    snap = read_snapshot(redis_db, "config:trading_pairs")
    assert [r.inst for r in snap.rows] == ["BTC-USDT", "ETH-USDT"]
    btc, eth = snap.rows
    assert (btc.book, btc.bid, btc.ask, btc.last, btc.change) == ("valid", "60010.5", "60010.7", "60010.6", "+0.12%")
    assert (btc.liquidity, btc.depth, btc.depth_alert, btc.trend) == ("0.81", "+3.4", "warning", "bullish")
    assert btc.last_alert == "17:22:10 depth_anomaly alert 6.5 (threshold 4)"  # the newest of BTC's two
    assert eth.last_alert == "17:21:00 liquidity_shrink alert 0.31 (threshold 4)"
    assert (eth.book, eth.bid) == ("-", "-")
    assert snap.rejected == (("bad id", "malformed instrument id 'bad id'"),)

    redis_db.sadd("config:trading_pairs", "DOGE-USDT")  # added live
    assert "DOGE-USDT" in [r.inst for r in read_snapshot(redis_db, "config:trading_pairs").rows]


def test_the_table_fits_120_columns_and_the_plain_lines_have_no_escape_codes(redis_db: redis.Redis) -> None:
    _seed(redis_db)
    redis_db.sadd("config:trading_pairs", "BTC-USD-220527-40000-C")
    snap = read_snapshot(redis_db, "config:trading_pairs")
    console = Console(file=io.StringIO(), width=120, record=True, color_system=None)
    console.print(render(snap, notes=["17:23:00  EMAIL to ops@example.com: [cryptoflow] BTC-USDT"], title="demo"))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    assert not any(line.rstrip().endswith("…") for line in lines if "BTC-USDT " in line), "a cut column"
    row = next(line for line in lines if line.strip().startswith("BTC-USDT") and "valid" in line)
    for value in ("60010.5", "60010.7", "60010.6", "+0.12%", "59984.4", "60024.5", "0.81 ok", "+3.4 warn", "bullish"):
        assert value in row, (value, row)
    assert any("BTC-USDT" in line and "17:22:10 depth_anomaly alert 6.5 (threshold 4)" in line for line in lines)
    assert "rejected bad id: malformed instrument id 'bad id'" in text

    plain = plain_lines(snap)
    assert len(plain) == 3 and all(len(line) <= 120 and "\x1b" not in line for line in plain)
    assert "BTC-USDT  valid     60010.5/60010.7 last 60010.6 S/R 59984.4/60024.5 liq 0.81 ok z +3.4 warn bullish" \
        in plain[1]
