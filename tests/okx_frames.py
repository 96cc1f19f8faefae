"""Synthetic raw OKX v5 ``books`` frames (the buffer list's wire shape) for analysis tests and benchmarks.

A fixed tick grid around a mid price; updates swap the sizes of a few random levels near the top (so a quiet
market keeps its depth); ``scale`` multiplies
every size (a liquidity drain when < 1, a depth spike when > 1). Checksums are 0 (today's OKX) and
``seqId``/``prevSeqId`` chain.
"""

from __future__ import annotations

import random

import orjson


class SyntheticOkxBook:
    def __init__(self, inst: str, *, mid: int = 100_000, tick: int = 1, decimals: int = 1, depth: int = 400,
                 seed: int = 1, base_size: float = 1.0) -> None:
        self.inst = inst
        self.decimals = decimals
        self.depth = depth
        self.rng = random.Random(seed)
        self.seq = 1000
        self.bids = {mid - tick * (i + 1): base_size * (1 + self.rng.random()) for i in range(depth)}
        self.asks = {mid + tick * (i + 1): base_size * (1 + self.rng.random()) for i in range(depth)}
        self.scale = 1.0

    def _price(self, ticks: int) -> str:
        return f"{ticks / 10 ** self.decimals:.{self.decimals}f}"

    def _size(self, size: float) -> str:
        return f"{size * self.scale:.4f}"

    def _frame(self, action: str, bids: list[list[str]], asks: list[list[str]], ts_ms: int) -> bytes:
        prev = -1 if action == "snapshot" else self.seq
        self.seq += 1
        data = {"asks": asks, "bids": bids, "ts": str(ts_ms), "checksum": 0, "prevSeqId": prev, "seqId": self.seq}
        return orjson.dumps({"arg": {"channel": "books", "instId": self.inst}, "action": action, "data": [data]})

    def snapshot(self, ts_ms: int) -> bytes:
        bids = [[self._price(p), self._size(s), "0", "1"] for p, s in sorted(self.bids.items(), reverse=True)]
        asks = [[self._price(p), self._size(s), "0", "1"] for p, s in sorted(self.asks.items())]
        return self._frame("snapshot", bids, asks, ts_ms)

    def update(self, ts_ms: int, changes: int = 10, near: int = 50) -> bytes:
        """Swap the sizes of random pairs among the top ``near`` levels of each side (``changes`` levels in
        all): the book moves, its depth and notional near the mid stay (almost) the same."""
        out: dict[str, list[list[str]]] = {"bids": [], "asks": []}
        for name, side in (("bids", self.bids), ("asks", self.asks)):
            top = sorted(side, reverse=name == "bids")[:near]
            for _ in range(max(1, changes // 4)):
                a, b = self.rng.sample(top, 2)
                side[a], side[b] = side[b], side[a]
                out[name] += [[self._price(a), self._size(side[a]), "0", "1"],
                              [self._price(b), self._size(side[b]), "0", "1"]]
        return self._frame("update", out["bids"], out["asks"], ts_ms)

    def rescale(self, ts_ms: int, scale: float) -> bytes:
        """Every level's size times ``scale`` from now on (sent as one update of all levels)."""
        self.scale = scale
        bids = [[self._price(p), self._size(s), "0", "1"] for p, s in self.bids.items()]
        asks = [[self._price(p), self._size(s), "0", "1"] for p, s in self.asks.items()]
        return self._frame("update", bids, asks, ts_ms)


def market(insts: list[str], *, seconds: float, rate: float, start_ms: int, depth: int = 400,
           events: dict[float, float] | None = None) -> list[bytes]:
    """Frames of several instruments: a snapshot each, then ``rate`` updates/s per instrument for ``seconds``;
    ``events`` maps a time offset (s) to a size scale applied to every instrument at that moment."""
    books = [SyntheticOkxBook(inst, depth=depth, seed=i + 1) for i, inst in enumerate(insts)]
    frames = [b.snapshot(start_ms) for b in books]
    pending = sorted((events or {}).items())
    step = 1000.0 / rate
    n = int(seconds * rate)
    for i in range(1, n + 1):
        t = start_ms + int(i * step)
        while pending and pending[0][0] * 1000 <= i * step:
            _, scale = pending.pop(0)
            frames.extend(b.rescale(t, scale) for b in books)
        frames.extend(b.update(t) for b in books)
    return frames
