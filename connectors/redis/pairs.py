"""The ``config:trading_pairs`` poller: the wanted instrument set, re-read every poll interval.

Rules (docs/CONTRACTS.md "Instruments and venues"), applied identically by every shard so that all compute the same
set: members of the Redis set, minus ids the venue refused earlier, through
:func:`operators.instruments.select_pairs` (malformed ids skipped, at most ``limit``, first in sorted order,
with a warning naming the ids left out). Rejections are written to the hash ``<key>:rejected``
(id -> reason): malformed ids with the validation reason (an id longer than
:data:`operators.instruments.MAX_INSTRUMENT_CHARS` is rejected as too long), venue refusals as
``"<venue>: <reason>"`` (cut to :data:`connectors.untrusted.SAMPLE_CHARS`). Logged ids and reasons are cut the
same way, so a 1 MB member of the set cannot make a 1 MB log line. An id
that leaves the set is removed from that hash, so adding it again retries it. Redis unreachable: ``poll()``
returns ``None`` (the caller keeps its current set) and is retried at the next interval.

Runs inside a shard's asyncio loop (redis.asyncio); one client per poller.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from connectors.redis.client import async_client
from connectors.untrusted import sample
from cryptoflow.logs import get_logger
from operators.instruments import select_pairs

log = get_logger("connectors.redis.pairs")
ID_LOG_CHARS = 80  # ids in log lines; an id longer than MAX_INSTRUMENT_CHARS is rejected, never logged whole


class PairsConfig(msgspec.Struct, frozen=True):
    """Where the monitored pairs are and how they are read: ``REDIS_URL``, ``REDIS_TRADING_PAIRS_KEY``,
    ``MAX_TRADING_PAIRS``, ``TRADING_PAIRS_POLL_INTERVAL`` (:func:`cryptoflow.connector_configs.pairs_config`)."""

    redis_url: str
    key: str
    limit: int
    interval: float

    def poller(self, venue: str, *, announce: bool = True) -> PairsPoller:
        return PairsPoller(self.redis_url, self.key, limit=self.limit, interval=self.interval, venue=venue,
                           announce=announce)


class PairsPoller:
    """``TopicSource`` over ``config:trading_pairs`` for one venue (see module docstring)."""

    def __init__(self, redis_url: str, key: str, *, limit: int, interval: float, venue: str,
                 announce: bool = True) -> None:
        self.key = key
        self.rejected_key = f"{key}:rejected"
        self.limit = limit
        self.interval = interval
        self.venue = venue
        self._announce = announce  # only one shard logs the set-level warnings
        self._url = redis_url
        self._client: aioredis.Redis | None = None
        self._down = False
        self._last_skipped: tuple[str, ...] = ()
        self._unsaved: dict[str, str] = {}
        # Our own venue's refusals, also kept here: another venue may overwrite the id's reason in the hash.
        self._refused: set[str] = set()
        self._prefix = f"{venue}: "

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            self._client = async_client(self._url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
        return self._client

    async def poll(self) -> frozenset[str] | None:
        client = self._redis()
        try:
            if self._unsaved:
                await client.hset(self.rejected_key, mapping=cast("dict[Any, Any]", self._unsaved))
                self._unsaved.clear()
            members = {str(m) for m in await client.smembers(self.key)}
            known = {str(k): str(v) for k, v in (await client.hgetall(self.rejected_key)).items()}
            self._refused &= members  # an id that left the set is tried again when it comes back
            refused = {i for i, why in known.items() if why.startswith(self._prefix)} | self._refused
            selected, malformed = select_pairs(members - refused, self.limit)
            pipe = client.pipeline(transaction=False)
            gone = [i for i in known if i not in members]
            if gone:
                pipe.hdel(self.rejected_key, *gone)
            fresh = {i: why for i, why in malformed.items() if known.get(i) != why}
            if fresh:
                pipe.hset(self.rejected_key, mapping=cast("dict[Any, Any]", fresh))
            if len(pipe):
                await pipe.execute()
        except (RedisError, OSError) as err:
            if not self._down:
                log.warning("pairs_poll_failed", key=self.key, error=str(err), action="keeping current set")
            self._down = True
            return None
        if self._down:
            log.info("pairs_poll_recovered", key=self.key)
            self._down = False
        if self._announce:
            for inst, why in fresh.items():
                log.warning("pair_rejected", instrument=sample(inst, ID_LOG_CHARS), reason=sample(why))
            valid = sorted(set(members) - refused - set(malformed))
            skipped = tuple(valid[self.limit:])
            if skipped != self._last_skipped and skipped:
                log.warning("pairs_over_limit", limit=self.limit, subscribed=list(selected),
                            skipped_count=len(skipped), skipped=sample(" ".join(skipped)))
            self._last_skipped = skipped
        return frozenset(selected)

    async def report_rejected(self, topic: str, reason: str) -> None:
        why = sample(f"{self._prefix}{reason}")  # the venue's text, bounded in the hash and the log
        self._refused.add(topic)
        log.warning("pair_rejected", instrument=sample(topic, ID_LOG_CHARS), reason=why)
        try:
            await self._redis().hset(self.rejected_key, topic, why)
        except (RedisError, OSError):
            self._unsaved[topic] = why  # written at the next successful poll

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
