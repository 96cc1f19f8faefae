"""Plain-client helpers for the simulator conformance tests: a ``websockets`` connection, HTTP via urllib, and
order books / checksums written from the venues' documentation (no project client code)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from tests.book_helpers import naive_checksum as okx_checksum  # OKX's algorithm, written apart from ours


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


class Book:
    """A naive full-depth book keyed by the exact price strings (sorted by Decimal only to read it)."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}

    def reset(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self.bids = {lvl[0]: lvl[1] for lvl in bids}
        self.asks = {lvl[0]: lvl[1] for lvl in asks}

    def apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for lvl in levels:
                if Decimal(lvl[1]) == 0:
                    side.pop(lvl[0], None)
                else:
                    side[lvl[0]] = lvl[1]

    def top(self, n: int = 400) -> tuple[list[list[str]], list[list[str]]]:
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)[:n]
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))[:n]
        return [list(b) for b in bids], [list(a) for a in asks]

    def crossed(self) -> bool:
        bids, asks = self.top(1)
        return bool(bids and asks) and Decimal(bids[0][0]) >= Decimal(asks[0][0])


async def recv_json(ws: ClientConnection, timeout: float = 10.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: ClientConnection, pred: Callable[[Any], bool], timeout: float = 15.0) -> list[Any]:
    """Every JSON message up to and including the first for which ``pred`` holds (fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            msg = f"condition not met within {timeout} s; last messages: {seen[-3:]!r}"
            raise AssertionError(msg)
        raw = await asyncio.wait_for(ws.recv(), left)
        msg_obj = raw if raw == "pong" else json.loads(raw)
        seen.append(msg_obj)
        if pred(msg_obj):
            return seen


async def drain(ws: ClientConnection, quiet: float = 0.4, limit: float = 15.0) -> list[str]:
    """Raw frames received until ``quiet`` seconds pass without one."""
    out: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            out.append(str(await asyncio.wait_for(ws.recv(), quiet)))
        except TimeoutError:
            return out
    return out


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


def connect(url: str) -> Any:
    return websockets.connect(url, max_size=None, ping_interval=None, open_timeout=10, close_timeout=2)


def okx_sub(*args: tuple[str, str], op: str = "subscribe") -> str:
    return json.dumps({"op": op, "args": [{"channel": c, "instId": i} for c, i in args]})


class OkxChain:
    """Follows one OKX books stream: seqId chain and checksum checked on every frame."""

    def __init__(self, verify_checksum: bool = True) -> None:
        self.book = Book()
        self.seq: int | None = None
        self.frames = 0
        self.heartbeats = 0
        self.verify = verify_checksum

    def feed(self, msg: dict[str, Any]) -> None:
        data = msg["data"][0]
        if msg["action"] == "snapshot":
            assert data["prevSeqId"] == -1, data["prevSeqId"]
            self.book.reset(data["bids"], data["asks"])
        else:
            assert self.seq is not None, "update before snapshot"
            assert data["prevSeqId"] == self.seq, f"gap: prevSeqId {data['prevSeqId']} after seqId {self.seq}"
            if not data["bids"] and not data["asks"]:
                assert data["seqId"] == data["prevSeqId"], "an empty update is a heartbeat: seqId == prevSeqId"
                self.heartbeats += 1
            self.book.apply(data["bids"], data["asks"])
        self.seq = data["seqId"]
        self.frames += 1
        if self.verify:
            bids, asks = self.book.top(25)
            assert data["checksum"] == okx_checksum(bids, asks), f"checksum mismatch at seqId {self.seq}"
