"""The exchange's own trades: one Redis Stream entry -> a :class:`operators.events.Trade` or a typed rejection.

Wire shape (docs/CONTRACTS.md "History and an exchange's own trades"; fixture: ``tests/test_local_trades.py``'s
``ENTRY``): stream ``trades:{inst}``, entry fields ``price`` and ``amount`` (decimal strings), ``side``
(``buy``/``sell``, the taker's side), ``ts`` (epoch milliseconds), ``trade_id`` (a non-negative integer,
increasing per stream). Field values arrive as bytes (the client does not decode; decoding only what is
used is cheaper). Entries are untrusted: anything else is a
:class:`connectors.market.frames.ParseError` (``wrong_type`` for a missing field, ``too_large`` for a
value longer than :data:`MAX_VALUE_BYTES`, ``invalid_number``, ``invalid_value``), never an exception.
"""

from __future__ import annotations

import re
from decimal import Decimal

from connectors.market.frames import MAX_EPOCH_MS, ParseError, parse_error
from operators.events import Side, Trade

VENUE = "local"
STREAM_PREFIX = "trades:"
MAX_VALUE_BYTES = 64  # a price, size, time or id is far shorter; a longer value is junk, not parsed
_FIELDS = (b"price", b"amount", b"side", b"ts", b"trade_id")
_SIDES: dict[bytes, Side] = {b"buy": "buy", b"sell": "sell"}
_MAX_ID_DIGITS = 19  # < 2**63: the id fits the int64 the stream's producers use
# A plain non-negative decimal: no sign, exponent, spaces, underscores, NaN or Infinity, at most 10**24 —
# what passes cannot fail Decimal() nor overflow a sum downstream (checked once, by one C-level match).
_DECIMAL = re.compile(rb"[0-9]{1,24}(?:\.[0-9]{1,24})?\Z").match
_ZERO = Decimal(0)


_ORDER = [b"price", b"amount", b"side", b"ts", b"trade_id"]  # the producers' field order (the fast path)
# price/amount text -> Decimal: prices and sizes repeat (ticks, lot sizes), and a dict hit costs a tenth of
# Decimal(text) plus its check. Only validated text is stored; a Decimal keeps its digits (0.10 stays 0.10).
_DECIMALS: dict[bytes, Decimal] = {}
_DECIMALS_MAX = 16_384  # then the cache starts over (a few MB at most)


def stream_key(instrument: str) -> str:
    return f"{STREAM_PREFIX}{instrument}"


def _sample(fields: dict[bytes, bytes] | list[bytes]) -> str:
    pairs = fields.items() if isinstance(fields, dict) else zip(fields[0::2], fields[1::2], strict=False)
    return " ".join(f"{k[:20]!r}={v[:40]!r}" for k, v in list(pairs)[:8])


def _uint(text: bytes, limit: int) -> int | None:
    if not (0 < len(text) <= limit and text.isdigit()):  # bytes.isdigit: ASCII digits only
        return None
    return int(text)


def _decimal(text: bytes) -> Decimal | None:
    value = _DECIMALS.get(text)
    if value is None:
        if _DECIMAL(text) is None:
            return None
        value = Decimal(text.decode())
        if len(_DECIMALS) >= _DECIMALS_MAX:
            _DECIMALS.clear()
        _DECIMALS[text] = value
    return value


def parse_entry(instrument: str, fields: dict[bytes, bytes], *, recv_ns: int) -> Trade | ParseError:
    """One stream entry's fields as a trade of ``instrument`` (see module docstring for the rules)."""
    get = fields.get
    price_b, amount_b, side_b, ts_b, id_b = get(b"price"), get(b"amount"), get(b"side"), get(b"ts"), get(b"trade_id")
    if price_b is None or amount_b is None or side_b is None or ts_b is None or id_b is None:
        missing = next(f for f in _FIELDS if f not in fields).decode()
        return parse_error(VENUE, "wrong_type", f"entry without field {missing!r}", _sample(fields))
    return _parse(instrument, price_b, amount_b, side_b, ts_b, id_b, fields, recv_ns)


