"""Instrument ids (OKX ``instId``) and their symbols on the other venues. Pure, no I/O."""

from __future__ import annotations

import re

# BASE-QUOTE spot, and OKX derivatives: -SWAP, -YYMMDD futures, -YYMMDD-STRIKE-C/P options.
_INST_RE = re.compile(
    r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}"
    r"(?:-SWAP|-\d{6}(?:-\d+(?:\.\d+)?-[CP])?)?$"
)
_SPOT_RE = re.compile(r"^([A-Z0-9]{1,20})-([A-Z0-9]{1,20})$")


# The longest real OKX ids are options (``BTC-USD-220527-40000-C``, ~25 characters); anything far longer is junk
# and is rejected before the pattern runs, and never echoed whole.
MAX_INSTRUMENT_CHARS = 64
_SHOWN_CHARS = 40


class InvalidInstrument(ValueError):
    """An id that is not of the OKX ``instId`` form."""


def validate_instrument(inst_id: str) -> str:
    """Return ``inst_id`` if it is a well-formed instrument id, else raise :class:`InvalidInstrument`."""
    if len(inst_id) > MAX_INSTRUMENT_CHARS:
        msg = (f"instrument id too long: {len(inst_id)} characters, at most {MAX_INSTRUMENT_CHARS} "
               f"(starts {inst_id[:_SHOWN_CHARS]!r}…)")
        raise InvalidInstrument(msg)
    if not _INST_RE.fullmatch(inst_id):  # fullmatch: `$` alone would let a trailing "\n" through
        msg = (
            f"malformed instrument id {inst_id!r}: expected BASE-QUOTE (BTC-USDT) or an OKX derivative id "
            "(BTC-USD-SWAP, BTC-USD-220527, BTC-USD-220527-40000-C)"
        )
        raise InvalidInstrument(msg)
    return inst_id


def is_spot(inst_id: str) -> bool:
    return _SPOT_RE.fullmatch(inst_id) is not None


def venue_symbol(inst_id: str) -> str:
    """Spot id -> the Binance/Bybit symbol (``BTC-USDT`` -> ``BTCUSDT``); derivatives have none."""
    if not is_spot(inst_id):
        msg = f"{inst_id!r} is not a spot id; only spot pairs map to Binance/Bybit symbols"
        raise InvalidInstrument(msg)
    return inst_id.replace("-", "")


def select_pairs(members: set[str] | frozenset[str], limit: int) -> tuple[tuple[str, ...], dict[str, str]]:
    """Apply docs/CONTRACTS.md's rules to the members of ``config:trading_pairs``.

    Returns ``(subscribed, rejected)``: the first ``limit`` well-formed ids in sorted order, and the
    malformed ones with their reason. Ids past the limit are neither (the caller logs a warning).
    """
    valid: list[str] = []
    rejected: dict[str, str] = {}
    for inst in sorted(members):
        try:
            valid.append(validate_instrument(inst))
        except InvalidInstrument as err:
            rejected[inst] = str(err)
    return tuple(valid[:limit]), rejected
