"""Binance spot order books: wire models and pure parsers (no I/O) for the book-sync machine.

Wire shapes (fixtures: the real frames of ``tests/data/simulator/binance/binance-2024-08-08-ethusdt-depth-
trade.jsonl.gz``, replayed by ``tests/test_binance_books_replay.py``; junk in ``tests/test_venue_book_parsers.py``):

* diff depth ``<sym>@depth@100ms`` (or ``@depth``, ``@depth@1000ms``), bare on ``/ws/<stream>`` or in the
  combined-stream envelope ``{"stream":"ethusdt@depth@100ms","data":{...}}``::

    {"e":"depthUpdate","E":1723161255308,"s":"ETHUSDT","U":35346513499,"u":35346513505,
     "b":[["2683.80000000","3.02920000"],...],"a":[["2733.70000000","0.00000000"]]}

  -> an update :class:`BookDelta` with ``seq_id = u``, ``prev_seq_id = U - 1`` (the mapping
  :mod:`operators.book_sequencing` documents), ``ts_ms = E``; a size of zero (``"0.00000000"``) removes the
  level (the book's rule).
* REST ``GET /api/v3/depth?symbol=ETHUSDT&limit=1000``: ``{"lastUpdateId":35346513512,"bids":[...],
  "asks":[...]}`` -> a snapshot :class:`BookDelta` with ``seq_id = lastUpdateId`` (no time in the body:
  ``ts_ms`` is the receive time); an error body ``{"code":-1121,"msg":"Invalid symbol."}`` -> a
  :class:`~connectors.ws.hooks.Reject` of the instrument.
* ``<sym>@bookTicker``: ``{"u":35346513501,"s":"ETHUSDT","b":"2683.80000000","B":"3.02920000",
  "a":"2683.81000000","A":"31.43950000"}`` -> :class:`BookTicker` (best levels as of update id ``u``).
* subscribe answers ``{"result":null,"id":7}`` / ``{"error":{...},"id":7}`` and ``serverShutdown`` -> the
  machinery's control types (``Ack``, ``Reject``, ``Notice``: :mod:`connectors.ws.hooks`), as the hooks read them.

Never raises on what the wire brings: junk is a :class:`~connectors.market.frames.ParseError` (``reason`` one of
:data:`connectors.market.frames.MARKET_REASONS`), every decode bounded by :func:`connectors.untrusted.decode`.
Symbols map back to instrument ids (``ETHUSDT`` -> ``ETH-USDT``) through the subscribed set's
:data:`~connectors.market.frames.SymbolMap`. Request weight of the REST snapshot: :func:`depth_weight`.
Subscribing goes through the venue's one vocabulary (:mod:`connectors.binance.protocol`): the topic
``depth@100ms:ETH-USDT`` is the stream ``ethusdt@depth@100ms``.
"""

from __future__ import annotations

import msgspec

from connectors import untrusted
from connectors.books.levels import check_sides, plain_text
from connectors.market.frames import EpochMs, ParseError, SymbolMap, parse_error, rejection
from connectors.untrusted import Rejected
from connectors.ws.hooks import Ack, Control, Notice, Reject
from operators.events import BookDelta, Level

VENUE = "binance"
DEPTH_STREAMS = ("depth", "depth@100ms", "depth@1000ms")


# ------------------------------------------------------------------------------------------ wire models
class BinanceDepthUpdate(msgspec.Struct, frozen=True, gc=False):
    e: str
    E: EpochMs
    s: str
    U: int
    u: int
    b: tuple[Level, ...]
    a: tuple[Level, ...]


class BinanceDepthEnvelope(msgspec.Struct, frozen=True, gc=False):
    stream: str
    data: BinanceDepthUpdate


class BinanceDepthSnapshot(msgspec.Struct, frozen=True):
    lastUpdateId: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


class BinanceBookTicker(msgspec.Struct, frozen=True):
    u: int
    s: str
    b: str
    B: str
    a: str
    A: str


class BinanceTickerEnvelope(msgspec.Struct, frozen=True):
    stream: str
    data: BinanceBookTicker


