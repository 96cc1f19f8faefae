"""OKX daily and 4-hour candles: the simulator serves them as OKX does, and ``market_data`` subscribes to them.

OKX's plain ``candle1D`` follows Hong Kong time (the day opens at 16:00 UTC); ``candle1Dutc`` is the UTC day.
Up to 4 h the candles are UTC-aligned already (16:00 UTC is a multiple of 4 h), so there is ``candle4H`` but
no ``candle4Hutc`` (OKX's ``...utc`` channels are 6H, 12H, 1D and longer): the simulator refuses it with 60018
like OKX, and ``market_data`` reconciles its 4 h klines against ``candle4H``, its 1 d klines against
``candle1Dutc``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.okx.market import CANDLE_CHANNELS, parse_okx_market_frame
from cryptoflow.servers import stop_process
from operators.events import Kline
from simulator.market import kline_start
from tests.fixtures.simulator import Simulator
from tests.simulator_helpers import connect, okx_sub, recv_json
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3_600_000
DAY = 24 * HOUR


def test_kline_windows_are_utc_aligned_except_okx_hong_kong_day() -> None:
    ts = 1_723_161_600_000 + 10 * HOUR + 123  # 2024-08-09 10:00:00.123 UTC
    assert kline_start("1d", ts) == 1_723_161_600_000  # 00:00 UTC
    assert kline_start("1d_hk", ts) == 1_723_161_600_000 - 8 * HOUR  # 16:00 UTC the day before
    assert kline_start("1d_hk", 1_723_161_600_000 + 17 * HOUR) == 1_723_161_600_000 + 16 * HOUR
    assert kline_start("4h", ts) == 1_723_161_600_000 + 8 * HOUR
    assert kline_start("1h", ts) == 1_723_161_600_000 + 10 * HOUR
    assert CANDLE_CHANNELS["1d"] == "candle1Dutc" and CANDLE_CHANNELS["4h"] == "candle4H"


def test_simulator_daily_and_4h_candles(simulator: Simulator) -> None:
    channels = ("candle1Dutc", "candle1D", "candle4H")

    async def scenario() -> tuple[dict[str, Any], dict[str, list[list[str]]]]:
        got: dict[str, list[list[str]]] = {ch: [] for ch in channels}
        async with connect(simulator.okx_ws_business_url) as biz:
            await biz.send(okx_sub(("candle4Hutc", "BTC-USDT")))  # not an OKX channel
            refused = await recv_json(biz)
            await biz.send(okx_sub(*((ch, "BTC-USDT") for ch in channels)))
            acks = [await recv_json(biz) for _ in channels]
            assert [a["event"] for a in acks] == ["subscribe"] * 3, acks
            assert sorted(a["arg"]["channel"] for a in acks) == sorted(channels)

            async def read() -> None:
                while min(len(v) for v in got.values()) < 3:
                    msg = json.loads(await biz.recv())
                    if "event" not in msg:
                        got[msg["arg"]["channel"]].append(msg["data"][0])

            await asyncio.wait_for(read(), 30)
        return refused, got

    refused, got = asyncio.run(scenario())
    assert refused["event"] == "error" and refused["code"] == "60018" and "candle4Hutc" in refused["msg"]
    utc, hk, h4 = (got[ch][-1] for ch in channels)
    assert int(utc[0]) % DAY == 0  # the UTC day
    assert int(hk[0]) % DAY == 16 * HOUR  # the Hong Kong day opens at 16:00 UTC
    assert int(h4[0]) % (4 * HOUR) == 0
    # the simulator's market started minutes ago, inside both days: the same trades, so the same numbers
    assert utc[1:6] == hk[1:6] and utc[8] == hk[8] == "0"
    assert Decimal(utc[3]) <= Decimal(h4[3]) <= Decimal(h4[2]) <= Decimal(utc[2])
    # and the market_data parser reads them as 1d / 4h venue klines
    for ch, row in (("candle1Dutc", utc), ("candle4H", h4)):
        frame = json.dumps({"arg": {"channel": ch, "instId": "BTC-USDT"}, "data": [row]})
        (k,) = parse_okx_market_frame(frame, recv_ns=1)
        assert isinstance(k, Kline) and k.timeframe == {"candle1Dutc": "1d", "candle4H": "4h"}[ch]
        assert k.open_ms == int(row[0]) and k.close == Decimal(row[4]) and not k.closed


@pytest.mark.slow
def test_market_data_okx_candle_subscriptions_accepted(start_simulator: Any, redis_server: Any, redis_db: Any,
                                                       tmp_path: Path) -> None:
    sim = start_simulator("--pairs", "BTC-USDT", "--seed", "3", "--rate", "20")
    redis_db.sadd("config:trading_pairs", "BTC-USDT")
    env = {**os.environ, **sim.env(), "REDIS_URL": redis_server.url, "LOG_FORMAT": "json",
           "MARKET_DATA_VENUES": "okx", "KLINE_TIMEFRAMES": "1m,4h,1d", "PRICE_ALERTS_ENABLED": "false",
           "TRADING_PAIRS_POLL_INTERVAL": "0.5"}
    log = tmp_path / "flow.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.market_data"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wanted = {"candle1m", "candle4H", "candle1Dutc"}

        def candles_flowing() -> bool:
            subs = [s for s in sim.status()["subscriptions"] if s["channel"].startswith("candle")]
            return {s["channel"] for s in subs if s["frames"] > 0} == wanted

        wait_for("OKX candle subscriptions with frames",
                 candles_flowing)
        wait_for("klines",
                 lambda: redis_db.exists("kline:okx:BTC-USDT:1d", "kline:okx:BTC-USDT:4h") == 2)
        mon = wait_for("market stats",
                       lambda: (m := redis_db.hgetall("system:monitoring")) and "market_okx_topics" in m and m)
        assert "market_rejected_topics" not in mon and "market_error_messages" not in mon, mon
    finally:
        stop_process(proc)
    text = log.read_text()
    assert "market_channel_rejected" not in text and "ws_topic_rejected" not in text