def parse_flat(instrument: str, flat: list[bytes] | None, *, recv_ns: int) -> Trade | ParseError:
    """:func:`parse_entry` of an entry as XREAD returns it, ``[field, value, ...]``: no dict built when the
    fields come in the producers' order (any other order, or duplicates, go through the dict, same rules)."""
    return _parse_flat(instrument, flat, recv_ns)


def _parse_flat(instrument: str, flat: list[bytes] | None, recv_ns: int) -> Trade | ParseError:
    if flat and flat[0::2] == _ORDER:
        _, price_b, _, amount_b, _, side_b, _, ts_b, _, id_b = flat
        return _parse(instrument, price_b, amount_b, side_b, ts_b, id_b, flat, recv_ns)
    pairs = iter(flat or ())
    return parse_entry(instrument, dict(zip(pairs, pairs, strict=False)), recv_ns=recv_ns)


def _parse(instrument: str, price_b: bytes, amount_b: bytes, side_b: bytes, ts_b: bytes, id_b: bytes,
           fields: dict[bytes, bytes] | list[bytes], recv_ns: int) -> Trade | ParseError:
    if len(price_b) > MAX_VALUE_BYTES or len(amount_b) > MAX_VALUE_BYTES or len(id_b) > MAX_VALUE_BYTES:
        return parse_error(VENUE, "too_large", f"a field value longer than {MAX_VALUE_BYTES} bytes",
                           _sample(fields))
    side = _SIDES.get(side_b)
    if side is None:
        return parse_error(VENUE, "invalid_value", f"expected side buy/sell, found {side_b[:20]!r}", _sample(fields))
    ts = _uint(ts_b, 13)
    if ts is None or ts >= MAX_EPOCH_MS:
        return parse_error(VENUE, "invalid_number", f"expected ts in epoch ms, found {ts_b[:20]!r}", _sample(fields))
    if _uint(id_b, _MAX_ID_DIGITS) is None:
        return parse_error(VENUE, "invalid_number", f"expected a non-negative integer trade_id, found {id_b[:20]!r}",
                           _sample(fields))
    price, amount = _decimal(price_b), _decimal(amount_b)
    if price is None or amount is None:
        return parse_error(VENUE, "invalid_number", "price/amount not a plain decimal number", _sample(fields))
    if price == _ZERO or amount == _ZERO:
        return parse_error(VENUE, "invalid_number", "price/amount zero", _sample(fields))
    # trade_id as sent but without leading zeros (the source compares ids as integers)
    return Trade(VENUE, instrument, id_b.decode().lstrip("0") or "0", price, amount, side, ts, recv_ns)


class StreamBatch:
    """One stream's entries of an XREAD as :func:`parse_entries` leaves them."""

    __slots__ = ("duplicates", "last_id", "rejected", "trades")

    def __init__(self, last_id: int | None) -> None:
        self.trades: list[Trade] = []
        self.rejected: list[tuple[bytes, ParseError]] = []  # (entry id, why)
        self.duplicates = 0  # entries whose trade_id is not above the last one (a producer's retried XADD)
        self.last_id = last_id


def parse_entries(instrument: str, entries: list[tuple[bytes, list[bytes]]], last_id: int | None,
                  recv_ns: int) -> StreamBatch:
    """:func:`parse_flat` of each ``(entry id, fields)`` of one stream, in order, dropping every trade whose id is
    not above ``last_id`` (then the last one kept). One loop here, not a keyword call per entry from the source:
    at full batches that overhead was a tenth of the source's cost."""
    out = StreamBatch(last_id)
    trades = out.trades
    last = last_id
    for entry_id, flat in entries:
        item = _parse_flat(instrument, flat, recv_ns)
        if isinstance(item, ParseError):
            out.rejected.append((entry_id, item))
            continue
        trade_id = int(item.trade_id)
        if last is not None and trade_id <= last:
            out.duplicates += 1
            continue
        last = trade_id
        trades.append(item)
    out.last_id = last
    return out
