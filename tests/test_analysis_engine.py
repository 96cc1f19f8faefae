"""Alerts, the per-instrument analyzer over the shared book operator, and property tests of the index."""

from __future__ import annotations

import pickle
import statistics
from decimal import Decimal

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.analysis import AnalysisParams, InstrumentAnalyzer, email_jobs
from operators.analysis.alerts import AlertTracker
from operators.analysis.index import BookIndex
from operators.analysis.windows import RollingBuckets
from operators.events import AlertEvent, BookStatus
from operators.orderbook import OrderBook
from tests.analysis_helpers import delta, lv, snapshot

T0 = 1_700_000_000_000


# ---------------------------------------------------------------------------------------------- alerts
def observe(t: AlertTracker, level: str, ts: int, cooldown: int = 60_000) -> AlertEvent | None:
    return t.observe("BTC-USDT", "depth_anomaly", level, value=2.5, threshold=2.0,  # type: ignore[arg-type]
                     ts_ms=ts, cooldown_ms=cooldown, describe="depth z-score")


def test_alerts_fire_on_transitions_up_with_cooldown() -> None:
    t = AlertTracker()
    assert observe(t, "normal", T0) is None
    first = observe(t, "warning", T0 + 1)
    assert first is not None and first.level == "warning" and first.message.startswith("BTC-USDT depth_anomaly")
    assert observe(t, "warning", T0 + 2) is None  # staying is not a transition
    escalated = observe(t, "alert", T0 + 3)  # escalation passes the cooldown
    assert escalated is not None and escalated.level == "alert"
    assert observe(t, "normal", T0 + 4) is None
    assert observe(t, "warning", T0 + 5) is None  # within the cooldown, not higher than the last fired
    assert observe(t, "alert", T0 + 6) is None
    assert observe(t, "normal", T0 + 7) is None
    again = observe(t, "alert", T0 + 3 + 60_000)  # cooldown over
    assert again is not None and again.ts_ms == T0 + 60_003


def test_alert_cooldown_is_per_type() -> None:
    t = AlertTracker()
    assert observe(t, "alert", T0) is not None
    other = t.observe("BTC-USDT", "liquidity_shrink", "warning", value=0.6, threshold=0.7, ts_ms=T0,
                      cooldown_ms=60_000, describe="liquidity index")
    assert other is not None and other.alert_type == "liquidity_shrink"


def test_email_jobs_have_the_design_shape_and_stable_ids() -> None:
    event = AlertEvent(instrument="ETH-USDT", alert_type="liquidity_shrink", level="alert", value=0.42,
                       threshold=0.5, message="ETH-USDT liquidity_shrink alert: liquidity index 0.420", ts_ms=T0)
    jobs = email_jobs(event, ["a@example.com", "b@example.com"])
    assert [j.to for j in jobs] == ["a@example.com", "b@example.com"]
    assert jobs[0].id != jobs[1].id and email_jobs(event, ["a@example.com"])[0].id == jobs[0].id
    body = orjson.loads(msgspec.json.encode(jobs[0]))
    assert set(body) == {"id", "alert_id", "to", "subject", "body", "created_at", "attempts"}
    assert body["attempts"] == 0 and body["created_at"] == "2023-11-14T22:13:20.000Z"
    assert "ETH-USDT" in body["subject"] and "liquidity shrink alert" in body["subject"]
    assert "0.42" in body["body"] and body["alert_id"] == f"analysis:ETH-USDT:liquidity_shrink:alert:{T0}"
    assert email_jobs(event, []) == []


# ------------------------------------------------------------------------------------------ analyzer
PARAMS = AnalysisParams(bin_width=Decimal("1"), depth_window_ms=5_000, liquidity_window_ms=5_000,
                        window_buckets=5, trend_hold_ms=2_000, alert_cooldown_ms=0)
BIDS = [("99.5", "1"), ("99.0", "2"), ("98.5", "1"), ("98.0", "20")]
ASKS = [("100.5", "1"), ("101.0", "2"), ("101.5", "1"), ("102.0", "2")]


def analyzer() -> InstrumentAnalyzer:
    return InstrumentAnalyzer("BTC-USDT", OrderBook("BTC-USDT"), PARAMS)


def test_analyzer_computes_all_fields_on_a_valid_book() -> None:
    a = analyzer()
    out = a.on_delta(snapshot(BIDS, ASKS, ts_ms=T0), PARAMS)
    r = out.result
    assert out.analysed and r.book_status is BookStatus.VALID and r.analysis_ms == T0
    assert (r.support_level_1, r.support_level_2) == (Decimal("98.0"), Decimal("99.2"))
    assert (r.resistance_level_1, r.resistance_level_2) == (Decimal("101.2"), Decimal("102.0"))
    assert r.large_buy_orders == Decimal("20") and r.large_sell_orders == Decimal("0")
    assert r.depth_anomaly_score is None and r.liquidity_index is None  # windows filling
    assert r.large_order_trend == "neutral"
    out = a.on_delta(delta([], [("102.0", "0")], ts_ms=T0 + 2_500), PARAMS)
    assert out.result.resistance_level_2 == Decimal("100.5")  # bin 102 removed: bins 101 (3), 100 (1)
    assert out.result.large_order_trend == "bullish"  # buys led for 2.5 s >= hold