class _Probe(msgspec.Struct, frozen=True):
    """Which keys a frame that is not a depth or bookTicker frame has (values skipped, bounded)."""

    stream: str = ""
    e: str = ""
    id: msgspec.Raw = msgspec.Raw()
    result: msgspec.Raw = msgspec.Raw()
    error: msgspec.Raw = msgspec.Raw()
    code: int | None = None
    msg: str = ""


_envelope = msgspec.json.Decoder(BinanceDepthEnvelope)
_bare = msgspec.json.Decoder(BinanceDepthUpdate)
_snapshot = msgspec.json.Decoder(BinanceDepthSnapshot)
_ticker_envelope = msgspec.json.Decoder(BinanceTickerEnvelope)
_ticker = msgspec.json.Decoder(BinanceBookTicker)
_probe = msgspec.json.Decoder(_Probe)


class _ErrorBody(msgspec.Struct, frozen=True):
    code: object = None
    msg: object = None


_error_body = msgspec.json.Decoder(_ErrorBody)
_answer_id = msgspec.json.Decoder(int | str | None)


class BookTicker(msgspec.Struct, frozen=True):
    """Binance's best bid and ask as of its update id ``update_id`` (the depth stream's ``u`` numbering)."""

    venue: str
    instrument: str
    update_id: int
    bid: Level
    ask: Level
    recv_ns: int


BinanceBookItem = BookDelta | BookTicker | Control | ParseError


# ---------------------------------------------------------------------------------------------- parsers
def _stream_of(raw: bytes | str) -> str:
    """The stream name of a combined-stream frame from its first bytes (only to pick a decoder), or ``""``."""
    head = raw[:96] if isinstance(raw, str) else bytes(raw[:96]).decode("latin-1")
    if not head.startswith('{"stream":"'):
        return ""
    end = head.find('"', 11)
    return head[11:end] if end > 0 else ""


def parse_binance_book_frame(raw: bytes | str, *, recv_ns: int, symbols: SymbolMap) -> BinanceBookItem:
    """One WebSocket text frame -> an update :class:`BookDelta`, a :class:`BookTicker`, a control answer,
    or a :class:`~connectors.market.frames.ParseError`."""
    kind = _stream_of(raw).partition("@")[2]
    if kind in DEPTH_STREAMS or kind == "bookTicker":
        return _wrapped(kind, raw, recv_ns, symbols)
    return _slow(raw, recv_ns, symbols)


def _wrapped(kind: str, raw: bytes | str, recv_ns: int, symbols: SymbolMap) -> BinanceBookItem:
    if kind == "bookTicker":
        tick = untrusted.decode(_ticker_envelope, raw)
        return _book_ticker(tick.data, raw, recv_ns, symbols) if not isinstance(tick, Rejected) \
            else rejection(VENUE, tick)
    env = untrusted.decode(_envelope, raw)
    return _delta(env.data, raw, recv_ns, symbols) if not isinstance(env, Rejected) else rejection(VENUE, env)


def _slow(raw: bytes | str, recv_ns: int, symbols: SymbolMap) -> BinanceBookItem:
    """Bare (``/ws``) frames, envelopes with their keys in another order, control answers, other streams, junk."""
    probe = untrusted.decode(_probe, raw)
    if isinstance(probe, Rejected):
        return rejection(VENUE, probe)
    if probe.stream:
        kind = probe.stream.partition("@")[2]
        if kind in DEPTH_STREAMS or kind == "bookTicker":
            return _wrapped(kind, raw, recv_ns, symbols)
        return parse_error(VENUE, "unknown_channel", f"stream {probe.stream[:60]!r}", raw)
    if probe.e == "depthUpdate":
        upd = untrusted.decode(_bare, raw)
        return _delta(upd, raw, recv_ns, symbols) if not isinstance(upd, Rejected) else rejection(VENUE, upd)
    if probe.e == "serverShutdown":
        return Notice("serverShutdown", reconnect=True)
    if probe.e:
        return parse_error(VENUE, "unknown_channel", f"event {probe.e[:60]!r}", raw)
    if probe.error:
        return Reject(_error_text(probe.error), (), _req_id(probe.id))
    if probe.id:
        return Ack(None, (), _req_id(probe.id))  # the answer does not say to which op (the hooks know it)
    if probe.code is not None:
        return Reject(f"{probe.code} {probe.msg[:160]}")
    tick = untrusted.decode(_ticker, raw)  # a bare bookTicker has no "e"
    if not isinstance(tick, Rejected):
        return _book_ticker(tick, raw, recv_ns, symbols)
    return parse_error(VENUE, "unknown_message", "neither a depth/bookTicker frame nor a control answer", raw)


