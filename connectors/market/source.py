"""Market-data WebSocket sources of OKX, Binance and Bybit on the shared machinery (:mod:`connectors.ws`).

Per venue one :class:`~connectors.ws.source.WsShardSource` (OKX: two, ``/ws/v5/public`` for trades and
tickers, ``/ws/v5/business`` for candles). The wanted topics are the pairs of ``config:trading_pairs``
(:class:`~connectors.redis.pairs.PairsPoller`, diffed live) times the venue's channels (:class:`ChannelTopics`);
Binance and Bybit take spot ids only (derivatives are OKX-only). Frames are parsed on the worker by
:class:`MarketProcessor` into domain events; parse errors (:class:`connectors.untrusted.Rejected`) are counted
(``rejected_<reason>``, ``market_data:rejected_<reason>``) and logged once per reason, never passed on.

Delivery: at-most-once while connected (a live feed cannot be replayed; klines see the gap, reconciliation
reports it). Unit of parallelism: the shard (each topic lives on one shard, so one instrument's trades keep
their order). With Bytewax recovery each shard snapshots, per instrument, the newest trade it has passed on
(event time, trade id); after a restart, trades of that instrument up to it are dropped as already counted
(a feed that resends from the start, like a replay, is not aggregated twice) until a newer one arrives.
Trade-id continuity (:class:`operators.trade_ids.TradeIds`) is checked here, where one instrument's trades
are still in feed order; its last ids are in the same snapshot, so the first trade after a restart is
checked against the last one before it (counter ``market_trade_id_gaps``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import msgspec

from connectors.binance.market import parse_binance_frame
from connectors.binance.protocol import BinanceHooks
from connectors.bybit.market import KLINE_INTERVALS, parse_bybit_frame
from connectors.bybit.protocol import BybitHooks
from connectors.market.frames import MarketEvent, MarketItem, ParseError, SymbolMap, symbol_map
from connectors.okx.market import CANDLE_CHANNELS, parse_okx_market_frame
from connectors.okx.protocol import OkxHooks
from connectors.redis.pairs import PairsConfig, PairsPoller
from connectors.untrusted import RejectTally, rejected
from connectors.ws.budget import WsTiming
from connectors.ws.events import Disconnected, Frame, Rejected, TopicsChecked, WsEvent
from connectors.ws.hooks import Reject, VenueHooks
from connectors.ws.shard import ShardRunner
from connectors.ws.source import ShardControl, WsShardSource
from cryptoflow.logs import get_logger
from operators.events import Trade
from operators.instruments import is_spot
from operators.kline_steps import InstrumentRemoved
from operators.trade_ids import TradeIds

log = get_logger("connectors.market.source")
Parser = Callable[[str, int, SymbolMap], list[MarketItem]]


class MarketStats(msgspec.Struct, frozen=True):
    """One shard's gauges (now) and counters (since its previous stats)."""

    venue: str
    source: str
    shard: int
    ts_ms: int
    connections: int
    reconnects: int
    topics: int
    counters: tuple[tuple[str, int], ...] = ()
    last_config_check_ms: int = 0


MarketSourceItem = MarketEvent | MarketStats | InstrumentRemoved
TradeMark = tuple[int, int, str]  # (event ms, len(trade id), trade id): numeric ids compare as numbers


def trade_mark(t: Trade) -> TradeMark:
    """A trade's place in its instrument's feed: event time, then trade id."""
    return (t.ts_ms, len(t.trade_id), t.trade_id)


class ChannelTopics:
    """``TopicSource``: the polled pairs times ``channels`` (``"<channel>:<instrument>"``).

    A venue refusal of the ``primary`` channel (trades) rejects the pair in ``config:trading_pairs:rejected``;
    a refused secondary channel (a kline interval the venue lacks) is only logged.
    """

    def __init__(self, poller: PairsPoller, channels: tuple[str, ...], *, spot_only: bool, primary: str) -> None:
        self.poller = poller
        self.channels = channels
        self.spot_only = spot_only
        self.primary = primary
        self.interval = poller.interval

    async def poll(self) -> frozenset[str] | None:
        pairs = await self.poller.poll()
        if pairs is None:
            return None
        return frozenset(f"{ch}:{inst}" for inst in pairs if not self.spot_only or is_spot(inst)
                         for ch in self.channels)

    async def report_rejected(self, topic: str, reason: str) -> None:
        channel, _, inst = topic.partition(":")
        if channel == self.primary:
            await self.poller.report_rejected(inst, reason)
        else:
            log.warning("market_channel_rejected", venue=self.poller.venue, topic=topic, reason=reason)

    async def close(self) -> None:
        await self.poller.close()


