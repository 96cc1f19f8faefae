"""Where backfilled klines go: ``kline`` points written synchronously, and the resumable checkpoint.

Points are the live path's (:func:`connectors.redis.market_sink.kline_point`: same measurement, tags and open-time
stamp, so a backfilled minute and a live one are the same point; ``source=venue``, ``complete=true``), written
by :class:`connectors.influx.sync.SyncInfluxWriter` (the live path's synchronous writer): a page's write returns
only once InfluxDB accepted it, so the checkpoint never runs ahead of the data. OKX and Bybit give no trade
count: their points carry no ``trades`` field rather than a false 0 (a live point's count for that minute is
kept).

Checkpoint: Redis hash ``backfill:{exchange}:{symbol}:{timeframe}`` with ``from`` and ``to`` (epoch ms, the
range asked), ``next`` (the first open time not yet written), ``done`` (``true``/``false``) and ``updated_at``.
A run asking the same range resumes at ``next``; another range starts over (and replaces the hash).
"""

from __future__ import annotations

import time
from typing import Any, cast

import msgspec
import redis

from connectors.influx.writer import InfluxPoint
from connectors.redis.market_sink import kline_point
from operators.events import Kline, epoch_ms, iso_ms

NO_TRADE_COUNT = frozenset({"okx", "bybit"})


def backfill_point(k: Kline) -> InfluxPoint:
    point = kline_point(k)
    if k.venue in NO_TRADE_COUNT:
        point = msgspec.structs.replace(point, fields=tuple(f for f in point.fields if f[0] != "trades"))
    return point


class Checkpoint(msgspec.Struct, frozen=True):
    start_ms: int
    end_ms: int
    next_ms: int
    done: bool
    updated_ms: int = 0  # when it was saved (0: unknown); written as ``updated_at`` (ISO), read back here


def _saved_ms(iso: str | None) -> int:
    try:
        return epoch_ms(iso) if iso else 0
    except ValueError:
        return 0


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
            return Checkpoint(int(fields["from"]), int(fields["to"]), int(fields["next"]), fields["done"] == "true",
                              _saved_ms(fields.get("updated_at")))
        except (KeyError, ValueError):
            return None  # none, or not ours: start over

    def save(self, exchange: str, inst: str, timeframe: str, cp: Checkpoint) -> None:
        self._redis.hset(self.key(exchange, inst, timeframe), mapping={
            "from": cp.start_ms, "to": cp.end_ms, "next": cp.next_ms, "done": "true" if cp.done else "false",
            "updated_at": iso_ms(int(time.time() * 1000))})
