"""Sliding event-time windows as fixed time buckets: constant-size, cheap to pickle and to snapshot.

A window of ``window_ms`` is kept as ``buckets`` buckets of ``window_ms / buckets`` each; every bucket holds
the count, mean and sum of squared deviations of the values pushed into it (Welford, so the deviation stays
exact even for large values with a small spread; buckets are combined with Chan's formula). The *baseline* of
a value is the window of completed buckets just before the current bucket: the current bucket is not compared
with itself. The baseline is recomputed only when the bucket changes (at most once per bucket width), so a
push costs O(1).

The baseline is *ready* (the window is full enough) once ``min_fill`` of its buckets hold data; before
that the statistics are ``None``. Event time comes from the frames; a frame older than the current bucket
counts in the current bucket (time never runs backwards).
"""

from __future__ import annotations

import math
import statistics

import msgspec


class Baseline(msgspec.Struct, frozen=True):
    count: int  # values in the baseline
    mean: float
    std: float  # population standard deviation of the values
    median_of_means: float  # median of the per-bucket means
    filled: int  # buckets holding data


class RollingBuckets:
    __slots__ = ("_baseline", "bucket_ms", "buckets", "current", "min_fill", "size")

    def __init__(self, window_ms: int, buckets: int = 60, min_fill: float = 0.5) -> None:
        self.size = buckets
        self.bucket_ms = max(1, window_ms // buckets)
        self.min_fill = min_fill
        self.buckets: list[tuple[int, int, float, float]] = []  # completed: (index, count, mean, m2)
        self.current: list[float] | None = None  # [index, count, mean, m2]
        self._baseline: Baseline | None = None

    def push(self, ts_ms: int, value: float) -> None:
        idx = ts_ms // self.bucket_ms
        cur = self.current
        if cur is None or idx > cur[0]:
            if cur is not None:
                self.buckets.append((int(cur[0]), int(cur[1]), cur[2], cur[3]))
            self.current = [idx, 1, value, 0.0]
            if cur is not None:
                self._recompute()
            return
        n = cur[1] + 1
        delta = value - cur[2]
        mean = cur[2] + delta / n
        cur[1] = n
        cur[2] = mean
        cur[3] += delta * (value - mean)

    def _recompute(self) -> None:
        cur = self.current
        if cur is None:
            self._baseline = None
            return
        oldest = int(cur[0]) - self.size
        self.buckets = [b for b in self.buckets if b[0] >= oldest]
        filled = len(self.buckets)
        if filled < max(1, math.ceil(self.min_fill * self.size)):
            self._baseline = None
            return
        n = sum(b[1] for b in self.buckets)
        mean = sum(b[1] * b[2] for b in self.buckets) / n
        m2 = sum(b[3] + b[1] * (b[2] - mean) ** 2 for b in self.buckets)
        median = statistics.median(b[2] for b in self.buckets)
        self._baseline = Baseline(n, mean, math.sqrt(max(0.0, m2 / n)), median, filled)

    def baseline(self) -> Baseline | None:
        """Statistics of the completed buckets of the window before the current one (``None``: not ready)."""
        return self._baseline
