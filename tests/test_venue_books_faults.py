"""Binance and Bybit books from the simulator (a real process) through our parsers and the book-sync machine,
with each venue's faults: every fault heals the affected book only.

A small client stands in for the collector's venue processor (parse -> feed -> execute the commands): one real
WebSocket per venue, a reader task, REST snapshots fetched in a thread while updates keep coming (Binance),
``Resubscribe`` executed as an unsubscribe + subscribe of that topic (Bybit), a ``Tick`` on every pass. Two
instruments per venue; the fault hits ETH-USDT, BTC-USDT must never leave ``valid``. After each fault the
market is paused and both books must equal the simulator's own book (top 50 levels, exact strings).
Every wait is bounded and says what it waited for; nothing is timed.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
from collections import Counter
from collections.abc import Callable
from typing import Any

from connectors.binance.books import parse_binance_book_frame, parse_depth_snapshot
from connectors.bybit.books import parse_bybit_book_frame
from connectors.market.frames import ParseError, symbol_map
from operators.book_sequencing import BINANCE, BYBIT
from operators.book_sync import (
    BookSync,
    Failed,
    Fed,
    FetchSnapshot,
    Resubscribe,
    SnapshotFetched,
    StateChanged,
    SyncConfig,
    SyncOutput,
    Tick,
    Track,
)
from operators.events import BookDelta, BookStatus
from tests.fixtures.simulator import Simulator
from tests.simulator_helpers import connect, http_json, http_text

INSTS = ("BTC-USDT", "ETH-USDT")
LEVELS = 50
WAIT = 30.0


class Client:
    """One venue's books over one WebSocket: parse -> BookSync -> commands."""

    def __init__(self, venue: str, ws: Any, rest_url: str = "") -> None:
        self.venue, self.ws, self.rest_url = venue, ws, rest_url
        config = SyncConfig(depth=1000 if venue == "binance" else LEVELS, stale_after_ns=None,
                            snapshot_wait_ns=None, fetch_missing=venue == "binance")
        self.sync = BookSync(BINANCE if venue == "binance" else BYBIT, config)
        self.parse = parse_binance_book_frame if venue == "binance" else parse_bybit_book_frame
        self.symbols = symbol_map(INSTS)
        self.queue: asyncio.Queue[tuple[str, Any, int]] = asyncio.Queue()
        self.outputs: list[SyncOutput] = []
        self.rejected: list[ParseError] = []
        self.fetches = 0
        self.fed: Counter[Fed] = Counter()
        self.tasks: set[asyncio.Future[None]] = set()  # REST fetches in flight
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for text in self.ws:
            await self.queue.put(("frame", text, time.time_ns()))

    async def _fetch(self, inst: str) -> None:
        self.fetches += 1
        url = f"{self.rest_url}/api/v3/depth?symbol={inst.replace('-', '')}&limit=1000"
        body = await asyncio.to_thread(http_text, url)
        await self.queue.put(("snapshot", (inst, body), time.time_ns()))

    async def _execute(self) -> None:
        for out in self.sync.drain():
            self.outputs.append(out)
            if type(out) is FetchSnapshot:
                task = asyncio.ensure_future(self._fetch(out.instrument))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            elif type(out) is Resubscribe:
                topic = f"orderbook.{LEVELS}.{out.instrument.replace('-', '')}"
                await self.ws.send(json.dumps({"op": "unsubscribe", "args": [topic]}))
                await self.ws.send(json.dumps({"op": "subscribe", "args": [topic]}))

    async def track(self, *, subscribed: bool) -> None:
        for inst in INSTS:
            self.sync.feed(Track(inst, time.time_ns(), subscribed=subscribed))
        await self._execute()

    async def pump(self, until: Callable[[], bool], what: str, *, quiet: float | None = None) -> None:
        """Process events until ``until()`` holds (or, with ``quiet``, until nothing came for ``quiet`` s)."""
        deadline = time.monotonic() + WAIT
        while quiet is not None or not until():
            if time.monotonic() > deadline:
                msg = f"{self.venue}: not within {WAIT} s: {what}; states {self.states()}, last outputs " \
                      f"{self.outputs[-4:]!r}"
                raise AssertionError(msg)
            try:
                kind, payload, recv_ns = await asyncio.wait_for(self.queue.get(), quiet or 0.2)
            except TimeoutError:
                if quiet is not None:
                    return
                kind, payload, recv_ns = "tick", None, time.time_ns()
            if kind == "frame":
                item = self.parse(payload, recv_ns=recv_ns, symbols=self.symbols)
                if type(item) is BookDelta:
                    self.fed[self.sync.on_delta(item)] += 1
                elif isinstance(item, ParseError):
                    self.rejected.append(item)
            elif kind == "snapshot":
                inst, body = payload
                snap = parse_depth_snapshot(body, instrument=inst, recv_ns=recv_ns)
                assert isinstance(snap, BookDelta), snap
                self.sync.feed(SnapshotFetched(inst, recv_ns, snap))
            self.sync.feed(Tick(time.time_ns()))
            await self._execute()

    def states(self) -> dict[str, str | None]:
        return {inst: str(self.sync.status(inst)) for inst in INSTS}

    def valid(self) -> bool:
        return all(self.sync.status(i) is BookStatus.VALID for i in INSTS)

    def changes(self, inst: str, since: int = 0) -> list[SyncOutput]:
        return [o for o in self.outputs[since:] if type(o) in (StateChanged, Failed)
                and o.instrument == inst]  # type: ignore[union-attr]

    async def matches(self, sim: Simulator) -> None:
        """Pause the market, take every frame in flight, compare both books with the simulator's."""
        sim.pause()
        try:
            await self.pump(lambda: True, "the frames in flight", quiet=0.5)
            for inst in INSTS:
                truth = sim.book(self.venue, inst)
                view = self.sync.view(inst, LEVELS)
                assert view.status is BookStatus.VALID, (inst, view.status)
                got = ([[lv.price, lv.size] for lv in view.bids], [[lv.price, lv.size] for lv in view.asks])
                assert got == (truth["bids"][:LEVELS], truth["asks"][:LEVELS]), inst
        finally:
            sim.resume()

    def close(self) -> None:
        self.reader.cancel()


