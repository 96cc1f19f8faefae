"""24 h tickers per instrument: the venue's ticker, with the best bid/ask filled in where the ticker lacks them.

Every venue sends its rolling 24 h statistics in its ticker (OKX ``tickers``, Binance ``24hrTicker``, Bybit
``tickers``), so no 24 h window is computed here. Bybit spot tickers carry no bid/ask: they come from
``orderbook.1`` (:class:`BestQuote`) and are merged in, and a new best quote re-emits the last ticker with it.
"""

from __future__ import annotations

import msgspec

from operators.events import BestQuote, Ticker


class TickerState(msgspec.Struct, frozen=True):
    ticker: Ticker | None = None
    quote: BestQuote | None = None


def merge_ticker(state: TickerState | None, event: Ticker | BestQuote) -> tuple[TickerState, Ticker | None]:
    """Fold a ticker or a best quote into the state; returns the ticker to publish (``None``: nothing yet)."""
    st = state or TickerState()
    if isinstance(event, BestQuote):
        st = TickerState(st.ticker, event)
        if st.ticker is None or st.ticker.bid is not None:
            return st, None  # no ticker yet, or one that has its own bid/ask
        t = st.ticker
        return st, msgspec.structs.replace(t, bid=event.bid, ask=event.ask, ts_ms=max(t.ts_ms, event.ts_ms))
    st = TickerState(event, st.quote)
    if event.bid is None and event.ask is None and st.quote is not None:
        return st, msgspec.structs.replace(event, bid=st.quote.bid, ask=st.quote.ask)
    return st, event
