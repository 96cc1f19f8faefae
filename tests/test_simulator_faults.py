"""Every simulator fault, triggered live (control endpoint) or from ``--faults``, as a plain client sees it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from simulator.faults import FaultState
from tests.fixtures.simulator import Simulator
from tests.simulator_helpers import Book, OkxChain, connect, drain, okx_sub, recv_json, recv_until

pytestmark = pytest.mark.slow


def test_frame_faults_queued_before_a_frame_each_take_a_frame_of_their_own() -> None:
    faults = FaultState()
    faults.add_frame_fault("okx", "BTC-USDT", "drop")
    faults.add_frame_fault("okx", "BTC-USDT", "duplicate")
    faults.add_frame_fault("okx", "ETH-USDT", "reorder")
    assert faults.queued() == [{"venue": "okx", "inst": "BTC-USDT", "actions": ["drop", "duplicate"]},
                               {"venue": "okx", "inst": "ETH-USDT", "actions": ["reorder"]}]
    assert [faults.take("okx", "BTC-USDT") for _ in range(3)] == [["drop"], ["duplicate"], []]
    assert not faults.pending("okx", "BTC-USDT") and faults.pending("okx", "ETH-USDT")
    assert faults.queued() == [{"venue": "okx", "inst": "ETH-USDT", "actions": ["reorder"]}]


async def _books(sim: Simulator, inst: str = "BTC-USDT") -> tuple[Any, OkxChain]:
    ws = await connect(sim.okx_ws_url)
    await ws.send(okx_sub(("books", inst)))
    assert (await recv_json(ws))["event"] == "subscribe"
    chain = OkxChain()
    for _ in range(3):
        chain.feed(await recv_json(ws))
    return ws, chain


def _data(msg: dict[str, Any]) -> dict[str, Any]:
    return msg["data"][0]  # type: ignore[no-any-return]


def test_gap_duplicate_and_reorder(simulator: Simulator) -> None:
    async def scenario() -> None:
        ws, chain = await _books(simulator)
        simulator.fault("gap", inst="BTC-USDT")
        seen = await recv_until(ws, lambda m: _data(m)["prevSeqId"] != chain.seq and bool(_data(m)["bids"] or
                                                                                        _data(m)["asks"]))
        for msg in seen[:-1]:
            chain.feed(msg)
        with pytest.raises(AssertionError, match="gap"):
            chain.feed(seen[-1])  # the client sees prevSeqId != its last seqId
        await ws.close()

        ws, chain = await _books(simulator)
        simulator.fault("duplicate_frame", inst="BTC-USDT")
        while True:
            msg = await recv_json(ws)
            if _data(msg)["seqId"] == chain.seq and _data(msg)["prevSeqId"] != chain.seq:
                break  # the update just applied, a second time
            chain.feed(msg)
        assert _data(msg)["seqId"] != _data(msg)["prevSeqId"]
        await ws.close()

        ws, chain = await _books(simulator)
        simulator.fault("reorder_frame", inst="BTC-USDT")
        since = int(time.time() * 1000)
        frames = [await recv_json(ws)]
        while sum(int(_data(m)["ts"]) > since for m in frames) < 8 and len(frames) < 5000:
            frames.append(await recv_json(ws))  # 8 made after the fault, and any that were queued before it
        seqs = [(_data(m)["prevSeqId"], _data(m)["seqId"]) for m in frames]
        order = [s for _, s in seqs]
        assert order != sorted(order)  # a later update arrived before an earlier one
        by_prev = dict(seqs)
        hop, hops = chain.seq, 0
        while hop in by_prev and hop != by_prev[hop]:
            hop, hops = by_prev[hop], hops + 1
        assert hops >= 6  # nothing is lost: sorted back by prevSeqId, the updates chain again
        await ws.close()

    asyncio.run(scenario())


def test_sequence_reset_chains(simulator: Simulator) -> None:
    async def scenario() -> None:
        ws, chain = await _books(simulator)
        simulator.fault("seq_reset", inst="BTC-USDT")
        while True:
            reset = await recv_json(ws)
            if _data(reset)["seqId"] < _data(reset)["prevSeqId"]:
                break
            chain.feed(reset)
        assert _data(reset)["prevSeqId"] == chain.seq  # lower seqId, but it chains
        chain.feed(reset)  # checksum still verifies
        for _ in range(5):
            chain.feed(await recv_json(ws))
        await ws.close()

    asyncio.run(scenario())


def test_crossed_book_then_uncrossed(simulator: Simulator) -> None:
    async def scenario() -> None:
        ws, chain = await _books(simulator)
        simulator.fault("crossed_book", inst="BTC-USDT")
        crossed_seen = False
        for _ in range(200):
            chain.feed(await recv_json(ws))  # seqId chain and checksum stay valid
            if chain.book.crossed():
                crossed_seen = True
                break
        assert crossed_seen
        chain.feed(await recv_json(ws))
        assert not chain.book.crossed()
        await ws.close()

    asyncio.run(scenario())


def test_malformed_frame_and_drop_connection(simulator: Simulator) -> None:
    async def scenario() -> None:
        ws, _ = await _books(simulator)
        async with connect(simulator.bybit_ws_url) as bybit:
            await bybit.send(json.dumps({"op": "subscribe", "args": ["orderbook.50.BTCUSDT"]}))
            await recv_json(bybit)
            assert simulator.fault("malformed", inst="BTC-USDT")["connections"] == 1
            bad = None
            for _ in range(100):
                raw = await asyncio.wait_for(ws.recv(), 10)
                try:
                    json.loads(raw)
                except ValueError:
                    bad = raw
                    break
            assert bad is not None and bad.startswith('{"arg":{"channel":"books"')
            result = simulator.fault("drop_connection", venue="okx")
            assert result["connections"] == 1
            with pytest.raises(websockets.ConnectionClosedError) as closed:
                await drain(ws, quiet=5, limit=20)
            assert closed.value.rcvd is None  # no close frame: the TCP connection just went away
            await bybit.send(json.dumps({"op": "ping"}))  # the other venue is untouched
            await recv_until(bybit, lambda m: m.get("ret_msg") == "pong")

    asyncio.run(scenario())


def test_pong_delay_and_no_pong(simulator: Simulator) -> None:
    async def scenario() -> None:
        ws, _ = await _books(simulator)
        simulator.fault("pong_delay", venue="okx", delay=1.0)
        sent = time.monotonic()
        await ws.send("ping")
        while await asyncio.wait_for(ws.recv(), 10) != "pong":
            pass
        assert time.monotonic() - sent >= 1.0  # a lower bound only: the answer was held back
        simulator.clear_faults("pong_delay")
        simulator.fault("no_pong", venue="okx")
        await ws.send("ping")
        frames = await drain(ws, quiet=2.5, limit=2.5)
        assert frames and "pong" not in frames  # frames keep coming, the pong does not
        simulator.clear_faults("no_pong")
        await ws.send("ping")
        while await asyncio.wait_for(ws.recv(), 10) != "pong":
            pass
        await ws.close()

    asyncio.run(scenario())


def test_shutdown_notices(simulator: Simulator) -> None:
    async def scenario() -> None:
        ws, _ = await _books(simulator)
        async with connect(f"{simulator.binance_ws_url}/stream?streams=btcusdt@depth@100ms") as binance:
            await recv_json(binance)
            simulator.fault("shutdown_notice", close_after=0.5)
            notice = (await recv_until(ws, lambda m: m.get("event") == "notice"))[-1]
            assert notice["code"] == "64008" and notice["connId"]
            shutdown = (await recv_until(binance, lambda m: m.get("e") == "serverShutdown"))[-1]
            assert isinstance(shutdown["E"], int)
            for conn in (ws, binance):
                with pytest.raises(websockets.ConnectionClosed):
                    await drain(conn, quiet=5, limit=20)

    asyncio.run(scenario())


def test_bybit_u1_snapshot(simulator: Simulator) -> None:
    async def scenario() -> None:
        async with connect(simulator.bybit_ws_url) as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": ["orderbook.50.BTCUSDT"]}))
            await recv_json(ws)
            await recv_until(ws, lambda m: m["data"]["u"] >= 3)
            simulator.fault("bybit_u1", inst="BTC-USDT")
            msgs = await recv_until(ws, lambda m: m["type"] == "snapshot")
            assert msgs[-1]["data"]["u"] == 1 and len(msgs[-1]["data"]["b"]) == 50
            following = await recv_json(ws)
            assert following["type"] == "delta" and following["data"]["u"] == 2

    asyncio.run(scenario())


def test_refuse_connections_for_n_seconds(simulator: Simulator) -> None:
    async def scenario() -> None:
        simulator.fault("refuse", seconds=1.5)
        with pytest.raises(InvalidStatus) as refused:
            await connect(simulator.okx_ws_url)
        assert refused.value.response.status_code == 503
        deadline = time.monotonic() + 20
        while True:
            try:
                ws = await connect(simulator.okx_ws_url)
                break
            except InvalidStatus:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.3)
        await ws.close()

    asyncio.run(scenario())


def _near_mid_size(book: Book, band: Decimal = Decimal("0.01")) -> Decimal:
    bids, asks = book.top()
    mid = (Decimal(bids[0][0]) + Decimal(asks[0][0])) / 2
    return sum((Decimal(s) for p, s in bids + asks if abs(Decimal(p) - mid) <= band * mid), Decimal(0))


async def _feed_after(ws: Any, chain: OkxChain, since_ms: int, frames: int, most: int = 5000) -> None:
    """Feed the chain until ``frames`` frames generated after ``since_ms`` (their ``ts``) are in. Frames the
    simulator sent before a fault changed (still queued in the socket on a busy machine) do not count."""
    after = 0
    for _ in range(most):
        msg = await recv_json(ws)
        chain.feed(msg)
        after += int(_data(msg)["ts"]) > since_ms
        if after == frames:
            return
    raise AssertionError(f"{frames} frames generated after {since_ms} not seen in {most} frames")


def test_liquidity_drain_and_depth_spike(simulator: Simulator) -> None:
    async def scenario() -> None:
        ws, chain = await _books(simulator, "ETH-USDT")
        before = _near_mid_size(chain.book)
        simulator.fault("liquidity_drain", inst="ETH-USDT", fraction=0.05)
        await _feed_after(ws, chain, int(time.time() * 1000), 40)  # normal updates: chain and checksum hold
        drained = _near_mid_size(chain.book)
        assert drained < before * Decimal("0.2")
        simulator.clear_faults("liquidity_drain", inst="ETH-USDT")
        await _feed_after(ws, chain, int(time.time() * 1000), 5)
        assert _near_mid_size(chain.book) > drained * 5

        sizes = [Decimal(s) for _, s in chain.book.top()[0]]
        usual = sorted(sizes)[len(sizes) // 2]
        simulator.fault("depth_spike", inst="ETH-USDT", side="bid", multiple=500)
        await _feed_after(ws, chain, int(time.time() * 1000), 3)
        top_bids = chain.book.top(10)[0]
        assert max(Decimal(s) for _, s in top_bids) > usual * 100
        await ws.close()

    asyncio.run(scenario())


def test_faults_from_the_command_line(start_simulator: Callable[..., Simulator]) -> None:
    faults = "gap@1.5,inst=BTC-USDT;refuse@30,seconds=1"
    sim = start_simulator("--pairs", "BTC-USDT", "--rate", "20", "--faults", faults)

    async def scenario() -> None:
        ws, chain = await _books(sim)
        with pytest.raises(AssertionError, match="gap"):
            for _ in range(400):
                chain.feed(await recv_json(ws))
        await ws.close()

    asyncio.run(scenario())
    history = sim.status()["faults"]
    assert history[0]["kind"] == "gap" and history[0]["inst"] == "BTC-USDT"


def test_bad_fault_requests_are_rejected(simulator: Simulator, start_simulator: Callable[..., Simulator]) -> None:
    with pytest.raises(RuntimeError, match="400"):
        simulator.fault("gap", inst="NOPE-USDT")
    with pytest.raises(RuntimeError, match="400"):
        simulator.fault("explode")
    with pytest.raises(RuntimeError, match="no endpoint line"):
        start_simulator("--faults", "explode@1")


def test_binance_and_bybit_book_gaps(simulator: Simulator) -> None:
    async def scenario() -> None:
        async with connect(f"{simulator.binance_ws_url}/ws/ethusdt@depth@100ms") as binance, \
                connect(simulator.bybit_ws_url) as bybit:
            await bybit.send(json.dumps({"op": "subscribe", "args": ["orderbook.200.ETHUSDT"]}))
            await recv_json(bybit)
            last_bybit = (await recv_json(bybit))["data"]["u"]
            last_u = (await recv_json(binance))["u"]
            simulator.fault("gap", inst="ETH-USDT", venue="binance")
            simulator.fault("gap", inst="ETH-USDT", venue="bybit")
            while True:
                event = await recv_json(binance)
                if event["U"] != last_u + 1:
                    break
                last_u = event["u"]
            assert event["U"] > last_u + 1  # updates between were never sent
            while True:
                msg = await recv_json(bybit)
                if msg["data"]["u"] != last_bybit + 1:
                    break
                last_bybit = msg["data"]["u"]
            assert msg["data"]["u"] == last_bybit + 2

    asyncio.run(scenario())


def test_websocket_ping_frames_unanswered_under_no_pong(simulator: Simulator) -> None:
    """Binance clients ping with WebSocket ping frames: no_pong withholds the pong frame too."""

    async def scenario() -> None:
        async with connect(f"{simulator.binance_ws_url}/ws/btcusdt@depth") as ws:
            await asyncio.wait_for(await ws.ping(b"a"), 10)  # answered normally
            simulator.fault("no_pong", venue="binance")
            waiter = await ws.ping(b"b")
            reader = asyncio.ensure_future(drain(ws, quiet=5, limit=1.5))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), 1.5)
            assert await reader  # depth frames kept flowing meanwhile
            simulator.clear_faults("no_pong")
            await asyncio.wait_for(await ws.ping(b"c"), 10)

    asyncio.run(scenario())