def test_analyzer_keeps_last_values_when_the_book_is_not_valid() -> None:
    a = analyzer()
    a.on_delta(snapshot(BIDS, ASKS, ts_ms=T0, seq=10, prev=-1), PARAMS)
    good = a.last
    out = a.on_delta(delta([("99.7", "1")], [], ts_ms=T0 + 100, seq=12, prev=11), PARAMS)  # gap
    assert not out.analysed and out.result.book_status is BookStatus.RESYNCING
    assert out.result.support_level_1 == good.support_level_1 and out.result.analysis_ms == good.analysis_ms
    out = a.on_delta(delta([("99.8", "1")], [], ts_ms=T0 + 200, seq=13, prev=12), PARAMS)
    assert out.result.book_status is BookStatus.RESYNCING
    out = a.on_delta(snapshot([("90.5", "3")], ASKS, ts_ms=T0 + 300, seq=20, prev=-1), PARAMS)
    assert out.analysed and out.result.support_level_1 == Decimal("90.5")


def test_status_reports_from_the_source_mark_the_book() -> None:
    a = analyzer()
    a.on_delta(snapshot(BIDS, ASKS, ts_ms=T0), PARAMS)
    out = a.on_status(BookStatus.STALE)
    assert out.result.book_status is BookStatus.STALE and out.result.support_level_1 == Decimal("98.0")
    assert a.on_delta(delta([("99.5", "2")], [], ts_ms=T0 + 1), PARAMS).result.book_status is BookStatus.VALID
    out = a.on_status(BookStatus.RESYNCING)
    assert out.result.book_status is BookStatus.RESYNCING and not out.analysed
    assert a.on_delta(delta([("99.5", "3")], [], ts_ms=T0 + 2), PARAMS).result.book_status is BookStatus.RESYNCING


def test_replayed_frames_older_than_the_book_are_skipped() -> None:
    a = analyzer()
    a.on_delta(snapshot(BIDS, ASKS, ts_ms=T0, seq=10, prev=-1), PARAMS)
    a.on_delta(delta([("99.5", "5")], [], ts_ms=T0 + 1, seq=11, prev=10), PARAMS)
    a.on_delta(delta([("99.5", "6")], [], ts_ms=T0 + 2, seq=12, prev=11), PARAMS)
    out = a.on_delta(delta([("99.5", "5")], [], ts_ms=T0 + 1, seq=11, prev=10), PARAMS)  # a replay
    assert not out.analysed and out.result.book_status is BookStatus.VALID
    assert a.book.view().bids[0] == lv([("99.5", "6")])[0]
    reset = a.on_delta(delta([("99.5", "7")], [], ts_ms=T0 + 3, seq=3, prev=12), PARAMS)  # OKX seq reset
    assert reset.analysed and a.book.seq_id == 3


def run_series(a: InstrumentAnalyzer, start: int, n: int, drain_from: int | None = None) -> list[object]:
    outs = []
    for i in range(start, start + n):
        size = "2" if drain_from is not None and i >= drain_from else "20"
        bid_size = str(10 + i % 3)
        outs.append(a.on_delta(delta([("99.0", bid_size)], [("101.0", size)], ts_ms=T0 + i * 250), PARAMS))
    return outs


def test_analyzer_alerts_on_liquidity_drain_and_depth_drop() -> None:
    a = analyzer()
    a.on_delta(snapshot(BIDS, ASKS, ts_ms=T0), PARAMS)
    outs = run_series(a, 1, 40, drain_from=30)
    alerts = [e for o in outs for e in o.alerts]  # type: ignore[attr-defined]
    kinds = {(e.alert_type, e.level) for e in alerts}
    assert ("depth_anomaly", "alert") in kinds
    assert ("liquidity_shrink", "alert") in kinds or ("liquidity_shrink", "warning") in kinds
    assert all(e.ts_ms >= T0 + 30 * 250 for e in alerts)  # nothing before the drain
    last = outs[-1].result  # type: ignore[attr-defined]
    assert last.liquidity_index is not None and last.liquidity_index < 0.7


def test_pickled_analyzer_resumes_its_windows_exactly() -> None:
    a = analyzer()
    a.on_delta(snapshot(BIDS, ASKS, ts_ms=T0), PARAMS)
    run_series(a, 1, 25)
    restored = pickle.loads(pickle.dumps(a))
    assert restored.index is None  # derived data is rebuilt, not stored
    expected = run_series(a, 26, 20, drain_from=30)
    got = run_series(restored, 26, 20, drain_from=30)
    assert got == expected


# ------------------------------------------------------------------------------------ index properties
prices = st.integers(min_value=9_000, max_value=11_000).map(lambda t: f"{t / 100:.2f}")
sizes = st.sampled_from(["0", "0.5", "1", "1.25", "2", "3", "10", "40"])
changes = st.lists(st.tuples(st.booleans(), prices, sizes), min_size=1, max_size=60)


