"""The instruments of the synthetic market: tick size, lot size and how a venue writes their numbers.

Prices are integer ticks (``tick * tick_size``) and sizes integer lots (``lots * 10**-size_decimals``);
:class:`InstrumentSpec` turns them into the exact strings a venue sends. No venue format, no I/O.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass

_BASE_PRICES = {
    "BTC": 60000.0, "ETH": 3000.0, "SOL": 150.0, "XRP": 0.6, "DOGE": 0.15, "BNB": 550.0, "ADA": 0.45,
    "LTC": 80.0, "DOT": 6.0, "UNI": 8.0, "LINK": 15.0, "AVAX": 30.0, "TRX": 0.12, "OKB": 45.0,
    "USDT": 1.0, "USDC": 1.0, "USD": 1.0, "EUR": 1.08,
}


@dataclass(frozen=True)
class InstrumentSpec:
    """Tick size and size precision of one instrument, and how its numbers are written."""

    inst_id: str
    price_decimals: int
    size_decimals: int
    initial_price: float

    @classmethod
    def for_instrument(cls, inst_id: str, seed: int) -> InstrumentSpec:
        parts = inst_id.split("-")
        rng = random.Random(zlib.crc32(f"{seed}:{inst_id}".encode()))
        base = _BASE_PRICES.get(parts[0]) or rng.uniform(0.5, 500.0)
        quote = _BASE_PRICES.get(parts[1] if len(parts) > 1 else "USDT") or 1.0
        price = base / quote
        magnitude = math.floor(math.log10(price))
        price_decimals = max(0, 5 - magnitude)  # ~6 significant digits: BTC 0.1, ETH 0.01, SOL 0.001
        size_decimals = max(2, min(8, magnitude + 4))
        return cls(inst_id, price_decimals, size_decimals, price)

    @property
    def tick_size(self) -> str:
        return self.price_str(1)

    @property
    def lot_size(self) -> str:
        return self.size_str(1)

    def price_str(self, tick: int) -> str:
        return _fixed(tick, self.price_decimals)

    def size_str(self, lots: int) -> str:
        return _fixed(lots, self.size_decimals)


def _fixed(value: int, decimals: int) -> str:
    if decimals == 0:
        return str(value)
    whole, frac = divmod(value, 10**decimals)
    return f"{whole}.{frac:0{decimals}d}"


def fixed8(value: int, decimals: int) -> str:
    """An integer scaled by ``10**-decimals`` written with 8 decimals (Binance style)."""
    return _fixed(value * 10 ** (8 - decimals), 8) if decimals <= 8 else _fixed(value // 10 ** (decimals - 8), 8)
