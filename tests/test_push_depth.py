"""``@depth`` end to end: simulator -> ``orderbook_collector`` (a real bytewax process) -> Redis -> the gateway
(a real uvicorn) -> ``websockets`` clients that rebuild the books.

The oracles are independent of the code under test: the client's book is a plain dict per side sorted with
Decimal, its checksum is OKX's algorithm written the slow way (:func:`tests.book_helpers.naive_checksum`), and
the book it holds is compared with the collector's ``orderbook:{inst}`` hash at the same ``seq`` while the
simulator is paused.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.book_helpers import naive_checksum
from tests.collector_helpers import start_collector
from tests.fixtures.redis import RedisServer
from tests.push_helpers import Client, gateway_server, open_client
from tests.waiting import wait_for

pytestmark = pytest.mark.slow
PAIRS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]


@functools.cache
def _dec(price: str) -> Decimal:
    return Decimal(price)


class Book:
    """The client's copy: price -> size per side, exactly as the strings came."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.seq: int | None = None
        self.updates = 0
        self.snapshots = 0

    def sides(self) -> tuple[list[list[str]], list[list[str]]]:
        bids = sorted(self.bids.items(), key=lambda kv: _dec(kv[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: _dec(kv[0]))
        return [list(kv) for kv in bids], [list(kv) for kv in asks]

    def top(self, n: int = 25) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        return (heapq.nlargest(n, self.bids.items(), key=lambda kv: _dec(kv[0])),
                heapq.nsmallest(n, self.asks.items(), key=lambda kv: _dec(kv[0])))

    def apply(self, data: dict[str, Any]) -> None:
        if data["type"] == "snapshot":
            self.bids = {p: s for p, s in data["bids"]}
            self.asks = {p: s for p, s in data["asks"]}
            self.snapshots += 1
        else:
            assert data["prev_seq"] == self.seq, f"update does not chain: {data['prev_seq']} after {self.seq}"
            for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
                for price, size in levels:
                    if Decimal(size) == 0:
                        side.pop(price, None)
                    else:
                        side[price] = size
            self.updates += 1
        self.seq = data["seq"]
        if self.seq is not None and self.seq >= 0:
            bids, asks = self.top()
            assert naive_checksum(bids, asks) == data["checksum"], f"checksum mismatch at seq {self.seq}"


class Follower:
    """A client on ``<inst>@depth`` for every pair; ``last_id`` per channel for a resume."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.books = {inst: Book() for inst in PAIRS}
        self.last_id: dict[str, str] = {}
        self.resets = 0
        self.acks: list[str] = []
        self.error: BaseException | None = None

    async def run(self) -> None:
        try:
            while True:
                msg = await self.client.recv(60)
                if "event" not in msg:
                    assert msg.get("result") is True, msg
                    self.acks.append(msg["channel"])
                    continue
                inst = msg["event"].removesuffix("@depth")
                self.books[inst].apply(msg["data"])
                self.last_id[msg["event"]] = msg["id"]
                self.resets += bool(msg.get("reset"))
        except BaseException as err:  # recorded for the test to raise; CancelledError ends the task
            self.error = err
            raise


async def follow(url: str, since: dict[str, str] | None = None,
                 books: dict[str, Book] | None = None) -> tuple[Follower, asyncio.Task[None]]:
    """``since`` + ``books``: resume from those ids holding those books (another client's, copied)."""
    c = await open_client(url, ping_interval=None)  # a pong would queue behind the events this client parses
    f = Follower(c)
    for inst, book in (books or {}).items():
        f.books[inst].bids, f.books[inst].asks, f.books[inst].seq = dict(book.bids), dict(book.asks), book.seq
    task = asyncio.create_task(f.run())  # it reads the acks too: events of one channel may come before the next ack
    for inst in PAIRS:
        body: dict[str, Any] = {"op": "subscribe", "channel": f"{inst}@depth"}
        if since is not None:
            body["since"] = since[f"{inst}@depth"]
        await c.send(body)
    await wait_async("the acks", lambda: f.error or len(f.acks) == len(PAIRS))
    assert f.error is None and sorted(f.acks) == sorted(f"{i}@depth" for i in PAIRS), (f.error, f.acks)
    return f, task


def hash_of(r: redis.Redis, inst: str) -> dict[str, Any]:
    h = r.hgetall(f"orderbook:{inst}")
    return {"seq": int(h["seq_id"]), "bids": json.loads(h["bids"]), "asks": json.loads(h["asks"]),
            "status": h["status"]} if h.get("seq_id") else {}


async def wait_async(what: str, check: Any, timeout: float = 60.0) -> Any:
    return await asyncio.to_thread(wait_for, what, check, timeout)


async def books_equal_hashes(sim: Any, r: redis.Redis, followers: list[Follower]) -> None:
    """Pause the market, wait until each follower holds the hash's seq, compare every level, resume."""
    await asyncio.to_thread(sim.pause)
    try:
        for inst in PAIRS:
            # The frames sent just before the pause may still be on their way through the collector: the fixed
            # point is the simulator's own seqId, not the hash as first read.
            want = int((await asyncio.to_thread(sim.book, "okx", inst))["seqId"])
            h = await wait_async(f"{inst} hash valid at the simulator's seq {want}", lambda i=inst, w=want: (
                x := hash_of(r, i)) and x["status"] == "valid" and x["seq"] == w and x)
            for f in followers:
                await wait_async(f"{inst} client at seq {h['seq']}",
                                 lambda f=f, i=inst, s=h["seq"]: f.error or f.books[i].seq == s)
                assert f.error is None, f.error
                assert hash_of(r, inst)["seq"] == h["seq"]  # still that moment: the market is paused
                bids, asks = f.books[inst].sides()
                assert (bids, asks) == (h["bids"], h["asks"]), inst
    finally:
        await asyncio.to_thread(sim.resume)


def test_depth_books_equal_the_collector_through_a_resync_and_a_resume(
        start_simulator: Any, redis_server: RedisServer, redis_db: redis.Redis, tmp_path: Path) -> None:
    sim = start_simulator("--pairs", ",".join(PAIRS), "--seed", "7", "--rate", "20", "--checksum", "real")
    redis_db.sadd("config:trading_pairs", *PAIRS)
    col = start_collector(tmp_path, {**sim.env(), "REDIS_URL": redis_server.url})

    async def body(url: str) -> None:
        await wait_async("books valid", lambda: all(hash_of(redis_db, i).get("status") == "valid" for i in PAIRS))
        a, a_task = await follow(url)
        b, b_task = await follow(url)

        await wait_async("100 updates each", lambda: a.error or all(bk.updates >= 100 for bk in a.books.values()))
        await books_equal_hashes(sim, redis_db, [a, b])

        # a gap on BTC: the collector re-syncs that book, the stream carries a new snapshot, clients follow it
        before = {i: bk.snapshots for i, bk in a.books.items()}
        await asyncio.to_thread(sim.fault, "gap", inst="BTC-USDT")
        await wait_async("BTC re-snapshot", lambda: a.error or a.books["BTC-USDT"].snapshots > before["BTC-USDT"])
        assert a.error is None, a.error
        assert {i: bk.snapshots for i, bk in a.books.items() if i != "BTC-USDT"} == \
            {i: n for i, n in before.items() if i != "BTC-USDT"}  # the other books were not touched
        await wait_async("100 more updates", lambda: a.error or all(bk.updates >= 200 for bk in a.books.values()))
        await books_equal_hashes(sim, redis_db, [a, b])

        # b leaves and resumes from its last ids: the missed updates replay and chain, no snapshot needed
        b_task.cancel()
        await b.client.ws.close()
        held = {i: bk.seq for i, bk in b.books.items()}
        missed_from = dict(b.last_id)
        await wait_async("the market moves on", lambda: all(
            hash_of(redis_db, i)["seq"] != held[i] for i in PAIRS))
        c, c_task = await follow(url, since=missed_from, books=b.books)  # continues b's books
        await wait_async("resumed updates", lambda: c.error or all(bk.updates >= 20 for bk in c.books.values()))
        assert c.resets == 0 and all(bk.snapshots == 0 for bk in c.books.values())
        await books_equal_hashes(sim, redis_db, [a, c])
        for task in (a_task, c_task):
            task.cancel()
        assert a.error is None or isinstance(a.error, asyncio.CancelledError)

    try:
        with gateway_server(redis_server.url) as gw:
            asyncio.run(body(gw.url))
        assert col.alive()
        assert {e["instrument"] for e in col.events("book_integrity_failed")} == {"BTC-USDT"}
    finally:
        col.stop()
