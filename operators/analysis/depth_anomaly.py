"""Depth anomaly: is the depth near the mid unusual compared with the last minute?

Definition: per side, *depth* is the total size of the levels within +/- ``band_pct`` % of the mid price
(default 1 %). Each side's depth is compared with its sliding window (default 60 s of event time, the
completed buckets before the current one, see :mod:`operators.analysis.windows`):
``z = (depth - mean) / max(std, depth_min_std_pct % x mean)``. ``depth_anomaly_score`` is the larger
``|z|`` of the two sides; ``depth_anomaly_alert`` is ``alert`` when score >= ``depth_alert_z`` (3),
``warning`` when >= ``depth_warning_z`` (2), else ``normal``. Until the window is full enough
(``window_min_fill``) the score is ``None`` and the alert ``normal``. An empty band counts as depth 0.
"""

from __future__ import annotations

from typing import Literal

from operators.analysis.params import AnalysisParams
from operators.analysis.windows import RollingBuckets

AlertLevel = Literal["normal", "warning", "alert"]


def classify_high(value: float | None, warning: float, alert: float) -> AlertLevel:
    if value is None:
        return "normal"
    if value >= alert:
        return "alert"
    return "warning" if value >= warning else "normal"


class DepthAnomaly:
    __slots__ = ("asks", "bids")

    def __init__(self, params: AnalysisParams) -> None:
        self.bids = RollingBuckets(params.depth_window_ms, params.window_buckets, params.window_min_fill)
        self.asks = RollingBuckets(params.depth_window_ms, params.window_buckets, params.window_min_fill)

    @staticmethod
    def _z(window: RollingBuckets, value: float, floor_pct: float) -> float | None:
        base = window.baseline()
        if base is None:
            return None
        std = max(base.std, abs(base.mean) * floor_pct / 100.0)
        if std <= 0:
            return 0.0 if value == base.mean else float("inf")
        return (value - base.mean) / std

    def update(self, ts_ms: int, bid_depth: float, ask_depth: float,
               params: AnalysisParams) -> tuple[float | None, AlertLevel]:
        """Push this moment's depths; return (score, level)."""
        self.bids.push(ts_ms, bid_depth)
        self.asks.push(ts_ms, ask_depth)
        zb = self._z(self.bids, bid_depth, params.depth_min_std_pct)
        za = self._z(self.asks, ask_depth, params.depth_min_std_pct)
        zs = [abs(z) for z in (zb, za) if z is not None]
        score = max(zs) if zs else None
        return score, classify_high(score, params.depth_warning_z, params.depth_alert_z)
