"""A reliable Bytewax source over a Redis list (producers LPUSH, we take from the right: FIFO).

Each element taken is moved atomically (one Lua script per batch: RPOP + LPUSH, i.e. LMOVE, up to
``batch_size`` elements in ONE round trip) from ``{key}`` to the partition's processing list
``{key}:processing:{partition}``, so a ``kill -9`` at any moment loses nothing: an element is always in the
source list, in a processing list, or done.

Two acknowledgement modes (:class:`AckMode`):

``explicit`` (the email sender)
    Items carry the raw element and their partition. Whoever finishes the work removes the element from the
    processing list with :class:`connectors.redis.lists.ListAcker` (``LREM``), ideally in the same MULTI as the
    work's own write (see :meth:`connectors.redis.lists.ListAcker.ack_in`); :class:`connectors.redis.lists.AckSink`
    acks whatever reaches it. On start, the leftovers of the partition's processing list (taken by a run that
    died before acking) are delivered again, oldest first, before new elements. Guarantee: at-least-once; an
    element is delivered again only if its run died (or its connection dropped while the move's reply was in
    flight — then at the next start) between taking it and its ack, so duplicates are bounded by the un-acked
    work at the crash. With ``max_in_flight`` the partition takes new elements only while its processing list is
    shorter than that (back-pressure for slow sinks).

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

Poison elements (both modes): an element that makes the dataflow crash (or that its sink never finishes)
would be delivered again at every start, forever. The partition counts deliveries of leftovers in the hash
``{key}:processing:{partition}:deliveries`` (field: the offset in recovery mode, the SHA-1 of the element in
explicit mode; an element not in it has been delivered once). At start, one Lua script reads the leftovers with
their counts and drops the fields of everything finished since; each leftover is counted as it is delivered
again (one pipeline per batch). A leftover already delivered ``max_deliveries`` times (``LIST_MAX_DELIVERIES``)
is not delivered again: it goes to the list ``{key}:dead`` as JSON ``{"raw": <the element as text>, "reason":
"...", "dead_at": <ISO-8601 UTC>, "deliveries": N}`` (plus ``offset`` in recovery mode). In explicit mode it is
also removed from the processing list; in recovery mode it stays there, marked ``dead`` in the hash, and is
skipped, so the offset arithmetic is untouched. A leftover delivered again at an earlier start and still not
finished is a *suspect*: suspects are delivered one at a time (explicit mode: each once the previous one is
acked, or after ``suspect_wait`` seconds), so a crash on one does not count against the elements behind it.
So a normal restart (leftovers delivered once more) never dead-letters anything, and a crash loop on one
element ends after ``max_deliveries`` starts with that element dead and the rest processed. In recovery mode
the dataflow's progress is known only from committed snapshots, so the frames before the poison frame (since
the last commit) are delivered again at every start too; to tell them apart, the partition records the suspect
it delivered last (field ``last``, cleared as soon as it delivers anything after it): a frame goes dead at
``max_deliveries`` only if the previous run died right after delivering it alone, otherwise at twice that (a
crash further down the dataflow, behind later frames, still ends the loop, possibly taking a few innocent
frames with it — all kept in the dead list for replay; the analysis books re-sync from the collector's hash).
A clean stop (:func:`connectors.stopping.stop_requested`) ends the input (``StopIteration``); Bytewax then
drains the dataflow and closes the sinks. Leftovers not yet delivered are not counted.

``next_batch`` never waits for data: it makes at most one Redis round trip (bounded by the socket timeout)
and returns everything that round trip brought; when nothing was ready it asks to be woken after
``poll_interval``; when Redis is unreachable or failing over (:func:`connectors.redis.client.is_retryable`) it
logs once per outage (``redis_list_unavailable`` ... ``redis_list_recovered``) and backs off (capped) without
raising. Not for Redis Cluster (the script touches keys it derives).
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import cast

import orjson
import redis
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.redis.client import is_retryable
from connectors.redis.list_scripts import BURY, DELIVER, LOAD, MOVE, TRIM
from connectors.redis.lists import (
    DEFAULT_MAX_DELIVERIES,
    AckMode,
    ListItem,
    dead_key,
    deliveries_key,
    list_client,
    offset_key,
    processing_key,
)
from connectors.stopping import stop_requested
from cryptoflow.logs import get_logger

log = get_logger("redis_list")


class _Partition(StatefulSourcePartition[ListItem, int | None]):
    def __init__(self, src: ReliableRedisListSource, part: str, resume: int | None) -> None:
        self._src = src
        self._part = part
        self._client = list_client(src.redis_url, socket_timeout=src.socket_timeout)
        self._move = self._client.register_script(MOVE)
        self._trim = self._client.register_script(TRIM)
        self._load = self._client.register_script(LOAD)
        self._bury = self._client.register_script(BURY)
        self._proc = processing_key(src.key, part)
        self._dkey = deliveries_key(src.key, part)
        self._deliveries: dict[str, int] = {}  # leftovers: field -> deliveries before this start
        self._burials: deque[tuple[ListItem, int]] = deque()  # leftovers to dead-letter, with their count
        self._deliver = self._client.register_script(DELIVER)
        self._suspect: tuple[ListItem, float] | None = None  # explicit mode: the suspect delivered last, when
        self._last_marked = False  # recovery mode: the field 'last' names the suspect delivered last
        self._counted = src.ack is AckMode.RECOVERY
        self._offkey = offset_key(src.key, part) if self._counted else ""
        self._resume = resume
        self._pending: deque[ListItem] | None = None  # leftovers still to emit; None: not loaded yet
        self._emitted = 0  # recovery mode: offset of the next element to emit
        self._snapshots: deque[int] = deque()
        self._awake: datetime | None = None
        self._failures = 0

    # -- start-up: what the processing list holds from an earlier run ----------------------------------
    def _field(self, item: ListItem) -> str:
        return str(item.offset) if self._counted else hashlib.sha1(item.raw, usedforsecurity=False).hexdigest()

    def _load_leftovers(self) -> None:
        got = self._load(keys=[self._proc, self._offkey, self._dkey],
                         args=[self._src.max_deliveries, "" if self._resume is None else self._resume])
        count, base = int(got[0]), int(got[1])
        if self._counted and self._resume is not None:
            if self._resume < base:
                log.error("redis_list_resume_gap", key=self._src.key, partition=self._part,
                          resume_offset=self._resume, oldest_held=base)
            elif self._resume > count:
                log.warning("redis_list_resume_ahead", key=self._src.key, partition=self._part,
                            resume_offset=self._resume, count=count)
        pending: deque[ListItem] = deque()
        for i in range(2, len(got), 3):
            off, raw, deliveries = int(got[i]), got[i + 1], int(got[i + 2])
            item = ListItem(raw, self._part, off if self._counted else None)
            if deliveries < 0:
                self._burials.append((item, -deliveries))
            else:
                pending.append(item)
                self._deliveries[self._field(item)] = deliveries
        self._pending = pending
        if self._counted:
            self._emitted = count
        if pending:
            log.info("redis_list_redeliver", key=self._src.key, partition=self._part, items=len(pending),
                     suspects=sum(1 for d in self._deliveries.values() if d >= 2))

    def _bury_dead(self) -> None:
        """Move each element delivered ``max_deliveries`` times to the dead list (idempotent per element)."""
        mode = "recovery" if self._counted else "explicit"
        while self._burials:
            item, deliveries = self._burials[0]
            entry = orjson.dumps({
                "raw": item.raw.decode("utf-8", "replace"),
                "reason": f"delivered {deliveries} times without being finished (LIST_MAX_DELIVERIES)",
                "dead_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "deliveries": deliveries,
                **({"offset": item.offset} if item.offset is not None else {}),
            })
            self._bury(keys=[self._proc, self._dkey, dead_key(self._src.key)],
                       args=[self._field(item), item.raw, entry, mode])
            self._burials.popleft()
            log.error("redis_list_dead_lettered", key=self._src.key, partition=self._part, offset=item.offset,
                      deliveries=deliveries, dead_list=dead_key(self._src.key))

    # -- Bytewax contract ------------------------------------------------------------------------------
    def next_batch(self) -> list[ListItem]:
        if stop_requested():  # a clean stop: end of input; Bytewax drains the dataflow and closes the sinks
            raise StopIteration
        try:
            if self._pending is None:
                self._load_leftovers()
            assert self._pending is not None
            if self._burials:
                self._bury_dead()
            if self._pending or self._suspect is not None:
                out = self._next_leftovers()
                self._ok(idle=not out)
                return out
            if self._last_marked:  # the run went on past the last suspect: it was not the crash point
                self._client.hdel(self._dkey, "last")
                self._last_marked = False
            if self._counted:
                self._maybe_trim()
            got = self._move(keys=[self._src.key, self._proc, self._offkey],
                             args=[self._src.batch_size, self._src.max_in_flight or 0])
            raws: list[bytes] = got[1:]
            # Recovery mode: if the gap read below fails, the next call finds the same gap again.
            out = (self._with_offsets(int(got[0]), raws) if self._counted
                   else [ListItem(raw, self._part) for raw in raws])
        except redis.RedisError as err:  # unreachable, or failing over (READONLY, no master yet): back off
            if not is_retryable(err):
                raise
            self._failed(err)
            return []
        self._ok(idle=not out)
        return out

    def _next_leftovers(self) -> list[ListItem]:
        """Leftovers delivered for the first time again go in batches; a *suspect* (already delivered again at an
        earlier start and still not finished) goes alone, so that a crash on it does not count against the
        elements behind it. Explicit mode also waits (at most ``suspect_wait``) until the previous suspect is
        finished (no longer held) before delivering the next one. Each delivery is counted as it is made."""
        assert self._pending is not None
        prev = b""
        if self._suspect is not None:
            item, since = self._suspect
            if time.monotonic() - since < self._src.suspect_wait:
                prev = item.raw
        if not self._pending:
            if prev and self._client.lpos(self._proc, prev) is not None:  # type: ignore[arg-type]
                return []
            self._suspect = None
            return []
        head = self._pending[0]
        field = self._field(head)
        if self._deliveries[field] >= 2:
            args: list[bytes | str | int] = [prev, field, self._deliveries[field] + 1, "1" if self._counted else ""]
            if not int(self._deliver(keys=[self._proc, self._dkey], args=args)):
                return []  # the previous suspect is still being worked on
            self._last_marked = self._counted
            self._pending.popleft()
            self._suspect = None if self._counted else (head, time.monotonic())
            return [head]
        self._suspect = None
        out: list[ListItem] = []
        for item in self._pending:
            if len(out) >= self._src.batch_size or self._deliveries[self._field(item)] >= 2:
                break
            out.append(item)
        pipe = self._client.pipeline(transaction=False)
        for item in out:
            pipe.hset(self._dkey, self._field(item), self._deliveries[self._field(item)] + 1)
        if self._last_marked:  # the run went on past the last suspect: it was not the crash point
            pipe.hdel(self._dkey, "last")
        pipe.execute()
        self._last_marked = False
        for _ in out:
            self._pending.popleft()
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
        if self._failures:
            log.warning("redis_list_recovered", key=self._src.key, partition=self._part, failures=self._failures)
        self._failures = 0
        self._awake = datetime.now(UTC) + self._src.poll_interval if idle else None

    def _failed(self, err: Exception) -> None:
        self._failures += 1
        delay = min(self._src.backoff_max, 0.1 * 2 ** min(self._failures, 10))
        if self._failures == 1:  # one line per outage or failover; redis_list_recovered ends it
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
        # Nothing to release: the processing list is the state, and a leftover is counted only when delivered.
        self._client.close()


class ReliableRedisListSource(FixedPartitionedSource[ListItem, int | None]):
    """FIFO consumer of the Redis list ``key`` that loses nothing on a crash (see the module docstring).

    ``ack="explicit"``: acknowledge each item with :class:`connectors.redis.lists.ListAcker` /
    :class:`connectors.redis.lists.AckSink` once its work is done.
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
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        suspect_wait: float = 60.0,
    ) -> None:
        if partitions < 1 or batch_size < 1 or keep_snapshots < 1 or max_deliveries < 2:
            msg = f"partitions, batch_size and keep_snapshots must be >= 1 and max_deliveries >= 2, got " \
                  f"{partitions}, {batch_size}, {keep_snapshots}, {max_deliveries}"
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
        self.max_deliveries = max_deliveries
        self.suspect_wait = suspect_wait

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        return _Partition(self, for_part, resume_state if self.ack is AckMode.RECOVERY else None)
