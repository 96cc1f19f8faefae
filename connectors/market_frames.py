"""What the market-data parsers of every venue return: domain events, typed non-data messages, typed errors.

A parser never raises on what the wire brings: junk becomes a :class:`MarketParseError` (counted and logged
by the dataflow), protocol chatter (acks, pongs, channels we do not aggregate) a :class:`MarketControl`.
Symbols of Binance/Bybit are mapped back to our instrument ids (OKX ``instId`` style) through a
:data:`SymbolMap` built from the subscribed set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation

import msgspec

from operators.events import BestQuote, Kline, Ticker, Trade
from operators.instruments import InvalidInstrument, venue_symbol

MarketEvent = Trade | Ticker | BestQuote | Kline
SymbolMap = Mapping[str, str]  # venue symbol (upper case, BTCUSDT) -> instrument id (BTC-USDT)

_RAW_SHOWN = 200


class MarketParseError(msgspec.Struct, frozen=True):
    """A frame that could not be turned into events; ``raw`` is its start, for the log."""

    venue: str
    reason: str
    raw: str


class MarketControl(msgspec.Struct, frozen=True):
    """A non-data frame: ``kind`` is ``ack``, ``error``, ``pong``, ``shutdown`` or ``ignored``."""

    venue: str
    kind: str
    detail: str = ""


MarketItem = MarketEvent | MarketControl | MarketParseError


def parse_error(venue: str, reason: str, raw: bytes | str) -> MarketParseError:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
    return MarketParseError(venue, reason, text[:_RAW_SHOWN])


def symbol_map(instruments: Iterable[str]) -> dict[str, str]:
    """``{"BTCUSDT": "BTC-USDT", ...}`` for the spot ids among ``instruments`` (derivatives are OKX-only)."""
    out: dict[str, str] = {}
    for inst in instruments:
        try:
            out[venue_symbol(inst).upper()] = inst
        except InvalidInstrument:
            continue
    return out


def to_decimal(text: str) -> Decimal:
    """An exchange number string as a finite Decimal; raises ``ValueError`` on anything else."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError) as err:
        msg = f"expected a decimal number string, found {text!r}"
        raise ValueError(msg) from err
    if not value.is_finite():
        msg = f"expected a finite number, found {text!r}"
        raise ValueError(msg)
    return value


def optional_decimal(text: str | None) -> Decimal | None:
    """``""`` and ``None`` (OKX sends empty strings for missing quotes) -> ``None``."""
    if text is None or text == "":
        return None
    return to_decimal(text)


def change_percent(last: Decimal, open_: Decimal) -> Decimal | None:
    if open_ == 0:
        return None
    return (last - open_) * 100 / open_
