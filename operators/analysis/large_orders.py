"""Large orders and the large-order trend.

Definition: on each side, a level is *large* when its size is at least
``max(min_size(instrument), k x median level size of that side)`` (defaults: no absolute minimum, k = 5).
``large_buy_orders`` / ``large_sell_orders`` are the total sizes of the large bid / ask levels (0 when there
are none, ``None`` when the side is empty).

``large_order_trend`` is ``bullish`` once large buys have exceeded large sells x (1 + margin) continuously
for ``trend_hold_ms`` of event time, ``bearish`` the other way round, otherwise ``neutral`` (defaults:
margin 20 %, hold 10 s). Any update that breaks the lead resets the clock.
"""

from __future__ import annotations

from typing import Literal

from operators.analysis.index import SideIndex

Trend = Literal["bullish", "bearish", "neutral"]


def large_total(side: SideIndex, *, k: float, min_size: float) -> float | None:
    """Total size of the large levels of ``side`` (``None`` for an empty side)."""
    median = side.median_size()
    if median is None:
        return None
    return side.total_at_least(max(min_size, k * median))


class TrendTracker:
    """The hold-time state machine of ``large_order_trend``; tiny and picklable."""

    __slots__ = ("leader", "since_ms")

    def __init__(self) -> None:
        self.leader: Trend = "neutral"  # the side currently ahead by the margin
        self.since_ms = 0  # event time it went ahead

    def update(self, buy: float | None, sell: float | None, ts_ms: int, *, margin: float, hold_ms: int) -> Trend:
        b = buy or 0.0
        s = sell or 0.0
        leader: Trend
        if b > s * (1.0 + margin):
            leader = "bullish"
        elif s > b * (1.0 + margin):
            leader = "bearish"
        else:
            leader = "neutral"
        if leader != self.leader:
            self.leader = leader
            self.since_ms = ts_ms
        if leader != "neutral" and ts_ms - self.since_ms >= hold_ms:
            return leader
        return "neutral"
