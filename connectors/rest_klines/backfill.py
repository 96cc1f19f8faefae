"""The backfill loop: a range of one instrument's klines from a venue into InfluxDB, page by page, resumable.

Pages go forward in time; after each page is written (synchronously) the checkpoint moves to the page's end.
Killed at any moment, a run loses at most the page in flight, and the next run with the same range starts at
the checkpoint; a page written twice is harmless (same measurement, tags and time: one point). Only closed
intervals are fetched: the range ends at the start of the current interval at the latest.

Delivery: at-least-once per kline, idempotent in InfluxDB. Unit of parallelism: one instrument and timeframe
per call (call it concurrently for several; each venue client keeps its own budget).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec

from connectors.influx.sync import SyncInfluxWriter
from connectors.rest_klines.binance import BinanceKlines
from connectors.rest_klines.bybit import BybitKlines
from connectors.rest_klines.client import KlineClient
from connectors.rest_klines.okx import OkxKlines
from connectors.rest_klines.store import Checkpoint, Checkpoints, backfill_point
from connectors.rest_klines.venue import KlineVenue
from cryptoflow.logs import get_logger
from operators.klines import TIMEFRAME_MS, window_start

log = get_logger("connectors.rest_klines.backfill")

VENUES: dict[str, KlineVenue] = {"binance": BinanceKlines(), "okx": OkxKlines(), "bybit": BybitKlines()}
Progress = Callable[[int, int], None]  # (open time reached, klines in this page)


class BackfillResult(msgspec.Struct, frozen=True):
    start_ms: int  # where this run started (the checkpoint when resuming)
    end_ms: int
    klines: int  # written by this run
    pages: int
    missing: int  # intervals in the range the venue returned no kline for
    resumed: bool


def closed_range(start_ms: int, end_ms: int, timeframe: str, now_ms: int) -> tuple[int, int]:
    """``[start, end)`` in whole intervals: start rounded up, end rounded down and at most the open interval."""
    span = TIMEFRAME_MS[timeframe]
    first = window_start(start_ms + span - 1, span)
    return first, min(window_start(end_ms, span), window_start(now_ms, span))


async def backfill(client: KlineClient, store: SyncInfluxWriter, checkpoints: Checkpoints | None, inst: str,
                   timeframe: str, start_ms: int, end_ms: int, *, progress: Progress | None = None,
                   restart: bool = False) -> BackfillResult:
    venue = client.venue.name
    first, end = closed_range(start_ms, end_ms, timeframe, int(time.time() * 1000))
    span = TIMEFRAME_MS[timeframe]
    saved = checkpoints.load(venue, inst, timeframe) if checkpoints is not None else None
    if saved is not None and saved.updated_ms:
        client.follow_previous_run(time.time() - saved.updated_ms / 1000)
    saved = None if restart else saved
    resumed = saved is not None and (saved.start_ms, saved.end_ms) == (first, end)
    cursor = max(first, saved.next_ms) if saved is not None and resumed else first
    log.info("backfill_started", venue=venue, instrument=inst, timeframe=timeframe, start_ms=first, end_ms=end,
             resume_ms=cursor if resumed else None)
    run_start, written, pages, missing = cursor, 0, 0, 0
    while cursor < end:
        page_end = min(end, cursor + client.venue.page_limit * span)
        klines = await client.page(inst, timeframe, cursor, page_end)
        await asyncio.to_thread(store.write, [backfill_point(k) for k in klines])
        if checkpoints is not None:
            checkpoints.save(venue, inst, timeframe, Checkpoint(first, end, page_end, page_end >= end))
        written, pages = written + len(klines), pages + 1
        missing += (page_end - cursor) // span - len(klines)
        cursor = page_end
        if progress is not None:
            progress(cursor, len(klines))
    if checkpoints is not None and cursor >= end and pages == 0:
        checkpoints.save(venue, inst, timeframe, Checkpoint(first, end, end, True))
    log.info("backfill_done", venue=venue, instrument=inst, timeframe=timeframe, klines=written, pages=pages,
             missing=missing, requests=client.requests, rate_limited=client.rate_limited, paused=client.paused,
             retries=client.retries, budget_wait_s=round(client.budget.waited_s, 2))
    return BackfillResult(run_start, end, written, pages, missing, resumed)
