"""A reliable Bytewax source over a Redis list (producers LPUSH, we take from the right: FIFO).

Each element taken is moved atomically (one Lua script per batch: RPOP + LPUSH, i.e. LMOVE, up to
``batch_size`` elements in ONE round trip) from ``{key}`` to the partition's processing list
``{key}:processing:{partition}``, so a ``kill -9`` at any moment loses nothing: an element is always in the
source list, in a processing list, or done.

Two acknowledgement modes (:class:`AckMode`):

``explicit`` (the email sender)
    Items carry the raw element and their partition. Whoever finishes the work removes the element from the
    processing list with :class:`ListAcker` (``LREM``), ideally in the same MULTI as the work's own write
    (see :meth:`ListAcker.ack_in`); :class:`AckSink` acks whatever reaches it. On start, the leftovers of the
    partition's processing list (taken by a run that died before acking) are delivered again, oldest first,
    before new elements. Guarantee: at-least-once; an element is delivered again only if its run died (or its
    connection dropped while the move's reply was in flight — then at the next start) between taking it and
    its ack, so duplicates are bounded by the un-acked work at the crash. With ``max_in_flight`` the partition
    takes new elements only while its processing list is shorter than that (back-pressure for slow sinks).

``recovery`` (the analysis dataflow, run with Bytewax recovery and stateful windows)
    Bytewax restores operator state from the last *committed* snapshot, so frames consumed after it must be
    delivered again on resume. The partition counts every element moved into its processing list in
    ``{key}:processing:{partition}:offset`` (updated in the same script), so the processing list always holds
    the elements with offsets ``[count - LLEN, count)``. :meth:`snapshot` returns the offset of the next
    element to emit. The processing list is trimmed only below the offset returned by the snapshot taken
    ``keep_snapshots`` snapshots ago (default 2: that epoch's snapshot is committed long before two more
    epochs close). On resume with state ``R``, elements below ``R`` are skipped and the rest are emitted
    again, then new ones. Without a resume state (recovery off or a new recovery store) the whole processing
    list is emitted again. Guarantee: no loss, at-least-once, duplicates bounded by what was consumed in the
    last ``keep_snapshots + 1`` epochs; operator state counts each element exactly once when recovery is on.

Order: FIFO within a partition; with one partition every element is emitted in list order (leftovers first).
Unit of parallelism: the partition (``partitions=N`` -> partitions ``"0".."N-1"``, spread over the workers by
Bytewax; each is one consumer with its own processing list). Several partitions of one key share the
source list (each element goes to exactly one of them), so order across partitions is not defined. A
partition id must run in one place at a time: do not start two dataflows over the same key and partitions.

``next_batch`` never waits for data: it makes at most one Redis round trip (bounded by the socket timeout)
and returns everything that round trip brought; when nothing was ready it asks to be woken after
``poll_interval``; when Redis is unreachable it logs and backs off (capped) without raising. Not for Redis
Cluster (the script touches keys it derives).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import cast

import msgspec
import redis
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from redis.client import Pipeline

from cryptoflow.logs import get_logger

log = get_logger("redis_list")


class AckMode(StrEnum):
    EXPLICIT = "explicit"
    RECOVERY = "recovery"


class ListItem(msgspec.Struct, frozen=True):
    """One element of the list as stored (bytes), with where it is held until acknowledged."""

    raw: bytes
    partition: str
    offset: int | None = None  # recovery mode: position in the partition's stream; explicit mode: None


def processing_key(key: str, partition: str) -> str:
    return f"{key}:processing:{partition}"


def offset_key(key: str, partition: str) -> str:
    return f"{key}:processing:{partition}:offset"


# KEYS: source, processing, offset counter. ARGV: max elements, in-flight cap (0: none).
# Returns {count after the move (or -1 when uncounted), element...}; moved elements are oldest first.
_MOVE = """
local n = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
if cap > 0 then
  local room = cap - redis.call('LLEN', KEYS[2])
  if room < n then n = room end
