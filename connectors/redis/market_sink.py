"""Redis and InfluxDB output of market_data (docs/CONTRACTS.md ``ticker:*``, ``kline:*``, ``ticker``/``kline``).

Redis, one pipeline per batch (:class:`connectors.redis.sink.RedisPipelineSink` with :class:`MarketWriter`):
per key only the newest value of the batch is written (a batch of 1,000 trades of one instrument is one HSET
per timeframe), ``ticker:{exchange}:{symbol}`` with TTL 300 s, ``kline:{exchange}:{symbol}:{tf}`` with TTL
3600 s. A ``kline:`` hash holds the latest interval and never goes back to an older one: a minute that the
clock closes after the next one has opened (the batch after) is pushed, and written as a point, but leaves
the hash at the newer minute. ``system:monitoring`` through :func:`connectors.redis.monitoring.queue_monitoring`
(counters by HINCRBY, each shard's gauge share recomputed into the contract fields by one Lua call); the same
reports and each instrument's trade latency go to the process's Prometheus series once the batch is written
(:meth:`MarketWriter.written`, :mod:`connectors.metrics`). Delivery at-least-once; hashes make a rewrite harmless.

Push channels (:mod:`connectors.redis.push_streams`), in the same pipeline after the hashes, as one EVAL: every
trade to ``<inst>@trades`` (``exchange``, ``price``, ``size``, ``side``, ``trade_id``, ``ts`` epoch ms), and the
hash fields written for each ``ticker:`` / ``kline:`` key to ``<exchange>:<inst>@ticker`` /
``<exchange>:<inst>@kline_<tf>`` (a venue kline replacing an incomplete one is not pushed: the script decides
whether it replaces, and the next kline of that interval carries the hash on).

InfluxDB: every closed kline as a ``kline`` point stamped with its open time (a rewrite — after recovery, or a
correction of a flat minute — overwrites the same point), every venue ticker as a ``ticker`` point.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from itertools import chain

import msgspec
from redis.client import Pipeline

from connectors import metrics
from connectors.influx.writer import InfluxPoint
from connectors.redis.monitoring import MonitorReport, queue_monitoring
from connectors.redis.push_streams import (
    DEFAULT_MAXLEN,
    StreamEvent,
    kline_channel,
    queue_events,
    ticker_channel,
    trades_channel,
)
from operators.events import Kline, Ticker, Trade, iso_ms
from operators.kline_steps import KlineOut

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()
TICKER_TTL_S = 300
KLINE_TTL_S = 3600

MarketRedisItem = Ticker | KlineOut | MonitorReport | Trade  # trades: for the @trades push channel only


def _num(value: Decimal | None) -> str:
    """The exact text of this Decimal object (the venue's digits, trailing zeros kept), never a cached one:
    equal Decimals written differently (``60000.7`` vs ``60000.70000000``) must not share a string."""
    if value is None:
        return ""
    text = str(value)  # the same digits as format(value, "f") unless scientific (exponent > 0 or < -6): 3x faster
    return text if "E" not in text else format(value, "f")


def ticker_fields(t: Ticker) -> dict[str, str]:
    fields = {"price": _num(t.price), "volume_24h": _num(t.volume_24h), "high_24h": _num(t.high_24h),
              "low_24h": _num(t.low_24h), "timestamp": iso_ms(t.ts_ms)}
    if t.bid is not None:
        fields["bid"] = _num(t.bid)
    if t.ask is not None:
        fields["ask"] = _num(t.ask)
    if t.change_24h is not None:
        fields["change_24h"] = _num(t.change_24h.quantize(Decimal("0.0001")))
    return fields


def kline_fields(k: Kline) -> dict[str, str]:
    return {"open": _num(k.open), "high": _num(k.high), "low": _num(k.low), "close": _num(k.close),
            "volume": _num(k.volume), "quote_volume": _num(k.quote_volume), "open_time": iso_ms(k.open_ms),
            "close_time": iso_ms(k.close_ms), "trades": str(k.trades), "closed": "true" if k.closed else "false",
            "complete": "true" if k.complete else "false", "source": _SOURCE[k.source]}


_SOURCE = {"pipeline": "trades", "venue": "venue"}  # the contract's names: aggregated from trades, or the venue's


class _TradeEvent(msgspec.Struct):
    """The ``@trades`` event's JSON object, keys in this order (a Struct encodes ~2x faster than a dict)."""

    exchange: str
    price: str
    size: str
    side: str
    trade_id: str
    ts: int


def trade_event(t: Trade) -> bytes:
    """The ``@trades`` event: prices and sizes as exact strings, ``ts`` epoch ms."""
    return _json.encode(_TradeEvent(t.venue, _num(t.price), _num(t.size), t.side, t.trade_id, t.ts_ms))


def kline_key(k: Kline) -> str:
    return f"kline:{k.venue}:{k.instrument}:{k.timeframe}"


# All hashes of a batch in one command: KEYS = hashes; ARGV per key: ttl (0: keep), open_time ('' for a
# ticker), then the hash's field/value list as one MessagePack array of strings. A kline goes into its hash
# only while the hash holds that interval or an older one (ISO-8601 times compare as strings), so the latest
# kline is never pushed back: neither by a minute closed after the next one opened, nor by a venue kline
# replacing an incomplete one of ours (operators/kline_reconcile.ReconcileLogic), which arrives after its
# interval closed.
# One EVAL instead of an HSET (+ EXPIRE) per key: redis-py's per-command packing and reply parsing, not the
# server, was the cost (~25 us per command here; a batch of 100 trades of 10 pairs touches 40 kline keys). The
# fields as one packed argument instead of one argument each: redis-py packs every argument in Python (~25 per
# hash; 10 hashes cost ~130 us to queue and pack, ~40 us packed); cmsgpack.unpack costs the server no more than
# the separate arguments did (a JSON object and cjson did: ~+40 %).
_HSET_MANY = """
local a = 1
for _, key in ipairs(KEYS) do
  local ttl = tonumber(ARGV[a])
  local since = ARGV[a + 1]
  local cur = since ~= '' and redis.call('HGET', key, 'open_time')
  if not (cur and cur > since) then redis.call('HSET', key, unpack(cmsgpack.unpack(ARGV[a + 2]))) end
  a = a + 3
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
return #KEYS
"""


class MarketWriter:
    """``write(pipe, batch)`` for :class:`connectors.redis.sink.RedisPipelineSink` (see module docstring).

    Every ticker/kline hash of the batch goes in one EVAL (:data:`_HSET_MANY`). EXPIRE is re-sent for a key
    only when ``refresh_fraction`` of its TTL has passed since this writer last sent it, so a key written at
    least that often keeps a TTL between 90 % and 100 % of its TTL; one left alone expires at most TTL after
    its last write.
    """

    def __init__(self, refresh_fraction: float = 0.1, clock: Callable[[], float] = time.monotonic,
                 stream_maxlen: int = DEFAULT_MAXLEN) -> None:
        self._fraction = refresh_fraction
        self._maxlen = stream_maxlen
        self._clock = clock
        self._expired_at: dict[str, float] = {}
        self._pruned_at = clock()

    def _prune(self, now: float) -> None:
        """Forget keys not refreshed for a whole (longest) TTL: they expired in Redis, and the next write of
        one is due either way. Keeps the map to the keys in use as pairs come and go."""
        if now - self._pruned_at >= KLINE_TTL_S:
            self._pruned_at = now
            self._expired_at = {k: t for k, t in self._expired_at.items() if now - t < KLINE_TTL_S}

    def _due(self, key: str, ttl: int, now: float) -> bool:
        last = self._expired_at.get(key)
        if last is None or now - last >= ttl * self._fraction:
            self._expired_at[key] = now
            return True
        return False

    @staticmethod
    def _queue_hash(keys: list[str], args: list[str | int | bytes], key: str, since: str, fields: dict[str, str],
                    ttl: int) -> None:
        keys.append(key)
        args.append(ttl)
        args.append(since)  # a kline's open_time: never written over a newer interval ('' for a ticker)
        args.append(_msgpack.encode(list(chain.from_iterable(fields.items()))))

    def __call__(self, pipe: Pipeline, items: list[MarketRedisItem]) -> None:
        tickers: dict[str, Ticker] = {}
        klines: dict[str, Kline] = {}
        reports: list[MonitorReport] = []
        replacements: list[Kline] = []
        events: list[StreamEvent] = []
        trades: dict[str, list[bytes]] = {}  # @trades channel -> its events, in order (one packed run each)
        for item in items:
            if type(item) is Trade:
                run = trades.get(item.instrument)
                if run is None:
                    run = trades[item.instrument] = []
                run.append(trade_event(item))
            elif isinstance(item, KlineOut):
                k = item.kline
                if k.source == "venue":
                    replacements.append(k)
                    continue
                key = kline_key(k)
                cur = klines.get(key)
                if cur is None or (k.open_ms, k.closed) >= (cur.open_ms, cur.closed):
                    klines[key] = k
            elif isinstance(item, Ticker):
                tickers[f"ticker:{item.venue}:{item.instrument}"] = item
            elif isinstance(item, MonitorReport):
                reports.append(item)
        now = self._clock()
        self._prune(now)
        keys: list[str] = []
        args: list[str | int | bytes] = []
        for key, t in tickers.items():
            fields = ticker_fields(t)
            events.append((ticker_channel(t.venue, t.instrument), _json.encode(fields), ()))
            self._queue_hash(keys, args, key, "", fields, TICKER_TTL_S if self._due(key, TICKER_TTL_S, now) else 0)
        for key, kl in klines.items():
            fields = kline_fields(kl)
            events.append((kline_channel(kl.venue, kl.instrument, kl.timeframe), _json.encode(fields), ()))
            self._queue_hash(keys, args, key, fields["open_time"], fields,
                             KLINE_TTL_S if self._due(key, KLINE_TTL_S, now) else 0)
        for k in replacements:  # after ours, not pushed
            fields = kline_fields(k)
            self._queue_hash(keys, args, kline_key(k), fields["open_time"], fields, KLINE_TTL_S)
        if keys:
            pipe.eval(_HSET_MANY, len(keys), *keys, *args)
        plain = {trades_channel(inst): run for inst, run in trades.items()}
        queue_events(pipe, events, self._maxlen, plain)  # after the hashes: a snapshot read never trails the stream
        if reports:
            queue_monitoring(pipe, reports)

    @staticmethod
    def written(items: list[MarketRedisItem], sent_ns: int) -> None:
        """After the batch is in Redis (once, however often it was queued): its reports and, per venue and
        instrument, its newest trade's receipt -> write latency (to ``sent_ns``, when its pipeline went to Redis:
        the sink confirms a batch only at its next call), to this process's Prometheus series."""
        done = sent_ns
        newest: dict[tuple[str, str], int] = {}
        reports: list[MonitorReport] = []
        for item in items:
            if type(item) is Trade:
                if item.recv_ns:
                    newest[(item.venue, item.instrument)] = item.recv_ns
            elif isinstance(item, MonitorReport):
                reports.append(item)
        metrics.record(reports)
        for (venue, _), recv_ns in newest.items():
            metrics.observe_latency(venue, (done - recv_ns,))


def market_item_key(item: MarketRedisItem) -> str:
    """The sink's partition key (:meth:`connectors.redis.sink.RedisPipelineSink.split`): the instrument, so an
    instrument's hashes and push channels are written in order by one writer; a report's owner."""
    return item.owner if type(item) is MonitorReport else item.kline.instrument if type(item) is KlineOut \
        else item.instrument  # type: ignore[union-attr]  # Trade and Ticker


def write_market(pipe: Pipeline, items: list[MarketRedisItem]) -> None:
    """Queue one batch with a TTL on every write (no state; :class:`MarketWriter` is what the dataflow uses)."""
    MarketWriter(refresh_fraction=0.0)(pipe, items)


def kline_point(k: Kline) -> InfluxPoint:
    tags = (("exchange", k.venue), ("symbol", k.instrument), ("timeframe", k.timeframe))
    fields = (("open", k.open), ("high", k.high), ("low", k.low), ("close", k.close), ("volume", k.volume),
              ("quote_volume", k.quote_volume), ("trades", k.trades), ("complete", k.complete),
              ("source", _SOURCE[k.source]))
    return InfluxPoint("kline", tags, fields, k.open_ms)


def ticker_point(t: Ticker) -> InfluxPoint:
    tags = (("exchange", t.venue), ("symbol", t.instrument))
    fields = (("price", t.price), ("bid", t.bid), ("ask", t.ask), ("volume_24h", t.volume_24h),
              ("change_24h", t.change_24h), ("high_24h", t.high_24h), ("low_24h", t.low_24h))
    return InfluxPoint("ticker", tags, fields, t.ts_ms)
