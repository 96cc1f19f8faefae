"""Dataflows over the reliable Redis-list source that crash on one element (``b"poison"``), run as processes by
tests/test_redis_list.py to show that the restart loop ends: the element goes to ``{key}:dead`` after
``max_deliveries`` deliveries and the others are processed.

``explicit_flow``: each element is RPUSHed onto ``{key}:done`` and acked in ONE MULTI; ``poison`` raises.
``recovery_flow``: elements ``"k:v"`` are summed per key in Bytewax state (written to ``{key}:state`` as
``count:sum``); ``poison`` raises in the map step.
"""

from __future__ import annotations

import bytewax.operators as op
import redis
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.redis.list_source import ReliableRedisListSource
from connectors.redis.lists import AckMode, ListAcker, ListItem
from tests.flows.list_consumers import _add, _StateSink


class PoisonError(Exception):
    pass


class _DonePartition(StatelessSinkPartition[ListItem]):
    def __init__(self, url: str, key: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._acker = ListAcker(url, key, self._client)
        self._done = f"{key}:done"

    def write_batch(self, items: list[ListItem]) -> None:
        for item in items:
            if item.raw == b"poison":
                raise PoisonError(item.raw)
            pipe = self._client.pipeline(transaction=True)
            pipe.rpush(self._done, item.raw)
            self._acker.ack_in(pipe, item)
            pipe.execute()


class _DoneSink(DynamicSink[ListItem]):
    def __init__(self, url: str, key: str) -> None:
        self._args = (url, key)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DonePartition:
        return _DonePartition(*self._args)


def explicit_flow(url: str, key: str, max_deliveries: int) -> Dataflow:
    flow = Dataflow("poison_explicit")
    source = ReliableRedisListSource(url, key, batch_size=5, max_deliveries=max_deliveries)
    op.output("done", op.input("read", flow, source), _DoneSink(url, key))
    return flow


def _split(item: ListItem) -> tuple[str, int]:
    if item.raw == b"poison":
        raise PoisonError(item.raw)
    k, v = item.raw.decode().split(":")
    return k, int(v)


def recovery_flow(url: str, key: str, max_deliveries: int) -> Dataflow:
    flow = Dataflow("poison_recovery")
    source = ReliableRedisListSource(url, key, ack=AckMode.RECOVERY, batch_size=5, max_deliveries=max_deliveries)
    pairs = op.map("split", op.input("read", flow, source), _split)
    op.output("state", op.stateful_map("sum", pairs, _add), _StateSink(url, key))
    return flow
