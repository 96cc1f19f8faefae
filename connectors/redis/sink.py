"""A Bytewax sink that writes each batch to Redis in one pipeline, sent by the worker, confirmed off it, per epoch.

The caller supplies ``write(pipe, items)``, which queues the commands for a batch (coalescing per key as it
sees fit). ``write_batch`` packs the batch's pipeline and sends it on the sink's connection, then returns: the
worker does not wait for Redis's replies; a writer thread reads them, in order, and then calls
``written(batch)``. At most ``max_in_flight`` batches are sent and not yet confirmed; past that ``write_batch``
waits (back-pressure). The commands reach Redis as soon as before (no thread hand-off on the way out).

Delivery, by design and not by timing: this is a ``FixedPartitionedSink``, and Bytewax 0.21.1 calls a
partition's ``snapshot()`` when the epoch closes at the sink — after every ``write_batch`` of that epoch, and
before the epoch's recovery snapshot can commit (the commit waits for the snapshot stream, which this sink is
part of; a ``DynamicSink``'s output is not: its writes only happen to land before the commit). ``snapshot()``
waits until every batch handed over so far is confirmed, so an epoch is never committed with a write in
flight, and a restart after ``kill -9`` rewrites everything after the last commit (hashes and capped streams
make the rewrite harmless: at-least-once). ``close()`` (end of input, a clean stop) waits the same way.

Redis down (a connection error, or a failover reply such as READONLY): the writer re-sends every unconfirmed
batch, in order, on a new connection, with capped backoff until Redis is back; meanwhile ``write_batch`` only
queues, and waits once ``max_in_flight`` are held (nothing is dropped, a warning says so once per outage) —
except once the dataflow is stopping (SIGINT/SIGTERM): then the batches Redis refuses are given up (logged), so
a stop never hangs. Any other error (a bad command, a failing ``written``) fails the writer: the next
``write_batch``/``snapshot``/``close`` of the worker raises it (never swallowed); nothing is written after it.

Partitions and cost: ``partitions`` fixed partitions ``"0"``..; :meth:`RedisPipelineSink.split` groups a batch
by ``key(item)`` (a key always goes to the same partition, so its writes stay in order) into
``(partition, items)`` pairs, the stream this sink takes (one Bytewax item per partition per batch, so
Bytewax's per-item keying and routing is paid per group, not per item). Each partition is written by the
worker Bytewax makes its primary: with ``-w 1`` in one process all are local; with several workers or
processes, a group whose partition another worker owns is exchanged to it (pickled between processes). One
connection and one reply-reading thread per process and sink, shared by the partitions it owns (with several
workers in a process their sends are serialized on it).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import redis
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from redis.client import Pipeline

from connectors.redis.client import is_retryable, sync_client
from connectors.stopping import stop_requested
from cryptoflow.logs import get_logger

T = TypeVar("T")
WriteFn = Callable[[Pipeline, list[T]], None]
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
WAIT_SLICE_S = 0.5  # waits on the writer in slices: the main thread (the worker with -w 1) handles signals
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


class RedisWriteError(Exception):
    """The sink's writer failed (the cause is chained); raised on the worker at its next call."""


class _Batch(Generic[T]):
    __slots__ = ("commands", "items", "sent")

    def __init__(self, items: list[T], commands: list[tuple[object, ...]]) -> None:
        self.items, self.commands, self.sent = items, commands, False


