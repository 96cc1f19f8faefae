"""Bybit v5 order books: wire models and a pure parser (no I/O) for the book-sync machine.

Wire shape (fixtures: the real frames of ``tests/data/simulator/bybit/bybit-2024-12-01-xrpusdt-orderbook500.jsonl``
and ``bybit-2025-06-13-orderbook1.jsonl``, replayed by ``tests/test_bybit_books_replay.py``; junk in
``tests/test_venue_book_parsers.py``), topic ``orderbook.{depth}.{SYMBOL}`` (spot 1/50/200, linear up to 500)::

    {"topic":"orderbook.500.XRPUSDT","type":"snapshot"|"delta","ts":1733011200691,
     "data":{"s":"XRPUSDT","b":[["1.9531","6203"],...],"a":[...],"u":20254869,"seq":130020238981},
     "cts":1733011200689}

-> a :class:`BookDelta` with ``seq_id = u`` and no ``prev_seq_id`` (the mapping
:mod:`operators.book_sequencing` documents: ``u`` counts the topic's pushes), ``ts_ms = ts``. ``type``
``snapshot`` — and any push with ``u == 1``, which is how Bybit announces a restarted service — is a snapshot
(it replaces the book); ``delta`` is an update, where size ``"0"`` removes a level. ``orderbook.1`` sends only
snapshots, and may repeat a ``u``. Answers (``{"success":true,"op":"subscribe",...}``) and pongs -> the
machinery's control types (:func:`connectors.bybit.protocol.op_answer`; ``Pong``).

Never raises on what the wire brings: junk is a :class:`~connectors.market.frames.ParseError` (``reason`` one of
:data:`connectors.market.frames.MARKET_REASONS`), every decode bounded by :func:`connectors.untrusted.decode`.
Symbols map back to instrument ids (``XRPUSDT`` -> ``XRP-USDT``) through the subscribed set's
:data:`~connectors.market.frames.SymbolMap`. Subscribing goes through :mod:`connectors.bybit.protocol`: the
topic ``orderbook.50:ETH-USDT`` is the argument ``orderbook.50.ETHUSDT``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from connectors import untrusted
from connectors.books.levels import check_sides, plain_text
from connectors.bybit.protocol import op_answer
from connectors.market.frames import EpochMs, ParseError, SymbolMap, parse_error, rejection
from connectors.untrusted import Rejected
from connectors.ws.hooks import Control, Pong
from operators.events import BookDelta, Level

VENUE = "bybit"
SPOT_DEPTHS = (1, 50, 200)
LINEAR_DEPTHS = (1, 50, 200, 500)


def check_book_depth(depth: int, ws_url: str) -> int:
    """``BYBIT_BOOK_DEPTH`` for the market ``BYBIT_WS_URL`` serves (``.../linear``: linear, else spot), or
    ``ValueError`` naming the depths Bybit offers there."""
    linear = ws_url.rstrip("/").endswith("/linear")
    if depth not in (LINEAR_DEPTHS if linear else SPOT_DEPTHS):
        msg = f"expected 1, 50 or 200 (spot){', or 500 (linear)' if linear else ''}"
        raise ValueError(msg)
    return depth


class BybitBookData(msgspec.Struct, frozen=True, gc=False):
    s: str
    b: tuple[Level, ...]
    a: tuple[Level, ...]
    u: int
    seq: int = 0


class BybitBookFrame(msgspec.Struct, frozen=True, gc=False):
    topic: str
    type: str
    ts: EpochMs
    data: BybitBookData
    cts: int = 0


class _Probe(msgspec.Struct, frozen=True):
    topic: str = ""
    op: str = ""
    success: bool | None = None
    ret_msg: str = ""


_frame = msgspec.json.Decoder(BybitBookFrame)
_probe = msgspec.json.Decoder(_Probe)
_PREFIX = '{"topic":"orderbook.'

BybitBookItem = BookDelta | Control | ParseError


def parse_bybit_book_frame(raw: bytes | str, *, recv_ns: int, symbols: SymbolMap) -> BybitBookItem:
    """One WebSocket text frame -> a snapshot/update :class:`BookDelta`, a control answer, or an error."""
    head = raw[:20] if isinstance(raw, str) else bytes(raw[:20]).decode("latin-1")
    if head == _PREFIX:
        frame = untrusted.decode(_frame, raw)
        if not isinstance(frame, Rejected):
            return _delta(frame, raw, recv_ns, symbols)
        return rejection(VENUE, frame)
    probe = untrusted.decode(_probe, raw)
    if isinstance(probe, Rejected):
        return rejection(VENUE, probe)
    if probe.topic:
        if probe.topic.startswith("orderbook."):  # fields in another order: the full typed decode
            frame = untrusted.decode(_frame, raw)
            return _delta(frame, raw, recv_ns, symbols) if not isinstance(frame, Rejected) \
                else rejection(VENUE, frame)
        return parse_error(VENUE, "unknown_channel", f"topic {probe.topic[:60]!r}", raw)
    if probe.op in ("pong", "ping") or probe.ret_msg == "pong":
        return Pong()
    if probe.op:
        return op_answer(probe.op[:60], probe.success, probe.ret_msg[:160])
    return parse_error(VENUE, "unknown_message", "expected an orderbook topic or an 'op' answer", raw)


def _delta(f: BybitBookFrame, raw: bytes | str, recv_ns: int, symbols: SymbolMap) -> BookDelta | ParseError:
    d = f.data
    inst = symbols.get(d.s.upper())
    if inst is None:
        return parse_error(VENUE, "not_subscribed", f"symbol {d.s[:60]!r} is not subscribed", raw)
    _, _, rest = f.topic.partition(".")
    depth, _, symbol = rest.partition(".")
    if symbol != d.s or not depth.isdigit():
        return parse_error(VENUE, "invalid_value", f"topic {f.topic[:60]!r} does not name {d.s[:60]!r}", raw)
    action: Literal["snapshot", "update"]
    if f.type == "snapshot" or d.u == 1:
        action = "snapshot"
    elif f.type == "delta":
        action = "update"
    else:
        return parse_error(VENUE, "invalid_value", f"type {f.type[:60]!r}: expected snapshot or delta", raw)
    if not 0 < d.u < 2**63:
        return parse_error(VENUE, "invalid_value", f"update id u={d.u}: expected u >= 1", raw)
    bad = check_sides(d.b, d.a, plain_text(raw))
    if bad is not None:
        return parse_error(VENUE, bad[0], bad[1], raw)
    return BookDelta(VENUE, inst, action, d.b, d.a, f.ts, recv_ns, 0, d.u, None)
