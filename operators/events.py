"""Typed domain events that flow between dataflow steps. Venue-neutral, immutable, cheap to pickle.

Conventions (STYLE.md): times are integer epoch milliseconds (``*_ms``), converted once at the parser;
prices and sizes are exact — book levels keep the exchange's strings, trades/tickers/klines use ``Decimal``.
Venue wire models live in ``connectors/<venue>/``; only these types cross step boundaries.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Literal

import msgspec

Side = Literal["buy", "sell"]


@lru_cache(maxsize=4096)  # a kline's open/close times are formatted again on every batch that updates it
def iso_ms(ts_ms: int) -> str:
    """Epoch milliseconds -> ISO-8601 UTC with milliseconds (``2026-11-21T09:00:00.123Z``): the one place
    where our integer times become the strings Redis hashes and emails show."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def epoch_ms(text: str) -> int:
    """ISO-8601 -> epoch milliseconds, the inverse of :func:`iso_ms` (a time without an offset is UTC); raises
    ``ValueError`` for anything else."""
    moment = datetime.fromisoformat(text)
    # timedelta arithmetic, not timestamp() * 1000: the float product truncates 16.063 s to 16062 ms
    return ((moment if moment.tzinfo else moment.replace(tzinfo=UTC)) - _EPOCH) // _MS


class BookStatus(StrEnum):
    SYNCING = "syncing"
    VALID = "valid"
    STALE = "stale"
    RESYNCING = "resyncing"


# gc=False on the book path's types (here and on the venues' book wire models): they hold only strings,
# numbers and tuples of levels, so they can never be part of a reference cycle, and untracked each object is
# 16 bytes smaller (no collector header) and cheaper to make and free. A book keeps ~800 Levels: 7 % less memory
# per book, and a few % per update (benchmarks/RESULTS.md, issue 15, session 10).
class Level(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One price level as the exchange wrote it (``size == "0"`` removes the level)."""

    price: str
    size: str


class BookDelta(msgspec.Struct, frozen=True, gc=False):
    """A snapshot or an incremental update of one instrument's book, as parsed from one frame."""

    venue: str
    instrument: str
    action: Literal["snapshot", "update"]
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    ts_ms: int  # exchange time
    recv_ns: int  # receive time (time.time_ns()) for latency
    checksum: int = 0  # 0: the venue sent none
    seq_id: int | None = None
    prev_seq_id: int | None = None


class BookView(msgspec.Struct, frozen=True, gc=False):
    """What is published of a book: the top levels best first, and its integrity status."""

    venue: str
    instrument: str
    status: BookStatus
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    ts_ms: int
    recv_ns: int
    checksum: int = 0
    seq_id: int | None = None
    action: Literal["snapshot", "update"] = "update"


class Trade(msgspec.Struct, frozen=True):
    venue: str
    instrument: str  # our instrument id (BTC-USDT), whatever the venue calls it
    trade_id: str
    price: Decimal
    size: Decimal
    side: Side
    ts_ms: int
    recv_ns: int = 0
    count: int = 1  # exchange trades in this event (a Binance aggTrade counts l - f + 1)
    # The venue's contiguous trade number of the last trade in this event, where the venue numbers its trades
    # without holes per instrument (Binance t / aggTrade l, OKX tradeId): this event covers seq - count + 1 ..
    # seq. None where ids are not contiguous (Bybit, the local exchange): no gap can be seen.
    seq: int | None = None
    gap: bool = False  # trades may be missing right before this one (operators/trade_ids.py): kline incomplete


class Ticker(msgspec.Struct, frozen=True):
    venue: str
    instrument: str
    price: Decimal
    bid: Decimal | None
    ask: Decimal | None
    volume_24h: Decimal
    change_24h: Decimal | None  # percent
    high_24h: Decimal
    low_24h: Decimal
    ts_ms: int


class BestQuote(msgspec.Struct, frozen=True):
    """Top of book, for venues whose ticker lacks bid/ask (Bybit spot: from ``orderbook.1``)."""

    venue: str
    instrument: str
    bid: Decimal
    ask: Decimal
    ts_ms: int


class Kline(msgspec.Struct, frozen=True):
    venue: str
    instrument: str
    timeframe: str  # 1m, 5m, 1h, 1d
    open_ms: int
    close_ms: int  # exclusive end of the window
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int
    closed: bool
    source: Literal["pipeline", "venue"] = "pipeline"  # published as source "trades" / "venue"
    complete: bool = True  # False: a trade-id gap (or an unknown start) within the interval; see trade_ids.py


class AnalysisResult(msgspec.Struct, frozen=True):
    """One analysis of one book moment; ``None`` fields are not computable (empty side, window filling)."""

    instrument: str
    analysis_ms: int
    book_status: BookStatus
    support_level_1: Decimal | None = None
    support_level_2: Decimal | None = None
    resistance_level_1: Decimal | None = None
    resistance_level_2: Decimal | None = None
    large_buy_orders: Decimal | None = None
    large_sell_orders: Decimal | None = None
    large_order_trend: Literal["bullish", "bearish", "neutral"] = "neutral"
    depth_anomaly_score: float | None = None
    depth_anomaly_alert: Literal["normal", "warning", "alert"] = "normal"
    liquidity_index: float | None = None
    liquidity_alert: Literal["normal", "warning", "alert"] = "normal"
    recv_ns: int = 0
    exchange_ms: int = 0


class AlertEvent(msgspec.Struct, frozen=True):
    """A transition into warning/alert of one analysis of one instrument."""

    instrument: str
    alert_type: str  # depth_anomaly, liquidity_shrink, large_orders
    level: Literal["warning", "alert"]
    value: float
    threshold: float
    message: str
    ts_ms: int


class EmailJob(msgspec.Struct, frozen=True):
    """An email on ``queue:email`` (docs/CONTRACTS.md's JSON shape, field for field)."""

    id: str
    alert_id: str
    to: str
    subject: str
    body: str
    created_at: str
    attempts: int = 0
