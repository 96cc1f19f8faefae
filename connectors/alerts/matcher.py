"""Price-alert matching: one Lua script per batch of ticks, and the Bytewax sink the market dataflow uses.

A batch of ticks is first reduced to each instrument's highest and lowest price (with the time each was
first seen). One script call then, for every instrument, takes the ids out of ``alert:{inst}:gt`` whose
threshold is <= the high and out of ``alert:{inst}:lt`` whose threshold is >= the low (ZRANGEBYSCORE), marks
each ``alert:{id}`` fired (``status=fired``, ``fired_price``, ``fired_at``) and LPUSHes its email job onto
``queue:email``. Redis runs a script atomically, so an alert fires exactly once however many workers or
processes see the same price: the second one finds the id gone from the set. One round trip per batch; a
batch that fires more than ``max_per_call`` alerts on one side of one instrument is finished by further
calls (so one script never holds Redis for long).

The email text comes from :mod:`operators.alerts`' templates, filled inside the script. The trigger price
of a fired alert is the batch's high (``gt``) or low (``lt``) — a real trade price at or past the threshold
— and the trigger time that trade's exchange time; the subject names the trigger price, the body both it and
the threshold.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from decimal import Decimal

import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.redis.client import is_retryable
from connectors.redis.keys import EMAIL_QUEUE
from connectors.redis.push_streams import DEFAULT_MAXLEN, MY_ALERTS, stream_key
from connectors.redis.sink import redis_client
from cryptoflow.logs import get_logger
from operators.alerts import BODY_TEMPLATE, SUBJECT_TEMPLATE, VERBS
from operators.events import Trade, iso_ms

log = get_logger("price_alerts")
_MY_ALERTS = stream_key(MY_ALERTS)


# KEYS[1]: the email queue, KEYS[2]: the @my_alerts push stream.
# ARGV: limit, created_at, subject tpl, body tpl, verb up, verb_long up, verb down,
# verb_long down, the stream's maxlen, then per instrument: inst, high, high time, low, low time.
# Returns {more (0/1), fired id...}.
_MATCH = """
local limit = tonumber(ARGV[1])
local created = ARGV[2]
local subject_tpl, body_tpl = ARGV[3], ARGV[4]
local verbs = {gt = {ARGV[5], ARGV[6]}, lt = {ARGV[7], ARGV[8]}}
local maxlen = ARGV[9]
local out = {0}
local function fire(side, id, inst, price, at)
  local h = 'alert:' .. id
  local f = redis.call('HMGET', h, 'price', 'email', 'status')
  if f[3] ~= 'active' then return end
  redis.call('HSET', h, 'status', 'fired', 'fired_price', price, 'fired_at', at)
  local vals = {alert_id = id, instrument = inst, verb = verbs[side][1], verb_long = verbs[side][2],
                threshold = f[1], price = price, time = at}
  local job = cjson.encode({id = id, alert_id = id, to = f[2],
    subject = string.gsub(subject_tpl, '{([%w_]+)}', vals),
    body = string.gsub(body_tpl, '{([%w_]+)}', vals),
    created_at = created, attempts = 0})
  redis.call('LPUSH', KEYS[1], job)
  -- @my_alerts push stream (connectors/redis/push_streams.py); the gateway finds the owner of `a` in SQL
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'd', cjson.encode({id = id, crypto = inst,
    price = f[1], direction = side == 'gt', status = 'fired', fired_price = price, fired_at = at}), 'a', id)
  out[#out + 1] = id
end
for i = 10, #ARGV, 5 do
  local inst = ARGV[i]
  local gt = 'alert:' .. inst .. ':gt'
  local ids = redis.call('ZRANGEBYSCORE', gt, '-inf', ARGV[i + 1], 'LIMIT', 0, limit)
  if #ids > 0 then
    redis.call('ZREM', gt, unpack(ids))
    for _, id in ipairs(ids) do fire('gt', id, inst, ARGV[i + 1], ARGV[i + 2]) end
    if #ids == limit then out[1] = 1 end
  end
  local lt = 'alert:' .. inst .. ':lt'
  ids = redis.call('ZRANGEBYSCORE', lt, ARGV[i + 3], '+inf', 'LIMIT', 0, limit)
  if #ids > 0 then
    redis.call('ZREM', lt, unpack(ids))
    for _, id in ipairs(ids) do fire('lt', id, inst, ARGV[i + 3], ARGV[i + 4]) end
    if #ids == limit then out[1] = 1 end
  end
end
return out
"""

Tick = tuple[str, Decimal, int]  # instrument, price, exchange time ms


def reduce_ticks(ticks: Iterable[Tick]) -> dict[str, tuple[Decimal, int, Decimal, int]]:
    """instrument -> (high, time of first high, low, time of first low)."""
    out: dict[str, tuple[Decimal, int, Decimal, int]] = {}
    for inst, price, ts in ticks:
        cur = out.get(inst)
        if cur is None:
            out[inst] = (price, ts, price, ts)
            continue
        hi, hi_ts, lo, lo_ts = cur
        if price > hi:
            hi, hi_ts = price, ts
        if price < lo:
            lo, lo_ts = price, ts
        out[inst] = (hi, hi_ts, lo, lo_ts)
    return out


class AlertMatcher:
    """Runs the matching script; ``match`` returns the ids fired by this call (each fires once, ever)."""

    def __init__(self, client: redis.Redis, *, queue_key: str = EMAIL_QUEUE, max_per_call: int = 1000,
                 stream_maxlen: int = DEFAULT_MAXLEN) -> None:
        self._script = client.register_script(_MATCH)
        self._queue = queue_key
        self._limit = max_per_call
        up, down = VERBS[True], VERBS[False]
        self._head: list[str | int] = [SUBJECT_TEMPLATE, BODY_TEMPLATE, up[0], up[1], down[0], down[1],
                                       stream_maxlen]

    def match(self, ticks: Iterable[Tick], now_ms: int | None = None) -> list[str]:
        reduced = reduce_ticks(ticks)
        if not reduced:
            return []
        args: list[str | int] = [self._limit, iso_ms(now_ms or time.time_ns() // 1_000_000), *self._head]
        for inst, (hi, hi_ts, lo, lo_ts) in reduced.items():
            args += [inst, format(hi, "f"), iso_ms(hi_ts), format(lo, "f"), iso_ms(lo_ts)]
        fired: list[str] = []
        while True:
            got = self._script(keys=[self._queue, _MY_ALERTS], args=args)
            fired += [i.decode() if isinstance(i, bytes) else str(i) for i in got[1:]]
            if not int(got[0]):
                return fired


def fresh_ticks(trades: Iterable[Trade], max_age_ms: int, now_ms: int) -> tuple[list[Tick], int]:
    """The ticks of trades whose exchange time is within ``max_age_ms`` of their receive time; and the
    number skipped as stale (a lagging feed, or what a just-reconnected connection replays)."""
    out: list[Tick] = []
    stale = 0
    for t in trades:
        recv_ms = t.recv_ns // 1_000_000 if t.recv_ns else now_ms
        if recv_ms - t.ts_ms > max_age_ms:
            stale += 1
        else:
            out.append((t.instrument, t.price, t.ts_ms))
    return out, stale


class _Partition(StatelessSinkPartition[Trade]):
    def __init__(self, url: str, max_age_ms: int, queue_key: str, stream_maxlen: int) -> None:
        self._client = redis_client(url)
        self._matcher = AlertMatcher(self._client, queue_key=queue_key, stream_maxlen=stream_maxlen)
        self._max_age_ms = max_age_ms
        self._stale = 0
        self._warned_at: float | None = None

    def write_batch(self, items: list[Trade]) -> None:
        now_ms = time.time_ns() // 1_000_000
        ticks, stale = fresh_ticks(items, self._max_age_ms, now_ms)
        if stale:
            self._stale += stale
            # A warning at most once a minute: if every trade is stale (a lagging feed, or this machine's clock
            # off by more than PRICE_ALERT_MAX_AGE) no alert can fire, and that must be visible at INFO.
            now = time.monotonic()
            if self._warned_at is None or now - self._warned_at >= 60.0:
                self._warned_at = now
                log.warning("price_alerts_stale_ticks_skipped", skipped=stale, fresh=len(ticks),
                            total_skipped=self._stale, max_age_ms=self._max_age_ms)
            else:
                log.debug("price_alerts_stale_ticks_skipped", skipped=stale, total_skipped=self._stale)
        if not ticks:
            return
        try:
            fired = self._matcher.match(ticks, now_ms)
        except redis.RedisError as err:
            if not is_retryable(err):
                raise
            # Nothing fired (the script is atomic); the next batch past the threshold fires the alerts.
            log.warning("price_alerts_redis_unavailable", error=str(err), ticks_unmatched=len(ticks))
            return
        if fired:
            log.info("price_alerts_fired", count=len(fired), ids=fired[:20])

    def close(self) -> None:
        self._client.close()


class PriceAlertSink(DynamicSink[Trade]):
    """Matches every trade batch against the alerts in Redis (one round trip per batch).

    Delivery: each alert fires exactly once (atomic script), across any number of workers and processes;
    ticks are matched at most once (a batch that meets an unreachable Redis is logged and skipped).
    Trades older than ``max_age_s`` relative to their receive time never fire anything.
    Unit of parallelism: one Redis connection per worker.
    """

    def __init__(self, redis_url: str, *, max_age_s: float = 5.0, queue_key: str = EMAIL_QUEUE,
                 stream_maxlen: int = DEFAULT_MAXLEN) -> None:
        self._url = redis_url
        self._max_age_ms = int(max_age_s * 1000)
        self._queue = queue_key
        self._stream_maxlen = stream_maxlen

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self._url, self._max_age_ms, self._queue, self._stream_maxlen)
