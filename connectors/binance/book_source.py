"""The Binance spot order-book source for the collector: ``depth@100ms`` + REST snapshots, U/u sync.

:class:`BinanceBooks` is the :class:`connectors.books.processor.VenueBooks` adapter: frames parsed by
:func:`connectors.binance.books.parse_binance_book_frame`, Binance's sequencing
(:data:`operators.book_sequencing.BINANCE`: ``U``/``u`` continuity, the first update after a snapshot bridges
it). Binance sends no snapshot on the stream, so the machine does Binance's documented procedure: the FIRST
update of a book asks for ``GET /api/v3/depth?limit=1000`` (:class:`BinanceDepthFetcher`, run in the shard's
I/O thread while the updates keep coming and are buffered), the snapshot plus the buffered updates after it
make the book ``valid``; a gap re-syncs that symbol alone the same way (a new snapshot, nothing else moves).

Request weight: each snapshot weighs 50 (limit 1000). Binance allows 6,000 per minute per IP; a fetcher
spends at most ``weight_per_minute`` (default 3,000: half, leaving room for the klines repair and other
processes on the same address), waits when it is spent, and after an HTTP 429/418 sends nothing until the
answer's ``Retry-After`` has passed (a 418 is Binance's ban for ignoring a 429).

Delivery: every valid book state reaches ``orderbook:binance:{inst}`` (coalesced per batch).
Unit of parallelism: the shard (:func:`connectors.books.source.books_source`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from urllib.parse import urlencode

import aiohttp
import msgspec

from connectors.binance.books import depth_weight, parse_binance_book_frame, parse_depth_snapshot
from connectors.binance.protocol import BinanceHooks
from connectors.books.items import CollectorItem
from connectors.books.source import InstrumentTopics, books_source
from connectors.http_body import bounded_text
from connectors.market.frames import ParseError, symbol_map
from connectors.redis.pairs import PairsConfig
from connectors.untrusted import Rejected
from connectors.ws.budget import Budget, WsTiming
from connectors.ws.source import WsShardSource
from cryptoflow.logs import get_logger
from operators.book_sequencing import BINANCE
from operators.events import BookDelta
from operators.instruments import venue_symbol

log = get_logger("connectors.binance.book_source")
SNAPSHOT_LIMIT = 1000  # levels of a REST snapshot: Binance's largest at weight 50
STREAM = "depth@100ms"


class BinanceBooks:
    """:class:`connectors.books.processor.VenueBooks` for Binance spot diff depth."""

    venue = "binance"
    sequencing = BINANCE
    book_depth = SNAPSHOT_LIMIT
    fetch_missing = True
    buffers = False

    def __init__(self) -> None:
        self._symbols: dict[str, str] = {}

    def frame_key(self, text: str) -> str:
        return text[11:text.find("@", 11)]  # "ethusdt" of '{"stream":"ethusdt@depth@100ms",...}'; a hint only

    def parse(self, text: str, recv_ns: int) -> BookDelta | Rejected | None:
        item = parse_binance_book_frame(text, recv_ns=recv_ns, symbols=self._symbols)
        if type(item) is BookDelta:
            return item  # bare: the processor builds no tuple per frame
        return item if isinstance(item, ParseError) else None  # a BookTicker or a control answer: no book data

    def parse_snapshot(self, body: str, instrument: str, recv_ns: int) -> BookDelta | str:
        snap = parse_depth_snapshot(body, instrument=instrument, recv_ns=recv_ns)
        return snap if isinstance(snap, BookDelta) else repr(snap)

    def render_snapshot(self, snapshot: BookDelta) -> str:
        return ""  # not reached: no buffer list

    def know(self, instruments: Iterable[str]) -> None:
        self._symbols.update(symbol_map(instruments))


class BinanceRestError(Exception):
    """The snapshot request did not return HTTP 200 (or was not sent: the weight budget is under a ban)."""


class BinanceDepthFetcher:
    """``await fetcher(inst) -> body text`` of ``GET /api/v3/depth?symbol=..&limit=1000``, within a weight budget."""

    def __init__(self, base_url: str, *, limit: int = SNAPSHOT_LIMIT, weight_per_minute: int = 3000,
                 timeout: float = 10.0, max_in_flight: int = 2) -> None:
        self._base = base_url.rstrip("/")
        self._limit = limit
        self._budget = Budget(max(1, weight_per_minute // depth_weight(limit)), 60.0)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(max_in_flight)
        self._banned_until = 0.0  # monotonic: Retry-After of a 429/418

    def url(self, inst: str) -> str:
        return f"{self._base}/api/v3/depth?{urlencode({'symbol': venue_symbol(inst), 'limit': self._limit})}"

    async def __call__(self, inst: str) -> str:
        url = self.url(inst)
        async with self._slots:
            while (wait := max(self._budget.wait_time(time.monotonic()), self._banned_until - time.monotonic())) > 0:
                log.info("binance_depth_waiting", instrument=inst, seconds=round(wait, 3), reason="request weight")
                await asyncio.sleep(wait)
            self._budget.take(time.monotonic())
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=self._timeout)
            async with self._session.get(url) as resp:
                body = await bounded_text(resp, url, BinanceRestError)
                if resp.status in (418, 429):
                    retry = float(resp.headers.get("Retry-After", "60") or 60)
                    self._banned_until = time.monotonic() + retry
                    log.warning("binance_depth_refused", status=resp.status, retry_after=retry)
                if resp.status != 200:
                    msg = f"GET {url} answered HTTP {resp.status}: {body[:200]}"
                    raise BinanceRestError(msg)
                return body

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class BinanceBooksConfig(msgspec.Struct, frozen=True):
    """What :func:`binance_books_source` needs (:func:`cryptoflow.connector_configs.binance_books_config`)."""

    ws_url: str  # BINANCE_WS_URL
    rest_url: str  # BINANCE_REST_URL
    pairs_per_connection: int
    timing: WsTiming
    stale_after: float  # WS_STALE_AFTER
    pairs: PairsConfig
    weight_per_minute: int = 3000


def binance_books_source(config: BinanceBooksConfig, *, shards: int | None = None) -> WsShardSource[CollectorItem]:
    timing = config.timing

    def hooks() -> InstrumentTopics:
        inner = BinanceHooks(config.ws_url, silence=timing.ping_interval, pong_timeout=timing.pong_timeout)
        return InstrumentTopics(inner, STREAM)

    # One budget per shard: the weight per minute is split between the shards of the process
    count = shards or max(1, -(-config.pairs.limit // config.pairs_per_connection))
    weight = max(depth_weight(SNAPSHOT_LIMIT), config.weight_per_minute // count)
    return books_source("binance", pairs=config.pairs, per_connection=config.pairs_per_connection, timing=timing,
                        stale_after=config.stale_after, hooks=hooks, adapter=BinanceBooks,
                        fetcher=lambda: BinanceDepthFetcher(config.rest_url, weight_per_minute=weight),
                        spot_only=True, shards=count)
