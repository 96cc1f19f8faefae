"""An incremental numeric index of one book, kept beside the book for the analyses.

Converting a 400+400 level book to numbers on every update costs ~100 us (MEASUREMENTS.md), more than all the
analyses. This index is built once from a :class:`~operators.events.BookView` and then updated with only the
levels an accepted :class:`~operators.events.BookDelta` changed, so an update costs O(changed levels). It
is derived data, never the source of truth: the analyzer rebuilds it from the book after a snapshot, a
re-sync, a restore, and every ``index_rebuild_every`` updates (which also bounds float drift).

Per side it keeps prices ascending with aligned sizes and notionals (band sums are slice sums), the sizes
sorted (median and large-order tail), and price bins (count, size, notional) for support/resistance.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable

from operators.events import Level

_EPS = 1e-9


def _decimals(price: str) -> int:
    dot = price.find(".")
    return 0 if dot < 0 else len(price) - dot - 1


class SideIndex:
    """One side: ``bid=True`` keeps the best level last (highest price), asks keep it first."""

    __slots__ = ("bid", "bins", "decimals", "keys", "notionals", "prices", "sizes", "sorted_sizes",
                 "total_notional", "total_size", "width")

    def __init__(self, *, bid: bool, width: float) -> None:
        self.bid = bid
        self.width = width
        self.prices: list[float] = []  # ascending
        self.keys: list[str] = []  # the exchange's price strings, aligned with prices
        self.sizes: list[float] = []
        self.notionals: list[float] = []
        self.sorted_sizes: list[float] = []
        self.bins: dict[int, list[float]] = {}  # bin -> [levels, size, notional]
        self.decimals = 0  # most decimals of an inserted price string
        self.total_size = 0.0  # running totals: a band covering most of the side sums only what is outside
        self.total_notional = 0.0

    def __len__(self) -> int:
        return len(self.prices)

    def best(self) -> float | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.bid else self.prices[0]

    def _bin_add(self, price: float, size: float, notional: float, count: int) -> None:
        self.total_size += size
        self.total_notional += notional
        b = math.floor(price / self.width + _EPS)
        acc = self.bins.get(b)
        if acc is None:
            if count > 0:
                self.bins[b] = [1.0, size, notional]
            return
        acc[0] += count
        if acc[0] <= 0:
            del self.bins[b]
        else:
            acc[1] += size
            acc[2] += notional

    def set(self, price_s: str, size_s: str) -> None:
        """Apply one level as the exchange wrote it (size ``"0"`` removes it)."""
        p = float(price_s)
        s = float(size_s)
        prices = self.prices
        pos = bisect_left(prices, p)
        present = pos < len(prices) and prices[pos] == p
        if present:
            sizes = self.sizes
            old = sizes[pos]
            if s == old:
                return
            sorted_sizes = self.sorted_sizes
            del sorted_sizes[bisect_left(sorted_sizes, old)]
            if s > 0:  # the common case, inlined: a size change of a known level
                notionals = self.notionals
                n = p * s
                dn = n - notionals[pos]
                sizes[pos] = s
                notionals[pos] = n
                insort(sorted_sizes, s)
                ds = s - old
                self.total_size += ds
                self.total_notional += dn
                acc = self.bins[math.floor(p / self.width + _EPS)]
                acc[1] += ds
                acc[2] += dn
            else:
                self._remove_at(pos, old, self.notionals[pos], sorted_done=True)
        elif s > 0:
            n = p * s
            d = _decimals(price_s)
            if d > self.decimals:
                self.decimals = d
            prices.insert(pos, p)
            self.keys.insert(pos, price_s)
            self.sizes.insert(pos, s)
            self.notionals.insert(pos, n)
            insort(self.sorted_sizes, s)
            self._bin_add(p, s, n, 1)

    def _remove_at(self, pos: int, size: float, notional: float, *, sorted_done: bool = False) -> None:
        p = self.prices[pos]
        del self.prices[pos], self.keys[pos], self.sizes[pos], self.notionals[pos]
        if not sorted_done:
            del self.sorted_sizes[bisect_left(self.sorted_sizes, size)]
        self._bin_add(p, -size, -notional, -1)

    def trim(self, depth: int) -> None:
        """Keep the best ``depth`` levels (drop the lowest bids / highest asks)."""
        while len(self.prices) > depth:
            pos = 0 if self.bid else len(self.prices) - 1
            self._remove_at(pos, self.sizes[pos], self.notionals[pos])

    def rebin(self, width: float) -> None:
        self.width = width
        self.bins = {}
        self.total_size = self.total_notional = 0.0
        for p, s, n in zip(self.prices, self.sizes, self.notionals, strict=True):
            self._bin_add(p, s, n, 1)

    def band(self, lo: float, hi: float) -> tuple[float, float]:
        """(size, notional) of the levels with lo <= price <= hi."""
        prices = self.prices
        i = bisect_left(prices, lo)
        j = bisect_right(prices, hi)
        if i >= j:
            return 0.0, 0.0
        if j - i <= len(prices) // 2:
            return sum(self.sizes[i:j]), sum(self.notionals[i:j])
        sizes, notionals = self.sizes, self.notionals  # most of the side: total minus what is outside
        size = self.total_size - sum(sizes[:i]) - sum(sizes[j:])
        notional = self.total_notional - sum(notionals[:i]) - sum(notionals[j:])
        return max(size, 0.0), max(notional, 0.0)

    def median_size(self) -> float | None:
        ss = self.sorted_sizes
        n = len(ss)
        if n == 0:
            return None
        mid = n // 2
        return ss[mid] if n % 2 else (ss[mid - 1] + ss[mid]) / 2.0

    def total_at_least(self, threshold: float) -> float:
        """Total size of the levels whose size is >= threshold."""
        ss = self.sorted_sizes
        return sum(ss[bisect_left(ss, threshold * (1.0 - _EPS)):])


class BookIndex:
    """Both sides, the price precision seen, and the update count since the last rebuild."""

    __slots__ = ("asks", "bids", "depth", "updates")

    def __init__(self, width: float, depth: int = 400) -> None:
        self.bids = SideIndex(bid=True, width=width)
        self.asks = SideIndex(bid=False, width=width)
        self.depth = depth
        self.updates = 0

    @classmethod
    def build(cls, bids: Iterable[Level], asks: Iterable[Level], *, width: float, depth: int = 400) -> BookIndex:
        index = cls(width, depth)
        index.apply(bids, asks)
        index.updates = 0
        return index

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        bid_set, ask_set = self.bids.set, self.asks.set
        for lv in bids:
            bid_set(lv.price, lv.size)
        for lv in asks:
            ask_set(lv.price, lv.size)
        self.bids.trim(self.depth)
        self.asks.trim(self.depth)
        self.updates += 1

    @property
    def decimals(self) -> int:
        """The book's price precision: the most decimals of the price strings held."""
        return max(self.bids.decimals, self.asks.decimals)

    def mid(self) -> float | None:
        """Mid price; a one-sided book uses its best price; an empty book has none."""
        b, a = self.bids.best(), self.asks.best()
        if b is not None and a is not None:
            return (b + a) / 2.0
        return b if b is not None else a

    def rebin(self, width: float) -> None:
        if width != self.bids.width:
            self.bids.rebin(width)
            self.asks.rebin(width)

    def band(self, band_pct: float) -> tuple[float, float, float, float, float | None]:
        """(bid size, ask size, bid notional, ask notional, mid) within +/- band_pct % of mid."""
        mid = self.mid()
        if mid is None:
            return 0.0, 0.0, 0.0, 0.0, None
        half = mid * band_pct / 100.0
        bq, bn = self.bids.band(mid - half, math.inf)
        aq, an = self.asks.band(-math.inf, mid + half)
        return bq, aq, bn, an, mid