class MarketProcessor:
    """Parses one shard's frames into domain events; counts what it drops; reports stats every second."""

    def __init__(self, venue: str, source: str, shard: int, control: ShardControl, parse: Parser,
                 stats_interval: float = 1.0, primary: str = "") -> None:
        self.venue = venue
        self.primary = primary  # the trades channel: its removal means the pair left the set
        self.source = source
        self.shard = shard
        self._control = control
        self._parse = parse
        self._symbols: dict[str, str] = {}
        self._topics = 0
        self._counters: Counter[str] = Counter()
        self._frames = 0
        self._stats_ns = int(stats_interval * 1e9)
        self._next_stats = 0
        self._last_check_ms = 0
        self._rejects = RejectTally(log, "market_data", event="market_parse_error", venue=venue, source=source,
                                    shard=shard)
        self._newest: dict[str, TradeMark] = {}  # per instrument, the newest trade passed on (the snapshot)
        self._seen: dict[str, TradeMark] = {}  # restored: trades up to these were counted before the restart
        self._ids = TradeIds()

    def snapshot(self) -> tuple[dict[str, TradeMark], dict[str, int | None]]:
        return dict(self._newest), self._ids.snapshot()

    def resume(self, state: dict[str, TradeMark] | tuple[dict[str, TradeMark], dict[str, int | None]]) -> None:
        marks, ids = state if isinstance(state, tuple) else (state, {})  # a snapshot from before trade ids
        self._newest = dict(marks)
        self._seen = dict(marks)
        self._ids = TradeIds(ids)
        log.info("market_source_resumed", venue=self.venue, source=self.source, shard=self.shard,
                 instruments=len(marks))

    def _fresh(self, t: Trade) -> bool:
        """Whether to pass ``t`` on: not already counted before a restart; tracks the newest per instrument."""
        mark = trade_mark(t)
        inst = t.instrument
        seen = self._seen.get(inst)
        if seen is not None:
            if mark <= seen:
                self._counters["market_replayed_trades"] += 1
                return False
            del self._seen[inst]
        newest = self._newest.get(inst)
        if newest is None or mark > newest:
            self._newest[inst] = mark
        return True

    def on_events(self, events: list[WsEvent]) -> list[MarketSourceItem]:
        out: list[MarketSourceItem] = []
        for ev in events:
            if type(ev) is Frame:
                self._frames += 1
                for item in self._parse(ev.text, ev.recv_ns, self._symbols):
                    if isinstance(item, ParseError):
                        self._bad(item)
                    elif type(item) is Trade:
                        if self._fresh(item):
                            out.append(self._ids.check(item))
                    elif isinstance(item, MarketEvent):
                        out.append(item)
                    elif isinstance(item, Reject):  # a venue's refusal; acks, pongs, notices, ignored: dropped
                        self._counters["market_error_messages"] += 1
                continue
            if isinstance(ev, TopicsChecked):
                self._last_check_ms = ev.ts_ms
                if ev.ok:
                    self._topics = len(ev.topics)
                    self._symbols.update(symbol_map(t.partition(":")[2] for t in ev.topics))
                    self._counters["subscription_changes"] += len(ev.added) + len(ev.removed)
                    for topic in ev.removed:
                        channel, _, inst = topic.partition(":")
                        if channel == self.primary:
                            self._ids.forget(inst)
                            out.append(InstrumentRemoved(self.venue, inst))
            elif isinstance(ev, Rejected):
                self._counters["market_rejected_topics"] += 1
            elif isinstance(ev, Disconnected):
                if not ev.planned:
                    self._counters["market_disconnects"] += 1
                if ev.rejected:  # the socket refused a frame over its size limit (close 1009)
                    self._rejects.add(rejected(ev.rejected, ev.reason, ""))
        return out

    def _bad(self, err: ParseError) -> None:
        self._rejects.add(err)

    def on_tick(self, now_ns: int) -> list[MarketSourceItem]:
        if now_ns < self._next_stats:
            return []
        self._next_stats = now_ns + self._stats_ns
        self._counters.update(self._rejects.drain())
        if self._frames:  # system:monitoring market_frames_received (the collector's is frames_received)
            self._counters["market_frames_received"] += self._frames
            self._frames = 0
        if self._ids.gaps:
            self._counters["market_trade_id_gaps"] += self._ids.gaps
            self._ids.gaps = 0
        counters = tuple(sorted(self._counters.items()))
        self._counters.clear()
        return [MarketStats(self.venue, self.source, self.shard, now_ns // 1_000_000, self._control.connections,
                            self._control.reconnects, self._topics, counters, self._last_check_ms)]


