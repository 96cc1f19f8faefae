"""Channel events for the push gateway (``GET /ws``): one capped Redis Stream per channel, ``stream:<channel>``.

Every sink that publishes a channel queues its batch's events with :func:`queue_events` (one EVAL) on the
pipeline that writes its hashes, so a channel event is in Redis in the same round trip as the state it
describes, and the dataflows do
not know whether any gateway is running (a stream is written whether or not someone reads it, and capped with
``XADD ... MAXLEN ~ maxlen``, so an unread stream costs at most ``maxlen`` entries).

An entry's fields (short names: they are repeated in every entry):

* ``d`` — the event's ``data`` object as JSON bytes, encoded once here; the gateway splices it into
  ``{"event": ..., "id": ..., "data": <d>}`` without decoding it;
* ``t`` — the entry's type where a client must tell them apart (``@depth``: ``snapshot`` / ``update``);
* ``s``, ``p`` — ``@depth`` only: the book's ``seq`` and the ``prev_seq`` it chains from, so the gateway can
  check a client's chain without parsing ``d``;
* ``o`` — ``@my_alerts`` only: the owner, so the gateway delivers a private event to that user alone.

Channel names (docs/CONTRACTS.md "Push"): ``<inst>@depth``, ``<inst>@depth5``, ``<inst>@depth20``,
``<inst>@trades``, ``<exchange>:<inst>@ticker``, ``<exchange>:<inst>@kline_<tf>``, ``<inst>@analysis``,
``@alerts``, ``@monitoring``, ``@my_alerts``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from itertools import groupby
from typing import Any

import msgspec

from operators.book_checksum import okx_checksum
from operators.events import BookStatus, BookView, Level

STREAM_PREFIX = "stream:"
DEFAULT_MAXLEN = 10_000  # Settings.stream_maxlen's default, for sinks built without settings
ALERTS = "@alerts"
MONITORING = "@monitoring"
MY_ALERTS = "@my_alerts"
DEPTH_TOP = (5, 20)  # the top-N snapshot channels, <inst>@depth5 and <inst>@depth20


def stream_key(channel: str) -> str:
    return f"{STREAM_PREFIX}{channel}"


def depth_channel(instrument: str, levels: int | None = None) -> str:
    return f"{instrument}@depth" if levels is None else f"{instrument}@depth{levels}"


def trades_channel(instrument: str) -> str:
    return f"{instrument}@trades"


def ticker_channel(exchange: str, instrument: str) -> str:
    return f"{exchange}:{instrument}@ticker"


def kline_channel(exchange: str, instrument: str, timeframe: str) -> str:
    return f"{exchange}:{instrument}@kline_{timeframe}"


def analysis_channel(instrument: str) -> str:
    return f"{instrument}@analysis"


Fields = tuple[str | int, ...]  # an entry's fields after ``d``, as name, value, name, value... (module docstring)
StreamEvent = tuple[str, bytes, Fields]  # channel, data (the event's JSON), other fields


# KEYS: one per run of a channel's events (repeats allowed). ARGV[1]: maxlen, then per key a count c and its
# events: c = 0: one argument, a MessagePack array of the run's events without other fields (each only its data,
# as a MessagePack str: Redis's cmsgpack has no bin type); c > 0: c events, each data, n, n field names and
# values. One EVAL for a batch's events: redis-py's per-command packing, not the server, is the cost of many small
# XADDs; and redis-py packs every argument in Python (~1.5 us each here), so a run of plain events (every trade
# of @trades) is one argument packed in C, not one per event. The approximate cap lets Redis trim whole macro
# nodes, which is what keeps XADD O(1).
_XADD_MANY = """
local maxlen, j, added = ARGV[1], 2, 0
for _, key in ipairs(KEYS) do
  local c = tonumber(ARGV[j])
  j = j + 1
  if c == 0 then
    local evs = cmsgpack.unpack(ARGV[j])
    j = j + 1
    for i = 1, #evs do
      redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'd', evs[i])
    end
    added = added + #evs
  else
    for _ = 1, c do
      local n = tonumber(ARGV[j + 1])
      redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'd', ARGV[j], unpack(ARGV, j + 2, j + 1 + n))
      j = j + 2 + n
    end
    added = added + c
  end
end
return added
"""
_msgpack = msgspec.msgpack.Encoder()


def _plain_run(keys: list[str], args: list[str | int | bytes], channel: str, run: list[bytes]) -> None:
    keys.append(stream_key(channel))
    args.append(0)
    args.append(_msgpack.encode([data.decode() for data in run]))  # str, not bin (cmsgpack); same bytes in Redis


def queue_events(pipe: Any, events: list[StreamEvent], maxlen: int, plain: dict[str, list[bytes]] | None = None,
                 ) -> None:
    """Queue ``XADD stream:<channel> MAXLEN ~ maxlen * d <data> [fields...]`` for each event as one EVAL on a
    redis-py pipeline: each channel's events in their order (channels are separate streams: their relative order
    is no one's to see). ``plain``: events without other fields already grouped by channel (a channel's come
    before its ``events``; the market sink's trades)."""
    if not events and not plain:
        return
    keys: list[str] = []
    args: list[str | int | bytes] = [maxlen]
    if plain:
        for channel, datas in plain.items():
            _plain_run(keys, args, channel, datas)
    by_channel: dict[str, list[tuple[bytes, Fields]]] = {}
    for channel, data, fields in events:
        by_channel.setdefault(channel, []).append((data, fields))
    for channel, evs in by_channel.items():
        for has_fields, group in groupby(evs, key=_has_fields):  # runs of events without and with fields
            run = list(group)
            if not has_fields:
                _plain_run(keys, args, channel, [data for data, _ in run])
                continue
            keys.append(stream_key(channel))
            args.append(len(run))
            for data, fields in run:
                args.append(data)
                args.append(len(fields))
                args.extend(fields)
    pipe.eval(_XADD_MANY, len(keys), *keys, *args)


