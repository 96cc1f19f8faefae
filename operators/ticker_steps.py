"""The Bytewax steps of the 24 h tickers (no I/O): venue tickers and best quotes merged per instrument.

Wiring (``dataflows/market_data.py``, :func:`ticker_steps`): the venues' tickers and best quotes (Bybit
``orderbook.1``), plus a rolling 24 h ticker computed from the per-batch trade buckets of the exchange's own
trades (:func:`operators.trade_ticker.update_trade_ticker`: that venue sends no ticker), keyed
``venue:instrument`` -> ``stateful_map`` with :func:`merge_ticker_flagged` -> tickers for Redis; the ones that
came from a ticker (not from a best quote alone) also for InfluxDB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream

from operators.events import BestQuote, Ticker
from operators.klines import Bucket
from operators.tickers import TickerState, merge_ticker
from operators.trade_ticker import update_trade_ticker


def merge_ticker_flagged(state: TickerState | None,
                         ev: Ticker | BestQuote) -> tuple[TickerState, tuple[Ticker, bool] | None]:
    """:func:`operators.tickers.merge_ticker` for ``stateful_map``: the ticker to publish, and whether ``ev``
    was a ticker (``False``: a best quote re-emitted the last ticker)."""
    st, ticker = merge_ticker(state, ev)
    return st, None if ticker is None else (ticker, isinstance(ev, Ticker))


@dataclass(frozen=True)
class TickerStreams:
    pairs: Stream[tuple[Ticker, bool]]  # every ticker to publish, and whether it came from a ticker
    tickers: Stream[Ticker]  # the same tickers alone


def ticker_steps(items: Stream[Any], buckets: Stream[Bucket], own_venue: str) -> TickerStreams:
    """Tickers and best quotes among ``items``, and ``own_venue``'s trade ``buckets`` -> the tickers to publish
    (steps ``quotes`` .. ``tickers_out``)."""
    quotes: Stream[Ticker | BestQuote] = op.filter_map(
        "quotes", items, lambda x: x if isinstance(x, Ticker | BestQuote) else None)
    # the exchange's own trades come with no ticker: a rolling 24 h one from the klines' per-batch buckets
    own = op.filter("own_ticker_buckets", buckets, lambda b: b.venue == own_venue)
    trade_tickers = op.stateful_map("trade_ticker", op.key_on("key_trade_ticker", own, lambda b: b.key),
                                    update_trade_ticker)
    quotes = op.merge("all_quotes", quotes, op.filter_map("trade_ticker_values", trade_tickers, _value))
    merged = op.stateful_map("merge_ticker", op.key_on("key_ticker", quotes, _key), merge_ticker_flagged)
    pairs = op.filter_map("ticker_values", merged, _value)
    tickers: Stream[Ticker] = op.map("tickers_out", pairs, lambda tp: tp[0])
    return TickerStreams(pairs, tickers)


def _value(kv: tuple[str, Any]) -> Any:
    return kv[1]


def _key(x: Ticker | BestQuote) -> str:
    return f"{x.venue}:{x.instrument}"
