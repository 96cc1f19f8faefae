"""``market_data``'s kline steps with their ``system:monitoring`` reports (:mod:`connectors.market.kline_reports`).

* :func:`reported_klines`: trades -> :func:`operators.kline_steps.aggregate_klines` (``bucket`` -> ``minute``
  event-time window aligned to UTC -> ``rollup`` to every ``KLINE_TIMEFRAMES``), then late trades counted and
  logged; a closed kline that overlaps minutes not watched (the gap of a reconnect or a restart) held back from
  the sinks (counter ``kline_held_back``); corrections of a minute published flat counted.
* :func:`reconcile_klines`: the venues' closed klines + the pipeline's closed klines -> ``reconcile``
  (:class:`operators.kline_reconcile.ReconcileLogic`): a complete kline is compared (counters
  ``kline_reconciled``, ``kline_mismatches``, a warning with both values on a mismatch); an incomplete one
  (trade-id gap, :mod:`operators.trade_ids`) is replaced by the venue's (``source=venue``, ``complete=true``;
  counter ``kline_replaced`` and a log line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream

from connectors.market.kline_reports import (
    report_check,
    report_correction,
    report_late,
    report_replaced,
    report_unknown,
)
from connectors.redis.monitoring import MonitorReport
from operators.events import Kline, Trade
from operators.kline_reconcile import ReconcileLogic, reconcilable
from operators.kline_steps import InstrumentRemoved, KlineOut, aggregate_klines
from operators.klines import Bucket


@dataclass(frozen=True)
class ReportedKlines:
    klines: Stream[KlineOut]  # every kline out of the rollup: updating and closed, of every timeframe
    published: Stream[KlineOut]  # the klines for the sinks
    reports: tuple[Stream[MonitorReport], ...]  # what the steps so far report
    buckets: Stream[Bucket]  # every batch's trades per instrument and minute (a ticker from trades uses them)


def reported_klines(trades: Stream[Trade], items: Stream[Any], timeframes: tuple[str, ...], lateness_s: float,
                    *, hold_at_eof: Callable[[], bool]) -> ReportedKlines:
    """Steps ``removals`` .. ``report_corrections``: ``trades`` -> klines of ``timeframes``; the pairs removed
    from the monitored set come from ``items``."""
    removals = op.filter_map("removals", items, lambda x: x if isinstance(x, InstrumentRemoved) else None)
    # a SIGINT/SIGTERM stop ends the input but not the open minutes: they stay in the state (and the recovery
    # snapshot) instead of being closed and published as partial klines
    ks = aggregate_klines(trades, timeframes, lateness_s, removals=removals, hold_at_eof=hold_at_eof)
    all_klines: Stream[KlineOut] = op.map("kline_values", ks.klines, _value)
    # a closed kline overlapping minutes not watched (a trade-id gap: reconnect, restart) is only reconciled: the
    # venue's kline of that interval (WebSocket, or the REST backfill and repair) is the one published
    unknown = op.branch("unknown_klines", all_klines, lambda o: o.unknown)
    klines = unknown.falses
    held = op.map("report_unknown", unknown.trues, report_unknown)
    late = op.map("report_late", op.map("late_values", ks.late, _value), report_late)
    corrections = op.map("report_corrections", op.filter("corrections", klines, lambda o: o.correction),
                         report_correction)
    return ReportedKlines(all_klines, klines, (late, corrections, held), ks.buckets)


def reconcile_klines(reported: ReportedKlines, items: Stream[Any]) -> ReportedKlines:
    """Steps ``venue_klines`` .. ``klines_out``: the venues' closed klines among ``items`` reconcile ours."""
    venue_klines = op.filter_map("venue_klines", items,
                                 lambda x: x if isinstance(x, Kline) and x.closed else None)
    ours = op.filter_map("complete_klines", reported.klines, reconcilable)
    to_check = op.key_on("key_reconcile", op.merge("to_reconcile", ours, venue_klines), _key)
    checks = op.stateful("reconcile", to_check, lambda state: ReconcileLogic(state))
    pairs = op.branch("replaced", op.map("check_values", checks, _value), lambda c: c.replaced)
    checked = op.map("report_checks", pairs.falses, report_check)
    # the venue's kline replaces an incomplete one of ours: in the kline: hash (if still the latest) and point
    replacements: Stream[KlineOut] = op.map("replacements", pairs.trues, lambda c: c.replacement)
    replaced = op.map("report_replaced", pairs.trues, report_replaced)
    published = op.merge("klines_out", reported.published, replacements)
    return ReportedKlines(reported.klines, published, (*reported.reports, checked, replaced), reported.buckets)


def _value(kv: tuple[str, Any]) -> Any:
    return kv[1]


def _key(x: Kline) -> str:
    return f"{x.venue}:{x.instrument}"
