"""Alert storage: ``alert:{id}`` hashes indexed by ``alert:{inst}:gt|lt`` sorted sets (score = threshold).

Every change is one atomic Redis step (MULTI or a Lua script), so a concurrent matcher never sees an alert
in a set without its hash, or in both sets: an update that changes the direction or the instrument moves
the id between sets in the same script that rewrites the hash; an alert that already fired cannot be
updated. Not for Redis Cluster (the scripts derive key names).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any, cast

import redis

from operators.alerts import Alert, AlertChange, check_alert_id, price_text, side_of


class AlertNotFound(LookupError):
    pass


class AlertAlreadyFired(RuntimeError):
    pass


def alert_key(alert_id: str) -> str:
    return f"alert:{alert_id}"


def set_key(instrument: str, direction: bool) -> str:
    return f"alert:{instrument}:{side_of(direction)}"


# KEYS: alert hash. ARGV: id, crypto, price, direction, email ('' = unchanged), score.
_UPDATE = """
local h = KEYS[1]
local cur = redis.call('HMGET', h, 'crypto', 'direction', 'status', 'price')
if not cur[1] then return redis.error_reply('NOTFOUND') end
if cur[3] ~= 'active' then return redis.error_reply('FIRED') end
local crypto = ARGV[2] ~= '' and ARGV[2] or cur[1]
local direction = ARGV[4] ~= '' and ARGV[4] or cur[2]
local price = ARGV[3] ~= '' and ARGV[3] or cur[4]
local old = 'alert:' .. cur[1] .. ':' .. (cur[2] == 'true' and 'gt' or 'lt')
local score = ARGV[6]
if score == '' then score = redis.call('ZSCORE', old, ARGV[1]) or cur[4] end
redis.call('ZREM', old, ARGV[1])
redis.call('ZADD', 'alert:' .. crypto .. ':' .. (direction == 'true' and 'gt' or 'lt'), score, ARGV[1])
redis.call('HSET', h, 'crypto', crypto, 'direction', direction, 'price', price)
if ARGV[5] ~= '' then redis.call('HSET', h, 'email', ARGV[5]) end
return 1
"""

# KEYS: alert hash. ARGV: id. Removes the alert from its set and deletes the hash.
_REMOVE = """
local cur = redis.call('HMGET', KEYS[1], 'crypto', 'direction')
if not cur[1] then return 0 end
redis.call('ZREM', 'alert:' .. cur[1] .. ':' .. (cur[2] == 'true' and 'gt' or 'lt'), ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"""


class AlertStore:
    """CRUD over the alert keys. ``client`` must decode responses (``decode_responses=True``)."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client
        self._update = client.register_script(_UPDATE)
        self._remove = client.register_script(_REMOVE)

    @classmethod
    def from_url(cls, url: str) -> AlertStore:
        return cls(redis.Redis.from_url(url, decode_responses=True))

    def add(self, alert: Alert) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(alert_key(alert.id), mapping=cast(Any, alert.to_hash()))
        pipe.zadd(set_key(alert.crypto, alert.direction), {alert.id: float(alert.price)})
        pipe.execute()

    def add_many(self, alerts: list[Alert]) -> None:
        """Bulk insert (benchmarks, imports): one pipeline, each alert hash+set in the same MULTI."""
        pipe = self._r.pipeline(transaction=True)
        for alert in alerts:
            pipe.hset(alert_key(alert.id), mapping=cast(Any, alert.to_hash()))
            pipe.zadd(set_key(alert.crypto, alert.direction), {alert.id: float(alert.price)})
        pipe.execute()

    def get(self, alert_id: str) -> Alert:
        fields = self._r.hgetall(alert_key(check_alert_id(alert_id)))
        if not fields:
            msg = f"no alert with id {alert_id}"
            raise AlertNotFound(msg)
        return Alert.from_hash(cast(dict[str, str], fields))

    def iter_all(self, crypto: str | None = None) -> Iterator[Alert]:
        """Every alert hash (SCAN, so it does not block Redis), optionally of one instrument."""
        batch: list[str] = []
        for key in self._r.scan_iter(match="alert:*", count=1000, _type="hash"):
            batch.append(key)
            if len(batch) >= 500:
                yield from self._load(batch, crypto)
                batch = []
        yield from self._load(batch, crypto)

    def _load(self, keys: list[str], crypto: str | None) -> Iterator[Alert]:
        pipe = self._r.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        for fields in pipe.execute():
            if fields and "crypto" in fields and (crypto is None or fields["crypto"] == crypto):
                yield Alert.from_hash(fields)

    def update(self, alert_id: str, change: AlertChange) -> Alert:
        """Apply ``change`` atomically (moving between sets when direction or instrument changes)."""
        check_alert_id(alert_id)
        price: Decimal | None = change.price
        direction = "" if change.direction is None else ("true" if change.direction else "false")
        try:
            self._update(keys=[alert_key(alert_id)], args=[
                alert_id, change.crypto or "", price_text(price) if price is not None else "", direction,
                change.email or "", repr(float(price)) if price is not None else ""])
        except redis.ResponseError as err:
            if "NOTFOUND" in str(err):
                msg = f"no alert with id {alert_id}"
                raise AlertNotFound(msg) from None
            if "FIRED" in str(err):
                msg = f"alert {alert_id} has already fired; add a new one"
                raise AlertAlreadyFired(msg) from None
            raise
        return self.get(alert_id)

    def remove(self, alert_id: str) -> bool:
        return bool(self._remove(keys=[alert_key(check_alert_id(alert_id))], args=[alert_id]))
