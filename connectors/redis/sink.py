"""A Bytewax sink that writes each batch to Redis in one pipeline, sent by the worker without waiting for the
reply, every batch confirmed before its epoch commits.

The caller supplies ``write(pipe, items)``, which queues the commands for a batch (coalescing per key as it
sees fit). ``write_batch`` packs the batch's pipeline and sends it on the sink's own connection, and returns
without waiting for Redis's replies: it first reads the replies of earlier batches that have already arrived
(never blocking for them) and calls ``written(batch, sent_ns)`` for each confirmed batch. At most
``max_in_flight`` batches are sent and unconfirmed; past that ``write_batch`` waits for the oldest
(back-pressure). No thread: the replies are read on the worker, so nothing competes with it for the GIL.

Delivery, by design and not by timing: this is a ``FixedPartitionedSink``, and Bytewax 0.21.1 calls a
partition's ``snapshot()`` when the epoch closes at the sink — after every ``write_batch`` of that epoch, and
before the epoch's recovery snapshot can commit (the commit waits for the snapshot stream, which this sink is
part of; a ``DynamicSink``'s output is not: its writes only happen to land before the commit). ``snapshot()``
reads every outstanding reply, so an epoch is never committed with a write unconfirmed, and a restart after
``kill -9`` rewrites everything after the last commit (hashes and capped streams make the rewrite harmless:
at-least-once). ``close()`` (end of input, a clean stop) does the same.

Redis down (a connection error, or a failover reply such as READONLY): every unconfirmed batch is sent again,
in order, on a new connection, with capped backoff until Redis is back, holding the worker (nothing is dropped,
a warning says so once per outage) — except once the dataflow is stopping (SIGINT/SIGTERM): then the batches
Redis refuses are given up (logged), so a stop never hangs. Any other error (a bad command, a failing
``written``) is raised on the worker (:class:`RedisWriteError`) by the call that reads it, and by every call
after it; nothing is written after it.

Partitions and cost: ``partitions`` fixed partitions ``"0"``..; :meth:`RedisPipelineSink.split` groups a batch
by ``key(item)`` (a key always goes to the same partition, so its writes stay in order) into
``(partition, items)`` pairs, the stream this sink takes (one Bytewax item per partition per batch, so
Bytewax's per-item keying and routing is paid per group, not per item). Each partition is written by the
worker Bytewax makes its primary: with ``-w 1`` in one process all are local; with several workers or
processes, a group whose partition another worker owns is exchanged to it (pickled between processes). One
connection per process and sink, shared by the partitions (and workers) of that process, under a lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, NoReturn, TypeVar

import redis
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from redis.client import Pipeline

from connectors.batch_partitions import BatchPartitions
from connectors.redis.client import is_retryable, sync_client
from connectors.stopping import stop_requested
from cryptoflow.logs import get_logger

T = TypeVar("T")
WriteFn = Callable[[Pipeline, list[T]], None]
WrittenFn = Callable[[list[T], int], None]  # (batch, time.time_ns() its pipeline was sent)
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
log = get_logger("connectors.redis.sink")


def redis_client(url: str) -> redis.Redis:
    """A client (plain or Sentinel URL) that retries a dropped connection or a failover error a few times before
    a command fails (:mod:`connectors.redis.client`)."""
    return sync_client(url, retries=5, health_check_interval=30)


class RetryUntilWritten:
    """The Redis sinks' one rule after a failed write: while Redis is unreachable or failing over, wait (capped
    backoff) and let the caller try again — except once the dataflow is stopping (SIGINT/SIGTERM): then the
    batch is given up (logged), so a stop never waits for Redis. Logged once per outage, and when it ends."""

    def __init__(self, items: int) -> None:
        self._items, self._delay, self._failed = items, RETRY_FIRST_S, False

    def again(self, err: redis.RedisError) -> bool:
        """After ``err`` (retryable: the caller checked): sleep and return True, or False to give up."""
        if stop_requested():
            log.warning("redis_write_abandoned", error=str(err), items=self._items, reason="stopping")
            return False
        if not self._failed:
            log.warning("redis_write_failed", error=str(err), items=self._items,
                        action="retrying the batch until Redis is back")
            self._failed = True
        time.sleep(self._delay)
        self._delay = min(self._delay * 2, RETRY_MAX_S)
        return True

    def done(self) -> None:
        if self._failed:
            log.warning("redis_write_recovered", items=self._items)


def execute_until_written(client: redis.Redis, queue: Callable[[Pipeline], object], items: int) -> None:
    """Queue a batch on a fresh pipeline and execute it, under :class:`RetryUntilWritten`. A fresh pipeline per
    try: redis-py empties a pipeline whose execute failed."""
    retry = RetryUntilWritten(items)
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
            if not retry.again(err):
                return
    retry.done()


class RedisWriteError(Exception):
    """The sink's writer failed (the cause is chained); raised on the worker at its next call."""


class _Batch(Generic[T]):
    __slots__ = ("commands", "items", "sent_ns")

    def __init__(self, items: list[T], commands: list[tuple[object, ...]]) -> None:
        self.items, self.commands, self.sent_ns = items, commands, 0


