"""Dataflows over the reliable Redis-list source, run as processes by tests/test_redis_list.py (kill -9 tests).

``explicit_flow``: each element is "done" (RPUSHed onto ``{key}:done``) and acked in ONE MULTI, slowly.
``recovery_flow``: elements ``"k:v"`` are summed per key in Bytewax state; the latest ``count:sum`` per key is
written to the hash ``{key}:state`` (so the end state shows whether any element was lost or counted twice).
"""

from __future__ import annotations

import signal
import time

import bytewax.operators as op
import redis
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.redis.list_source import ReliableRedisListSource
from connectors.redis.lists import AckMode, ListAcker, ListItem

signal.signal(signal.SIGTERM, signal.default_int_handler)


class _DonePartition(StatelessSinkPartition[ListItem]):
    def __init__(self, url: str, key: str, delay: float) -> None:
        self._client = redis.Redis.from_url(url)
        self._acker = ListAcker(url, key, self._client)
        self._done = f"{key}:done"
        self._delay = delay

    def write_batch(self, items: list[ListItem]) -> None:
        for item in items:
            time.sleep(self._delay)
            pipe = self._client.pipeline(transaction=True)
            pipe.rpush(self._done, item.raw)
            self._acker.ack_in(pipe, item)
            pipe.execute()


class _DoneSink(DynamicSink[ListItem]):
    def __init__(self, url: str, key: str, delay: float) -> None:
        self._args = (url, key, delay)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DonePartition:
        return _DonePartition(*self._args)


def explicit_flow(url: str, key: str, delay: float = 0.001, partitions: int = 1) -> Dataflow:
    flow = Dataflow("list_explicit")
    items = op.input("read", flow, ReliableRedisListSource(url, key, partitions=partitions, batch_size=50))
    op.output("done", items, _DoneSink(url, key, delay))
    return flow


class _StatePartition(StatelessSinkPartition[tuple[str, tuple[int, int]]]):
    def __init__(self, url: str, key: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._key = f"{key}:state"

    def write_batch(self, items: list[tuple[str, tuple[int, int]]]) -> None:
        latest = {k: f"{count}:{total}" for k, (count, total) in items}
        self._client.hset(self._key, mapping=latest)


class _StateSink(DynamicSink[tuple[str, tuple[int, int]]]):
    def __init__(self, url: str, key: str) -> None:
        self._args = (url, key)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StatePartition:
        return _StatePartition(*self._args)


def _add(state: tuple[int, int] | None, value: int) -> tuple[tuple[int, int], tuple[int, int]]:
    count, total = state or (0, 0)
    new = (count + 1, total + value)
    return new, new


def _split(item: ListItem, delay: float) -> tuple[str, int]:
    k, v = item.raw.decode().split(":")
    time.sleep(delay)  # slow enough that a kill lands mid-stream
    return k, int(v)


def recovery_flow(url: str, key: str, delay: float = 0.002) -> Dataflow:
    flow = Dataflow("list_recovery")
    items = op.input("read", flow, ReliableRedisListSource(url, key, ack=AckMode.RECOVERY, batch_size=20))
    pairs = op.map("split", items, lambda item: _split(item, delay))
    sums = op.stateful_map("sum", pairs, _add)
    op.output("state", sums, _StateSink(url, key))
    return flow
