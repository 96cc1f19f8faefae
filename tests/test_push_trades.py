"""``@trades`` end to end: simulator (as Binance) -> ``market_data`` (a real bytewax process) -> Redis Streams ->
the gateway (a real uvicorn) -> a ``websockets`` client; what the client receives equals the simulator's trades,
in order.

The oracle is independent of the code under test: a second ``websockets`` client subscribes to the simulator's own
Binance trade streams and reads the raw frames (``t`` id, ``p``/``q`` strings, ``m`` = the buyer is the maker, so
the taker sold). From the first trade the gateway delivered, every later one must be the simulator's next, with
the venue's exact strings.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis
import websockets

from cryptoflow.servers import stop_process
from tests.dataflow_helpers import start_dataflow
from tests.fixtures.redis import RedisServer
from tests.push_helpers import Client, gateway_server, open_client
from tests.waiting import wait_for

pytestmark = pytest.mark.slow
PAIRS = ("BTC-USDT", "ETH-USDT")
WANT = 80  # trades per pair through the gateway (the simulator trades a few per second per pair at --rate 20)
Row = tuple[str, str, str, str, int]  # trade_id, price, size, side, ts


async def _venue_trades(url: str, out: dict[str, list[Row]], subscribed: asyncio.Event) -> None:
    symbols = {p.replace("-", ""): p for p in PAIRS}
    async with websockets.connect(f"{url}/ws") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": [f"{s.lower()}@trade" for s in symbols], "id": 1}))
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("id") == 1:
                subscribed.set()
            data = msg.get("data", msg)
            if data.get("e") == "trade":
                out[symbols[data["s"]]].append(
                    (str(data["t"]), data["p"], data["q"], "sell" if data["m"] else "buy", data["T"]))


async def _gateway_trades(client: Client, out: dict[str, list[Row]], acks: list[str]) -> None:
    while True:
        msg = await client.recv(60)
        if "event" not in msg:  # a subscribe's ack: one channel's events may come before the next channel's ack
            assert msg.get("result") is True, msg
            acks.append(msg["channel"])
            continue
        d = msg["data"]
        assert d["exchange"] == "binance", d
        out[msg["event"].removesuffix("@trades")].append((d["trade_id"], d["price"], d["size"], d["side"], d["ts"]))


def test_trades_through_the_gateway_are_the_simulators_in_order(
        start_simulator: Any, redis_server: RedisServer, redis_db: redis.Redis, tmp_path: Path) -> None:
    sim = start_simulator("--pairs", ",".join(PAIRS), "--seed", "12", "--rate", "20")
    redis_db.sadd("config:trading_pairs", *PAIRS)
    flow = start_dataflow("market_data", {
        **sim.env(), "REDIS_URL": redis_server.url, "MARKET_DATA_VENUES": "binance", "BINANCE_TRADE_STREAM": "trade",
        "KLINE_TIMEFRAMES": "1m", "PRICE_ALERTS_ENABLED": "false", "TRADING_PAIRS_POLL_INTERVAL": "0.5",
        "LOG_FORMAT": "json"}, tmp_path / "market_data.log")
    venue: dict[str, list[Row]] = {p: [] for p in PAIRS}
    got: dict[str, list[Row]] = {p: [] for p in PAIRS}

    async def body(url: str) -> None:
        subscribed = asyncio.Event()
        oracle = asyncio.create_task(_venue_trades(sim.binance_ws_url, venue, subscribed))
        await asyncio.wait_for(subscribed.wait(), 30)
        await asyncio.to_thread(wait_for, "market_data publishing @trades", lambda: all(
            redis_db.xlen(f"stream:{p}@trades") > 0 for p in PAIRS), 90)
        client = await open_client(url)
        acks: list[str] = []
        reader = asyncio.create_task(_gateway_trades(client, got, acks))
        for p in PAIRS:
            await client.send({"op": "subscribe", "channel": f"{p}@trades"})
        await asyncio.to_thread(wait_for, "the acks", lambda: reader.done() or len(acks) == len(PAIRS), 30)
        assert sorted(acks) == sorted(f"{p}@trades" for p in PAIRS), (acks, reader.done() and reader.exception())
        await asyncio.to_thread(wait_for, f"{WANT} trades per pair through the gateway", lambda: reader.done() or all(
            len(rows) >= WANT for rows in got.values()), 120)
        if reader.done():
            reader.result()  # raises what the reader hit
        reader.cancel()
        await asyncio.sleep(0.5)  # the oracle has every trade the gateway delivered (it reads the venue directly)
        oracle.cancel()
        await client.ws.close()

    try:
        with gateway_server(redis_server.url) as gw:
            asyncio.run(body(gw.url))
    finally:
        stop_process(flow)
    for pair in PAIRS:
        ours, theirs = got[pair], venue[pair]
        ids = [row[0] for row in theirs]
        assert ours[0][0] in ids, (pair, ours[0], theirs[:3])
        start = ids.index(ours[0][0])
        assert ours == theirs[start:start + len(ours)], pair