def naive(model: dict[str, float], bid: bool) -> list[tuple[float, float]]:
    items = sorted(((float(p), s) for p, s in model.items()), reverse=bid)
    return items


@settings(max_examples=150, deadline=None)
@given(st.lists(changes, min_size=1, max_size=8), st.integers(min_value=3, max_value=30))
def test_index_matches_a_naive_recomputation(batches: list[list[tuple[bool, str, str]]], depth: int) -> None:
    index = BookIndex(width=1.0, depth=depth)
    model: dict[bool, dict[str, float]] = {True: {}, False: {}}
    for batch in batches:
        bids = [(p, s) for is_bid, p, s in batch if is_bid]
        asks = [(p, s) for is_bid, p, s in batch if not is_bid]
        index.apply(lv(bids), lv(asks))
        for is_bid, p, s in batch:
            if float(s) > 0:
                model[is_bid][p] = float(s)
            else:
                model[is_bid].pop(p, None)
        for is_bid in (True, False):  # trim like the book: keep the best `depth`
            kept = naive(model[is_bid], is_bid)[:depth]
            model[is_bid] = {p: s for p, s in model[is_bid].items() if (float(p), s) in kept}
    for is_bid, side in ((True, index.bids), (False, index.asks)):
        levels = naive(model[is_bid], is_bid)
        assert sorted(side.prices) == sorted(p for p, _ in levels)
        if levels:
            assert side.median_size() == pytest.approx(statistics.median(s for _, s in levels))
            assert side.best() == levels[0][0]
        bins: dict[int, float] = {}
        for p, s in levels:
            bins[int(p // 1)] = bins.get(int(p // 1), 0.0) + s
        assert {b: acc[1] for b, acc in side.bins.items()} == pytest.approx(bins)
        for lo, hi in ((95.0, 105.0), (91.0, 109.0), (0.0, 1e9), (99.0, 99.5)):  # narrow and wide bands
            size, notional = side.band(lo, hi)
            assert size == pytest.approx(sum(s for p, s in levels if lo <= p <= hi), abs=1e-9)
            assert notional == pytest.approx(sum(p * s for p, s in levels if lo <= p <= hi), abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(changes, min_size=1, max_size=6))
def test_index_agrees_with_the_book_operator(batches: list[list[tuple[bool, str, str]]]) -> None:
    book = OrderBook("X-Y", depth=20)
    book.apply(snapshot([("90.00", "1")], [("110.00", "1")]))
    index = BookIndex.build(lv([("90.00", "1")]), lv([("110.00", "1")]), width=1.0, depth=20)
    for batch in batches:
        bids = [(p, s) for is_bid, p, s in batch if is_bid and float(p) < 100]
        asks = [(p, s) for is_bid, p, s in batch if not is_bid and float(p) > 100]
        book.apply(delta(bids, asks))
        index.apply(lv(bids), lv(asks))
        view = book.view(20)
        assert index.bids.keys[::-1] == [x.price for x in view.bids]
        assert index.asks.keys == [x.price for x in view.asks]


# ----------------------------------------------------------------------------------- window properties
series = st.lists(st.tuples(st.integers(min_value=0, max_value=2_500), st.floats(min_value=0, max_value=1e6)),
                  min_size=1, max_size=200)


@settings(max_examples=150, deadline=None)
@given(series, st.integers(min_value=2, max_value=12), st.sampled_from([0.25, 0.5, 1.0]))
def test_window_baseline_matches_a_naive_recomputation(
    steps: list[tuple[int, float]], buckets: int, min_fill: float,
) -> None:
    """Push values at increasing times; the baseline is exactly the values of the completed buckets of the
    window before the current bucket."""
    window_ms = buckets * 1_000
    w = RollingBuckets(window_ms, buckets, min_fill)
    pushed: list[tuple[int, float]] = []
    t = T0
    for dt, value in steps:
        t += dt
        w.push(t, value)
        pushed.append((t, value))
        current = t // 1_000
        inside = [(ts, v) for ts, v in pushed if current - buckets <= ts // 1_000 < current]
        filled = len({ts // 1_000 for ts, _ in inside})
        base = w.baseline()
        if filled < max(1, -(-int(min_fill * buckets * 1_000) // 1_000)):
            assert base is None
            continue
        assert base is not None
        values = [v for _, v in inside]
        assert base.count == len(values) and base.filled == filled
        assert base.mean == pytest.approx(statistics.fmean(values), rel=1e-9, abs=1e-6)
        assert base.std == pytest.approx(statistics.pstdev(values), rel=1e-6, abs=1e-3)
        means = [statistics.fmean(v for ts, v in inside if ts // 1_000 == b)
                 for b in sorted({ts // 1_000 for ts, _ in inside})]
        assert base.median_of_means == pytest.approx(statistics.median(means), rel=1e-9, abs=1e-6)