def _okx_parse(text: str, recv_ns: int, _symbols: SymbolMap) -> list[MarketItem]:
    return parse_okx_market_frame(text, recv_ns=recv_ns)


def _binance_parse(text: str, recv_ns: int, symbols: SymbolMap) -> list[MarketItem]:
    return parse_binance_frame(text, recv_ns=recv_ns, symbols=symbols)


def _bybit_parse(text: str, recv_ns: int, symbols: SymbolMap) -> list[MarketItem]:
    return parse_bybit_frame(text, recv_ns=recv_ns, symbols=symbols)


class MarketSourceConfig(msgspec.Struct, frozen=True):
    """What :func:`market_sources` needs (:func:`cryptoflow.connector_configs.market_source_config`)."""

    venues: tuple[str, ...]  # MARKET_DATA_VENUES (those without a WebSocket source here are skipped)
    timeframes: tuple[str, ...]  # KLINE_TIMEFRAMES
    binance_trade_stream: str  # BINANCE_TRADE_STREAM's channel
    okx_ws_url: str
    okx_business_url: str
    binance_ws_url: str
    bybit_ws_url: str
    timing: WsTiming
    pairs: PairsConfig


class _Spec(msgspec.Struct, frozen=True):
    venue: str
    source: str
    channels: tuple[str, ...]
    primary: str
    spot_only: bool
    shards: int


def venue_specs(config: MarketSourceConfig) -> list[_Spec]:
    """Which sources and channels ``MARKET_DATA_VENUES`` and ``KLINE_TIMEFRAMES`` ask for."""
    tfs = config.timeframes
    specs: list[_Spec] = []
    for venue in config.venues:
        if venue == "okx":
            specs.append(_Spec("okx", "okx_public", ("trades", "tickers"), "trades", False, 2))
            candles = tuple(CANDLE_CHANNELS[tf] for tf in tfs if tf in CANDLE_CHANNELS)
            if candles:
                specs.append(_Spec("okx", "okx_business", candles, "", False, 1))
        elif venue == "binance":
            trade = config.binance_trade_stream
            chans = (trade, "ticker", *(f"kline_{tf}" for tf in tfs))
            specs.append(_Spec("binance", "binance", chans, trade, True, 2))
        elif venue == "bybit":
            chans = ("publicTrade", "tickers", "orderbook.1",
                     *(f"kline.{KLINE_INTERVALS[tf]}" for tf in tfs if tf in KLINE_INTERVALS))
            specs.append(_Spec("bybit", "bybit", chans, "publicTrade", True, 2))
    return specs


def _hooks(spec: _Spec, config: MarketSourceConfig) -> VenueHooks:
    ping, pong = config.timing.ping_interval, config.timing.pong_timeout
    if spec.source == "okx_public":
        return OkxHooks(config.okx_ws_url, ping_interval=ping, pong_timeout=pong)
    if spec.source == "okx_business":
        return OkxHooks(config.okx_business_url, ping_interval=ping, pong_timeout=pong)
    if spec.venue == "binance":
        return BinanceHooks(config.binance_ws_url, silence=ping, pong_timeout=pong)
    return BybitHooks(config.bybit_ws_url, pong_timeout=pong)


_PARSERS: dict[str, Parser] = {"okx": _okx_parse, "binance": _binance_parse, "bybit": _bybit_parse}


def market_sources(config: MarketSourceConfig) -> list[tuple[str, WsShardSource[MarketSourceItem]]]:
    """``(step_id, source)`` per venue connection family, configured from ``config``."""
    out = []
    for spec in venue_specs(config):
        def runner(index: int, total: int, emit: object, spec: _Spec = spec) -> ShardRunner:
            hooks = _hooks(spec, config)
            poller = config.pairs.poller(spec.venue, announce=index == 0 and spec.source != "okx_business")
            topics = ChannelTopics(poller, spec.channels, spot_only=spec.spot_only, primary=spec.primary)
            return ShardRunner(index=index, shards=total, hooks=hooks, source=topics, emit=emit,  # type: ignore[arg-type]
                               per_connection=hooks.limits.topics_per_connection,
                               backoff_initial=config.timing.backoff_initial, backoff_max=config.timing.backoff_max)

        def processor(index: int, control: ShardControl, spec: _Spec = spec) -> MarketProcessor:
            return MarketProcessor(spec.venue, spec.source, index, control, _PARSERS[spec.venue],
                                   primary=spec.primary)

        out.append((spec.source, WsShardSource(spec.shards, runner, processor)))
    return out
