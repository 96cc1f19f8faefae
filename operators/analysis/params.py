"""Parameters of the four order-book analyses: one small frozen object handed to the operators.

The dataflow builds it from the settings (:func:`cryptoflow.analysis_settings.analysis_params`); operators
never read settings or the environment. Times are milliseconds of event time (the frames' exchange time).
"""

from __future__ import annotations

import math
from decimal import Decimal

import msgspec


class AnalysisParams(msgspec.Struct, frozen=True):
    """Every knob of the analyses, with the product defaults (see the README's definitions)."""

    bin_width: Decimal | None = None
    """Support/resistance price-bin width; ``None``: scaled to price (:func:`default_bin_width`)."""
    large_order_k: float = 5.0
    """A level is large when its size >= max(min size, k x the median level size of its side)."""
    large_order_min_size: tuple[tuple[str, Decimal], ...] = ()
    """Absolute minimum size of a large order, per instrument id (missing: 0)."""
    trend_margin: float = 0.20
    """bullish when large buys > large sells x (1 + margin) (bearish the other way round) ..."""
    trend_hold_ms: int = 10_000
    """... continuously for at least this long; else neutral."""
    band_pct: float = 1.0
    """Depth and liquidity count the levels within +/- band_pct % of the mid price."""
    depth_window_ms: int = 60_000
    depth_warning_z: float = 2.0
    depth_alert_z: float = 3.0
    liquidity_window_ms: int = 900_000
    liquidity_warning: float = 0.7
    liquidity_alert: float = 0.5
    window_buckets: int = 60
    """Each sliding window is kept as this many time buckets (state size is independent of the rate)."""
    window_min_fill: float = 0.5
    """A window's statistic is reported once this fraction of its buckets holds data."""
    depth_min_std_pct: float = 0.1
    """The depth deviation is floored at this percentage of the mean, so a flat baseline stays quiet."""
    alert_cooldown_ms: int = 300_000
    """A repeat alert of one instrument and type within this time is suppressed (escalations pass)."""
    book_depth: int = 400
    """Levels per side the analysis index keeps (the book's depth)."""
    index_rebuild_every: int = 10_000
    """Rebuild the incremental index from the book every N updates (bounds float drift)."""

    def __post_init__(self) -> None:
        checks = (
            (self.large_order_k > 0, "large_order_k > 0"),
            (self.trend_margin >= 0, "trend_margin >= 0"),
            (self.trend_hold_ms >= 0, "trend_hold_ms >= 0"),
            (0 < self.band_pct <= 50, "0 < band_pct <= 50"),
            (self.depth_window_ms > 0, "depth_window_ms > 0"),
            (self.liquidity_window_ms > 0, "liquidity_window_ms > 0"),
            (0 < self.depth_warning_z <= self.depth_alert_z, "0 < depth_warning_z <= depth_alert_z"),
            (0 < self.liquidity_alert <= self.liquidity_warning, "0 < liquidity_alert <= liquidity_warning"),
            (self.window_buckets >= 2, "window_buckets >= 2"),
            (0 < self.window_min_fill <= 1, "0 < window_min_fill <= 1"),
            (self.depth_min_std_pct >= 0, "depth_min_std_pct >= 0"),
            (self.alert_cooldown_ms >= 0, "alert_cooldown_ms >= 0"),
            (self.book_depth >= 1, "book_depth >= 1"),
            (self.index_rebuild_every >= 1, "index_rebuild_every >= 1"),
            (self.bin_width is None or self.bin_width > 0, "bin_width > 0"),
        )
        for ok, rule in checks:
            if not ok:
                msg = f"invalid analysis parameters: expected {rule}"
                raise ValueError(msg)

    def min_size(self, instrument: str) -> float:
        for inst, size in self.large_order_min_size:
            if inst == instrument:
                return float(size)
        return 0.0


def default_bin_width(price: float) -> float:
    """The default bin width: the power of ten at or below 0.1 % of the price.

    BTC at 60,000 -> 10; ETH at 3,000 -> 1; SOL at 150 -> 0.1; DOGE at 0.15 -> 0.0001. A bin is therefore
    0.01-0.1 % of the price wide, and the width only changes when the price crosses a power of ten.
    """
    if not price > 0 or not math.isfinite(price):
        return 1.0
    return 10.0 ** math.floor(math.log10(price * 0.001) + 1e-12)
