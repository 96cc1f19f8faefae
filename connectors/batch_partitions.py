"""Fixed partitions for a Bytewax ``FixedPartitionedSink`` that takes whole batches: one place for the split.

Why sinks are partitioned here at all: Bytewax 0.21.1 commits an epoch's recovery snapshot once the snapshot
stream has passed it, and a partitioned sink's ``snapshot()`` is part of that stream (called after its last
``write_batch`` of the epoch), while a ``DynamicSink``'s writes are not. A sink whose writes must be in place
before the commit (market_data's Redis hashes, its InfluxDB klines) is therefore partitioned.

:class:`BatchPartitions` is the mixin such a sink inherits first: ``split`` (a ``flat_map_batch`` mapper) turns
a batch into ``(partition, items)`` pairs — one Bytewax item per partition and batch, so Bytewax's per-item
keying, ``part_fn`` call and routing are paid per group, not per item — grouped by ``key(item)`` so a key always
goes to the same partition and its writes stay in order; ``list_parts`` and ``part_fn`` answer Bytewax.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class BatchPartitions(Generic[T]):
    """``partitions`` fixed partitions ``"0"``.. (the count must not change while a recovery store is in use:
    Bytewax refuses a stored partition that no worker lists); without ``key`` there is one."""

    def __init__(self, partitions: int = 1, key: Callable[[T], str] | None = None) -> None:
        self._key = key
        self._parts = [str(i) for i in range(partitions if key is not None else 1)]
        self._index: dict[str, str] = {}  # key -> its partition, memoized
        self._sorted = {p: i for i, p in enumerate(sorted(self._parts))}  # Bytewax indexes its sorted set

    def split(self, batch: list[T]) -> list[tuple[str, list[T]]]:
        """One batch as ``(partition, items)`` pairs, items in batch order (a ``flat_map_batch`` mapper)."""
        if not batch:
            return []
        if self._key is None or len(self._parts) == 1:
            return [(self._parts[0], batch)]
        groups: dict[str, list[T]] = {}
        index, key = self._index, self._key
        for item in batch:
            k = key(item)
            part = index.get(k)
            if part is None:
                part = index[k] = self._parts[zlib.adler32(k.encode()) % len(self._parts)]
            group = groups.get(part)
            if group is None:
                groups[part] = [item]
            else:
                group.append(item)
        return list(groups.items())

    def list_parts(self) -> list[str]:
        return list(self._parts)

    def part_fn(self, item_key: str) -> int:
        return self._sorted[item_key]  # the key is the partition itself (split chose it)
