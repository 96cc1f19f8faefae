"""Analysis alerts: transitions into warning/alert, a cooldown, and the email jobs they produce.

An :class:`AlertEvent` is emitted when an analysis of an instrument moves *up* into ``warning`` or
``alert`` (normal -> warning, normal -> alert, warning -> alert). Staying at a level emits nothing.
Cooldown (default 5 min of event time) per instrument and alert type: within it, a transition to a level
not higher than the last one emitted is suppressed; an escalation (warning -> alert) always passes.
Each emitted event gives one email job per recipient of ``ANALYSIS_ALERT_EMAILS`` (docs/CONTRACTS.md's job shape),
with ids derived from the event, so a replay produces the same ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from operators.analysis.depth_anomaly import AlertLevel
from operators.events import AlertEvent, EmailJob, iso_ms

_RANK: dict[AlertLevel, int] = {"normal": 0, "warning": 1, "alert": 2}




class AlertTracker:
    """Per instrument: the current level and the last emitted (level, time) of each alert type."""

    __slots__ = ("current", "fired")

    def __init__(self) -> None:
        self.current: dict[str, AlertLevel] = {}
        self.fired: dict[str, tuple[AlertLevel, int]] = {}

    def observe(
        self, instrument: str, alert_type: str, level: AlertLevel, *, value: float | None, threshold: float,
        ts_ms: int, cooldown_ms: int, describe: str,
    ) -> AlertEvent | None:
        previous = self.current.get(alert_type, "normal")
        self.current[alert_type] = level
        if level == "normal" or _RANK[level] <= _RANK[previous]:
            return None
        last = self.fired.get(alert_type)
        if last is not None and ts_ms - last[1] < cooldown_ms and _RANK[level] <= _RANK[last[0]]:
            return None
        self.fired[alert_type] = (level, ts_ms)
        shown = "n/a" if value is None else f"{value:.3f}"
        message = f"{instrument} {alert_type} {level}: {describe} {shown} (threshold {threshold:g})"
        return AlertEvent(
            instrument=instrument, alert_type=alert_type, level=level,
            value=0.0 if value is None else float(value), threshold=threshold, message=message, ts_ms=ts_ms,
        )


def alert_id(event: AlertEvent) -> str:
    return f"analysis:{event.instrument}:{event.alert_type}:{event.level}:{event.ts_ms}"


def email_jobs(event: AlertEvent, recipients: Sequence[str]) -> list[EmailJob]:
    """One job per recipient; ``id`` is stable for the same event and recipient."""
    aid = alert_id(event)
    subject = f"[cryptoflow] {event.instrument}: {event.alert_type.replace('_', ' ')} {event.level}"
    body = (
        f"{event.message}\n\n"
        f"instrument: {event.instrument}\nanalysis: {event.alert_type}\nlevel: {event.level}\n"
        f"value: {event.value:.6g}\nthreshold: {event.threshold:g}\ntime: {iso_ms(event.ts_ms)}\n"
    )
    return [
        EmailJob(
            id=hashlib.sha1(f"{aid}|{to}".encode(), usedforsecurity=False).hexdigest(),
            alert_id=aid, to=to, subject=subject, body=body, created_at=iso_ms(event.ts_ms),
        )
        for to in recipients
    ]