class _Writer(Generic[T]):
    """Sends each batch's pipeline and confirms it later, all on the worker, no thread (module docstring).

    One connection, owned here. ``submit`` first reads the replies Redis has already sent (without blocking),
    then sends the new batch; ``flush`` reads the rest. A connection error or a failover reply: every
    unconfirmed batch is sent again, in order, on a new connection, with capped backoff until Redis is back (a
    batch may land twice: at-least-once, the order of the last writes kept), or given up once stopping. The
    lock: the workers of one process share the writer.
    """

    def __init__(self, url: str, write: WriteFn[T], written: WrittenFn[T] | None, max_in_flight: int) -> None:
        self._client = redis_client(url)
        # Ours for the writer's life, not checked out of the pool (no connect yet: Redis may be down at start); Any:
        # redis-py's Connection methods are untyped.
        self._conn: Any = self._client.connection_pool.make_connection()
        self._write, self._written, self._max = write, written, max_in_flight
        self._pending: deque[_Batch[T]] = deque()  # sent, not yet confirmed, in order
        self._lock = threading.RLock()
        self._error: BaseException | None = None

    def _raise_failed(self) -> None:
        if self._error is not None:
            msg = f"the Redis sink's writer failed: {self._error!r}"
            raise RedisWriteError(msg) from self._error

    def submit(self, items: list[T]) -> None:
        pipe = self._client.pipeline(transaction=False)
        self._write(pipe, items)
        commands = [args for args, _ in pipe.command_stack]
        with self._lock:
            self._raise_failed()
            if not commands:
                self._done(items, time.time_ns())
                return
            self._settle(block=False)
            while len(self._pending) >= self._max:  # back-pressure: wait for the oldest
                self._confirm_oldest()
            batch = _Batch(items, commands)
            self._pending.append(batch)
            try:
                self._send(batch)
            except redis.RedisError as err:
                self._retry(err)

    def flush(self) -> None:
        """Return once every batch handed over is in Redis (or given up while stopping)."""
        with self._lock:
            self._raise_failed()
            self._settle(block=True)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._conn.disconnect()
            self._client.close()

    def _send(self, batch: _Batch[T]) -> None:
        batch.sent_ns = time.time_ns()
        self._conn.send_packed_command(self._conn.pack_commands(batch.commands), check_health=False)

    def _settle(self, *, block: bool) -> None:
        while self._pending:
            if not block:
                try:
                    if not self._conn.can_read(0):  # nothing has arrived yet: do not wait for it
                        return
                except redis.RedisError as err:  # the connection broke: that is news about the pending batches
                    self._retry(err)
                    return
            self._confirm_oldest()

    def _confirm_oldest(self) -> None:
        try:
            self._read_oldest()
        except redis.RedisError as err:
            self._retry(err)

    def _read_oldest(self) -> None:
        self._read(self._pending[0])
        batch = self._pending.popleft()
        self._done(batch.items, batch.sent_ns)

    def _read(self, batch: _Batch[T]) -> None:
        """Read the batch's replies; raise its first error."""
        first: redis.ResponseError | None = None
        for _ in batch.commands:
            try:
                self._conn.read_response()
            except redis.ResponseError as err:  # read them all: the next batch's replies follow
                first = first or err
        if first is not None:
            raise first

    def _retry(self, err: redis.RedisError) -> None:
        """Every unconfirmed batch again, in order, on a new connection, until Redis confirms them all."""
        retry = RetryUntilWritten(sum(len(b.items) for b in self._pending))
        while True:
            self._conn.disconnect()
            if not is_retryable(err):
                self._fail(err)
            if not retry.again(err):
                self._pending.clear()
                return
            try:
                for batch in self._pending:
                    self._send(batch)
                while self._pending:
                    self._read_oldest()
            except redis.RedisError as again:
                err = again
                continue
            retry.done()
            return

    def _done(self, items: list[T], sent_ns: int) -> None:
        if self._written is not None:
            try:
                self._written(items, sent_ns)
            except BaseException as err:
                self._fail(err)

    def _fail(self, err: BaseException) -> NoReturn:
        log.error("redis_write_error", error=repr(err))
        self._error = err
        self._pending.clear()
        self._raise_failed()
        raise AssertionError  # unreachable: _raise_failed raised


class _Partition(StatefulSinkPartition[list[T], None], Generic[T]):
    def __init__(self, sink: RedisPipelineSink[T], writer: _Writer[T]) -> None:
        self._sink, self._writer = sink, writer

    def write_batch(self, values: list[list[T]]) -> None:
        items = values[0] if len(values) == 1 else [x for v in values for x in v]
        if items:
            self._writer.submit(items)

    def snapshot(self) -> None:
        """The epoch's boundary: every batch handed over so far is confirmed before its snapshot commits."""
        self._writer.flush()

    def close(self) -> None:
        self._sink._release(self._writer)


class RedisPipelineSink(BatchPartitions[T], FixedPartitionedSink[list[T], None]):
    """Executes ``write(pipe, batch)`` in one Redis pipeline per batch (sent again as packed if retried), its
    replies read at a later call, all confirmed at each epoch's end; then ``written(batch, sent_ns)``, once per
    batch.
    Takes ``(partition, items)`` pairs: see :meth:`connectors.batch_partitions.BatchPartitions.split`."""

    def __init__(self, redis_url: str, write: WriteFn[T], written: WrittenFn[T] | None = None, *,
                 key: Callable[[T], str] | None = None, partitions: int = 1, max_in_flight: int = 16) -> None:
        self._url = redis_url
        self._write = write
        self._written = written
        BatchPartitions.__init__(self, partitions, key)
        self._max = max_in_flight
        self._lock = threading.Lock()
        self._writer: _Writer[T] | None = None
        self._open = 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Partition[T]:
        with self._lock:
            if self._writer is None:
                self._writer = _Writer(self._url, self._write, self._written, self._max)
            self._open += 1
            return _Partition(self, self._writer)

    def _release(self, writer: _Writer[T]) -> None:
        """A partition closed: it flushes; the last one of this process also stops the writer."""
        with self._lock:
            self._open -= 1
            last = self._open == 0
            if last:
                self._writer = None
        if last:
            writer.close()
        else:
            writer.flush()
