"""A collector source for any venue: WebSocket shards of book topics, a :class:`BookProcessor` per shard.

:func:`books_source` builds a :class:`connectors.ws.source.WsShardSource` whose partitions each run a
:class:`connectors.ws.shard.ShardRunner` (the venue's hooks, the ``config:trading_pairs`` poller, its REST
fetcher if it has one) and a :class:`connectors.books.processor.BookProcessor` with the venue's adapter.
A topic is an instrument id for every venue: :class:`InstrumentTopics` maps it onto the venue vocabulary's
``"<kind>:<instrument>"`` (Binance ``depth@100ms:ETH-USDT``, Bybit ``orderbook.50:ETH-USDT``), and
:class:`SpotPairs` keeps the derivatives away from the venues that list spot pairs only.

Delivery: see :mod:`connectors.books.processor`. Unit of parallelism: the shard
(``ceil(max_trading_pairs / pairs_per_connection)`` shards per venue).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from connectors.books.items import CollectorItem
from connectors.books.processor import BookProcessor, VenueBooks
from connectors.redis.pairs import PairsConfig
from connectors.ws.budget import WsTiming
from connectors.ws.hooks import Control, Op, Request, VenueHooks
from connectors.ws.shard import Fetcher, ShardRunner, TopicSource
from connectors.ws.source import ShardControl, WsShardSource
from operators.instruments import is_spot


class InstrumentTopics:
    """A venue's hooks for topics that are instrument ids: subscribes ``<kind>:<instrument>`` for each."""

    def __init__(self, inner: VenueHooks, kind: str) -> None:
        self._inner = inner
        self._kind = kind
        self.venue = inner.venue
        self.limits = inner.limits
        self.keepalive = inner.keepalive

    def url(self) -> str:
        return self._inner.url()

    def requests(self, op: Op, topics: Sequence[str], first_id: int) -> list[Request]:
        out = []
        start = 0
        for req in self._inner.requests(op, [f"{self._kind}:{t}" for t in topics], first_id):
            n = len(req.topics)
            out.append(Request(req.op, tuple(topics[start:start + n]), req.text, req.req_id))
            start += n
        return out

    def classify(self, text: str) -> Control | None:
        return self._inner.classify(text)  # Binance and Bybit answer by request id: no topic to map back


class SpotPairs:
    """The polled pairs a spot-only venue can take (derivative ids have no Binance/Bybit spot symbol)."""

    def __init__(self, inner: TopicSource) -> None:
        self._inner = inner
        self.interval = inner.interval

    async def poll(self) -> frozenset[str] | None:
        pairs = await self._inner.poll()
        return None if pairs is None else frozenset(p for p in pairs if is_spot(p))

    async def report_rejected(self, topic: str, reason: str) -> None:
        await self._inner.report_rejected(topic, reason)

    async def close(self) -> None:
        await self._inner.close()


def shard_count(pairs: PairsConfig, per_connection: int) -> int:
    return max(1, math.ceil(pairs.limit / per_connection))


def books_source(venue: str, *, pairs: PairsConfig, per_connection: int, timing: WsTiming, stale_after: float,
                 hooks: Callable[[], VenueHooks], adapter: Callable[[], VenueBooks],
                 fetcher: Callable[[], Fetcher] | None = None, spot_only: bool = False,
                 sample_interval: float = 1.0, sample_levels: int | None = None, view_levels: int = 400,
                 shards: int | None = None, with_deltas: bool = False,
                 dataflow: str = "orderbook_collector") -> WsShardSource[CollectorItem]:
    """One venue's book source (see the module docstring); ``hooks``/``adapter``/``fetcher`` are built per
    shard. ``dataflow`` names the rejection counters (``<dataflow>:rejected_<reason>``)."""
    count = shards or shard_count(pairs, per_connection)

    def runner(index: int, total: int, emit: object) -> ShardRunner:
        poller: TopicSource = pairs.poller(venue, announce=index == 0)
        return ShardRunner(index=index, shards=total, hooks=hooks(), emit=emit,  # type: ignore[arg-type]
                           source=SpotPairs(poller) if spot_only else poller, per_connection=per_connection,
                           backoff_initial=timing.backoff_initial, backoff_max=timing.backoff_max, fetcher=fetcher)

    def processor(index: int, control: ShardControl) -> BookProcessor:
        return BookProcessor(index, control, adapter(), view_levels=view_levels, stale_after=stale_after,
                             sample_interval=sample_interval, sample_levels=sample_levels,
                             with_deltas=with_deltas, dataflow=dataflow)

    return WsShardSource(count, runner, processor)
