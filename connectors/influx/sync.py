"""A Bytewax sink that has written its batch to InfluxDB when ``write_batch`` returns (market_data's klines).

Why not :class:`connectors.influx.writer.InfluxSink`: that one hands points to influxdb-client's background batching
and returns, so a Bytewax epoch can commit its recovery snapshot while its points are still in memory — a
``kill -9`` then loses them for good (the restart resumes after them). Here the epoch cannot commit before the
server accepted the points, so with recovery a restart rewrites exactly the points after the last snapshot:
exactly once, given that a rewrite of the same measurement, tags and time is idempotent.

By construction, not by timing: Bytewax 0.21.1 commits an epoch when its *snapshot* stream has passed it (its
``recovery.rs``: output progress is not monitored), so a ``DynamicSink`` whose ``write_batch`` has not yet run
for an epoch's points does not hold the commit back. This sink is therefore a ``FixedPartitionedSink`` with one
partition: Bytewax calls its ``snapshot()`` after the epoch's last ``write_batch`` and commits only after that
snapshot, and ``write_batch`` returns only once the points are written. The stream it takes is
``(partition, points)`` pairs (:meth:`SyncInfluxSink.split`, one per batch); with several workers or processes
every batch goes to the partition's worker — a few closed klines per instrument and minute, not a cost.

Delivery: each batch is one synchronous ``/api/v2/write`` (:class:`SyncInfluxWriter`; line protocol by
:func:`connectors.influx.writer.to_line`), retried with capped backoff for up to ``max_wait_s``; past that the batch is
dropped and logged as an error (an InfluxDB outage must not stall the dataflow's Redis output forever). Unit
of parallelism: one writer, on the worker that owns the partition. Cost: one HTTP round trip per batch that holds
points (closed klines are a few per minute per instrument live; a catch-up run groups many into one batch).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import urllib3
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from connectors.batch_partitions import BatchPartitions
from connectors.influx.writer import InfluxConfig, InfluxPoint, to_line
from cryptoflow.logs import get_logger
from cryptoflow.settings import mask_url

log = get_logger("connectors.influx.sync")


class InfluxWriteError(Exception):
    """InfluxDB did not take a write (unreachable, or it refused it); the message says where and how many."""


class SyncInfluxWriter:
    """Synchronous writes to one bucket: :meth:`write` returns once InfluxDB accepted the points, else raises
    :class:`InfluxWriteError` (no retry here: the caller decides). Used by this module's sink and by the kline
    backfill (:mod:`connectors.rest_klines`), whose checkpoint must never run ahead of the data."""

    def __init__(self, url: str, token: str, org: str, bucket: str, *, timeout_ms: int = 10_000) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient  # heavy: only when enabled
        from influxdb_client.client.write_api import SYNCHRONOUS

        self._client = InfluxDBClient(url=url, token=token or "unused", org=org, timeout=timeout_ms)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        self._bucket, self._org, self._url = bucket, org, url
        self.points_written = 0

    def write(self, points: Iterable[InfluxPoint]) -> None:
        self.write_lines([line for line in map(to_line, points) if line])

    def write_lines(self, lines: Sequence[str]) -> None:
        """One ``/api/v2/write`` of pre-serialized lines (nothing when there are none)."""
        if not lines:
            return
        from influxdb_client.client.exceptions import InfluxDBError
        from influxdb_client.domain.write_precision import WritePrecision

        try:
            self._api.write(self._bucket, self._org, record=list(lines), write_precision=WritePrecision.MS)  # type: ignore[arg-type]  # the enum's values are str
        except (InfluxDBError, urllib3.exceptions.HTTPError, OSError) as err:
            msg = f"InfluxDB at {mask_url(self._url)} did not take {len(lines)} points: {err}"
            raise InfluxWriteError(msg[:500]) from None
        self.points_written += len(lines)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]


class _Partition(StatefulSinkPartition[list[InfluxPoint], None]):
    def __init__(self, config: InfluxConfig, max_wait_s: float) -> None:
        self._writer = SyncInfluxWriter(str(config.url), config.token, config.org, config.bucket)
        self._max_wait = max_wait_s

    def write_batch(self, values: list[list[InfluxPoint]]) -> None:
        lines = [line for points in values for line in map(to_line, points) if line]
        if not lines:
            return
        deadline = time.monotonic() + self._max_wait
        delay = 0.05
        while True:
            try:
                self._writer.write_lines(lines)
                return
            except InfluxWriteError as err:
                if time.monotonic() + delay > deadline:
                    log.error("influx_points_dropped", points=len(lines), error=str(err)[:200],
                              reason=f"InfluxDB did not accept them within {self._max_wait} s")
                    return
                log.warning("influx_write_retry", points=len(lines), error=str(err)[:200], retry_in_s=delay)
                time.sleep(delay)  # a sink may wait: the epoch (and its snapshot) must not end before the write
                delay = min(delay * 2, 2.0)

    def snapshot(self) -> None:
        """Nothing to keep: its being called after the epoch's writes is what makes the commit wait for them."""
        return None

    def close(self) -> None:
        self._writer.close()


class SyncInfluxSink(BatchPartitions[InfluxPoint], FixedPartitionedSink[list[InfluxPoint], None]):
    """See the module docstring. Build only when InfluxDB is configured; feed it :meth:`split`'s pairs (one
    partition: :class:`connectors.batch_partitions.BatchPartitions` without a key)."""

    def __init__(self, config: InfluxConfig, max_wait_s: float = 30.0) -> None:
        BatchPartitions.__init__(self)
        self._config = config
        self._max_wait = max_wait_s

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Partition:
        return _Partition(self._config, self._max_wait)
