"""The exchange's own trades from Redis Streams ``trades:{inst}``: a Bytewax source for ``market_data``.

:class:`LocalTradesSource` has ``LOCAL_STREAM_SHARDS`` fixed partitions; each owns the monitored instruments
(``config:trading_pairs``, re-read every ``TRADING_PAIRS_POLL_INTERVAL`` s, the first ``MAX_TRADING_PAIRS``
in sorted order) whose CRC32 falls on it, and reads their streams with one ``XREAD COUNT LOCAL_STREAM_BATCH
BLOCK LOCAL_STREAM_BLOCK_MS``. Bytewax sources must not block (BYTEWAX_NOTES.md): the block only waits
while every stream is empty, a few milliseconds, so the worker's other steps (windows, timers, sinks) keep
running; with entries waiting, XREAD returns at once with up to ``LOCAL_STREAM_BATCH`` per stream.

Read-ahead: when a read filled ``LOCAL_STREAM_BATCH`` for some stream (a backlog), the next XREAD (no BLOCK)
is sent before the batch goes down the dataflow, and its reply is taken at the next call. Redis serves one
command at a time, and the sinks' writes of the batch just processed reach it before a read sent after them:
without the read-ahead the worker waited for those writes and then for the read, ~25 % of its time at full
batches. The read-ahead's entries are not emitted before that next call, so the snapshot's offsets are still
those of the entries emitted (a crash re-reads them).

Delivery: exactly once into the dataflow's state with Bytewax recovery. The snapshot is, per stream, the id
of the last entry returned by ``next_batch`` (and per instrument the last ``trade_id``); a resumed partition
reads on right after it, so the entries after the last committed snapshot are read again together with the
state of that same snapshot, never counted twice nor lost. The sinks' writes are idempotent (hashes, points
keyed by time), so the outputs end exactly as without the crash. A new instrument's stream is read from its
beginning (the exchange's whole history: every kline complete); a removed one keeps its position, so adding
it back continues where it stopped. An entry whose ``trade_id`` is not above the last one (a producer that
retried an XADD) is dropped and counted (``local_duplicate_trades``); junk entries are rejected, counted and
logged once per reason (:mod:`connectors.local.wire`). Redis unreachable: retried with capped backoff, the
position kept. Unit of parallelism: the partition (one instrument's stream is read by one partition, in order).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from redis.connection import Connection
from redis.exceptions import RedisError

from connectors import stopping
from connectors.local.wire import VENUE, parse_entries, stream_key
from connectors.market.source import MarketSourceItem, MarketStats
from connectors.redis.client import sync_client
from connectors.redis.pairs import PairsConfig
from connectors.untrusted import RejectTally
from connectors.ws.budget import Backoff
from connectors.ws.shard import shard_of  # the WebSocket shards' assignment: stable across runs and processes
from cryptoflow.logs import get_logger
from operators.instruments import select_pairs
from operators.kline_steps import InstrumentRemoved

log = get_logger("connectors.local.source")
LocalState = tuple[dict[str, str], dict[str, int]]  # (instrument -> last stream id, instrument -> last trade_id)
# XREAD's reply as the server sends it: {stream: [[id, [field, value, ...]], ...]} (RESP3; RESP2 a list of
# [stream, entries]). redis-py's own callback turns each entry into a dict in Python (a third of the source's
# cost); ours keeps the raw reply, and wire.parse_flat reads the flat field list without building a dict.
XReadReply = dict[bytes, object] | list[list[object]]
_BACKOFF_S = (0.05, 5.0)  # first retry, cap: capped exponential with jitter (connectors.ws.budget)


def _raw_reply(response: object, **_options: object) -> object:
    return response


@dataclass(frozen=True)
class LocalConfig:
    """Where the streams and pairs are and how to read them (:func:`cryptoflow.connector_configs.local_config`)."""

    pairs: PairsConfig  # its Redis holds the streams too
    batch: int
    block_ms: int
    shards: int
    stats_interval: float = 1.0


class _Partition(StatefulSourcePartition[MarketSourceItem, LocalState]):
    def __init__(self, config: LocalConfig, index: int, resume: LocalState | None) -> None:
        self._cfg = config
        self._index = index
        offsets, last_ids = resume if resume is not None else ({}, {})
        self._offsets: dict[str, str] = dict(offsets)
        self._last_ids: dict[str, int] = dict(last_ids)
        self._client = sync_client(config.pairs.redis_url, decode_responses=False, socket_timeout=5,
                                   socket_connect_timeout=5)
        self._client.set_response_callback("XREAD", _raw_reply)
        self._instruments: dict[bytes, str] = {}  # stream key -> instrument, the ones this partition reads
        self._ahead: Connection | None = None  # a read-ahead XREAD sent on it, its reply not yet taken
        self._next_poll = 0.0
        self._next_stats = 0.0
        self._awake: datetime | None = None
        self._backoff = Backoff(*_BACKOFF_S)
        self._reconnects = 0
        self._last_check_ms = 0
        self._counters: Counter[str] = Counter()
        self._rejects = RejectTally(log, "market_data", event="local_entry_rejected", venue=VENUE, shard=index)
        if resume is not None:
            log.info("local_source_resumed", shard=index, streams=len(offsets))

    # --- pairs --------------------------------------------------------------------------------------------
    def _poll_pairs(self, out: list[MarketSourceItem]) -> None:
        raw = cast("set[bytes]", self._client.smembers(self._cfg.pairs.key))
        members = {m.decode("utf-8", "replace") for m in raw}
        selected, _malformed = select_pairs(members, self._cfg.pairs.limit)  # (the WebSocket pollers report those)
        mine = {stream_key(i).encode(): i for i in selected if shard_of(i, self._cfg.shards) == self._index}
        for key, inst in self._instruments.items():
            if key not in mine:
                out.append(InstrumentRemoved(VENUE, inst))
        added = [i for k, i in mine.items() if k not in self._instruments]
        if added or len(mine) != len(self._instruments):
            self._counters["subscription_changes"] += len(added) + len(set(self._instruments) - set(mine))
            log.info("local_streams", shard=self._index, streams=sorted(mine.values()), added=sorted(added))
        self._instruments = mine
        self._last_check_ms = time.time_ns() // 1_000_000

    # --- reading ------------------------------------------------------------------------------------------
    def _read(self, out: list[MarketSourceItem]) -> None:
        """The read-ahead's reply if one was sent (module docstring); else one blocking XREAD and, when it
        returned entries, one more without blocking: a producer's pipeline of XADDs wakes the blocked read at its
        first entry, and the rest (in Redis microseconds later) would otherwise wait a whole pass of the dataflow
        (~2 ms) for the next call: one batch, not two. A full batch sends the next read ahead."""
        full = self._take_ahead(out) if self._ahead is not None else None
        if full is None:  # no read-ahead, or it found nothing waiting: read as usual
            full = self._read_once(out, self._cfg.block_ms) and self._read_once(out, None)
        if full and self._instruments:
            self._send_ahead()

    def _streams(self) -> dict[bytes, str]:
        return {key: self._offsets.get(inst, "0-0") for key, inst in self._instruments.items()}

    def _send_ahead(self) -> None:
        streams = self._streams()
        pool = self._client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_command("XREAD", "COUNT", self._cfg.batch, "STREAMS", *streams, *streams.values())  # type: ignore[no-untyped-call]
        except BaseException:
            pool.release(conn)
            raise
        self._ahead = conn

    def _take_ahead(self, out: list[MarketSourceItem]) -> bool | None:
        """The read-ahead's entries into ``out``: whether a stream's batch was full; None when it read nothing."""
        conn, self._ahead = self._ahead, None
        assert conn is not None
        try:
            reply = cast("XReadReply", conn.read_response())  # redis-py drops the connection on an error
        finally:
            self._client.connection_pool.release(conn)
        return self._accept(reply, out) if reply else None

    def _read_once(self, out: list[MarketSourceItem], block_ms: int | None) -> bool:
        """One XREAD; True when it returned entries (the first call) or filled a stream's batch (the second)."""
        streams = self._streams()
        if not streams:
            return False
        reply = cast("XReadReply", self._client.xread(streams, count=self._cfg.batch,  # type: ignore[arg-type]
                                                      block=block_ms))
        if not reply:
            return False
        full = self._accept(reply, out)
        return full or block_ms is not None

    def _accept(self, reply: XReadReply, out: list[MarketSourceItem]) -> bool:
        """Parse one XREAD reply into ``out`` and move the offsets; whether some stream filled its batch."""
        recv_ns = time.time_ns()
        full = False
        # RESP3 (redis-py's default from 8): a map stream -> entries; RESP2: a list of [stream, entries]
        streams_read = reply.items() if isinstance(reply, dict) else reply
        for key, entries in cast("list[tuple[bytes, list[tuple[bytes, list[bytes]]]]]", streams_read):
            inst = self._instruments.get(key)
            if inst is None:  # removed since a read-ahead was sent: its position stays where it was
                continue
            full = full or len(entries) >= self._cfg.batch
            batch = parse_entries(inst, entries, self._last_ids.get(inst), recv_ns)
            out.extend(batch.trades)
            for entry_id, why in batch.rejected:
                self._rejects.add(why, instrument=inst, entry=entry_id.decode())
            if batch.duplicates:
                self._counters["local_duplicate_trades"] += batch.duplicates
            if batch.last_id is not None:
                self._last_ids[inst] = batch.last_id
            self._offsets[inst] = entries[-1][0].decode()
        return full

    def _stats(self, now: float, out: list[MarketSourceItem]) -> None:
        if now < self._next_stats:
            return
        self._next_stats = now + self._cfg.stats_interval
        self._counters.update(self._rejects.drain())
        counters = tuple(sorted(self._counters.items()))
        self._counters.clear()
        # connections 0: a Redis reader is no WebSocket (shard_report also sums this into websocket_connections)
        out.append(MarketStats(VENUE, "local", self._index, time.time_ns() // 1_000_000, 0, self._reconnects,
                               len(self._instruments), counters, self._last_check_ms))

    def next_batch(self) -> list[MarketSourceItem]:
        if stopping.stop_requested():  # SIGINT/SIGTERM: end the input; the open minutes stay in the state
            raise StopIteration
        out: list[MarketSourceItem] = []
        now = time.monotonic()
        try:
            if now >= self._next_poll:
                self._next_poll = now + self._cfg.pairs.interval
                self._poll_pairs(out)
            self._read(out)
        except (RedisError, OSError) as err:
            delay = self._backoff.next_delay()
            self._reconnects += 1
            self._next_poll = 0.0
            log.warning("local_read_failed", shard=self._index, error=str(err)[:200], retry_in_s=round(delay, 3))
            self._awake = datetime.now(UTC) + timedelta(seconds=delay)
        else:
            self._backoff.reset()
            # nothing to read: sleep until the next pairs poll instead of being called every millisecond
            self._awake = None if self._instruments else datetime.now(UTC) + timedelta(seconds=self._cfg.pairs.interval)
        self._stats(now, out)
        return out

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> LocalState:
        return dict(self._offsets), dict(self._last_ids)

    def close(self) -> None:
        if self._ahead is not None:  # a reply never taken: not worth waiting for
            self._ahead.disconnect()  # type: ignore[no-untyped-call]
            self._client.connection_pool.release(self._ahead)
        self._client.close()


class LocalTradesSource(FixedPartitionedSource[MarketSourceItem, LocalState]):
    """Trades of the exchange's own matching engine (see the module docstring)."""

    def __init__(self, config: LocalConfig) -> None:
        self.config = config

    def list_parts(self) -> list[str]:
        return [f"local-{i}" for i in range(self.config.shards)]

    def build_part(self, step_id: str, for_part: str, resume_state: LocalState | None) -> _Partition:
        return _Partition(self.config, int(for_part.removeprefix("local-")), resume_state)
