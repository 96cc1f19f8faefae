"""``system:monitoring``: one model of who reports what, and one writer, for every dataflow.

Counters (``gaps``, ``resyncs``, ``subscription_changes``, ``rejected_<reason>``, ``kline_late_trades``, ...)
are increments: HINCRBY, exact whoever sends them.

Gauges have owners. An owner is one thing that knows its own part of a gauge right now: a WebSocket shard of
a dataflow (``orderbook_collector/okx/shard-3``; a shard lives on exactly one worker of a cluster, so its id
is unique across workers and processes and stable across restarts) or a sink partition
(``orderbook_collector/writer-1``, by Bytewax's cluster-wide worker index). Each :class:`MonitorReport`
replaces its owner's entry in ``system:monitoring:owners`` (field = owner, value = server time of the report
+ JSON), and the same Lua call (:data:`_RECOMPUTE`, queued in the batch's own pipeline) recomputes the
contract fields of ``system:monitoring`` from the owners heard from within ``expire_ms``:

* ``sums`` are summed (``websocket_connections``, ``active_pairs``, ``influxdb_write_rate``, ``collector_reconnects``,
  ``market_<venue>_connections|_reconnects|_topics``); an owner that stops reporting (a killed process)
  drops out of the sum after ``expire_ms``, one that stopped cleanly (``retire``) at once; when no owner of a
  field is left, the field is 0;
* ``means`` are weighted means, ``(total, weight)`` per owner (``avg_processing_latency``, weighted by
  frames); without any weight in the window the field keeps its last value;
* ``latest`` are ISO-8601 UTC times, the newest over every owner (``last_config_check``,
  ``market_last_config_check``);
* ``redis_memory_usage`` is read by the script itself (``INFO memory``), no extra round trip.

Times are the Redis server's (``TIME``), so hosts with skewed clocks agree on who expired. A report of an
owner unheard of for :data:`FORGET_MS` is deleted. Cost: one EVAL per batch that carries reports (about
once per second per shard and per sink partition), O(owners) in Redis. The same call appends the whole hash,
as JSON, to the ``@monitoring`` push stream (:mod:`connectors.redis.push_streams`), so a pushed state is never a
half-recomputed one. The sinks hand the same reports to :func:`connectors.metrics.record`: the process's
Prometheus series are this model too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from connectors.redis.keys import MONITORING
from connectors.redis.push_streams import MONITORING as MONITORING_CHANNEL
from connectors.redis.push_streams import stream_key

OWNERS = f"{MONITORING}:owners"
EXPIRE_MS = 10_000  # ten report intervals: a stalled (busy) worker does not flicker out of the sums
FORGET_MS = 3_600_000


class MonitorReport(msgspec.Struct, frozen=True):
    """An owner's current share of the gauges (replaces its previous one) and counter increments.

    ``owner=""``: counters only (no gauge share). ``venue``: what the report is about, for the ``venue`` label
    of the process's Prometheus series (:mod:`connectors.metrics`); not written to Redis."""

    owner: str = ""
    sums: tuple[tuple[str, float], ...] = ()
    means: tuple[tuple[str, float, int], ...] = ()
    latest: tuple[tuple[str, str], ...] = ()
    counters: tuple[tuple[str, int], ...] = ()
    venue: str = ""


_json = msgspec.json.Encoder()
_STREAM = stream_key(MONITORING_CHANNEL)

# KEYS: system:monitoring, its owners hash[, the @monitoring push stream: the whole hash as JSON, after each
# recompute, capped at ~1000: a state channel, whose newest entry is all a gateway reads].
# ARGV: expire ms, forget ms, n, n x (owner, JSON), owners to retire.
_RECOMPUTE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expire, forget, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 4, 3 + 2 * n, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], now .. '|' .. ARGV[i + 1])
end
local sums, totals, weights, latest = {}, {}, {}, {}
for i = 4 + 2 * n, #ARGV do
  local body = redis.call('HGET', KEYS[2], ARGV[i])
  if body then
    for f, _ in pairs(cjson.decode(string.sub(body, string.find(body, '|', 1, true) + 1)).s) do sums[f] = 0 end
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local body = entries[i + 1]
  local bar = string.find(body, '|', 1, true)
  local age = now - tonumber(string.sub(body, 1, bar - 1))
  if age > forget then
    redis.call('HDEL', KEYS[2], entries[i])
  else
    local r = cjson.decode(string.sub(body, bar + 1))
    local live = age <= expire
    for f, v in pairs(r.s) do sums[f] = (sums[f] or 0) + (live and v or 0) end
    for f, v in pairs(r.m) do
      totals[f] = (totals[f] or 0) + (live and v[1] or 0)
      weights[f] = (weights[f] or 0) + (live and v[2] or 0)
    end
    for f, v in pairs(r.l) do
      if latest[f] == nil or v > latest[f] then latest[f] = v end
    end
  end
end
local out = {'redis_memory_usage', string.match(redis.call('INFO', 'memory'), 'used_memory:(%d+)')}
for f, v in pairs(sums) do
  out[#out + 1] = f
  out[#out + 1] = string.format('%.15g', v)
end
for f, w in pairs(weights) do
  if w > 0 then
    out[#out + 1] = f
    out[#out + 1] = string.format('%.3f', totals[f] / w)
  end
end
for f, v in pairs(latest) do
  out[#out + 1] = f
  out[#out + 1] = v
end
redis.call('HSET', KEYS[1], unpack(out))
if KEYS[3] then
  local all, obj = redis.call('HGETALL', KEYS[1]), {}
  for i = 1, #all, 2 do obj[all[i]] = all[i + 1] end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 1000, '*', 'd', cjson.encode(obj))
end
return #entries / 2
"""


def _body(r: MonitorReport) -> bytes:
    return _json.encode({"s": dict(r.sums), "m": {f: (t, w) for f, t, w in r.means}, "l": dict(r.latest)})


def queue_monitoring(pipe: Any, reports: Iterable[MonitorReport], *, retire: Sequence[str] = (),
                     expire_ms: int = EXPIRE_MS) -> None:
    """Queue ``reports`` on ``pipe`` (a redis-py pipeline): summed counters as HINCRBY, then, if any report
    has an owner (or ``retire`` names owners that stopped for good), ONE EVAL that stores the newest report
    per owner and recomputes the gauges of ``system:monitoring`` (see the module docstring)."""
    counters: dict[str, int] = {}
    owners: dict[str, bytes] = {}
    for r in reports:
        for name, n in r.counters:
            counters[name] = counters.get(name, 0) + n
        if r.owner:
            owners[r.owner] = _body(r)
    for name, n in counters.items():
        if n:
            pipe.hincrby(MONITORING, name, n)
    if owners or retire:
        args: list[str | bytes | int] = [expire_ms, FORGET_MS, len(owners)]
        for owner, body in owners.items():
            args.append(owner)
            args.append(body)
        pipe.eval(_RECOMPUTE, 3, MONITORING, OWNERS, _STREAM, *args, *retire)


def refresh(client: Any, *, expire_ms: int = EXPIRE_MS) -> None:
    """Recompute the gauges from the owners now (drops owners that expired): for a reader, when no dataflow
    may be running to do it."""
    client.eval(_RECOMPUTE, 2, MONITORING, OWNERS, expire_ms, FORGET_MS, 0)
