"""Redis side of the order-book collector: the books, ``bbo:{inst}``, the buffer list, ``system:monitoring``.

:class:`CollectorRedisSink` takes the collector's items and writes each batch in ONE pipeline:

* ``orderbook:{inst}`` hash (OKX; the other venues' books, same fields: ``orderbook:{exchange}:{inst}``,
  :func:`connectors.redis.keys.venue_book_key`) (docs/CONTRACTS.md fields: ``instrument_id``,
  ``latest_timestamp`` ISO-8601 UTC of the exchange time, ``asks``/``bids`` JSON ``[[price, size], ...]`` best
  first, ``checksum``, ``seq_id`` (empty when the venue sends none), ``status``), coalesced per book within the
  batch; a status change alone sets ``status``; a removed pair's hash is deleted; with
  ``ORDERBOOK_HASH_INTERVAL`` > 0 a book's levels are written at most once per interval, its newest state always
  last (:mod:`connectors.redis.hash_throttle`);
* ``bbo:{inst}`` (:class:`operators.bbo.Bbo`, newest per instrument in the batch): ``bid``, ``bid_venue``,
  ``ask``, ``ask_venue``, ``venues`` (JSON venue -> ``{"bid","ask","age_ms","status"}``), ``excluded`` (JSON
  list), ``timestamp`` (ISO-8601 UTC); deleted when no venue books the instrument any more;
* every :class:`BufferFrame` LPUSHed to ``ORDERBOOK_BUFFER_KEY`` in order, capped with LTRIM at
  ``orderbook_buffer_max`` (0: uncapped);
* :class:`connectors.redis.monitoring.MonitorReport` (the shards' gauges and counters) -> ``system:monitoring`` through
  :func:`connectors.redis.monitoring.queue_monitoring`, first in the batch's pipeline, so a gauge is in Redis no
  later than the book writes it describes; each sink partition is itself an owner
  (``<dataflow>/writer-<worker>``) of ``avg_processing_latency`` (ms, frame receipt -> hash write, over its
  last second, weighted by books written). A partition closed cleanly retires the owners it wrote; the same
  reports, and each written book's latency, go to the process's Prometheus series (:mod:`connectors.metrics`);
* OKX's books only: the push channels ``<inst>@depth`` (changed levels, ``seq``/``prev_seq``, checksum) and
  ``<inst>@depth5|20`` (top N, at most every 100 ms) as capped streams
  (:class:`connectors.redis.push_streams.DepthPublisher`), after the hash they describe; a batch that may not have
  been written makes every book's next event a snapshot.

Delivery: at-least-once per batch while Redis is up (hash writes are idempotent); a batch that cannot be written
after the client's retries is dropped and logged, the dataflow carries on. Its book writes are not lost: the
newest state of each ``orderbook:{inst}`` (levels, status, deletion) is kept, merged with later batches, and
written with the first batch after Redis is back, so a book that went stale or was removed during the outage
does not stay ``valid`` in the hash; buffer frames and monitoring counters of dropped batches are lost.
Unit of parallelism: one client per worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import msgspec
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from redis.exceptions import RedisError

from connectors import metrics
from connectors.books.items import BookState, BufferFrame
from connectors.redis.hash_throttle import HashThrottle, Plan
from connectors.redis.keys import bbo_key, venue_book_key
from connectors.redis.monitoring import MonitorReport, queue_monitoring
from connectors.redis.push_streams import DEFAULT_MAXLEN, DepthPublisher
from connectors.redis.sink import redis_client
from cryptoflow.logs import get_logger
from operators.bbo import Bbo
from operators.events import BookStatus, BookView, iso_ms

log = get_logger("connectors.redis.book_sink")
_json = msgspec.json.Encoder()


RedisItem = BookView | BookState | BufferFrame | MonitorReport | Bbo
LatencyObserver = Callable[[list[int]], None]
_LATENCY_EVERY_S = 1.0

def book_fields(view: BookView) -> dict[str, str]:
    return {
        "instrument_id": view.instrument,
        "latest_timestamp": iso_ms(view.ts_ms),
        "asks": _json.encode(view.asks).decode(),
        "bids": _json.encode(view.bids).decode(),
        "checksum": str(view.checksum),
        "seq_id": "" if view.seq_id is None else str(view.seq_id),
        "status": view.status.value,
    }


def bbo_fields(bbo: Bbo) -> dict[str, str]:
    venues = {name: {"bid": line.bid, "ask": line.ask, "age_ms": line.age_ms, "status": line.status}
              for name, line in bbo.venues}
    return {"bid": bbo.bid, "bid_venue": bbo.bid_venue, "ask": bbo.ask, "ask_venue": bbo.ask_venue,
            "venues": _json.encode(venues).decode(), "excluded": _json.encode(bbo.excluded).decode(),
            "timestamp": iso_ms(bbo.ts_ms)}


def _encoded(fields: dict[str, Any]) -> dict[str, str]:
    """A plan's fields as the hash takes them: the view held under ``asks`` becomes :func:`book_fields`, with
    the plan's status (a state change after the view wins)."""
    view = fields.get("asks")
    if type(view) is not BookView:
        return fields
    return {**book_fields(view), "status": fields["status"]}


