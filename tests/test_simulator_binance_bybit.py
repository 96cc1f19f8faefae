"""Binance spot and Bybit v5 conformance of the simulator, through a plain ``websockets`` client and HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from tests.fixtures.simulator import Simulator
from tests.simulator_helpers import Book, connect, drain, http_json, recv_json, recv_until


def test_binance_diff_depth_syncs_with_rest_last_update_id(simulator: Simulator) -> None:
    """Binance's documented procedure: buffer, REST snapshot, drop u <= lastUpdateId, first U <= L+1 <= u,
    then each U == previous u + 1."""

    async def scenario() -> None:
        url = f"{simulator.binance_ws_url}/stream?streams=btcusdt@depth@100ms/ethusdt@depth"
        async with connect(url) as ws:
            events = [await recv_json(ws) for _ in range(4)]
            rest_url = f"{simulator.binance_rest_url}/api/v3/depth?symbol=BTCUSDT&limit=1000"
            rest = await asyncio.to_thread(http_json, rest_url)
            events += [await recv_json(ws) for _ in range(30)]
            btc = [e["data"] for e in events if e["stream"] == "btcusdt@depth@100ms"]
            assert all(e["stream"] in ("btcusdt@depth@100ms", "ethusdt@depth") for e in events)
            book = Book()
            book.reset(rest["bids"], rest["asks"])
            last = rest["lastUpdateId"]
            live = [e for e in btc if e["u"] > last]
            assert live[0]["U"] <= last + 1 <= live[0]["u"]
            for e in live:
                assert e["e"] == "depthUpdate" and e["s"] == "BTCUSDT"
                if e is not live[0]:
                    assert e["U"] == last + 1
                book.apply(e["b"], e["a"])
                last = e["u"]
            simulator.pause()
            for raw in await drain(ws):
                e = json.loads(raw)["data"]
                if e["s"] == "BTCUSDT":
                    assert e["U"] == last + 1
                    book.apply(e["b"], e["a"])
                    last = e["u"]
            truth = simulator.book("binance", "BTC-USDT")
            assert truth["u"] == last
            assert book.top() == (truth["bids"], truth["asks"])
            simulator.resume()

    asyncio.run(scenario())


def test_binance_live_subscribe_raw_streams_and_event_shapes(simulator: Simulator) -> None:
    streams = ["btcusdt@aggTrade", "btcusdt@trade", "btcusdt@kline_1m", "btcusdt@ticker", "btcusdt@bookTicker"]

    async def scenario() -> dict[str, list[dict[str, Any]]]:
        got: dict[str, list[dict[str, Any]]] = {"aggTrade": [], "trade": [], "kline": [], "24hrTicker": [], "book": []}
        async with connect(f"{simulator.binance_ws_url}/ws") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams, "id": 7}))
            assert await recv_json(ws) == {"result": None, "id": 7}
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["nopeusdt@trade"], "id": 8}))
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 9}))
            answers: dict[int, dict[str, Any]] = {}
            while min(len(v) for v in got.values()) < 2 or len(answers) < 2:
                msg = await recv_json(ws)
                if "id" in msg:
                    answers[msg["id"]] = msg
                else:
                    got[msg.get("e", "book")].append(msg)
            assert answers[8]["error"]["code"] == 2
            assert answers[9]["result"] == sorted(streams)
        return got

    got = asyncio.run(scenario())
    for agg in got["aggTrade"]:
        assert {"a", "p", "q", "f", "l", "T", "m"} <= set(agg) and agg["s"] == "BTCUSDT"
        assert isinstance(agg["m"], bool) and agg["f"] <= agg["l"]
    for tr in got["trade"]:
        assert {"t", "p", "q", "T", "m"} <= set(tr) and Decimal(tr["q"]) > 0
    for kl in got["kline"]:
        k = kl["k"]
        assert k["i"] == "1m" and isinstance(k["x"], bool) and k["T"] == k["t"] + 59_999
        assert Decimal(k["l"]) <= Decimal(k["c"]) <= Decimal(k["h"])
    for t in got["24hrTicker"]:
        assert Decimal(t["l"]) <= Decimal(t["c"]) <= Decimal(t["h"]) and t["s"] == "BTCUSDT"
    for b in got["book"]:
        assert Decimal(b["b"]) < Decimal(b["a"]) and set(b) == {"u", "s", "b", "B", "a", "A"}


def test_binance_server_pings_and_rest_errors(start_simulator: Callable[..., Simulator]) -> None:
    sim = start_simulator("--pairs", "BTC-USDT", "--binance-ping-interval", "0.3")

    async def scenario() -> None:
        async with connect(f"{sim.binance_ws_url}/ws/btcusdt@trade") as ws:  # the client answers pings itself
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                details = sim.status()["connection_details"]
                if details and details[0]["pongs"] >= 2:
                    break
                await drain(ws, quiet=0.2, limit=0.5)
            else:
                pytest.fail("the simulator sent no ping frames (no pong came back)")

    asyncio.run(scenario())
    with pytest.raises(urllib.error.HTTPError) as err:
        http_json(f"{sim.binance_rest_url}/api/v3/depth?symbol=NOPEUSDT")
    assert err.value.code == 400 and json.loads(err.value.read())["code"] == -1121
    depth = http_json(f"{sim.binance_rest_url}/api/v3/depth?symbol=BTCUSDT&limit=5")
    assert len(depth["bids"]) == 5 and all(len(p.split(".")[1]) == 8 for p, _ in depth["bids"])


def test_bybit_orderbook_snapshot_then_deltas_with_u(simulator: Simulator) -> None:
    async def scenario() -> None:
        async with connect(simulator.bybit_ws_url) as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": ["orderbook.50.BTCUSDT", "orderbook.200.ETHUSDT"],
                                      "req_id": "r1"}))
            ack = await recv_json(ws)
            assert ack["success"] is True and ack["op"] == "subscribe" and ack["req_id"] == "r1"
            books = {"orderbook.50.BTCUSDT": Book(), "orderbook.200.ETHUSDT": Book()}
            last_u: dict[str, int] = {}
            frames = 0
            while frames < 60:
                msg = await recv_json(ws)
                topic, data = msg["topic"], msg["data"]
                if msg["type"] == "snapshot":
                    assert topic not in last_u and data["u"] == 1
                    books[topic].reset(data["b"], data["a"])
                else:
                    assert data["u"] == last_u[topic] + 1
                    books[topic].apply(data["b"], data["a"])
                last_u[topic] = data["u"]
                assert not books[topic].crossed()
                frames += 1
            simulator.pause()
            for raw in await drain(ws):
                msg = json.loads(raw)
                assert msg["data"]["u"] == last_u[msg["topic"]] + 1
                books[msg["topic"]].apply(msg["data"]["b"], msg["data"]["a"])
                last_u[msg["topic"]] = msg["data"]["u"]
            expected = (("orderbook.50.BTCUSDT", "BTC-USDT", 50), ("orderbook.200.ETHUSDT", "ETH-USDT", 200))
            for topic, inst, depth in expected:
                truth = simulator.book("bybit", inst)
                assert books[topic].top(depth) == (truth["bids"][:depth], truth["asks"][:depth])
                assert len(books[topic].bids) == depth
                assert truth["topics"][f"spot:{topic}"] == last_u[topic]
            simulator.resume()

    asyncio.run(scenario())


def test_bybit_ping_errors_trades_tickers_klines(simulator: Simulator) -> None:
    async def scenario() -> None:
        async with connect(simulator.bybit_ws_url) as spot, connect(simulator.bybit_linear_ws_url) as linear:
            await spot.send(json.dumps({"op": "ping", "req_id": "p1"}))
            pong = await recv_json(spot)
            assert pong["op"] == "ping" and pong["ret_msg"] == "pong" and pong["success"] is True
            await linear.send(json.dumps({"op": "ping", "req_id": "p2"}))
            assert (await recv_json(linear))["op"] == "pong"
            await spot.send(json.dumps({"op": "subscribe", "args": ["orderbook.50.NOPEUSDT"], "req_id": "bad"}))
            bad = await recv_json(spot)
            assert bad["success"] is False and "NOPEUSDT" in bad["ret_msg"]
            await spot.send(json.dumps({"op": "subscribe", "args": ["publicTrade.BTCUSDT", "tickers.BTCUSDT",
                                                                     "kline.1.BTCUSDT", "orderbook.1.BTCUSDT"]}))
            await linear.send(json.dumps({"op": "subscribe", "args": ["tickers.SOLUSDT"]}))
            seen: dict[str, dict[str, Any]] = {}
            await recv_until(spot, lambda m: bool(m.get("topic") and seen.setdefault(m["topic"].split(".")[0], m))
                             and len(seen) == 4)
            lin = await recv_until(linear, lambda m: m.get("topic") == "tickers.SOLUSDT")
        trade = seen["publicTrade"]["data"][0]
        assert trade["S"] in ("Buy", "Sell") and trade["s"] == "BTCUSDT" and {"T", "v", "p", "i"} <= set(trade)
        ticker = seen["tickers"]["data"]
        assert "bid1Price" not in ticker and Decimal(ticker["lowPrice24h"]) <= Decimal(ticker["lastPrice"])
        assert "bid1Price" in lin[-1]["data"]
        kline = seen["kline"]["data"][0]
        assert kline["interval"] == "1" and isinstance(kline["confirm"], bool)
        ob1 = seen["orderbook"]
        assert ob1["type"] == "snapshot" and len(ob1["data"]["b"]) == 1 and len(ob1["data"]["a"]) == 1

    asyncio.run(scenario())