def _error_text(error: msgspec.Raw) -> str:
    """``"<code> <msg>"`` of an answer's ``error`` object (as :class:`connectors.binance.protocol.BinanceHooks`
    reads it), or its start when it is not an object."""
    body = untrusted.decode(_error_body, error)
    if isinstance(body, Rejected):
        return bytes(error)[:200].decode("utf-8", "replace")
    return f"{body.code} {body.msg}"[:200]


def _req_id(raw: msgspec.Raw) -> str | None:
    if not raw:
        return None
    value = untrusted.decode(_answer_id, raw)
    if isinstance(value, Rejected):
        return bytes(raw)[:40].decode("utf-8", "replace")
    return None if value is None else str(value)


def _delta(d: BinanceDepthUpdate, raw: bytes | str, recv_ns: int, symbols: SymbolMap) -> BookDelta | ParseError:
    inst = symbols.get(d.s.upper())
    if inst is None:
        return parse_error(VENUE, "not_subscribed", f"symbol {d.s[:60]!r} is not subscribed", raw)
    if d.e != "depthUpdate":
        return parse_error(VENUE, "unknown_channel", f"event {d.e[:60]!r} on a depth stream", raw)
    if not 0 < d.U <= d.u < 2**63:
        return parse_error(VENUE, "invalid_value", f"update ids U={d.U} u={d.u}: expected 0 < U <= u", raw)
    bad = check_sides(d.b, d.a, plain_text(raw))
    if bad is not None:
        return parse_error(VENUE, bad[0], bad[1], raw)
    return BookDelta(VENUE, inst, "update", d.b, d.a, d.E, recv_ns, 0, d.u, d.U - 1)


def _book_ticker(t: BinanceBookTicker, raw: bytes | str, recv_ns: int, symbols: SymbolMap) -> BinanceBookItem:
    inst = symbols.get(t.s.upper())
    if inst is None:
        return parse_error(VENUE, "not_subscribed", f"symbol {t.s[:60]!r} is not subscribed", raw)
    bid, ask = Level(t.b, t.B), Level(t.a, t.A)
    bad = check_sides((bid,), (ask,), plain_text(raw))
    if bad is not None:
        return parse_error(VENUE, bad[0], bad[1], raw)
    if not 0 <= t.u < 2**63:
        return parse_error(VENUE, "invalid_value", f"update id u={t.u}", raw)
    return BookTicker(VENUE, inst, t.u, bid, ask, recv_ns)


def parse_depth_snapshot(body: bytes | str, *, instrument: str, recv_ns: int) -> BookDelta | Reject | ParseError:
    """A REST ``/api/v3/depth`` body -> a snapshot :class:`BookDelta` (``seq_id = lastUpdateId``, ``ts_ms``
    the receive time: the body has none); an error body -> a :class:`~connectors.ws.hooks.Reject` of
    ``instrument`` (reason ``"<code> <msg>"``)."""
    snap = untrusted.decode(_snapshot, body)
    if isinstance(snap, Rejected):
        probe = untrusted.decode(_probe, body)
        if not isinstance(probe, Rejected) and probe.code is not None:
            return Reject(f"{probe.code} {probe.msg[:160]}", (instrument,))
        return rejection(VENUE, snap)
    if not 0 <= snap.lastUpdateId < 2**63:
        return parse_error(VENUE, "invalid_value", f"lastUpdateId {snap.lastUpdateId}", body)
    bad = check_sides(snap.bids, snap.asks, plain_text(body))
    if bad is not None:
        return parse_error(VENUE, bad[0], bad[1], body)
    return BookDelta(VENUE, instrument, "snapshot", snap.bids, snap.asks, recv_ns // 1_000_000, recv_ns, 0,
                     snap.lastUpdateId, None)


def depth_weight(limit: int) -> int:
    """Request weight of ``GET /api/v3/depth`` by ``limit`` (Binance spot: 1-100: 5, 101-500: 25,
    501-1000: 50, 1001-5000: 250)."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    return 50 if limit <= 1000 else 250

