"""``system:monitoring`` reports (and their log lines) of ``market_data``'s kline steps.

Each function turns one event of :mod:`operators.kline_steps` or :mod:`operators.kline_reconcile` into a
:class:`connectors.redis.monitoring.MonitorReport` of counters and logs it: late trades, a reconciliation against the
venue's kline (match or mismatch), an incomplete kline replaced by the venue's, a correction of a minute
published flat, a kline held back because it overlaps minutes not watched.
"""

from __future__ import annotations

from connectors.redis.monitoring import MonitorReport
from cryptoflow.logs import get_logger
from operators.kline_reconcile import KlineCheck
from operators.kline_steps import KlineOut
from operators.klines import Bucket

log = get_logger("connectors.market.kline_reports")
_COMPARED = ("open", "high", "low", "close", "volume", "trades")


def report_late(b: Bucket) -> MonitorReport:
    log.warning("kline_late_trades", venue=b.venue, instrument=b.instrument, minute_ms=b.start_ms,
                trades=b.trades, first_ms=b.first_ms, last_ms=b.last_ms, volume=str(b.volume))
    return MonitorReport(counters=(("kline_late_trades", b.trades),))


def report_check(check: KlineCheck) -> MonitorReport:
    if check.match:
        return MonitorReport(counters=(("kline_reconciled", 1),))
    ours, theirs = check.ours, check.venue
    log.warning("kline_mismatch", venue=ours.venue, instrument=ours.instrument, timeframe=ours.timeframe,
                open_ms=ours.open_ms, ours={f: str(getattr(ours, f)) for f in _COMPARED},
                venue_kline={f: str(getattr(theirs, f)) for f in _COMPARED})
    return MonitorReport(counters=(("kline_reconciled", 1), ("kline_mismatches", 1)))


def report_replaced(check: KlineCheck) -> MonitorReport:
    ours, theirs = check.ours, check.venue
    log.info("kline_replaced", venue=ours.venue, instrument=ours.instrument, timeframe=ours.timeframe,
             open_ms=ours.open_ms, reason="trade-id gap or interval not watched from its start",
             ours_trades=ours.trades, venue_trades=theirs.trades, ours_close=str(ours.close),
             venue_close=str(theirs.close))
    return MonitorReport(counters=(("kline_replaced", 1),))


def report_correction(o: KlineOut) -> MonitorReport:
    k = o.kline
    log.warning("kline_corrected", venue=k.venue, instrument=k.instrument, open_ms=k.open_ms, trades=k.trades,
                reason="trades closed a minute already published flat")
    return MonitorReport(counters=(("kline_corrections", 1),))


def report_unknown(o: KlineOut) -> MonitorReport:
    k = o.kline
    log.info("kline_held_back", venue=k.venue, instrument=k.instrument, timeframe=k.timeframe, open_ms=k.open_ms,
             trades=k.trades, reason="overlaps minutes not watched (a trade-id gap: reconnect or restart); the "
             "venue's kline of this interval is the record")
    return MonitorReport(counters=(("kline_held_back", 1),))
