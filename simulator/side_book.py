"""One side of the synthetic market's book (integer ticks -> integer lots, best first) and views of it."""

from __future__ import annotations

import bisect


class SideBook:
    """One side: ``levels`` tick -> lots, ``keys`` sorted best first (bids store negated ticks)."""

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.levels: dict[int, int] = {}
        self._keys: list[int] = []
        self.memo: dict[int, str] = {}  # a venue's text of a level (e.g. "price:size"), dropped when it changes

    def set(self, tick: int, lots: int) -> None:
        self.memo.pop(tick, None)
        key = -tick if self.is_bid else tick
        if lots <= 0:
            if self.levels.pop(tick, None) is not None:
                del self._keys[bisect.bisect_left(self._keys, key)]
            return
        if tick not in self.levels:
            bisect.insort(self._keys, key)
        self.levels[tick] = lots

    def top(self, n: int) -> list[int]:
        keys = self._keys[:n]
        return [-k for k in keys] if self.is_bid else keys

    def best(self) -> int:
        key = self._keys[0]
        return -key if self.is_bid else key

    def at(self, depth: int) -> int:
        """The tick of the level ``depth`` places from the best (0 = best)."""
        key = self._keys[depth]
        return -key if self.is_bid else key

    def worst(self) -> int:
        key = self._keys[-1]
        return -key if self.is_bid else key

    def __len__(self) -> int:
        return len(self._keys)


BookViewLots = tuple[dict[int, int], dict[int, int]]
"""(bids, asks) of one view of a book: tick -> lots."""


def view_diff(old: BookViewLots, new: BookViewLots) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Per side, the levels that changed between two views, best first (a level that left the view: 0 lots)."""
    out = []
    for old_side, new_side, reverse in ((old[0], new[0], True), (old[1], new[1], False)):
        changes = {t: 0 for t in old_side if t not in new_side}
        changes.update({t: lots for t, lots in new_side.items() if old_side.get(t) != lots})
        out.append(sorted(changes.items(), reverse=reverse))
    return out[0], out[1]
