"""The Bytewax side: a ``FixedPartitionedSource`` whose partitions are connection shards.

Each partition starts a :class:`~connectors.ws.shard.ShardRunner` (asyncio loop in a daemon thread) that
appends :mod:`connectors.ws.events` to a deque. ``next_batch()`` never blocks: it drains every ready event
(up to ``max_batch``), hands them to the partition's :class:`ShardProcessor` (venue logic such as parsing and
book maintenance runs HERE, on the worker, not on the I/O thread) and returns what the processor produced;
``on_tick`` runs at most every ``tick_interval`` seconds for time-driven work (staleness, metrics).
``close()`` stops the loop and joins the thread. After a SIGINT/SIGTERM (:mod:`connectors.stopping`) the
events received so far are still processed, then the partition ends (``StopIteration``).

Partitions are fixed for a run (``shards`` of them, listed by every worker; Bytewax gives each to one worker
of the cluster, so ``-w N`` and ``-i/-a`` processes split the shards). The topics are dynamic: each shard
follows its part of the wanted set (see :mod:`connectors.ws.shard`).

Delivery: at-most-once while connected, with gaps healed by the processor (a live feed cannot be replayed).
Resume state: a processor with ``snapshot()`` (and ``resume(state)``) has its state snapshotted and given
back on a restart with Bytewax recovery (e.g. the market processor's per-instrument trade high-water);
otherwise ``None``. Unit of parallelism: the shard.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.stopping import stop_requested
from connectors.ws.events import MAX_BACKLOG, Crashed, EventQueue, WsEvent
from connectors.ws.shard import ShardRunner

X = TypeVar("X")


class ShardControl(Protocol):
    """What a processor may ask of its shard's I/O thread (thread-safe, returns at once)."""

    def resubscribe(self, topic: str) -> None: ...

    def fetch(self, topic: str) -> None: ...

    @property
    def connections(self) -> int: ...

    @property
    def reconnects(self) -> int: ...


class ShardProcessor(Protocol[X]):
    def on_events(self, events: list[WsEvent]) -> list[X]: ...

    def on_tick(self, now_ns: int) -> list[X]: ...


class ShardCrashed(RuntimeError):
    """The shard's I/O thread died of an unexpected error."""


RunnerFactory = Callable[[int, int, Callable[[WsEvent], None]], ShardRunner]
ProcessorFactory = Callable[[int, ShardControl], ShardProcessor[X]]


class _Partition(StatefulSourcePartition[X, Any], Generic[X]):
    def __init__(self, runner: ShardRunner, events: deque[WsEvent], processor: ShardProcessor[X],
                 tick_interval: float, max_batch: int) -> None:
        self._runner = runner
        self._events = events
        self._processor = processor
        self._tick_ns = int(tick_interval * 1e9)
        self._next_tick = 0
        self._max_batch = max_batch
        self._left_at_stop: int | None = None  # events still to process after a stop was requested

    def next_batch(self) -> list[X]:
        events = self._events
        if stop_requested():
            # A clean stop: the events already received still go through (a last batch, at most
            # ``max_batch`` per call), then the partition ends; close() stops the shard thread.
            if self._left_at_stop is None:
                self._left_at_stop = len(events)
            if not self._left_at_stop:
                raise StopIteration
            self._left_at_stop -= min(self._left_at_stop, self._max_batch)
        if events:
            n = min(len(events), self._max_batch)
            popleft = events.popleft
            batch = [popleft() for _ in range(n)]
            for event in batch:
                if isinstance(event, Crashed):
                    raise ShardCrashed(event.error)
            out = self._processor.on_events(batch)
        else:
            out = []
        now = time.time_ns()
        if now >= self._next_tick:
            self._next_tick = now + self._tick_ns
            out.extend(self._processor.on_tick(now))
        return out

    def snapshot(self) -> Any:
        snapshot = getattr(self._processor, "snapshot", None)
        return None if snapshot is None else snapshot()

    def close(self) -> None:
        self._runner.stop()


class WsShardSource(FixedPartitionedSource[X, Any], Generic[X]):
    """``shards`` partitions named ``shard-<i>``; see the module docstring."""

    def __init__(self, shards: int, runner: RunnerFactory, processor: ProcessorFactory[X], *,
                 tick_interval: float = 0.25, max_batch: int = 5000, max_backlog: int = MAX_BACKLOG) -> None:
        self.shards = shards
        self._max_backlog = max_backlog
        self._runner = runner
        self._processor = processor
        self._tick_interval = tick_interval
        self._max_batch = max_batch

    def list_parts(self) -> list[str]:
        return [f"shard-{i}" for i in range(self.shards)]

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _Partition[X]:
        index = int(for_part.removeprefix("shard-"))
        events = EventQueue(self._max_backlog)
        runner = self._runner(index, self.shards, events)
        processor = self._processor(index, runner)
        resume = getattr(processor, "resume", None)
        if resume_state is not None and resume is not None:
            resume(resume_state)
        runner.start()
        return _Partition(runner, events, processor, self._tick_interval, self._max_batch)
