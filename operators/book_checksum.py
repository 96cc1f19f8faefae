"""The OKX v5 order-book checksum: signed CRC32 over the top 25 levels of each side, interleaved. No I/O.

:class:`operators.orderbook.OrderBook` keeps the ``"price:size"`` strings of its top levels up to date and checks
them with :func:`signed_crc` and :func:`interleave`; :func:`okx_checksum` computes it from levels (the parsers'
tests, the push gateway, the depth streams).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from operators.events import Level

CHECKSUM_LEVELS = 25
_SIGN_BIT = 1 << 31
_CRC_MOD = 1 << 32


def signed_crc(text: str) -> int:
    crc = zlib.crc32(text.encode())
    return crc - _CRC_MOD if crc >= _SIGN_BIT else crc


def interleave(bids: list[str], asks: list[str]) -> list[str]:
    nb, na = len(bids), len(asks)
    if nb == na:
        out = [""] * (nb + na)
        out[::2] = bids
        out[1::2] = asks
        return out
    n = min(nb, na)
    out = [""] * (2 * n)
    out[::2] = bids[:n]
    out[1::2] = asks[:n]
    out.extend(bids[n:] if nb > n else asks[n:])
    return out


def okx_checksum(bids: Sequence[Level], asks: Sequence[Level]) -> int:
    """OKX v5 book checksum: signed CRC32 of the top 25 bids/asks (best first), interleaved
    ``bid1:ask1:bid2:ask2...`` as ``price:size`` strings joined by ``:``; when one side has fewer levels the
    other side's remaining levels follow."""
    b = [f"{lv.price}:{lv.size}" for lv in bids[:CHECKSUM_LEVELS]]
    a = [f"{lv.price}:{lv.size}" for lv in asks[:CHECKSUM_LEVELS]]
    return signed_crc(":".join(interleave(b, a)))
