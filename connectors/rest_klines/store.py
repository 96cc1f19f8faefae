"""Where backfilled klines go: ``kline`` points written synchronously, and the resumable checkpoint.

Points are the live path's (:func:`connectors.market_sinks.kline_point`: same measurement, tags and open-time
stamp, so a backfilled minute and a live one are the same point; ``source=venue``, ``complete=true``), written
with influxdb-client's synchronous API: :meth:`KlineStore.write` returns only once InfluxDB accepted the page,
so the checkpoint never runs ahead of the data. OKX and Bybit give no trade count: their points carry no
``trades`` field rather than a false 0 (a live point's count for that minute is kept).

Checkpoint: Redis hash ``backfill:{exchange}:{symbol}:{timeframe}`` with ``from`` and ``to`` (epoch ms, the
range asked), ``next`` (the first open time not yet written), ``done`` (``true``/``false``) and ``updated_at``.
A run asking the same range resumes at ``next``; another range starts over (and replaces the hash).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

import msgspec
import redis
import urllib3

from connectors.influx import InfluxPoint, to_line
from connectors.market_sinks import kline_point
from cryptoflow.settings import mask_url
from operators.events import Kline, iso_ms

NO_TRADE_COUNT = frozenset({"okx", "bybit"})


def backfill_point(k: Kline) -> InfluxPoint:
    point = kline_point(k)
    if k.venue in NO_TRADE_COUNT:
        point = msgspec.structs.replace(point, fields=tuple(f for f in point.fields if f[0] != "trades"))
    return point


class StoreError(Exception):
    """InfluxDB did not take a page (unreachable, or it refused the write); nothing after it was checkpointed."""


class KlineStore:
    """Synchronous ``kline`` writes to one bucket (:class:`StoreError` when a page is not taken)."""

    def __init__(self, url: str, token: str, org: str, bucket: str, *, timeout_ms: int = 30_000) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self._client = InfluxDBClient(url=url, token=token or "unused", org=org, timeout=timeout_ms)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        self._bucket, self._org, self._url = bucket, org, url
        self.points_written = 0

    def write(self, klines: Sequence[Kline]) -> None:
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        lines = [line for line in (to_line(backfill_point(k)) for k in klines) if line]
        if not lines:
            return
        try:
            self._api.write(self._bucket, self._org, record=lines, write_precision=WritePrecision.MS)  # type: ignore[arg-type]  # the enum's values are str
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
            msg = f"InfluxDB at {mask_url(self._url)} did not take {len(lines)} kline points: {err}"
            raise StoreError(msg[:500]) from None
        self.points_written += len(lines)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]


class Checkpoint(msgspec.Struct, frozen=True):
    start_ms: int
    end_ms: int
    next_ms: int
    done: bool


class Checkpoints:
    """The ``backfill:*`` hashes (see the module docstring)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @staticmethod
    def key(exchange: str, inst: str, timeframe: str) -> str:
        return f"backfill:{exchange}:{inst}:{timeframe}"

    def load(self, exchange: str, inst: str, timeframe: str) -> Checkpoint | None:
        raw = cast(dict[Any, Any], self._redis.hgetall(self.key(exchange, inst, timeframe)))
        fields = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                  for k, v in raw.items()}
        try:
            return Checkpoint(int(fields["from"]), int(fields["to"]), int(fields["next"]), fields["done"] == "true")
        except (KeyError, ValueError):
            return None  # none, or not ours: start over

    def save(self, exchange: str, inst: str, timeframe: str, cp: Checkpoint) -> None:
        self._redis.hset(self.key(exchange, inst, timeframe), mapping={
            "from": cp.start_ms, "to": cp.end_ms, "next": cp.next_ms, "done": "true" if cp.done else "false",
            "updated_at": iso_ms(int(time.time() * 1000))})