def test_binance_gap_and_stale_snapshot_heal_that_book_only(simulator: Simulator) -> None:
    rest_before = http_json(f"{simulator.control_url}/rest")["binance"]

    async def scenario() -> Client:
        # A snapshot older than the stream at start-up: the book as of now, served once the stream moved on.
        stale = simulator.fault("stale_snapshot", inst="ETH-USDT")["last_update_id"]
        deadline = time.monotonic() + WAIT
        while simulator.book("binance", "ETH-USDT")["u"] <= stale:
            assert time.monotonic() < deadline, "the simulator's ETH-USDT book did not move"
            await asyncio.sleep(0.05)
        streams = "/".join(f"{i.replace('-', '').lower()}@depth@100ms" for i in INSTS)
        async with connect(f"{simulator.binance_ws_url}/stream?streams={streams}") as ws:
            client = Client("binance", ws, simulator.binance_rest_url)
            try:
                # Binance's order: buffer, and fetch the snapshot once the first update is in (not on subscribe)
                await client.track(subscribed=False)
                await client.pump(client.valid, "both books valid after the stale snapshot")
                eth = client.changes("ETH-USDT")
                assert [o.reason for o in eth if type(o) is Failed] == ["fetch_merge_failed"]  # never valid at it
                assert client.changes("BTC-USDT") == [StateChanged("BTC-USDT", BookStatus.SYNCING, None),
                                                      StateChanged("BTC-USDT", BookStatus.VALID, BookStatus.SYNCING)]
                await client.matches(simulator)
                # A U/u gap: ETH-USDT alone fetches a new snapshot.
                mark = len(client.outputs)
                simulator.fault("gap", inst="ETH-USDT", venue="binance")
                await client.pump(lambda: any(type(o) is Failed for o in client.outputs[mark:]) and client.valid(),
                                  "ETH-USDT failed on the gap, then valid again")
                assert [o.reason for o in client.outputs[mark:] if type(o) is Failed] == ["sequence_gap"]
                assert FetchSnapshot("ETH-USDT") in client.outputs[mark:]
                await client.matches(simulator)
                assert client.changes("BTC-USDT", mark) == []
                assert client.sync.counters["duplicate_frames"] == 0 and not client.rejected
            finally:
                client.close()
        return client

    client = asyncio.run(scenario())
    rest = http_json(f"{simulator.control_url}/rest")["binance"]
    assert rest["requests"] - rest_before["requests"] == client.fetches >= 4  # 2 bootstraps + 2 re-syncs
    assert rest["by_status"] == {"200": rest["requests"]} and 50 <= rest["max_used"] <= rest["limit"]