end
local out = {0}
for i = 1, n do
  local v = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not v then break end
  out[#out + 1] = v
end
if KEYS[3] ~= '' then
  out[1] = redis.call('INCRBY', KEYS[3], #out - 1)
else
  out[1] = -1
end
return out
"""

# KEYS: processing, offset counter. ARGV: first offset to keep. Drops the elements below it.
_TRIM = """
local count = tonumber(redis.call('GET', KEYS[2]) or '0')
local keep = count - tonumber(ARGV[1])
if keep <= 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('LTRIM', KEYS[1], 0, keep - 1)
end
return keep
"""


def list_client(url: str, *, socket_timeout: float = 5.0) -> redis.Redis:
    """A bytes client without automatic retries (a retried move could take elements twice)."""
    return redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)


class _Partition(StatefulSourcePartition[ListItem, int | None]):
    def __init__(self, src: ReliableRedisListSource, part: str, resume: int | None) -> None:
        self._src = src
        self._part = part
        self._client = list_client(src.redis_url, socket_timeout=src.socket_timeout)
        self._move = self._client.register_script(_MOVE)
        self._trim = self._client.register_script(_TRIM)
        self._proc = processing_key(src.key, part)
        self._counted = src.ack is AckMode.RECOVERY
        self._offkey = offset_key(src.key, part) if self._counted else ""
        self._resume = resume
        self._pending: deque[ListItem] | None = None  # leftovers still to emit; None: not loaded yet
        self._emitted = 0  # recovery mode: offset of the next element to emit
        self._snapshots: deque[int] = deque()
        self._awake: datetime | None = None
        self._failures = 0

    # -- start-up: what the processing list holds from an earlier run ----------------------------------
    def _load_leftovers(self) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.lrange(self._proc, 0, -1)
        if self._counted:
            pipe.get(self._offkey)
        got = pipe.execute()
        held: list[bytes] = list(reversed(got[0]))  # oldest first
        if not self._counted:
            self._pending = deque(ListItem(raw, self._part) for raw in held)
        else:
            count = int(got[1] or 0)
            base = count - len(held)
            start = base
            if self._resume is not None:
                if self._resume < base:
                    log.error("redis_list_resume_gap", key=self._src.key, partition=self._part,
                              resume_offset=self._resume, oldest_held=base)
                elif self._resume > count:
                    log.warning("redis_list_resume_ahead", key=self._src.key, partition=self._part,
                                resume_offset=self._resume, count=count)
                else:
                    start = self._resume
            self._pending = deque(
                ListItem(raw, self._part, base + i) for i, raw in enumerate(held) if base + i >= start
            )
            self._emitted = count
        if self._pending:
            log.info("redis_list_redeliver", key=self._src.key, partition=self._part, items=len(self._pending))

    # -- Bytewax contract ------------------------------------------------------------------------------
    def next_batch(self) -> list[ListItem]:
        try:
            if self._pending is None:
                self._load_leftovers()
            assert self._pending is not None
            if self._pending:
                n = min(len(self._pending), self._src.batch_size)
                out = [self._pending.popleft() for _ in range(n)]
                self._ok()
                return out
            if self._counted:
                self._maybe_trim()
            got = self._move(keys=[self._src.key, self._proc, self._offkey],
                             args=[self._src.batch_size, self._src.max_in_flight or 0])
            raws: list[bytes] = got[1:]
            # Recovery mode: if the gap read below fails, the next call finds the same gap again.
            out = (self._with_offsets(int(got[0]), raws) if self._counted
                   else [ListItem(raw, self._part) for raw in raws])
        except (redis.ConnectionError, redis.TimeoutError) as err:
            self._failed(err)
            return []
        self._ok(idle=not out)
        return out

    def _with_offsets(self, count: int, raws: list[bytes]) -> list[ListItem]:
        start = count - len(raws)
        gap: list[ListItem] = []
        if start > self._emitted:
            # An earlier move ran but its reply was lost: its elements are in the processing list.
            held = cast(list[bytes], self._client.lrange(self._proc, count - start, count - 1 - self._emitted))
            gap = [ListItem(raw, self._part, self._emitted + i) for i, raw in enumerate(reversed(held))]
            log.warning("redis_list_recovered_lost_reply", key=self._src.key, partition=self._part,
                        items=len(gap))
        self._emitted = count
        return gap + [ListItem(raw, self._part, start + i) for i, raw in enumerate(raws)]

    def _maybe_trim(self) -> None:
        if len(self._snapshots) > self._src.keep_snapshots:
            upto = self._snapshots[0]
            while len(self._snapshots) > self._src.keep_snapshots:
                upto = self._snapshots.popleft()
            self._trim(keys=[self._proc, self._offkey], args=[upto])

    def _ok(self, *, idle: bool = False) -> None:
        self._failures = 0
        self._awake = datetime.now(UTC) + self._src.poll_interval if idle else None

    def _failed(self, err: Exception) -> None:
        self._failures += 1
        delay = min(self._src.backoff_max, 0.1 * 2 ** min(self._failures, 10))
        log.warning("redis_list_unavailable", key=self._src.key, partition=self._part, error=str(err),
                    retry_in_s=round(delay, 2))
        self._awake = datetime.now(UTC) + timedelta(seconds=delay)

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int | None:
        if not self._counted:
            return None
        offset: int | None
        if self._pending:  # still re-emitting leftovers: resume from the first one not yet emitted
            offset = self._pending[0].offset
        else:
            offset = self._emitted if self._pending is not None else self._resume
        if offset is not None:
            self._snapshots.append(offset)
        return offset

    def close(self) -> None:
        self._client.close()


class ReliableRedisListSource(FixedPartitionedSource[ListItem, int | None]):
    """FIFO consumer of the Redis list ``key`` that loses nothing on a crash (see the module docstring).

    ``ack="explicit"``: acknowledge each item with :class:`ListAcker` / :class:`AckSink` once its work is done.
    ``ack="recovery"``: nothing to acknowledge; run the dataflow with Bytewax recovery (``-r``), the
    snapshots acknowledge. Delivery: at-least-once in both modes, no loss; FIFO per partition.
    """

    def __init__(
        self,
        redis_url: str,
        key: str,
        *,
        partitions: int = 1,
        ack: AckMode | str = AckMode.EXPLICIT,
        batch_size: int = 1000,
        poll_interval: float = 0.01,
        max_in_flight: int | None = None,
        keep_snapshots: int = 2,
        socket_timeout: float = 5.0,
        backoff_max: float = 5.0,
    ) -> None:
        if partitions < 1 or batch_size < 1 or keep_snapshots < 1:
            msg = f"partitions, batch_size and keep_snapshots must be >= 1, got {partitions}, {batch_size}, " \
                  f"{keep_snapshots}"
            raise ValueError(msg)
        self.redis_url = redis_url
        self.key = key
        self.partitions = partitions
        self.ack = AckMode(ack)
        self.batch_size = batch_size
        self.poll_interval = timedelta(seconds=poll_interval)
        self.max_in_flight = max_in_flight
        self.keep_snapshots = keep_snapshots
        self.socket_timeout = socket_timeout
        self.backoff_max = backoff_max

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        return _Partition(self, for_part, resume_state if self.ack is AckMode.RECOVERY else None)


# KEYS: processing list, destination. ARGV: the held element, the element to push. Pushes only if the held
# element was still there, so a call repeated after a lost reply (the caller retries on a connection error)
# neither duplicates the element nor resurrects it.
_SWAP = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""


class ListAcker:
    """Removes finished elements from their processing list (explicit mode)."""

    def __init__(self, redis_url: str, key: str, client: redis.Redis | None = None) -> None:
        self.key = key
        self._client = client or list_client(redis_url)
        self._swap = self._client.register_script(_SWAP)

    def ack_in(self, pipe: Pipeline, item: ListItem) -> None:
        """Queue the removal on ``pipe`` (put it in the same MULTI as the work's own writes)."""
        pipe.lrem(processing_key(self.key, item.partition), 1, item.raw)  # type: ignore[arg-type]

    def ack(self, items: Iterable[ListItem]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for item in items:
            self.ack_in(pipe, item)
        if len(pipe):
            pipe.execute()

    def replace(self, item: ListItem, raw: bytes) -> ListItem:
        """Swap the held element for an updated one (e.g. a retry counter), atomically; returns the new item.
        Safe to repeat after a lost reply (the swap happens once)."""
        proc = processing_key(self.key, item.partition)
        self._swap(keys=[proc, proc], args=[item.raw, raw])
        return ListItem(raw, item.partition)

    def move_to(self, item: ListItem, dest: str, raw: bytes | None = None) -> None:
        """Atomically take the element out of processing and LPUSH it (or ``raw``) onto ``dest``. Safe to
        repeat after a lost reply (the move happens once)."""
        self._swap(keys=[processing_key(self.key, item.partition), dest],
                   args=[item.raw, item.raw if raw is None else raw])

    def close(self) -> None:
        self._client.close()


class _AckPartition(StatelessSinkPartition[ListItem]):
    def __init__(self, acker: ListAcker) -> None:
        self._acker = acker

    def write_batch(self, items: list[ListItem]) -> None:
        self._acker.ack(items)

    def close(self) -> None:
        self._acker.close()


class AckSink(DynamicSink[ListItem]):
    """Acks every item that reaches it (explicit mode), one pipeline per batch: place it after the work."""

    def __init__(self, redis_url: str, key: str) -> None:
        self._url = redis_url
        self._key = key

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AckPartition:
        return _AckPartition(ListAcker(self._url, self._key))
