"""The OKX order-book source: shards of ``books`` subscriptions, parsed and checked on the worker.

:func:`okx_books_source` is :func:`connectors.books.source.books_source` with OKX's adapter
(:class:`OkxBooks`): frames parsed by :mod:`connectors.okx.books` (a frame may carry several instruments),
OKX's sequencing (``seqId``/``prevSeqId`` + checksum), a REST ``/api/v5/market/books`` snapshot for an update
before any snapshot or ``snapshot_wait`` s without one (:class:`connectors.okx.rest.OkxBooksFetcher`), a
failed check re-synced by resubscribing the instrument. OKX's books alone feed the buffer list (each applied
raw frame, and a REST resync as a rendered snapshot frame) and InfluxDB ``orderbook_data`` samples.
The processor itself is venue-agnostic: :class:`connectors.books.processor.BookProcessor`.

Delivery: every valid book state reaches the hash (coalesced); raw frames are forwarded at most once.
Unit of parallelism: the shard (``ceil(max_trading_pairs / okx_pairs_per_connection)`` shards).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from connectors.books.items import BookSample, BookState, BufferFrame, CollectorItem, ShardStats
from connectors.books.processor import BookProcessor
from connectors.books.source import books_source
from connectors.books.source import shard_count as _shard_count
from connectors.market.frames import ParseError
from connectors.okx.books import frame_instrument, parse_books_frame, parse_rest_books, render_books_snapshot
from connectors.okx.protocol import OkxHooks
from connectors.okx.rest import OkxBooksFetcher
from connectors.redis.pairs import PairsConfig
from connectors.untrusted import Rejected
from connectors.ws.budget import WsTiming
from connectors.ws.source import ShardControl, WsShardSource
from operators.book_sequencing import OKX
from operators.events import BookDelta

__all__ = ["BookSample", "BookState", "BufferFrame", "CollectorItem", "OkxBookProcessor", "OkxBooks",
           "OkxBooksConfig", "ShardStats", "okx_books_source", "shard_count"]


class OkxBooks:
    """:class:`connectors.books.processor.VenueBooks` for OKX ``books``-family channels."""

    venue = "okx"
    sequencing = OKX
    book_depth = 400
    fetch_missing = True
    buffers = True

    def __init__(self, channel: str) -> None:
        self.channel = channel

    def frame_key(self, text: str) -> str:
        return frame_instrument(text)

    def parse(self, text: str, recv_ns: int) -> tuple[BookDelta, ...] | Rejected | None:
        res = parse_books_frame(text, recv_ns=recv_ns)
        if type(res) is tuple:
            return res
        return res if isinstance(res, ParseError) else None

    def parse_snapshot(self, body: str, instrument: str, recv_ns: int) -> BookDelta | str:
        snap = parse_rest_books(body, instrument=instrument, recv_ns=recv_ns)
        return snap if isinstance(snap, BookDelta) else repr(snap)

    def render_snapshot(self, snapshot: BookDelta) -> str:
        return render_books_snapshot(snapshot, channel=self.channel)

    def know(self, instruments: Iterable[str]) -> None:
        pass  # frames name the instId itself


class OkxBookProcessor(BookProcessor):
    """:class:`BookProcessor` with OKX's adapter (the OKX collector's processor, as tests and benchmarks build it)."""

    def __init__(self, shard: int, control: ShardControl, *, channel: str, depth: int = 400,
                 stale_after: float = 30.0, snapshot_wait: float = 3.0, sample_interval: float = 1.0,
                 sample_levels: int | None = None, stats_interval: float = 1.0, with_deltas: bool = False,
                 dataflow: str = "orderbook_collector") -> None:
        super().__init__(shard, control, OkxBooks(channel), view_levels=depth, stale_after=stale_after,
                         snapshot_wait=snapshot_wait, sample_interval=sample_interval, sample_levels=sample_levels,
                         stats_interval=stats_interval, with_deltas=with_deltas, dataflow=dataflow)


class OkxBooksConfig(msgspec.Struct, frozen=True):
    """What :func:`okx_books_source` needs (:func:`cryptoflow.connector_configs.okx_books_config`)."""

    ws_url: str  # OKX_WS_URL
    rest_url: str  # OKX_REST_URL (snapshots for a resync)
    channel: str  # OKX_BOOK_CHANNEL
    pairs_per_connection: int  # OKX_PAIRS_PER_CONNECTION
    timing: WsTiming
    stale_after: float  # WS_STALE_AFTER
    pairs: PairsConfig
    sample_interval: float  # INFLUX_BOOK_INTERVAL
    sample_levels: int | None  # INFLUX_BOOK_LEVELS; None: InfluxDB not configured, no samples


def shard_count(config: OkxBooksConfig) -> int:
    return _shard_count(config.pairs, config.pairs_per_connection)


def okx_books_source(config: OkxBooksConfig, *, shards: int | None = None, with_deltas: bool = False,
                     dataflow: str = "orderbook_collector") -> WsShardSource[CollectorItem]:
    """The OKX source of the order-book collector, configured from ``config``; ``with_deltas``: each
    :class:`BufferFrame` also carries its parsed deltas (for the analysis dataflow's ws mode); ``dataflow``
    names the rejection counters (``<dataflow>:rejected_<reason>``)."""
    timing = config.timing

    def hooks() -> OkxHooks:
        return OkxHooks(config.ws_url, channel=config.channel, ping_interval=timing.ping_interval,
                        pong_timeout=timing.pong_timeout)

    return books_source("okx", pairs=config.pairs, per_connection=config.pairs_per_connection, timing=timing,
                        stale_after=config.stale_after, hooks=hooks, adapter=lambda: OkxBooks(config.channel),
                        fetcher=lambda: OkxBooksFetcher(config.rest_url), sample_interval=config.sample_interval,
                        sample_levels=config.sample_levels, shards=shards, with_deltas=with_deltas,
                        dataflow=dataflow)