def _has_fields(event: tuple[bytes, Fields]) -> bool:
    return bool(event[1])


# ------------------------------------------------------------------------------------------------ @depth
_json = msgspec.json.Encoder()
_ZERO = "0"


class _Published(msgspec.Struct):
    seq: int
    bids: set[Level]  # the levels exactly as last published (the client's copy)
    asks: set[Level]


def _changes(old: set[Level], new: set[Level]) -> list[tuple[str, str]]:
    """The levels of ``new`` not in ``old`` (a new price or a new size), then the prices gone as size ``"0"``;
    in no particular order (each price appears once, so any order gives ``new``). Set differences: the
    per-level work is in C, and Python touches only the changed levels."""
    added = new - old
    out = [(lv.price, lv.size) for lv in added]
    gone = old - new
    if gone:
        kept = {lv.price for lv in added}
        out.extend((lv.price, _ZERO) for lv in gone if lv.price not in kept)
    return out


class DepthPublisher:
    """The collector sink's ``@depth``, ``@depth5`` and ``@depth20`` events, queued on its batch pipeline.

    ``@depth``: the sink coalesces a batch to one :class:`BookView` per instrument; this diffs it against the
    book last published on the stream (the copy every client holds) and queues the changed levels with
    ``seq`` (the view's ``seqId``), ``prev_seq`` (the last published ``seq``: a chain of *our* entries, which
    skips the venue seqIds coalesced away) and the OKX checksum of the resulting top 25
    (:func:`operators.book_checksum.okx_checksum`, computed here: OKX no longer sends one). With nothing published
    yet, after the book was not valid (syncing, resyncing: a resync shows as a new snapshot) or after a write
    that may have failed (:meth:`reset`), the whole book goes out as ``type=snapshot``.

    ``@depth5``/``@depth20``: the top N, at most every ``interval_s`` per instrument; a change inside the
    window waits for the next batch after it (the collector's shards report at least every second, so a
    quiet book's last state is out within about a second).
    """

    def __init__(self, maxlen: int = DEFAULT_MAXLEN, interval_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._maxlen = maxlen
        self._interval = interval_s
        self._clock = clock
        self._books: dict[str, _Published] = {}
        self._top_pending: dict[str, BookView] = {}
        self._top_at: dict[str, float] = {}

    def forget(self, instrument: str) -> None:
        """The book is not valid (or was removed): the next valid view is published as a snapshot."""
        self._books.pop(instrument, None)
        self._top_pending.pop(instrument, None)

    def reset(self) -> None:
        """A batch may not have reached Redis: every book's next event is a snapshot."""
        self._books.clear()

    def publish(self, pipe: Any, views: Iterable[BookView]) -> None:
        """Queue, as one EVAL, the ``@depth`` event of each view (one per instrument: the batch's newest) and
        the ``@depth5``/``@depth20`` snapshots whose 100 ms window has passed."""
        events: list[StreamEvent] = []
        for view in views:
            self._depth_event(view, events)
        self._due_tops(events)
        queue_events(pipe, events, self._maxlen)

    def _depth_event(self, view: BookView, events: list[StreamEvent]) -> None:
        if view.status is BookStatus.SYNCING or view.status is BookStatus.RESYNCING:
            self.forget(view.instrument)
            return
        inst = view.instrument
        bids, asks = set(view.bids), set(view.asks)
        seq = view.seq_id if view.seq_id is not None else 0
        prev = self._books.get(inst)
        if prev is None:
            data = _json.encode({"type": "snapshot", "bids": view.bids, "asks": view.asks, "seq": seq,
                                 "checksum": okx_checksum(view.bids, view.asks)})
            events.append((depth_channel(inst), data, ("t", "snapshot", "s", seq, "p", -1)))
        else:
            ch_bids = _changes(prev.bids, bids)
            ch_asks = _changes(prev.asks, asks)
            if not ch_bids and not ch_asks and seq == prev.seq:
                return  # a status-only rewrite of the hash: nothing for a client to apply
            data = _json.encode({"type": "update", "bids": ch_bids, "asks": ch_asks, "seq": seq,
                                 "prev_seq": prev.seq, "checksum": okx_checksum(view.bids, view.asks)})
            events.append((depth_channel(inst), data, ("t", "update", "s", seq, "p", prev.seq)))
        self._books[inst] = _Published(seq, bids, asks)
        self._top_pending[inst] = view

    def _due_tops(self, events: list[StreamEvent]) -> None:
        """The ``@depth5``/``@depth20`` snapshots whose 100 ms window has passed."""
        if not self._top_pending:
            return
        now = self._clock()
        for inst in [i for i in self._top_pending if now - self._top_at.get(i, -1e9) >= self._interval]:
            view = self._top_pending.pop(inst)
            self._top_at[inst] = now
            for n in DEPTH_TOP:
                data = _json.encode({"type": "snapshot", "bids": view.bids[:n], "asks": view.asks[:n],
                                     "seq": view.seq_id, "ts": view.ts_ms})
                events.append((depth_channel(inst, n), data, ()))
