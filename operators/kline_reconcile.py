"""Reconciliation of closed klines with the venue's own (no I/O): :class:`ReconcileLogic` pairs them by interval.

Wiring (``dataflows/market_data.py``): the pipeline's closed klines (:func:`reconcilable`) and the venues' closed
klines, keyed ``venue:instrument`` -> ``stateful`` with :class:`ReconcileLogic` -> :class:`KlineCheck` (compared,
or replaced by the venue's kline).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
from bytewax.operators import StatefulLogic

from operators.events import Kline
from operators.kline_steps import KlineOut
from operators.klines import kline_fields_equal


class KlineCheck(msgspec.Struct, frozen=True):
    """A pipeline kline paired with the venue's own closed kline of the same interval: compared (``match``)
    when ours is complete, else ``replaced`` — the venue's kline is published in its place."""

    ours: Kline
    venue: Kline
    match: bool
    replaced: bool = False

    @property
    def replacement(self) -> KlineOut:
        """The venue's kline as ours would be published (complete: the venue saw every trade)."""
        return KlineOut(msgspec.structs.replace(self.venue, complete=True), complete=True)


def reconcilable(o: KlineOut) -> Kline | None:
    """A closed pipeline kline as :class:`ReconcileLogic` takes it (``None``: not one to pair); ``complete``
    only if gap-free (``Kline.complete``) and watched from its start (``KlineOut.complete``)."""
    k = o.kline
    if not k.closed or o.correction:
        return None
    return k if o.complete or not k.complete else msgspec.structs.replace(k, complete=False)


class ReconcileLogic(StatefulLogic[Kline, KlineCheck, dict[tuple[str, int, str], Kline]]):
    """Pairs closed klines of one instrument by (timeframe, open time) across sources.

    Items are closed pipeline klines and the venue's closed klines; whichever comes first waits (at most
    ``keep`` per instrument, oldest dropped: a venue timeframe we do not aggregate simply never pairs). A
    complete pipeline kline is compared with the venue's; an incomplete one (a trade-id gap, or an interval
    not watched from its start) is replaced by the venue's. Complete ones are never replaced: when we saw
    every trade, our kline is the record (with its quote volume), and a disagreement is a mismatch to report.
    """

    def __init__(self, state: dict[tuple[str, int, str], Kline] | None, keep: int = 256) -> None:
        self.pending: dict[tuple[str, int, str], Kline] = dict(state or {})
        self.keep = keep

    def on_item(self, value: Kline) -> tuple[Iterable[KlineCheck], bool]:
        other_source = "venue" if value.source == "pipeline" else "pipeline"
        other = self.pending.pop((value.timeframe, value.open_ms, other_source), None)
        if other is None:
            self.pending[(value.timeframe, value.open_ms, value.source)] = value
            if len(self.pending) > self.keep:  # the longest waiting one (insertion order): O(1)
                del self.pending[next(iter(self.pending))]
            return (), False
        ours, venue = (value, other) if value.source == "pipeline" else (other, value)
        if not ours.complete:
            return (KlineCheck(ours, venue, False, replaced=True),), False
        return (KlineCheck(ours, venue, kline_fields_equal(ours, venue)),), False

    def snapshot(self) -> dict[tuple[str, int, str], Kline]:
        return dict(self.pending)
