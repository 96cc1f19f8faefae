"""A Bytewax sink that writes each batch to Redis in ONE pipeline.

The caller supplies ``write(pipe, items)``, which queues the commands for a batch (coalescing per key as it
sees fit); the sink executes the pipeline before returning, so a batch is in Redis when the next one
starts. Redis down: the batch is retried on a fresh pipeline with capped backoff until Redis is back,
holding the worker (back-pressure; nothing is dropped, a warning says so once per outage) — except once the
dataflow is stopping (SIGINT/SIGTERM): then a batch Redis refuses is given up (logged), so a stop never hangs.
Delivery: at-least-once (a batch re-processed after recovery is written again; hashes and capped lists make
that harmless). Unit of parallelism: one connection per worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from redis.client import Pipeline

from connectors.redis.client import is_retryable, sync_client
from connectors.stopping import stop_requested
from cryptoflow.logs import get_logger

T = TypeVar("T")
WriteFn = Callable[[Pipeline, list[T]], None]
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
log = get_logger("connectors.redis.sink")


def redis_client(url: str) -> redis.Redis:
    """A client (plain or Sentinel URL) that retries a dropped connection or a failover error a few times before
    a command fails (:mod:`connectors.redis.client`)."""
    return sync_client(url, retries=5, health_check_interval=30)


def execute_until_written(client: redis.Redis, queue: Callable[[Pipeline], object], items: int) -> None:
    """Queue a batch on a fresh pipeline and execute it; while Redis is unreachable, wait (capped backoff)
    and try again. A fresh pipeline per try: redis-py empties a pipeline whose execute failed."""
    delay, failed = RETRY_FIRST_S, False
    while True:
        pipe = client.pipeline(transaction=False)
        queue(pipe)
        if not len(pipe):
            return
        try:
            pipe.execute()
            break
        except redis.RedisError as err:  # unreachable, or failing over (READONLY, no master yet, NOREPLICAS)
            if not is_retryable(err):
                raise
            if stop_requested():  # a SIGINT/SIGTERM stop never waits for Redis: the batch is given up
                log.warning("redis_write_abandoned", error=str(err), items=items, reason="stopping")
                return
            if not failed:
                log.warning("redis_write_failed", error=str(err), items=items,
                            action="retrying the batch until Redis is back")
            failed = True
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
    if failed:
        log.warning("redis_write_recovered", items=items)


class _Partition(StatelessSinkPartition[T], Generic[T]):
    def __init__(self, url: str, write: WriteFn[T], written: Callable[[list[T]], None] | None) -> None:
        self._client = redis_client(url)
        self._write = write
        self._written = written

    def write_batch(self, items: list[T]) -> None:
        execute_until_written(self._client, lambda pipe: self._write(pipe, items), len(items))
        if self._written is not None:
            self._written(items)

    def close(self) -> None:
        self._client.close()


class RedisPipelineSink(DynamicSink[T], Generic[T]):
    """Executes ``write(pipe, batch)`` in one Redis pipeline per batch (``write`` may run again for a retried
    batch); then ``written(batch)``, once per batch."""

    def __init__(self, redis_url: str, write: WriteFn[T], written: Callable[[list[T]], None] | None = None) -> None:
        self._url = redis_url
        self._write = write
        self._written = written

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition[T]:
        return _Partition(self._url, self._write, self._written)
