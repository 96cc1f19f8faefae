"""Support and resistance from price bins.

Definition: the bids (all below mid) and the asks (all above mid) are grouped into price bins
``[k*w, (k+1)*w)`` of width ``w`` (``AnalysisParams.bin_width``, or :func:`default_bin_width` of the mid
price). A bin's strength is its total size. ``support_level_1``/``_2`` are the size-weighted mean prices
of the strongest and second-strongest bid bins, ``resistance_level_1``/``_2`` the same on the ask side;
ties go to the bin nearer the mid. A side with one bin has only level 1; an empty side has none. Prices
are rounded to the book's price precision (the most decimals its price strings carry).
"""

from __future__ import annotations

from decimal import Decimal

from operators.analysis.index import BookIndex, SideIndex
from operators.analysis.params import AnalysisParams, default_bin_width


def strongest_bins(side: SideIndex) -> tuple[float | None, float | None]:
    """Size-weighted prices of the two strongest distinct bins of ``side``."""
    first: tuple[float, int, list[float]] | None = None
    second: tuple[float, int, list[float]] | None = None
    sign = 1 if side.bid else -1  # ties: prefer the bin nearer the mid (higher bid bin, lower ask bin)
    for b, acc in side.bins.items():
        size = acc[1]
        if size <= 0:
            continue
        key = (size, sign * b)
        if first is None or key > (first[0], first[1]):
            second = first
            first = (size, sign * b, acc)
        elif second is None or key > (second[0], second[1]):
            second = (size, sign * b, acc)
    return (
        None if first is None else first[2][2] / first[2][1],
        None if second is None else second[2][2] / second[2][1],
    )


def to_price(value: float | None, decimals: int) -> Decimal | None:
    if value is None:
        return None
    return Decimal(f"{value:.{decimals}f}")


def bin_width_for(index: BookIndex, params: AnalysisParams) -> float | None:
    """The bin width to use now (``None`` while the book is empty)."""
    if params.bin_width is not None:
        return float(params.bin_width)
    mid = index.mid()
    return None if mid is None else default_bin_width(mid)


def support_resistance(
    index: BookIndex, params: AnalysisParams,
) -> tuple[Decimal | None, Decimal | None, Decimal | None, Decimal | None]:
    """(support_level_1, support_level_2, resistance_level_1, resistance_level_2) of the indexed book."""
    width = bin_width_for(index, params)
    if width is None:
        return None, None, None, None
    index.rebin(width)
    s1, s2 = strongest_bins(index.bids)
    r1, r2 = strongest_bins(index.asks)
    d = index.decimals
    return to_price(s1, d), to_price(s2, d), to_price(r1, d), to_price(r2, d)
