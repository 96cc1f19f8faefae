"""Liquidity shrink: is there much less money near the mid than over the last quarter hour?

Definition: *notional* is sum(price x size) of the bid and ask levels within +/- ``band_pct`` % of the mid
(default 1 %). ``liquidity_index`` = current notional / the median of its long window (default 15 min of
event time; the median of the per-bucket mean notionals of the completed buckets before the current one).
``liquidity_alert`` is ``alert`` below ``liquidity_alert`` (0.5), ``warning`` below ``liquidity_warning``
(0.7), else ``normal``. ``None``/``normal`` until the window is full enough, or when its median is 0.
"""

from __future__ import annotations

from operators.analysis.depth_anomaly import AlertLevel
from operators.analysis.params import AnalysisParams
from operators.analysis.windows import RollingBuckets


def classify_low(value: float | None, warning: float, alert: float) -> AlertLevel:
    if value is None:
        return "normal"
    if value < alert:
        return "alert"
    return "warning" if value < warning else "normal"


class LiquidityShrink:
    __slots__ = ("window",)

    def __init__(self, params: AnalysisParams) -> None:
        self.window = RollingBuckets(params.liquidity_window_ms, params.window_buckets, params.window_min_fill)

    def update(self, ts_ms: int, notional: float, params: AnalysisParams) -> tuple[float | None, AlertLevel]:
        """Push this moment's notional within the band; return (index, level)."""
        self.window.push(ts_ms, notional)
        base = self.window.baseline()
        if base is None or base.median_of_means <= 0:
            return None, "normal"
        index = notional / base.median_of_means
        return index, classify_low(index, params.liquidity_warning, params.liquidity_alert)
