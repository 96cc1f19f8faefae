"""OKX v5 conformance of the simulator, through a plain ``websockets`` client and HTTP only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.fixtures.simulator import Simulator
from tests.simulator_helpers import (
    Book,
    OkxChain,
    connect,
    drain,
    http_json,
    okx_checksum,
    okx_sub,
    recv_json,
    recv_until,
)

DATA = Path(__file__).parent / "data"


def test_checksum_helper_matches_real_okx_frames() -> None:
    """The test's own checksum agrees with every real checksum of a recorded OKX session (290 frames)."""
    book, checked = Book(), 0
    for line in (DATA / "okx" / "okx-2022-05-13-books-trades-tickers.jsonl").read_text().splitlines():
        msg = json.loads(json.loads(line)["data"])
        if msg.get("arg", {}).get("channel") != "books" or msg["arg"]["instId"] != "BTC-USDT" or "data" not in msg:
            continue
        data = msg["data"][0]
        (book.reset if msg["action"] == "snapshot" else book.apply)(data["bids"], data["asks"])
        bids, asks = book.top(25)
        assert okx_checksum(bids, asks) == data["checksum"]
        checked += 1
    assert checked > 50


def test_books_snapshot_then_chained_updates_with_valid_checksums(simulator: Simulator) -> None:
    async def scenario() -> None:
        async with connect(simulator.okx_ws_url) as ws:
            await ws.send(okx_sub(("books", "BTC-USDT"), ("books50-l2-tbt", "ETH-USDT"), ("books-l2-tbt", "SOL-USDT")))
            chains = {"BTC-USDT": OkxChain(), "ETH-USDT": OkxChain(), "SOL-USDT": OkxChain()}
            acks: list[dict[str, Any]] = []
            first_actions: dict[str, str] = {}
            while min(c.frames for c in chains.values()) < 40:
                msg = await recv_json(ws)
                if "event" in msg:
                    acks.append(msg)
                    continue
                inst = msg["arg"]["instId"]
                first_actions.setdefault(inst, msg["action"])
                chains[inst].feed(msg)
            assert [a["event"] for a in acks] == ["subscribe"] * 3
            assert all(a["connId"] for a in acks)
            assert set(first_actions.values()) == {"snapshot"}
            simulator.pause()
            for raw in await drain(ws):
                msg = json.loads(raw)
                chains[msg["arg"]["instId"]].feed(msg)
            for inst, depth in (("BTC-USDT", 400), ("ETH-USDT", 50), ("SOL-USDT", 400)):
                truth = simulator.book("okx", inst)
                bids, asks = chains[inst].book.top(depth)
                assert chains[inst].seq == truth["seqId"]
                assert bids == truth["bids"][:depth] and asks == truth["asks"][:depth]
                assert len(chains[inst].book.bids) == depth  # books50 drops levels leaving its top 50
            simulator.resume()

    asyncio.run(scenario())


def test_heartbeats_keep_the_chain(start_simulator: Callable[..., Simulator]) -> None:
    sim = start_simulator("--pairs", "BTC-USDT", "--seed", "3", "--rate", "200")
    chain = OkxChain()

    async def scenario() -> None:
        async with connect(sim.okx_ws_url) as ws:
            await ws.send(okx_sub(("books", "BTC-USDT")))
            await recv_json(ws)
            while chain.heartbeats < 2:
                chain.feed(await recv_json(ws))

    asyncio.run(scenario())
    assert chain.frames > chain.heartbeats


