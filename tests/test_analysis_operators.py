"""Unit tests of the four analyses on hand-built books and time series (operators/analysis)."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal

import pytest

from operators.analysis.depth_anomaly import DepthAnomaly
from operators.analysis.index import BookIndex
from operators.analysis.large_orders import TrendTracker, large_total
from operators.analysis.liquidity import LiquidityShrink
from operators.analysis.params import AnalysisParams, default_bin_width
from operators.analysis.support_resistance import support_resistance
from operators.analysis.windows import RollingBuckets
from tests.analysis_helpers import lv

T0 = 1_700_000_000_000


def index_of(bids: list[tuple[str, str]], asks: list[tuple[str, str]], width: float = 1.0) -> BookIndex:
    return BookIndex.build(lv(bids), lv(asks), width=width)


# --------------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    ("price", "width"),
    [(60_000.0, 10.0), (3_000.0, 1.0), (150.0, 0.1), (0.15, 0.0001), (1_000.0, 1.0), (999.9, 0.1)],
)
def test_default_bin_width_is_the_power_of_ten_below_a_thousandth(price: float, width: float) -> None:
    assert default_bin_width(price) == pytest.approx(width)


def test_invalid_parameters_name_the_rule() -> None:
    with pytest.raises(ValueError, match="depth_warning_z <= depth_alert_z"):
        AnalysisParams(depth_warning_z=3.0, depth_alert_z=2.0)
    with pytest.raises(ValueError, match="liquidity_alert <= liquidity_warning"):
        AnalysisParams(liquidity_warning=0.4, liquidity_alert=0.5)


def test_min_size_per_instrument() -> None:
    p = AnalysisParams(large_order_min_size=(("BTC-USDT", Decimal("5")),))
    assert p.min_size("BTC-USDT") == 5.0
    assert p.min_size("ETH-USDT") == 0.0


# ---------------------------------------------------------------------------------- support/resistance
def test_support_resistance_two_strongest_bins_size_weighted() -> None:
    bids = [("99.5", "1"), ("99.2", "2"), ("98.5", "10"), ("97.9", "4")]  # bins 99: 3, 98: 10, 97: 4
    asks = [("100.5", "3"), ("100.9", "1"), ("101.1", "1"), ("102.0", "9")]  # bins 100: 4, 101: 1, 102: 9
    s1, s2, r1, r2 = support_resistance(index_of(bids, asks), AnalysisParams(bin_width=Decimal("1")))
    assert s1 == Decimal("98.5")
    assert s2 == Decimal("97.9")
    assert r1 == Decimal("102.0")
    assert r2 == Decimal("100.6")  # (100.5*3 + 100.9*1) / 4 = 100.6


def test_support_resistance_one_sided_book() -> None:
    bids = [("99.5", "1"), ("98.5", "2")]
    s1, s2, r1, r2 = support_resistance(index_of(bids, []), AnalysisParams(bin_width=Decimal("1")))
    assert (s1, s2) == (Decimal("98.5"), Decimal("99.5"))
    assert (r1, r2) == (None, None)


def test_support_resistance_single_bin_and_empty_book() -> None:
    idx = index_of([("99.5", "1"), ("99.1", "1")], [("100.2", "1")])
    s1, s2, r1, r2 = support_resistance(idx, AnalysisParams(bin_width=Decimal("1")))
    assert (s1, s2, r1, r2) == (Decimal("99.3"), None, Decimal("100.2"), None)
    assert support_resistance(index_of([], []), AnalysisParams()) == (None, None, None, None)


def test_support_resistance_all_levels_equal_ties_go_to_the_bin_nearest_mid() -> None:
    bids = [(f"{p}.0", "1") for p in range(90, 100)]  # ten bins of one level, all size 1
    asks = [(f"{p}.0", "1") for p in range(101, 111)]
    s1, s2, r1, r2 = support_resistance(index_of(bids, asks), AnalysisParams(bin_width=Decimal("1")))
    assert (s1, s2, r1, r2) == (Decimal("99.0"), Decimal("98.0"), Decimal("101.0"), Decimal("102.0"))


def test_support_resistance_default_width_scales_with_price() -> None:
    bids = [("60005.0", "1"), ("60001.0", "1"), ("59988.0", "5"), ("59985.5", "5")]  # bins of 10
    asks = [("60010.0", "1"), ("60025.0", "3")]
    s1, s2, r1, r2 = support_resistance(index_of(bids, asks), AnalysisParams())
    assert s1 == Decimal("59986.8")  # bin [59980, 59990): (59988*5 + 59985.5*5) / 10 = 59986.75 -> 1 decimal
    assert s2 == Decimal("60003.0")  # bin [60000, 60010): (60005 + 60001) / 2
    assert r1 == Decimal("60025.0")
    assert r2 == Decimal("60010.0")


# ------------------------------------------------------------------------------------------ large orders
def test_large_orders_k_times_median() -> None:
    idx = index_of([("99", "1"), ("98", "1"), ("97", "2"), ("96", "5"), ("95", "12")], [("101", "1")])
    assert idx.bids.median_size() == 2.0
    assert large_total(idx.bids, k=5, min_size=0) == 12.0  # threshold 10
    assert large_total(idx.bids, k=2, min_size=0) == 17.0  # threshold 4: 5 + 12
    assert large_total(idx.bids, k=2, min_size=6) == 12.0  # absolute minimum wins
    assert large_total(idx.asks, k=5, min_size=0) == 0.0  # one level: never 5x itself


def test_large_orders_all_equal_empty_side() -> None:
    idx = index_of([(str(p), "3") for p in range(90, 100)], [])
    assert large_total(idx.bids, k=5, min_size=0) == 0.0
    assert large_total(idx.bids, k=1, min_size=0) == 30.0  # k=1: every level is at least the median
    assert large_total(idx.asks, k=5, min_size=0) is None


def test_trend_needs_the_lead_for_the_hold_time() -> None:
    t = TrendTracker()
    kw = {"margin": 0.2, "hold_ms": 10_000}
    assert t.update(130.0, 100.0, T0, **kw) == "neutral"  # leads, not yet held
    assert t.update(125.0, 100.0, T0 + 9_999, **kw) == "neutral"
    assert t.update(125.0, 100.0, T0 + 10_000, **kw) == "bullish"
    assert t.update(119.0, 100.0, T0 + 11_000, **kw) == "neutral"  # within the margin: reset
    assert t.update(130.0, 100.0, T0 + 12_000, **kw) == "neutral"
    assert t.update(0.0, 5.0, T0 + 13_000, **kw) == "neutral"  # sells lead now
    assert t.update(None, 5.0, T0 + 23_000, **kw) == "bearish"
    assert t.update(None, None, T0 + 24_000, **kw) == "neutral"
    assert TrendTracker().update(1.0, 0.0, T0, margin=0.2, hold_ms=0) == "bullish"


# --------------------------------------------------------------------------------------------- windows
def test_window_not_full_then_exact_statistics() -> None:
    w = RollingBuckets(window_ms=10_000, buckets=10, min_fill=0.5)  # 1 s buckets, ready with 5
    values = [10.0, 12.0, 11.0, 13.0, 9.0, 10.0]
    for i, v in enumerate(values[:5]):
        w.push(T0 + i * 1000, v)
        assert w.baseline() is None  # the current bucket is not part of the baseline
    w.push(T0 + 5_000, values[5])
    base = w.baseline()
    assert base is not None
    assert base.count == 5 and base.filled == 5
    assert base.mean == pytest.approx(statistics.fmean(values[:5]))
    assert base.std == pytest.approx(statistics.pstdev(values[:5]))
    assert base.median_of_means == pytest.approx(11.0)


def test_window_slides_and_forgets_old_buckets() -> None:
    w = RollingBuckets(window_ms=4_000, buckets=4, min_fill=0.5)
    for i in range(4):
        w.push(T0 + i * 1000, 100.0)
    for i in range(4, 10):
        w.push(T0 + i * 1000, 1.0)
    base = w.baseline()
    assert base is not None and base.mean == pytest.approx(1.0) and base.std == pytest.approx(0.0, abs=1e-9)
    w.push(T0 + 30_000, 5.0)  # a long silence: every bucket left the window
    assert w.baseline() is None


def test_window_late_frame_counts_in_the_current_bucket() -> None:
    w = RollingBuckets(window_ms=2_000, buckets=2, min_fill=0.5)
    w.push(T0 + 5_000, 1.0)
    w.push(T0, 3.0)  # older than the current bucket
    w.push(T0 + 6_000, 0.0)
    base = w.baseline()
    assert base is not None and base.count == 2 and base.mean == pytest.approx(2.0)


# ---------------------------------------------------------------------------------------- depth anomaly
FAST = AnalysisParams(depth_window_ms=10_000, liquidity_window_ms=10_000, window_buckets=10)


def test_depth_anomaly_warning_and_alert_levels() -> None:
    d = DepthAnomaly(FAST)
    for i in range(10):  # 10 s of depth alternating 90/110 on bids (mean 100, std 10); asks flat 50
        score, level = d.update(T0 + i * 1000, 90.0 if i % 2 else 110.0, 50.0, FAST)
    score, level = d.update(T0 + 10_000, 100.0, 50.0, FAST)
    assert score == pytest.approx(0.0, abs=1e-6) and level == "normal"
    score, level = d.update(T0 + 10_100, 125.0, 50.0, FAST)
    assert score == pytest.approx(2.5) and level == "warning"
    score, level = d.update(T0 + 10_200, 65.0, 50.0, FAST)  # |z| 3.5 on the bid side
    assert score == pytest.approx(3.5) and level == "alert"


def test_depth_anomaly_window_not_full_and_flat_baseline() -> None:
    d = DepthAnomaly(FAST)
    assert d.update(T0, 100.0, 100.0, FAST) == (None, "normal")
    for i in range(1, 10):
        d.update(T0 + i * 1000, 100.0, 100.0, FAST)  # all equal: std 0, floored at 0.1 % of the mean
    score, level = d.update(T0 + 10_000, 100.05, 100.0, FAST)
    assert score == pytest.approx(0.5) and level == "normal"
    score, level = d.update(T0 + 10_001, 100.0, 100.5, FAST)
    assert score == pytest.approx(5.0) and level == "alert"


def test_depth_anomaly_empty_band_is_zero_depth() -> None:
    d = DepthAnomaly(FAST)
    for i in range(10):
        d.update(T0 + i * 1000, 100.0 + i % 2, 100.0 + i % 2, FAST)
    score, level = d.update(T0 + 10_000, 0.0, 0.0, FAST)
    assert score is not None and score > 100 and level == "alert"
    zero = DepthAnomaly(FAST)
    for i in range(11):  # a band that was always empty never alerts
        score, level = zero.update(T0 + i * 1000, 0.0, 0.0, FAST)
    assert (score, level) == (0.0, "normal")


# ------------------------------------------------------------------------------------ liquidity shrink
def test_liquidity_index_levels() -> None:
    liq = LiquidityShrink(FAST)
    assert liq.update(T0, 1000.0, FAST) == (None, "normal")
    for i in range(1, 10):
        liq.update(T0 + i * 1000, 900.0 + 100 * (i % 3), FAST)  # bucket means 900/1000/1100: median 1000
    assert liq.update(T0 + 10_000, 1000.0, FAST) == (pytest.approx(1.0), "normal")
    assert liq.update(T0 + 10_100, 690.0, FAST) == (pytest.approx(0.69), "warning")
    assert liq.update(T0 + 10_200, 700.0, FAST) == (pytest.approx(0.70), "normal")
    assert liq.update(T0 + 10_300, 499.0, FAST) == (pytest.approx(0.499), "alert")


def test_liquidity_zero_median_is_not_computable() -> None:
    liq = LiquidityShrink(FAST)
    for i in range(12):
        index, level = liq.update(T0 + i * 1000, 0.0, FAST)
    assert (index, level) == (None, "normal")


# ------------------------------------------------------------------------------------------ band sums
def test_band_counts_levels_within_pct_of_mid() -> None:
    idx = index_of([("99.5", "1"), ("99.0", "2"), ("98.0", "4")], [("100.5", "1"), ("101.0", "3"), ("102", "9")])
    bq, aq, bn, an, mid = idx.band(1.0)  # mid 100, band [99, 101]
    assert mid == 100.0
    assert (bq, aq) == (3.0, 4.0)
    assert bn == pytest.approx(99.5 + 198.0) and an == pytest.approx(100.5 + 303.0)
    one_sided = index_of([("99.5", "1")], [])
    assert one_sided.band(1.0)[:2] == (1.0, 0.0)
    assert index_of([], []).band(1.0) == (0.0, 0.0, 0.0, 0.0, None)
    assert math.isclose(index_of([("90", "1")], [("110", "1")]).band(1.0)[0], 0.0)  # empty band
