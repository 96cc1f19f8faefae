"""The Bybit v5 order-book source for the collector: ``orderbook.{depth}`` topics, one book per instrument.

:class:`BybitBooks` is the :class:`connectors.books.processor.VenueBooks` adapter: frames parsed by
:func:`connectors.bybit.books.parse_bybit_book_frame` (``u == 1`` is a new snapshot: a restarted service),
Bybit's sequencing (``u`` +1 per push, :data:`operators.book_sequencing.BYBIT`). Bybit has no REST snapshot
that joins the stream, so no fetch (``fetch_missing=False``): a book waits for the snapshot that every
subscription starts with, and a gap re-syncs by resubscribing that one topic (unsubscribe + subscribe on its
connection, :meth:`connectors.ws.shard.ShardRunner.resubscribe`), which brings a fresh snapshot.
The book keeps the topic's depth (``BYBIT_BOOK_DEPTH``: 1, 50 or 200 on spot, up to 500 on linear).

Delivery: every valid book state reaches ``orderbook:bybit:{inst}`` (coalesced per batch).
Unit of parallelism: the shard (:func:`connectors.books.source.books_source`).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from connectors.books.items import CollectorItem
from connectors.books.source import InstrumentTopics, books_source
from connectors.bybit.books import parse_bybit_book_frame
from connectors.bybit.protocol import BybitHooks
from connectors.market.frames import ParseError, symbol_map
from connectors.redis.pairs import PairsConfig
from connectors.untrusted import Rejected
from connectors.ws.budget import WsTiming
from connectors.ws.source import WsShardSource
from operators.book_sequencing import BYBIT
from operators.events import BookDelta

_PREFIX = len('{"topic":"orderbook.')


class BybitBooks:
    """:class:`connectors.books.processor.VenueBooks` for Bybit v5 ``orderbook.{depth}``."""

    venue = "bybit"
    sequencing = BYBIT
    fetch_missing = False
    buffers = False

    def __init__(self, depth: int) -> None:
        self.book_depth = depth
        self._symbols: dict[str, str] = {}

    def frame_key(self, text: str) -> str:
        return text[_PREFIX:text.find('"', _PREFIX)]  # "50.ETHUSDT" of a data frame; a grouping hint only

    def parse(self, text: str, recv_ns: int) -> BookDelta | Rejected | None:
        item = parse_bybit_book_frame(text, recv_ns=recv_ns, symbols=self._symbols)
        if type(item) is BookDelta:
            return item  # bare: the processor builds no tuple per frame
        return item if isinstance(item, ParseError) else None  # a control answer: no book data

    def parse_snapshot(self, body: str, instrument: str, recv_ns: int) -> BookDelta | str:
        return "bybit books take no REST snapshot"  # not reached: fetch_missing is False, no fetcher

    def render_snapshot(self, snapshot: BookDelta) -> str:
        return ""  # not reached: no buffer list

    def know(self, instruments: Iterable[str]) -> None:
        self._symbols.update(symbol_map(instruments))


class BybitBooksConfig(msgspec.Struct, frozen=True):
    """What :func:`bybit_books_source` needs (:func:`cryptoflow.connector_configs.bybit_books_config`)."""

    ws_url: str  # BYBIT_WS_URL (spot, or .../linear)
    depth: int  # BYBIT_BOOK_DEPTH
    pairs_per_connection: int
    timing: WsTiming
    stale_after: float  # WS_STALE_AFTER
    pairs: PairsConfig


def bybit_books_source(config: BybitBooksConfig, *, shards: int | None = None) -> WsShardSource[CollectorItem]:
    timing = config.timing

    def hooks() -> InstrumentTopics:
        # Bybit asks for a ping every 20 s: never less often than that, whatever WS_PING_INTERVAL says
        inner = BybitHooks(config.ws_url, ping_interval=min(timing.ping_interval, 20.0),
                           pong_timeout=timing.pong_timeout)
        return InstrumentTopics(inner, f"orderbook.{config.depth}")

    return books_source("bybit", pairs=config.pairs, per_connection=config.pairs_per_connection, timing=timing,
                        stale_after=config.stale_after, hooks=hooks, adapter=lambda: BybitBooks(config.depth),
                        spot_only=True, shards=shards)