def test_books5_trades_tickers_and_candles(simulator: Simulator) -> None:
    async def scenario() -> dict[str, list[dict[str, Any]]]:
        got: dict[str, list[dict[str, Any]]] = {"books5": [], "trades": [], "tickers": [], "candle1m": []}
        async with connect(simulator.okx_ws_url) as pub, connect(simulator.okx_ws_business_url) as biz:
            await pub.send(okx_sub(("books5", "BTC-USDT"), ("trades", "BTC-USDT"), ("tickers", "BTC-USDT")))
            await biz.send(okx_sub(("candle1m", "BTC-USDT")))
            assert (await recv_json(biz))["event"] == "subscribe"

            async def read(ws: Any) -> None:
                while min(len(v) for v in got.values()) < 5:
                    msg = json.loads(await ws.recv())
                    if "event" not in msg:
                        got[msg["arg"]["channel"]].append(msg)

            await asyncio.wait_for(asyncio.gather(read(pub), read(biz)), 30)
        return got

    got = asyncio.run(scenario())
    for msg in got["books5"]:
        data = msg["data"][0]
        assert "action" not in msg and len(data["bids"]) == 5 and len(data["asks"]) == 5
        assert data["instId"] == "BTC-USDT" and isinstance(data["seqId"], int)
        assert Decimal(data["bids"][0][0]) < Decimal(data["asks"][0][0])
    for msg in got["trades"]:
        (trade,) = msg["data"]
        assert set(trade) == {"instId", "tradeId", "px", "sz", "side", "ts", "count"}
        assert trade["side"] in ("buy", "sell") and Decimal(trade["sz"]) > 0
    ids = [int(m["data"][0]["tradeId"]) for m in got["trades"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for msg in got["tickers"]:
        t = msg["data"][0]
        assert Decimal(t["bidPx"]) < Decimal(t["askPx"])
        assert Decimal(t["low24h"]) <= Decimal(t["last"]) <= Decimal(t["high24h"])
        assert t["instType"] == "SPOT" and Decimal(t["vol24h"]) > 0
    volumes = []
    for msg in got["candle1m"]:
        ts, o, h, low, c, vol, _, _, confirm = msg["data"][0]
        assert Decimal(low) <= min(Decimal(o), Decimal(c)) <= max(Decimal(o), Decimal(c)) <= Decimal(h)
        assert int(ts) % 60_000 == 0 and confirm in ("0", "1") and Decimal(vol) >= 0
        volumes.append(Decimal(vol))
    # A minute that has just opened may show a flat, zero-volume candle (the test can start on a boundary);
    # the candles are built from trades, so some volume must show.
    assert max(volumes) > 0


def test_subscribe_errors_ping_and_unsubscribe(simulator: Simulator) -> None:
    async def scenario() -> None:
        async with connect(simulator.okx_ws_url) as ws:
            await ws.send(okx_sub(("books", "NOPE-USDT")))
            err = await recv_json(ws)
            assert err["event"] == "error" and err["code"] == "60018" and "NOPE-USDT" in err["msg"]
            await ws.send(okx_sub(("candle1m", "BTC-USDT")))  # a business channel on the public URL
            assert (await recv_json(ws))["code"] == "60018"
            await ws.send('{"op": "subscribe", "argz": []}')
            assert (await recv_json(ws))["code"] == "60012"
            await ws.send("not json")
            assert (await recv_json(ws))["code"] == "60012"
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 10) == "pong"
            await ws.send(okx_sub(("tickers", "ETH-USDT")))
            await recv_until(ws, lambda m: m.get("arg", {}).get("channel") == "tickers" and "data" in m)
            await ws.send(okx_sub(("tickers", "ETH-USDT"), op="unsubscribe"))
            seen = await recv_until(ws, lambda m: m.get("event") == "unsubscribe")
            assert seen[-1]["arg"] == {"channel": "tickers", "instId": "ETH-USDT"}
            await drain(ws, quiet=0.3)
            assert await drain(ws, quiet=0.5, limit=1.0) == []  # nothing more after the answer

    asyncio.run(scenario())


def test_idle_connection_closed_and_zero_checksum(start_simulator: Callable[..., Simulator]) -> None:
    sim = start_simulator("--pairs", "BTC-USDT", "--idle-timeout", "1", "--checksum", "zero")

    async def scenario() -> None:
        async with connect(sim.okx_ws_url) as idle:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(idle.recv(), 15)
        async with connect(sim.okx_ws_url) as ws:
            await ws.send(okx_sub(("books", "BTC-USDT")))
            await recv_json(ws)
            chain = OkxChain(verify_checksum=False)
            for _ in range(10):
                msg = await recv_json(ws)
                chain.feed(msg)
                assert msg["data"][0]["checksum"] == 0
            assert sim.status()["connections"] == 1  # subscribed with traffic: stays open

    asyncio.run(scenario())


def test_no_snapshot_bootstraps_from_rest(start_simulator: Callable[..., Simulator]) -> None:
    sim = start_simulator("--pairs", "BTC-USDT,ETH-USDT", "--no-snapshot", "--rate", "40")

    async def scenario() -> None:
        async with connect(sim.okx_ws_url) as ws:
            await ws.send(okx_sub(("books", "ETH-USDT")))
            assert (await recv_json(ws))["event"] == "subscribe"
            buffered = [await recv_json(ws) for _ in range(3)]
            rest = await asyncio.to_thread(http_json, f"{sim.okx_rest_url}/api/v5/market/books?instId=ETH-USDT&sz=400")
            assert rest["code"] == "0"
            snap = rest["data"][0]
            assert len(snap["bids"]) == 400 and len(snap["asks"]) == 400
            buffered += [await recv_json(ws) for _ in range(10)]
            assert all(m["action"] == "update" for m in buffered)
            chain = OkxChain()
            chain.book.reset(snap["bids"], snap["asks"])
            chain.seq = snap["seqId"]
            applied = [m for m in buffered if m["data"][0]["seqId"] > snap["seqId"]]
            assert applied and applied[0]["data"][0]["prevSeqId"] == snap["seqId"]
            for msg in applied:
                chain.feed(msg)

    asyncio.run(scenario())


def test_rest_books_and_instruments(simulator: Simulator) -> None:
    one = http_json(f"{simulator.okx_rest_url}/api/v5/market/books?instId=BTC-USDT")
    assert one["code"] == "0" and len(one["data"][0]["bids"]) == 1 and len(one["data"][0]["bids"][0]) == 4
    unknown = http_json(f"{simulator.okx_rest_url}/api/v5/market/books?instId=NOPE-USDT&sz=5")
    assert unknown["code"] == "51001" and unknown["data"] == []
    inst = http_json(f"{simulator.okx_rest_url}/api/v5/public/instruments?instType=SPOT")
    assert [i["instId"] for i in inst["data"]] == ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
    btc = inst["data"][0]
    assert btc["tickSz"] == "0.1" and btc["baseCcy"] == "BTC" and btc["quoteCcy"] == "USDT"
    assert http_json(f"{simulator.okx_rest_url}/api/v5/public/instruments?instType=SWAP")["data"] == []


def test_derivative_ids_are_synthesised(start_simulator: Callable[..., Simulator]) -> None:
    sim = start_simulator("--pairs", "BTC-USD-SWAP", "--rate", "20")

    async def scenario() -> None:
        async with connect(sim.okx_ws_url) as ws:
            await ws.send(okx_sub(("books", "BTC-USD-SWAP")))
            await recv_json(ws)
            chain = OkxChain()
            for _ in range(5):
                chain.feed(await recv_json(ws))

    asyncio.run(scenario())
    inst = http_json(f"{sim.okx_rest_url}/api/v5/public/instruments?instType=SWAP")
    assert [i["instId"] for i in inst["data"]] == ["BTC-USD-SWAP"]


def test_pregenerated_cycle_keeps_books_exact(start_simulator: Callable[..., Simulator]) -> None:
    """``--pregenerate``: the cycle runs back and forth over the same steps; chain, checksums and book hold
    across laps (10 steps -> a lap is 20 frames; 70 frames is three and a half laps)."""
    sim = start_simulator("--pairs", "BTC-USDT", "--pregenerate", "10", "--rate", "100")

    async def scenario() -> None:
        async with connect(sim.okx_ws_url) as ws:
            await ws.send(okx_sub(("books", "BTC-USDT"), ("books50-l2-tbt", "BTC-USDT")))
            chains = {"books": OkxChain(), "books50-l2-tbt": OkxChain()}
            while min(c.frames for c in chains.values()) < 70:
                msg = await recv_json(ws)
                if "event" not in msg:
                    chains[msg["arg"]["channel"]].feed(msg)
            sim.pause()
            for raw in await drain(ws):
                msg = json.loads(raw)
                chains[msg["arg"]["channel"]].feed(msg)
            truth = sim.book("okx", "BTC-USDT")
            assert chains["books"].book.top() == (truth["bids"], truth["asks"])
            assert chains["books50-l2-tbt"].book.top(50) == (truth["bids"][:50], truth["asks"][:50])
        with pytest.raises(RuntimeError, match="pregenerate"):
            sim.fault("liquidity_drain", inst="BTC-USDT")

    asyncio.run(scenario())


def test_trades_consume_the_book_and_build_the_candles(simulator: Simulator) -> None:
    """A trade takes liquidity that was in the book just before it (buy: an ask at that price with at least
    that size), and the 1-minute candle closes at the last trade with a range covering every trade."""

    async def scenario() -> None:
        async with connect(simulator.okx_ws_url) as ws, connect(simulator.okx_ws_business_url) as biz:
            await ws.send(okx_sub(("books", "SOL-USDT"), ("trades", "SOL-USDT")))
            await biz.send(okx_sub(("candle1m", "SOL-USDT")))
            await recv_json(biz)
            chain, before = OkxChain(), Book()
            trades: list[dict[str, str]] = []
            paused = False
            while True:
                if len(trades) >= 15 and not paused:
                    simulator.pause()
                    paused = True
                try:
                    msg = await recv_json(ws, timeout=0.5 if paused else 10)
                except TimeoutError:
                    break
                if "event" in msg:
                    continue
                if msg["arg"]["channel"] == "books":
                    before.bids, before.asks = dict(chain.book.bids), dict(chain.book.asks)
                    chain.feed(msg)
                    continue
                trade = msg["data"][0]
                levels = before.asks if trade["side"] == "buy" else before.bids
                assert trade["px"] in levels and Decimal(trade["sz"]) <= Decimal(levels[trade["px"]])
                trades.append(trade)
            last = trades[-1]
            minute = int(last["ts"]) - int(last["ts"]) % 60_000
            in_minute = [Decimal(t["px"]) for t in trades if int(t["ts"]) >= minute]
            candle = [json.loads(raw)["data"][0] for raw in await drain(biz)][-1]
            simulator.resume()
            assert int(candle[0]) == minute and candle[4] == last["px"]
            assert Decimal(candle[3]) <= min(in_minute) and max(in_minute) <= Decimal(candle[2])

    asyncio.run(scenario())
