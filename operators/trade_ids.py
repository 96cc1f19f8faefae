"""Trade-id continuity: which trades may have others missing right before them (pure, no I/O).

A kline is ``complete`` only if no trade of its interval may be missing. Where a venue numbers an
instrument's trades without holes (:attr:`operators.events.Trade.seq`), the next event must cover the ids
right after the previous one: ``seq - count == previous seq``. Anything else is a gap, and the trade after it
is flagged (``Trade.gap``); its interval becomes incomplete. The rule per venue (checked against the
recordings in ``tests/data``; see the README's venue table):

* Binance ``trade``: ``t`` contiguous per symbol; ``aggTrade``: the underlying ids ``f..l`` chain
  (``f == previous l + 1``), so ``seq = l``, ``count = l - f + 1``;
* OKX ``trades``: ``tradeId`` contiguous per instrument; with ``count`` > 1 it is the last id of the
  aggregation, so the push covers ``tradeId - count + 1 .. tradeId``;
* Bybit ``publicTrade``: ids are not contiguous (spot: large numbers with holes; derivatives: UUIDs) — no check;
* ``local`` (the exchange's own stream): ``trade_id`` is only increasing — no check; the source reads the
  stream from its start and keeps its offsets exactly, so it misses nothing.

The first trade of an instrument whose predecessor is unknown (the feed was joined mid-interval: start,
pair added, a restart without the recovered last id, any restart of a venue without contiguous ids) is also
flagged, for every WebSocket venue: the part
of its interval before the subscription was not seen. A gap is charged to the interval of the trade after
it (the missing trades' times are unknown; an earlier interval already closed is left as published and
is caught by reconciliation against the venue's kline).
"""

from __future__ import annotations

import msgspec

from operators.events import Trade


class TradeIds:
    """Per instrument the last ``seq`` passed on (``None``: seen, ids not contiguous); ``check`` flags the
    trade after a gap. ``snapshot()`` is the state to restore, so a restart checks its first trade too."""

    __slots__ = ("gaps", "last")

    def __init__(self, state: dict[str, int | None] | None = None) -> None:
        # restored: an instrument without contiguous ids cannot show that nothing traded while the dataflow was
        # down, so its first trade after a restart is flagged like an unknown start
        self.last: dict[str, int | None] = {k: v for k, v in (state or {}).items() if v is not None}
        self.gaps = 0  # gaps seen since the last drain (not counting unknown starts), for the monitoring counter

    def check(self, t: Trade) -> Trade:
        """``t``, or a copy with ``gap=True`` when trades may be missing right before it."""
        inst = t.instrument
        known = inst in self.last
        prev = self.last.get(inst)
        seq = t.seq
        if seq is not None and prev is not None and seq <= prev:
            return t  # resent or reordered: not newer than what was passed on, and not a gap
        self.last[inst] = seq
        if not known:
            return msgspec.structs.replace(t, gap=True)
        if seq is not None and prev is not None and seq - t.count != prev:
            self.gaps += 1
            return msgspec.structs.replace(t, gap=True)
        return t

    def forget(self, instrument: str) -> None:
        """The pair left the monitored set: its next trade starts afresh (an unknown predecessor)."""
        self.last.pop(instrument, None)

    def snapshot(self) -> dict[str, int | None]:
        return dict(self.last)