class _Writer(Generic[T]):
    """Sends each batch's pipeline on the worker and reads the replies on its own thread (module docstring).

    One connection, owned here. While it is healthy the worker sends (under ``_cond``, so the order of sends is
    the order of ``_pending``); the thread reads each batch's replies in that order. A connection error (or a
    failover reply) makes it unhealthy: the worker then only queues, and the thread re-sends every unconfirmed
    batch in order on a new connection, one at a time with capped backoff (a batch may land twice: at-least-once,
    the order of the last writes kept), until none is left; then the worker sends again.
    """

    def __init__(self, url: str, write: WriteFn[T], written: Callable[[list[T]], None] | None,
                 max_in_flight: int) -> None:
        self._client = redis_client(url)
        # Ours for the writer's life, not checked out of the pool (no connect yet: Redis may be down at start); Any:
        # redis-py's Connection methods are untyped.
        self._conn: Any = self._client.connection_pool.make_connection()
        self._write, self._written, self._max = write, written, max_in_flight
        self._cond = threading.Condition()
        self._pending: deque[_Batch[T]] = deque()  # handed over, not yet confirmed, in order
        self._healthy = True
        self._handed = self._done = 0  # counts of batches: a flush waits for done >= handed at its call
        self._error: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="redis-sink-writer", daemon=True)
        self._thread.start()

    def _raise_failed(self) -> None:
        if self._error is not None:
            msg = f"the Redis sink's writer failed: {self._error!r}"
            raise RedisWriteError(msg) from self._error

    def _wait(self, ready: Callable[[], bool]) -> None:
        while not ready() and self._error is None:
            self._cond.wait(WAIT_SLICE_S)
        self._raise_failed()

    def submit(self, items: list[T]) -> None:
        pipe = self._client.pipeline(transaction=False)
        self._write(pipe, items)
        commands = [args for args, _ in pipe.command_stack]
        if not commands:
            if self._written is not None:
                self._written(items)
            return
        batch = _Batch(items, commands)
        with self._cond:
            self._wait(lambda: len(self._pending) < self._max)
            self._pending.append(batch)
            self._handed += 1
            if self._healthy:
                try:
                    self._conn.send_packed_command(self._conn.pack_commands(commands), check_health=False)
                    batch.sent = True
                except (redis.ConnectionError, redis.TimeoutError):  # the thread finds it and re-sends
                    self._healthy = False
            self._cond.notify_all()

    def flush(self) -> None:
        """Return once every batch handed over before this call is in Redis (or given up while stopping)."""
        with self._cond:
            target = self._handed
            self._wait(lambda: self._done >= target)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join()
            self._conn.disconnect()
            self._client.close()

    def _run(self) -> None:
        delay, failed = RETRY_FIRST_S, False
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = self._pending[0]
            try:
                self._confirm(batch)
            except redis.RedisError as err:
                if not is_retryable(err):
                    self._fail(err)
                    return
                with self._cond:  # the worker stops sending; every unconfirmed batch goes again, in order
                    self._healthy = False
                    for b in self._pending:
                        b.sent = False
                self._conn.disconnect()
                if stop_requested():  # a SIGINT/SIGTERM stop never waits for Redis: the batches are given up
                    self._give_up(err)
                    continue
                if not failed:
                    log.warning("redis_write_failed", error=str(err), items=len(batch.items),
                                action="retrying the batch until Redis is back")
                failed = True
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            except BaseException as err:  # kept, and raised on the worker: never swallowed
                self._fail(err)
                return
            if failed:
                log.warning("redis_write_recovered", items=len(batch.items))
                delay, failed = RETRY_FIRST_S, False
            with self._cond:
                self._pending.popleft()
                self._done += 1
                if not self._pending:
                    self._healthy = True  # nothing left to re-send: the worker sends again
                self._cond.notify_all()
            try:
                if self._written is not None:
                    self._written(batch.items)
            except BaseException as err:  # e.g. a metrics bug: raised on the worker
                self._fail(err)
                return

    def _confirm(self, batch: _Batch[T]) -> None:
        """Read the batch's replies (sending it first when the worker could not); raise its first error."""
        if not batch.sent:
            self._conn.send_packed_command(self._conn.pack_commands(batch.commands), check_health=False)
            batch.sent = True
        first: redis.ResponseError | None = None
        for _ in batch.commands:
            try:
                self._conn.read_response()
            except redis.ResponseError as err:  # read them all: the next batch's replies follow
                first = first or err
        if first is not None:
            raise first

    def _give_up(self, err: BaseException) -> None:
        with self._cond:
            items = sum(len(b.items) for b in self._pending)
            self._done += len(self._pending)
            self._pending.clear()
            self._healthy = True
            self._cond.notify_all()
        log.warning("redis_write_abandoned", error=str(err), items=items, reason="stopping")

    def _fail(self, err: BaseException) -> None:
        log.error("redis_write_error", error=repr(err))
        with self._cond:
            self._error = err
            self._cond.notify_all()


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


class RedisPipelineSink(FixedPartitionedSink[list[T], None], Generic[T]):
    """Executes ``write(pipe, batch)`` in one Redis pipeline per batch (sent again as packed if retried), its
    replies read off the worker, all confirmed at each epoch's end; then ``written(batch)``, once per batch.
    Takes ``(partition, items)`` pairs: see :meth:`split`."""

    def __init__(self, redis_url: str, write: WriteFn[T], written: Callable[[list[T]], None] | None = None, *,
                 key: Callable[[T], str] | None = None, partitions: int = 1, max_in_flight: int = 16) -> None:
        self._url = redis_url
        self._write = write
        self._written = written
        self._key = key
        self._parts = [str(i) for i in range(partitions if key is not None else 1)]
        self._max = max_in_flight
        self._index: dict[str, str] = {}  # key -> its partition, memoized
        self._sorted = {p: i for i, p in enumerate(sorted(self._parts))}  # Bytewax indexes its sorted set
        self._lock = threading.Lock()
        self._writer: _Writer[T] | None = None
        self._open = 0

    def split(self, batch: list[T]) -> list[tuple[str, list[T]]]:
        """One batch as ``(partition, items)`` pairs, items in batch order (a ``flat_map_batch`` mapper)."""
        if not batch:
            return []
        if len(self._parts) == 1 or self._key is None:
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
