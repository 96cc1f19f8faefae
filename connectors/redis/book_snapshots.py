"""Book snapshots from the collector's ``orderbook:{inst}`` hash, for a buffer-list consumer that lost the chain.

The buffer list carries raw frames only; the collector sends a snapshot frame when it (re)subscribes, not when
a consumer starts late or meets a gap (a frame trimmed by ``ORDERBOOK_BUFFER_MAX``, a batch the collector could
not write). :class:`HashBookSnapshots` turns the hash the collector keeps (the whole book, its ``seq_id`` and
``status``) into a snapshot :class:`~operators.events.BookDelta`: applied first, it lets the book go on from the
first frame that chains to that ``seq_id`` (older frames are skipped as already contained).

Only hashes with ``status=valid`` and a ``seq_id`` are used (without seqIds a snapshot cannot be lined up with
the frames). At most one read per instrument per ``min_interval`` seconds. Reads never raise: ``None`` when
there is nothing usable or Redis is unreachable.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec
import redis

from connectors.redis.client import sync_client
from connectors.redis.keys import orderbook_key
from cryptoflow.logs import get_logger
from operators.events import BookDelta, Level, epoch_ms

log = get_logger("connectors.redis.book_snapshots")
_levels = msgspec.json.Decoder(tuple[Level, ...])


def snapshot_from_hash(fields: Mapping[Any, Any], *, venue: str = "okx") -> BookDelta | None:
    """The hash (bytes keys/values, as redis-py returns them) as a snapshot delta, or ``None``."""
    f = {k.decode(): v.decode() for k, v in fields.items()}
    if f.get("status") != "valid" or not f.get("seq_id") or not f.get("instrument_id"):
        return None
    try:
        return BookDelta(
            venue=venue, instrument=f["instrument_id"], action="snapshot",
            bids=_levels.decode(f.get("bids", "[]")), asks=_levels.decode(f.get("asks", "[]")),
            ts_ms=epoch_ms(f["latest_timestamp"]), recv_ns=time.time_ns(), checksum=0, seq_id=int(f["seq_id"]),
            prev_seq_id=-1,
        )
    except (KeyError, ValueError, msgspec.DecodeError) as err:
        log.warning("book_hash_unusable", instrument=f.get("instrument_id"), error=str(err))
        return None


class HashBookSnapshots:
    def __init__(self, redis_url: str, *, min_interval: float = 1.0) -> None:
        self._client = sync_client(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._min_interval = min_interval
        self._last: dict[str, float] = {}

    def fetch(self, instrument: str) -> BookDelta | None:
        now = time.monotonic()
        if now - self._last.get(instrument, -1e9) < self._min_interval:
            return None
        self._last[instrument] = now
        try:
            fields = self._client.hgetall(orderbook_key(instrument))
        except (redis.RedisError, OSError) as err:
            log.warning("book_hash_unreachable", instrument=instrument, error=str(err))
            return None
        snap = snapshot_from_hash(fields) if fields else None
        if snap is not None:
            log.info("book_bootstrapped_from_hash", instrument=instrument, seq_id=snap.seq_id)
        return snap

    def close(self) -> None:
        self._client.close()
