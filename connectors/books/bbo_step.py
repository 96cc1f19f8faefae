"""The collector's ``bbo`` step: each venue's book -> :class:`operators.bbo.VenueQuote`, kept per instrument by a
keyed ``op.stateful`` step whose logic (:class:`BboLogic`) wakes itself up at the next deadline
(``notify_at``/``on_notify``), so a venue whose feed stopped is left out within ``BBO_MAX_AGE_MS`` of its last
change even when nothing else arrives. The pure part is :mod:`operators.bbo`; this adds the clock.

State is not carried across restarts (``snapshot()`` is ``None``): the venues' next views rebuild it at once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from bytewax.operators import StatefulLogic

from connectors.books.items import BookState, CollectorItem
from operators.bbo import Bbo, BboState, VenueQuote
from operators.events import BookStatus, BookView


def quote_of(item: CollectorItem) -> VenueQuote | None:
    """A book's view or state change as the BBO sees it (small: it may cross processes to its key's worker)."""
    if type(item) is BookView:
        if item.status is not BookStatus.VALID:
            return VenueQuote(item.venue, item.instrument, item.status, levels=False)
        return VenueQuote(item.venue, item.instrument, item.status, item.bids[0] if item.bids else None,
                          item.asks[0] if item.asks else None, item.recv_ns)
    if type(item) is BookState:
        return VenueQuote(item.venue, item.instrument, item.status, levels=False, removed=item.removed)
    return None


class BboLogic(StatefulLogic[VenueQuote, Bbo, None]):
    """One instrument's BBO in ``op.stateful`` (the builder ignores resume state: see the module docstring)."""

    def __init__(self, max_age_ms: int) -> None:
        self._max_age_ms = max_age_ms
        self._state: BboState | None = None  # made by the first quote, which names the instrument

    def on_item(self, value: VenueQuote) -> tuple[list[Bbo], bool]:
        if self._state is None:
            self._state = BboState(value.instrument, self._max_age_ms)
        bbo = self._state.on_quote(value, time.time_ns())
        return [bbo], StatefulLogic.DISCARD if bbo.removed else StatefulLogic.RETAIN

    def on_notify(self) -> tuple[list[Bbo], bool]:
        bbo = None if self._state is None else self._state.on_time(time.time_ns())
        return ([] if bbo is None else [bbo]), StatefulLogic.RETAIN

    def notify_at(self) -> datetime | None:
        deadline = None if self._state is None else self._state.deadline_ns()
        return None if deadline is None else datetime.fromtimestamp(deadline / 1e9, UTC)

    def snapshot(self) -> None:
        return None  # cheap (runs at every epoch end): the live views rebuild the state within a batch
