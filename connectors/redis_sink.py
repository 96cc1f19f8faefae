"""A Bytewax sink that writes each batch to Redis in ONE pipeline.

The caller supplies ``write(pipe, items)``, which queues the commands for a batch (coalescing per key as it
sees fit); the sink executes the pipeline before returning, so a batch is in Redis when the next one
starts. Delivery: at-least-once (a batch re-processed after recovery is written again; hashes and capped
lists make that harmless). Unit of parallelism: one connection per worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from redis.client import Pipeline

T = TypeVar("T")
WriteFn = Callable[[Pipeline, list[T]], None]


def redis_client(url: str) -> redis.Redis:
    """A client that retries a dropped connection a few times before a command fails."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url, retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), 5),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError], health_check_interval=30,
    )


class _Partition(StatelessSinkPartition[T], Generic[T]):
    def __init__(self, url: str, write: WriteFn[T]) -> None:
        self._client = redis_client(url)
        self._write = write

    def write_batch(self, items: list[T]) -> None:
        pipe = self._client.pipeline(transaction=False)
        self._write(pipe, items)
        if len(pipe):
            pipe.execute()

    def close(self) -> None:
        self._client.close()


class RedisPipelineSink(DynamicSink[T], Generic[T]):
    """Executes ``write(pipe, batch)`` in one Redis pipeline per batch."""

    def __init__(self, redis_url: str, write: WriteFn[T]) -> None:
        self._url = redis_url
        self._write = write

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition[T]:
        return _Partition(self._url, self._write)