def test_bybit_u1_duplicates_gap_and_delta_before_snapshot_heal_that_book_only(simulator: Simulator) -> None:
    async def scenario() -> None:
        simulator.fault("delta_first", inst="ETH-USDT")  # on the first subscription already
        async with connect(simulator.bybit_ws_url) as ws:
            client = Client("bybit", ws)
            try:
                await client.track(subscribed=True)
                topics = [f"orderbook.{LEVELS}.{i.replace('-', '')}" for i in INSTS]
                await ws.send(json.dumps({"op": "subscribe", "args": topics}))
                await client.pump(client.valid, "both books valid after a delta before the snapshot")
                assert client.sync.counters["resyncs"] == 0
                assert client.fed[Fed.REFUSED] == 1  # the stray delta: no book to apply it to yet
                await client.matches(simulator)
                btc_mark = len(client.outputs)
                for fault, params in (("bybit_u1", {}), ("duplicate_frame", {"venue": "bybit"}),
                                      ("delta_first", {}), ("gap", {"venue": "bybit"})):
                    mark, dups = len(client.outputs), client.sync.counters["duplicate_frames"]
                    simulator.fault(fault, inst="ETH-USDT", **params)
                    if fault == "delta_first":
                        continue  # armed for the resubscription the gap brings
                    await client.pump(lambda: simulator.pending_faults() == [] and client.valid(),
                                      f"{fault}: sent, and both books valid")
                    if fault == "gap":
                        await client.pump(lambda m=mark: Resubscribe("ETH-USDT") in client.outputs[m:]
                                          and client.valid(), "the resubscription after the gap")
                        assert [o.reason for o in client.outputs[mark:] if type(o) is Failed] == ["sequence_gap"]
                    else:
                        assert client.changes("ETH-USDT", mark) == []  # a reset or a duplicate is no failure
                    if fault == "bybit_u1":
                        book = client.sync.book("ETH-USDT")
                        assert book is not None and book.seq_id is not None and book.seq_id < 1000  # renumbered
                    if fault == "duplicate_frame":
                        await client.pump(lambda d=dups: client.sync.counters["duplicate_frames"] > d,
                                          "the duplicate skipped")
                    await client.matches(simulator)
                assert client.changes("BTC-USDT", btc_mark) == []
                assert not client.rejected
            finally:
                client.close()

    asyncio.run(scenario())


def test_binance_depth_request_weight(start_simulator: Callable[..., Simulator]) -> None:
    """``/api/v3/depth`` weighs 5/25/50/250 by limit, in the one Binance budget with klines: over it, 429."""
    sim = start_simulator("--pairs", "BTC-USDT", "--binance-rest-limit", "80/600")
    url = f"{sim.binance_rest_url}/api/v3/depth?symbol=BTCUSDT&limit="
    assert http_json(url + "1000")["lastUpdateId"] > 0  # weight 50
    assert len(http_json(url + "100")["bids"]) == 100  # weight 5
    assert len(http_json(url + "500")["bids"]) > 100  # weight 25: 80 used
    try:
        http_json(url + "5")
        raise AssertionError("expected HTTP 429 over the weight limit")
    except urllib.error.HTTPError as err:
        assert err.code == 429 and int(err.headers["Retry-After"]) >= 1
        assert json.loads(err.read())["code"] == -1003
    rest = http_json(f"{sim.control_url}/rest")["binance"]
    assert (rest["max_used"], rest["by_status"]) == (80, {"200": 3, "429": 1})
