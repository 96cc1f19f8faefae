"""Alert storage: ``alert:{id}`` hashes indexed by ``alert:{inst}:gt|lt`` sorted sets (score = threshold).

Every change is one atomic Redis step (MULTI or a Lua script), so a concurrent matcher never sees an alert
in a set without its hash, or in both sets: an update that changes the direction or the instrument moves
the id between sets in the same script that rewrites the hash; an alert that already fired cannot be
updated. Not for Redis Cluster (the scripts derive key names).

Reading is bounded like every untrusted text (:mod:`connectors.untrusted`): a hash written by someone else
is :func:`parse_alert_hash`-ed into an :class:`Alert` or a typed :class:`~connectors.untrusted.Rejected`
(``too_large``: a field over :data:`MAX_FIELD_CHARS` or too many fields; ``wrong_type``: a field that does not
validate). :meth:`AlertStore.iter_all` skips rejected hashes (logged once per reason);
:meth:`AlertStore.get` raises :class:`AlertUnreadable` carrying the rejection.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, cast

import pydantic
import redis

from connectors.redis.client import sync_client
from connectors.untrusted import Rejected, RejectTally, rejected
from cryptoflow.logs import get_logger
from operators.alerts import Alert, AlertChange, check_alert_id, price_text, side_of

log = get_logger("connectors.alerts.store")
MAX_FIELD_CHARS = 1024  # an alert hash holds an id, an instrument, a price, an email and two timestamps
MAX_FIELDS = 16


class AlertNotFound(LookupError):
    pass


class AlertAlreadyFired(RuntimeError):
    pass


class AlertUnreadable(ValueError):
    """An ``alert:{id}`` hash that is not a valid alert; ``rejected`` says why."""

    def __init__(self, alert_id: str, rejected: Rejected) -> None:
        super().__init__(f"alert {alert_id[:64]} is unreadable: {rejected.reason}: {rejected.detail}")
        self.rejected = rejected


def parse_alert_hash(fields: Mapping[str, str]) -> Alert | Rejected:
    """An alert hash as read from Redis -> :class:`Alert`, or a typed rejection; never raises on its content."""
    if len(fields) > MAX_FIELDS:
        return rejected("too_large", f"{len(fields)} fields, more than {MAX_FIELDS}", repr(list(fields)[:8]))
    for name, value in fields.items():
        if len(name) > MAX_FIELD_CHARS or len(value) > MAX_FIELD_CHARS:
            return rejected("too_large", f"field {name[:40]!r} longer than {MAX_FIELD_CHARS} characters", value)
    try:
        return Alert.from_hash(dict(fields))
    except (pydantic.ValidationError, ValueError, TypeError, ArithmeticError) as err:
        return rejected("wrong_type", str(err), repr(dict(fields)))


def alert_key(alert_id: str) -> str:
    return f"alert:{alert_id}"


def set_key(instrument: str, direction: bool) -> str:
    return f"alert:{instrument}:{side_of(direction)}"


# :func:`set_key` in Lua, for the scripts here and in :mod:`connectors.alerts.index`.
SET_OF_LUA = "local function set_of(c, d) return 'alert:' .. c .. ':' .. (d == 'true' and 'gt' or 'lt') end\n"


# KEYS: alert hash. ARGV: id, crypto, price, direction, email ('' = unchanged), score.
_UPDATE = SET_OF_LUA + """
local h = KEYS[1]
local cur = redis.call('HMGET', h, 'crypto', 'direction', 'status', 'price')
if not cur[1] then return redis.error_reply('NOTFOUND') end
if cur[3] ~= 'active' then return redis.error_reply('FIRED') end
local crypto = ARGV[2] ~= '' and ARGV[2] or cur[1]
local direction = ARGV[4] ~= '' and ARGV[4] or cur[2]
local price = ARGV[3] ~= '' and ARGV[3] or cur[4]
local old = set_of(cur[1], cur[2])
local score = ARGV[6]
if score == '' then score = redis.call('ZSCORE', old, ARGV[1]) or cur[4] end
redis.call('ZREM', old, ARGV[1])
redis.call('ZADD', set_of(crypto, direction), score, ARGV[1])
redis.call('HSET', h, 'crypto', crypto, 'direction', direction, 'price', price)
if ARGV[5] ~= '' then redis.call('HSET', h, 'email', ARGV[5]) end
return 1
"""

# KEYS[1]: alert hash. ARGV: id. The id out of its set and the hash deleted; returns 1, or 0 with no hash.
REMOVE_LUA = SET_OF_LUA + """
local cur = redis.call('HMGET', KEYS[1], 'crypto', 'direction')
if cur[1] then redis.call('ZREM', set_of(cur[1], cur[2]), ARGV[1]) end
return redis.call('DEL', KEYS[1])
"""


class AlertStore:
    """CRUD over the alert keys. ``client`` must decode responses (``decode_responses=True``)."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client
        self._update = client.register_script(_UPDATE)
        self._remove = client.register_script(REMOVE_LUA)
        self._rejects = RejectTally(log, "alerts", event="alert_hash_rejected",
                                    note="logged once per reason per store; the hash is skipped")

    @classmethod
    def from_url(cls, url: str) -> AlertStore:
        return cls(sync_client(url, decode_responses=True))

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
        alert = parse_alert_hash(cast(dict[str, str], fields))
        if isinstance(alert, Rejected):
            raise AlertUnreadable(alert_id, alert)
        return alert

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
                alert = parse_alert_hash(fields)
                if isinstance(alert, Rejected):
                    self._rejects.add(alert, key=alert_key(str(fields.get("id", "?"))[:64]))
                else:
                    yield alert

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