class _Partition(StatelessSinkPartition[RedisItem]):
    def __init__(self, url: str, buffer_key: str, buffer_max: int, observe: LatencyObserver | None,
                 owner: str, stream_maxlen: int = DEFAULT_MAXLEN, venue: str = "okx",
                 hash_interval: float = 0.0) -> None:
        self._client = redis_client(url)
        self._throttle = HashThrottle(hash_interval)  # ORDERBOOK_HASH_INTERVAL (connectors.redis.hash_throttle)
        self._venue = venue
        self._depth = DepthPublisher(stream_maxlen)
        self._owner = owner
        self._owners: set[str] = set()  # every owner this partition reported for (retired at close)
        self._buffer_key = buffer_key
        self._buffer_max = buffer_max
        self._observe = observe
        self._lat_sum = 0
        self._lat_n = 0
        self._next_lat = 0.0
        self._down = False
        self._dropped = 0
        self._retry_at = 0.0
        self._unwritten: dict[str, Plan] = {}  # book writes of dropped batches

    def write_batch(self, items: list[RedisItem]) -> None:
        # book key -> (delete the hash first, fields to set); starts from what dropped batches could not write
        plans, self._unwritten = self._unwritten, {}
        recv: dict[str, tuple[str, int]] = {}  # book key -> (venue, receive time of the view)
        frames: list[str] = []
        monitors: list[MonitorReport] = []
        views: dict[str, BookView] = {}  # OKX's newest valid view per instrument, for the push streams
        bbos: dict[str, Bbo] = {}
        for item in items:
            if type(item) is BufferFrame:
                frames.append(item.text)
            elif type(item) is BookView:
                key = venue_book_key(item.venue, item.instrument)
                deleted = plans.get(key, (False, {}))[0]
                # encoded only if written (_encoded): a newer view in the batch, or the throttle, may drop it
                plans[key] = (deleted, {"asks": item, "status": item.status.value})
                recv[key] = (item.venue, item.recv_ns)
                if item.venue == "okx":
                    views[item.instrument] = item
            elif type(item) is BookState:
                key = venue_book_key(item.venue, item.instrument)
                if item.venue == "okx" and (item.removed or item.status in (BookStatus.SYNCING,
                                                                            BookStatus.RESYNCING)):
                    views.pop(item.instrument, None)
                    self._depth.forget(item.instrument)
                if item.removed:
                    plans[key] = (True, {})
                    recv.pop(key, None)
                else:
                    plan = plans.setdefault(key, (False, {}))
                    plan[1]["status"] = item.status.value
            elif type(item) is Bbo:
                bbos[item.instrument] = item
            elif type(item) is MonitorReport:
                monitors.append(item)
        if monitors:  # Prometheus counts what happened, whether or not Redis takes this batch
            metrics.record(monitors)
        if self._down and time.monotonic() < self._retry_at:
            self._dropped += len(items)  # Redis is away: do not stall the worker on every batch
            self._unwritten = plans
            self._depth.reset()
            return
        now = time.monotonic()
        if now >= self._next_lat and self._lat_n:
            monitors.append(MonitorReport(self._owner, means=(("avg_processing_latency",
                                                                 self._lat_sum / 1e6, self._lat_n),)))
            self._lat_sum = self._lat_n = 0
            self._next_lat = now + _LATENCY_EVERY_S
        plans = self._throttle.take(plans)
        recv = {key: vr for key, vr in recv.items() if key in plans}  # latency of the hashes written
        pipe = self._client.pipeline(transaction=False)
        if monitors:  # first: a gauge is never behind the book writes it describes
            queue_monitoring(pipe, monitors)
            self._owners.update(m.owner for m in monitors if m.owner)
        for key, (delete, fields) in plans.items():
            if delete:
                pipe.delete(key)
            if fields:
                pipe.hset(key, mapping=cast("dict[Any, Any]", _encoded(fields)))
        for inst, bbo in bbos.items():
            if bbo.removed:
                pipe.delete(bbo_key(inst))
            else:
                pipe.hset(bbo_key(inst), mapping=bbo_fields(bbo))  # type: ignore[arg-type]
        self._depth.publish(pipe, views.values())  # after the hashes: a snapshot from a hash never trails the stream
        if frames:
            pipe.lpush(self._buffer_key, *frames)
            if self._buffer_max:
                pipe.ltrim(self._buffer_key, 0, self._buffer_max - 1)
        if len(pipe):
            try:
                pipe.execute()
            except (RedisError, OSError) as err:
                # Redis away (after the client's own retries): drop this batch rather than stop the dataflow.
                # The book writes are kept for the next batch; a buffer consumer sees the gap and re-syncs.
                self._dropped += len(items)
                self._unwritten = plans
                self._depth.reset()
                self._retry_at = time.monotonic() + 1.0
                if not self._down:
                    log.warning("redis_write_failed", error=str(err), action="dropping batches until Redis is back")
                self._down = True
                return
            if self._down:
                log.warning("redis_write_recovered", dropped_items=self._dropped)
                self._down, self._dropped = False, 0
        if recv:
            done = time.time_ns()
            lats = [done - r for _, r in recv.values()]
            self._lat_sum += sum(lats)
            self._lat_n += len(lats)
            for venue in {v for v, _ in recv.values()}:
                metrics.observe_latency(venue, [done - r for v, r in recv.values() if v == venue])
            if self._observe is not None:
                self._observe(lats)

    def close(self) -> None:
        metrics.record((), retire=sorted(self._owners))
        if self._owners and not self._down:  # a clean stop: our shares leave the gauges now, not at expiry
            pipe = self._client.pipeline(transaction=False)
            queue_monitoring(pipe, (), retire=sorted(self._owners))
            try:
                pipe.execute()
            except (RedisError, OSError) as err:
                log.warning("monitoring_retire_failed", error=str(err), owners=len(self._owners))
        self._client.close()


class CollectorRedisSink(DynamicSink[RedisItem]):
    """See the module docstring. ``observe`` (benchmarks) receives the latencies (ns) of each written batch;
    ``dataflow`` names this sink's monitoring owners (``<dataflow>/writer-<worker index>``)."""

    def __init__(self, redis_url: str, buffer_key: str, buffer_max: int,
                 observe: LatencyObserver | None = None, dataflow: str = "orderbook_collector",
                 stream_maxlen: int = DEFAULT_MAXLEN, hash_interval: float = 0.0) -> None:
        self._args = (redis_url, buffer_key, buffer_max, observe)
        self._dataflow = dataflow
        self._stream_maxlen = stream_maxlen
        self._hash_interval = hash_interval

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(*self._args, owner=f"{self._dataflow}/writer-{worker_index}",
                          stream_maxlen=self._stream_maxlen, hash_interval=self._hash_interval)
