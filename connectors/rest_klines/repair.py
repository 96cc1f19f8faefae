"""``market_data``'s self-repair: venue klines over REST for the intervals its live feed could not see.

* At start (worker 0 only): the last ``KLINE_BACKFILL`` seconds, for every venue of ``MARKET_DATA_VENUES`` that
  has REST klines, every monitored pair and every ``KLINE_TIMEFRAMES`` the venue serves.
* After a reconnect (a shard's ``reconnects`` grew; :class:`operators.outages.OutageTracker`): the interval since
  that shard's last healthy report, for that venue, at most ``KLINE_BACKFILL`` seconds back. It runs once the
  reconnect's minute has closed, so the minute cut in two is fetched whole.

Points are the backfill's (``source=venue``, ``complete=true``, same measurement/tags/time as live ones: they
overwrite what the pipeline wrote for a minute it saw only in part). No checkpoint: a repair is short and
idempotent. The work runs in one daemon thread per worker (its own asyncio loop and one client per venue, each
within its venue's budget), so the dataflow never waits for a venue; ``close()`` stops it (a repair in flight is
abandoned: the next start's backfill covers it).

Delivery: best effort (a venue that keeps failing is logged and skipped). Unit of parallelism: one thread per
worker, fed by the stats of the shards on that worker.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Sequence
from typing import cast

import msgspec
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.influx.sync import InfluxWriteError, SyncInfluxWriter
from connectors.influx.writer import InfluxConfig
from connectors.market.source import MarketStats
from connectors.redis.client import sync_client
from connectors.rest_klines.backfill import VENUES, backfill
from connectors.rest_klines.client import BackfillError, KlineClient
from cryptoflow.logs import get_logger
from operators.instruments import select_pairs
from operators.klines import MINUTE_MS, TIMEFRAME_MS, window_start
from operators.outages import Outage, OutageTracker, covers, repair_range

log = get_logger("connectors.rest_klines.repair")
SETTLE_MS = 2_000  # after a minute closes, venues need a moment to publish its kline


class RepairConfig(msgspec.Struct, frozen=True):
    """What the repair reads and writes (:func:`cryptoflow.connector_configs.repair_config`)."""

    venues: tuple[str, ...]  # those with REST klines
    rest_urls: dict[str, str]
    timeframes: tuple[str, ...]
    influx: InfluxConfig  # its repr leaves the token out
    redis_url: str
    pairs_key: str
    max_pairs: int
    window_s: float  # KLINE_BACKFILL: the start-up backfill, and the longest repair


class _Repairer:
    """The thread: takes outages from a queue, fetches and writes their klines. The outages of one blip (every
    shard of a venue reconnecting) are repaired once: when an outage's minute has closed, the queued ones it
    covers (:func:`operators.outages.covers`) are dropped."""

    def __init__(self, config: RepairConfig) -> None:
        self._config = config
        self._max_back_ms = int(config.window_s * 1000)
        self._queue: queue.Queue[list[Outage] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="kline-repair", daemon=True)
        self._stopping = threading.Event()
        self.repairs_done = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, outages: list[Outage]) -> None:
        if outages:
            self._queue.put(outages)

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(5.0)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        cfg = self._config
        clients = {v: KlineClient(VENUES[v], cfg.rest_urls[v]) for v in cfg.venues}
        influx = cfg.influx
        store = SyncInfluxWriter(str(influx.url), influx.token, influx.org, influx.bucket)
        pending: list[Outage] = []
        try:
            while not self._stopping.is_set():
                if not pending:
                    item = await asyncio.to_thread(self._queue.get)
                    if item is None:
                        return
                    pending = item
                outage, pending = pending[0], pending[1:]
                _, end = repair_range(outage, self._max_back_ms)
                wait_s = (end + SETTLE_MS) / 1000 - time.time()
                if wait_s > 0 and await asyncio.to_thread(self._stopping.wait, wait_s):
                    return  # stopping: the next start's backfill covers this interval
                pending = [o for o in self._queued(pending) if not covers(outage, o, self._max_back_ms)]
                await self._repair(clients[outage.venue], store, outage)
        finally:
            for client in clients.values():
                await client.close()
            store.close()

    def _queued(self, pending: list[Outage]) -> list[Outage]:
        """``pending`` and every outage queued since, in order (a stop request stays queued)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return pending
            if item is None:
                self._queue.put(None)
                return pending
            pending = pending + item

    async def _repair(self, client: KlineClient, store: SyncInfluxWriter, outage: Outage) -> None:
        cfg = self._config
        start, end = repair_range(outage, self._max_back_ms)
        pairs = self._pairs()
        log.info("kline_repair_started", venue=outage.venue, start_ms=start, end_ms=end, pairs=len(pairs))
        written = 0
        for inst in pairs:
            for tf in cfg.timeframes:
                if self._stopping.is_set():
                    return
                try:
                    # whole intervals of tf that hold [start, end): from the one holding start
                    result = await backfill(client, store, None, inst, tf, _floor(start, tf), end)
                    written += result.klines
                except (BackfillError, InfluxWriteError, ValueError) as err:  # unknown symbol or timeframe, no store
                    log.warning("kline_repair_failed", venue=outage.venue, instrument=inst, timeframe=tf,
                                error=str(err))
        self.repairs_done += 1
        log.info("kline_repair_done", venue=outage.venue, start_ms=start, end_ms=end, klines=written)

    def _pairs(self) -> Sequence[str]:
        try:
            client = sync_client(self._config.redis_url, decode_responses=True)
            members = cast(set[str], client.smembers(self._config.pairs_key))
            client.close()
        except redis.RedisError as err:
            log.warning("kline_repair_no_pairs", error=str(err))
            return ()
        return select_pairs(members, self._config.max_pairs)[0]


def _floor(ts_ms: int, timeframe: str) -> int:
    return window_start(ts_ms, TIMEFRAME_MS[timeframe])


class _RepairPartition(StatelessSinkPartition[MarketStats]):
    def __init__(self, config: RepairConfig, startup: bool) -> None:
        self._tracker = OutageTracker()
        self._repairer = _Repairer(config)
        self._repairer.start()
        if startup:  # KLINE_BACKFILL seconds up to the last closed minute (no wait for the open one)
            now_ms = int(time.time() * 1000)
            last_closed = window_start(now_ms, MINUTE_MS) - 1
            self._repairer.submit([Outage(venue, now_ms - int(config.window_s * 1000), last_closed)
                                   for venue in config.venues])

    def write_batch(self, items: list[MarketStats]) -> None:
        outages = []
        for s in items:
            if s.venue not in VENUES:
                continue
            outage = self._tracker.observe(s.venue, s.source, s.shard, s.ts_ms, s.connections, s.reconnects)
            if outage is not None:
                log.info("kline_outage", venue=outage.venue, source=s.source, shard=s.shard,
                         start_ms=outage.start_ms, end_ms=outage.end_ms)
                outages.append(outage)
        self._repairer.submit(outages)

    def close(self) -> None:
        self._repairer.stop()


class KlineRepairSink(DynamicSink[MarketStats]):
    """Sink of the shards' :class:`MarketStats`: start-up backfill and repairs after reconnects (see above)."""

    def __init__(self, config: RepairConfig) -> None:
        self._config = config

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RepairPartition:
        return _RepairPartition(self._config, startup=worker_index == 0)
