"""The alert matching index, async, as the service keeps it: SQL is the record, this is derived from it.

Keys as in docs/CONTRACTS.md: ``alert:{id}`` hash and its id in ``alert:{inst}:gt|lt`` (score = threshold).
The matcher (:mod:`connectors.alerts.matcher`) fires only a hash whose ``status`` is ``active``, so a change
"disarms first": :meth:`AlertIndex.disarm` sets ``status=disarmed`` (and ``disarmed_at``, epoch ms) in one
script that also reports an alert that already fired; after the SQL commit :meth:`AlertIndex.arm` (new
values) or :meth:`AlertIndex.remove` finishes the change. Each method is one Lua script: the matcher never
sees a half-written alert. ``client`` must decode responses. Not for Redis Cluster (the scripts derive keys).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from connectors.alerts.store import REMOVE_LUA, SET_OF_LUA, alert_key
from operators.alerts import ALERT_ID_RE


@dataclass(frozen=True)
class IndexEntry:
    """What :meth:`AlertIndex.arm` writes: the hash fields of an active alert (exact decimal text)."""

    id: str
    crypto: str
    price: str
    direction: bool
    email: str
    created_at: str  # ISO-8601 UTC, as the hash has always held it

    def fields(self) -> dict[str, str]:
        return {"id": self.id, "crypto": self.crypto, "price": self.price,
                "direction": "true" if self.direction else "false", "email": self.email,
                "created_at": self.created_at, "status": "active"}


@dataclass(frozen=True)
class Fired:
    """The matcher marked the alert fired: its trigger price and time (ISO-8601) as the hash holds them."""

    price: str
    at: str


# KEYS[1]: hash. ARGV: id, score, then field/value pairs. Refuses (returns 'FIRED') to re-arm a fired alert.
_ARM = SET_OF_LUA + """
local cur = redis.call('HMGET', KEYS[1], 'crypto', 'direction', 'status')
if cur[3] == 'fired' then return 'FIRED' end
if cur[1] then redis.call('ZREM', set_of(cur[1], cur[2]), ARGV[1]) end
redis.call('DEL', KEYS[1])
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local h = redis.call('HMGET', KEYS[1], 'crypto', 'direction')
redis.call('ZADD', set_of(h[1], h[2]), ARGV[2], ARGV[1])
return 'OK'
"""

# KEYS[1]: hash. ARGV: now ms. Returns 'MISSING', 'OK', or {'FIRED', fired_price, fired_at}.
_DISARM = """
local cur = redis.call('HMGET', KEYS[1], 'status', 'fired_price', 'fired_at')
if not cur[1] then return 'MISSING' end
if cur[1] == 'fired' then return {'FIRED', cur[2] or '', cur[3] or ''} end
redis.call('HSET', KEYS[1], 'status', 'disarmed', 'disarmed_at', ARGV[1])
return 'OK'
"""

# KEYS[1]: hash. Undoes a disarm whose SQL commit failed (the hash and its set entry are untouched by it).
_RESTORE = """
if redis.call('HGET', KEYS[1], 'status') == 'disarmed' then
  redis.call('HSET', KEYS[1], 'status', 'active')
  redis.call('HDEL', KEYS[1], 'disarmed_at')
  return 1
end
return 0
"""

def is_alert_id(text: str) -> bool:
    return ALERT_ID_RE.fullmatch(text) is not None


class AlertIndex:
    """The four writes of the index (arm, disarm, restore, remove) and the reads the reconciler needs."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._arm = client.register_script(_ARM)
        self._disarm = client.register_script(_DISARM)
        self._restore = client.register_script(_RESTORE)
        self._remove = client.register_script(REMOVE_LUA)  # the store's: one script

    async def arm(self, entry: IndexEntry) -> bool:
        """Write the hash (status ``active``) and its one set entry; False when the hash says fired."""
        args: list[str] = [entry.id, entry.price]
        for name, value in entry.fields().items():
            args += [name, value]
        return str(await self._arm(keys=[alert_key(entry.id)], args=args)) == "OK"

    async def disarm(self, alert_id: str, now_ms: int) -> Fired | None:
        """Make the alert unable to fire; returns how it fired if the matcher got there first."""
        got = await self._disarm(keys=[alert_key(alert_id)], args=[now_ms])
        if isinstance(got, list) and got and str(got[0]) == "FIRED":
            return Fired(price=str(got[1]), at=str(got[2]))
        return None

    async def restore(self, alert_id: str) -> None:
        await self._restore(keys=[alert_key(alert_id)])

    async def remove(self, alert_id: str) -> None:
        await self._remove(keys=[alert_key(alert_id)], args=[alert_id])

    async def read_many(self, ids: list[str]) -> dict[str, dict[str, str]]:
        """id -> hash fields, for the ids that have a hash."""
        if not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for alert_id in ids:
            pipe.hgetall(alert_key(alert_id))
        rows = await pipe.execute()
        return {i: cast(dict[str, str], f) for i, f in zip(ids, rows, strict=True) if f}

    async def hash_ids(self) -> AsyncIterator[str]:
        """Every id with an ``alert:{id}`` hash (SCAN, so Redis is not blocked)."""
        async for key in self.client.scan_iter(match="alert:*", count=1000, _type="hash"):
            alert_id = str(key)[len("alert:"):]
            if is_alert_id(alert_id):
                yield alert_id

    async def set_members(self) -> dict[str, dict[str, float]]:
        """``alert:{inst}:gt|lt`` key -> {id: score}."""
        out: dict[str, dict[str, float]] = {}
        async for key in self.client.scan_iter(match="alert:*", count=1000, _type="zset"):
            name = str(key)
            if name.endswith((":gt", ":lt")):
                members = cast(list[tuple[str, float]], await self.client.zrange(name, 0, -1, withscores=True))
                out[name] = {str(m): float(s) for m, s in members}
        return out

    async def drop_from_set(self, set_key: str, ids: list[str]) -> None:
        if ids:
            await self.client.zrem(set_key, *ids)

    async def drop_hash(self, alert_id: str) -> None:
        await self.client.delete(alert_key(alert_id))


def fired_of(fields: Mapping[str, Any]) -> Fired | None:
    if fields.get("status") != "fired":
        return None
    return Fired(price=str(fields.get("fired_price", "")), at=str(fields.get("fired_at", "")))
