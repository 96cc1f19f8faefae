"""What the venue parsers (market data and order books, every venue) return: domain events, typed non-data
messages, typed errors.

A parser never raises on what the wire brings: junk becomes a :class:`ParseError` (a
:class:`connectors.untrusted.Rejected`, ``reason`` one of :data:`MARKET_REASONS`, or of
:data:`connectors.okx.books.PARSE_REASONS` for OKX books; counted and logged once per reason by the dataflow),
every decode is bounded by :func:`connectors.untrusted.decode`; protocol chatter (acks, rejections, pongs,
notices, channels we do not aggregate) the WebSocket machinery's own control types
(:data:`connectors.ws.hooks.Chatter`: ``Ack``, ``Reject``, ``Pong``, ``Notice``, ``Ignored``).
Symbols of Binance/Bybit are mapped back to our instrument ids (OKX ``instId`` style) through a
:data:`SymbolMap` built from the subscribed set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Annotated, TypeVar

import msgspec

from connectors import untrusted
from connectors.untrusted import Rejected
from connectors.ws.hooks import Chatter
from operators.events import BestQuote, Kline, Ticker, Trade
from operators.instruments import InvalidInstrument, venue_symbol

MarketEvent = Trade | Ticker | BestQuote | Kline
SymbolMap = Mapping[str, str]  # venue symbol (upper case, BTCUSDT) -> instrument id (BTC-USDT)

T = TypeVar("T")
MAX_EPOCH_MS = 10**13  # the year 2286: a time beyond it would overflow datetime conversions downstream
EpochMs = Annotated[int, msgspec.Meta(ge=0, lt=MAX_EPOCH_MS)]  # a venue time field, checked at the decode
MARKET_REASONS = (
    *untrusted.REASONS,  # too_large, too_deep, malformed_json, wrong_type
    "invalid_number",  # a price/size/time that is not a finite number
    "invalid_value",  # a field outside its allowed values (side, count)
    "not_subscribed",  # a symbol we did not subscribe to
    "unknown_channel",  # a data frame of a channel we do not parse
    "unknown_message",  # JSON that is neither a data frame nor a control answer
)


class ParseError(Rejected, frozen=True):
    """A frame (or REST body) that could not be turned into events or deltas: a
    :class:`~connectors.untrusted.Rejected` (``reason``, ``detail``, ``sample`` = the frame's start) of ``venue``.
    The one parse-error type of every venue parser."""

    venue: str = ""

    @property
    def raw(self) -> str:
        """The frame's start (the ``sample``)."""
        return self.sample


class InvalidField(ValueError):
    """Raised inside a parser by a field check; the parser returns it as a :class:`ParseError`."""

    def __init__(self, detail: str, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


MarketItem = MarketEvent | Chatter | ParseError


def parse_error(venue: str, reason: str, detail: str, raw: bytes | str) -> ParseError:
    return ParseError(reason, detail[: untrusted.SAMPLE_CHARS], untrusted.sample(raw), venue)


def rejection(venue: str, r: Rejected) -> ParseError:
    return ParseError(r.reason, r.detail, r.sample, venue)


def decode_field(decoder: msgspec.json.Decoder[T], data: msgspec.Raw) -> T:
    """A nested part of an already accepted frame, bounded the same way; raises :class:`InvalidField`."""
    out = untrusted.decode(decoder, data)
    if isinstance(out, Rejected):
        raise InvalidField(out.detail, out.reason)
    return out


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
    """An exchange number string as a finite Decimal; raises :class:`InvalidField` on anything else."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError) as err:
        msg = f"expected a decimal number string, found {text[:60]!r}"
        raise InvalidField(msg, "invalid_number") from err
    if not sane(value):
        msg = f"expected a finite number within 1e±{MAX_EXPONENT}, found {text[:60]!r}"
        raise InvalidField(msg, "invalid_number")
    return value


MAX_EXPONENT = 40  # venues' prices and sizes are far inside 1e±40; beyond it, arithmetic could overflow


def sane(*values: Decimal) -> bool:
    """Every value finite and within 1e±:data:`MAX_EXPONENT` (so sums and products downstream cannot overflow)."""
    return all(v.is_finite() and -MAX_EXPONENT <= v.adjusted() <= MAX_EXPONENT for v in values)


def optional_decimal(text: str | None) -> Decimal | None:
    """``""`` and ``None`` (OKX sends empty strings for missing quotes) -> ``None``."""
    if text is None or text == "":
        return None
    return to_decimal(text)


def change_percent(last: Decimal, open_: Decimal) -> Decimal | None:
    if open_ == 0:
        return None
    return (last - open_) * 100 / open_
