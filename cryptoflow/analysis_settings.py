"""Settings -> the order-book analyses' parameters (:class:`operators.analysis.AnalysisParams`).

The operators never see :class:`cryptoflow.settings.Settings`; the analysis dataflow (and its tests and benchmark)
build the parameters here. A rule across two settings (e.g. the warning above the alert threshold) is checked by
``AnalysisParams`` and raises ``ValueError``.
"""

from __future__ import annotations

import sys

from cryptoflow.settings import Settings
from operators.analysis import AnalysisParams


def analysis_params(settings: Settings) -> AnalysisParams:
    """The analyses' parameters from the settings (every ``ANALYSIS_*`` knob)."""
    return AnalysisParams(
        bin_width=settings.analysis_bin_width,
        large_order_k=settings.analysis_large_order_k,
        large_order_min_size=tuple(sorted(settings.analysis_large_order_min_size.items())),
        trend_margin=settings.analysis_trend_margin,
        trend_hold_ms=int(settings.analysis_trend_hold * 1000),
        band_pct=settings.analysis_band_pct,
        depth_window_ms=int(settings.analysis_depth_window * 1000),
        depth_warning_z=settings.analysis_depth_warning_z,
        depth_alert_z=settings.analysis_depth_alert_z,
        liquidity_window_ms=int(settings.analysis_liquidity_window * 1000),
        liquidity_warning=settings.analysis_liquidity_warning,
        liquidity_alert=settings.analysis_liquidity_alert,
        alert_cooldown_ms=int(settings.analysis_alert_cooldown * 1000),
        window_buckets=settings.analysis_window_buckets,
        window_min_fill=settings.analysis_window_min_fill,
        depth_min_std_pct=settings.analysis_depth_min_std_pct,
    )


def analysis_params_or_exit(settings: Settings) -> AnalysisParams:
    """For the entry point: on invalid ``ANALYSIS_*`` settings print one line to stderr and exit with status 2."""
    try:
        return analysis_params(settings)
    except ValueError as err:  # a rule across two settings, e.g. the warning above the alert threshold
        print(f"cryptoflow: invalid ANALYSIS_* settings: {err}", file=sys.stderr)
        raise SystemExit(2) from None
