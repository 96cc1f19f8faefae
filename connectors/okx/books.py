"""OKX v5 public order-book channels: wire models and pure parsers (no I/O).

Wire shapes (fixtures: ``tests/data/okx/*.jsonl``, recorded from OKX; ``tests/test_okx_books_parser.py``):

* ``books`` / ``books-l2-tbt`` / ``books50-l2-tbt``::

    {"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot"|"update",
     "data":[{"asks":[["41006.8","0.6","0","1"],...],"bids":[...],"ts":"1629966436396",
              "checksum":-1008, "prevSeqId":-1, "seqId":123456}]}

  A level is ``[price, size, "0" (deprecated liquidated orders), numOrders]``; only price and size are kept.
  ``checksum`` is 0 on today's OKX (since 2026-06-23); ``seqId``/``prevSeqId`` are absent from older frames.
* ``books5`` / ``bbo-tbt``: no ``action`` (each push is a full snapshot of 5 / 1 levels), ``instId`` repeated
  inside ``data``, no ``checksum``.
* event answers: ``{"event":"subscribe"|"unsubscribe","arg":{...}}``, ``{"event":"error","code":"60018",
  "msg":"..."}``, ``{"event":"notice","code":"64008","msg":"..."}``; and the plain text ``pong``.
* REST ``GET /api/v5/market/books``: ``{"code":"0","msg":"","data":[{"asks":...,"bids":...,"ts":"..."}]}``.

:func:`parse_books_frame` never raises on what the wire brings: book frames become ``tuple[BookDelta, ...]``
(one per ``data`` entry, in order), protocol chatter the WebSocket machinery's control types
(:data:`connectors.ws.hooks.Control`, read by :func:`connectors.okx.protocol.event_control` as the books
source's hooks read them: a topic is an ``instId``), anything else a :class:`connectors.market.frames.ParseError`
(a :class:`connectors.untrusted.Rejected`) whose ``reason`` is one of :data:`PARSE_REASONS`. Every decode goes
through :func:`connectors.untrusted.decode` (size and depth bounded:
``too_large``, ``too_deep``); nothing is decoded untyped.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from connectors import untrusted
from connectors.books.levels import check_sides, plain_text
from connectors.market.frames import ParseError, parse_error, rejection
from connectors.okx.protocol import OkxArg, event_control
from connectors.untrusted import Rejected
from connectors.ws.hooks import Control, Pong, Reject
from operators.book_checksum import okx_checksum
from operators.events import BookDelta, BookView, Level

VENUE = "okx"
BOOK_CHANNELS = frozenset({"books", "books-l2-tbt", "books50-l2-tbt", "books5", "bbo-tbt"})
SNAPSHOT_ONLY_CHANNELS = frozenset({"books5", "bbo-tbt"})  # no `action`: every push is a snapshot
PARSE_REASONS = (
    "too_large",  # longer than connectors.untrusted.MAX_FRAME_BYTES: not read
    "too_deep",  # nested deeper than the decoder's recursion guard
    "malformed_json",  # not JSON at all
    "wrong_type",  # JSON, but a field is missing or of the wrong type
    "negative_size",  # a level with a size below zero
    "invalid_number",  # a price/size string that is not a plain decimal number
    "unknown_channel",  # a data frame of a channel that is not an order book
    "unknown_message",  # JSON that is neither a data frame nor an event
)
_TS_DIGITS_MAX = 16  # epoch ms has 13 digits until the year 2286


# ------------------------------------------------------------------------------------------ wire models
class OkxBookData(msgspec.Struct, frozen=True, gc=False):
    """One ``data`` entry. Levels decode straight into :class:`Level` (array-like: extra elements ignored)."""

    asks: tuple[Level, ...]
    bids: tuple[Level, ...]
    ts: str
    checksum: int = 0
    seqId: int | None = None
    prevSeqId: int | None = None
    instId: str | None = None


class OkxBooksFrame(msgspec.Struct, frozen=True, gc=False):
    arg: OkxArg
    data: tuple[OkxBookData, ...]
    action: Literal["snapshot", "update"] | None = None


class OkxRestBooks(msgspec.Struct, frozen=True):
    code: str
    data: tuple[OkxBookData, ...] = ()
    msg: str = ""


_frame_decoder = msgspec.json.Decoder(OkxBooksFrame)
_rest_decoder = msgspec.json.Decoder(OkxRestBooks)


class _ProbeArg(msgspec.Struct, frozen=True):
    channel: msgspec.Raw = msgspec.Raw()


class _Probe(msgspec.Struct, frozen=True):
    """What a frame that is not a well-formed book frame is: only which keys it has (values skipped, bounded)."""

    event: msgspec.Raw = msgspec.Raw()
    arg: msgspec.Raw = msgspec.Raw()
    data: msgspec.Raw = msgspec.Raw()


_probe_decoder = msgspec.json.Decoder(_Probe)
_probe_arg_decoder = msgspec.json.Decoder(_ProbeArg)
_channel_decoder = msgspec.json.Decoder(str)


BooksParseResult = tuple[BookDelta, ...] | Control | ParseError


def _error(reason: str, detail: str, raw: bytes | str) -> ParseError:
    return parse_error(VENUE, reason, detail, raw)


def _to_deltas(
    entries: tuple[OkxBookData, ...],
    inst_id: str,
    action: Literal["snapshot", "update"],
    recv_ns: int,
    raw: bytes | str,
) -> tuple[BookDelta, ...] | ParseError:
    plain = plain_text(raw)  # JSON escapes or non-ASCII text take the slow checks (connectors.books.levels)
    out = []
    for d in entries:
        bad = check_sides(d.bids, d.asks, plain, negative_reason="negative_size")
        if bad is not None:
            return _error(bad[0], bad[1], raw)
        ts = d.ts
        if not (ts.isdigit() and ts.isascii() and len(ts) <= _TS_DIGITS_MAX):
            return _error("wrong_type", f"ts {ts!r} is not epoch milliseconds", raw)
        out.append(
            BookDelta(VENUE, inst_id, action, d.bids, d.asks, int(ts), recv_ns, d.checksum, d.seqId, d.prevSeqId)
        )
    return tuple(out)


# ---------------------------------------------------------------------------------------------- parsers
def frame_instrument(raw: str) -> str:
    """The first ``"instId":"..."`` of a raw frame, found without decoding ("" when there is none): only a
    grouping hint (:func:`connectors.ws.events.book_by_book`); :func:`parse_books_frame` decides what it is."""
    i = raw.find('"instId":"')
    if i < 0:
        return ""
    i += 10
    return raw[i:raw.find('"', i)]


def parse_books_frame(raw: bytes | str, *, recv_ns: int) -> BooksParseResult:
    """One received text frame -> book deltas (best first as sent), a typed OKX message, or a parse error."""
    frame = untrusted.decode(_frame_decoder, raw)
    if isinstance(frame, Rejected):
        return _classify(raw, frame)
    channel = frame.arg.channel
    if channel not in BOOK_CHANNELS:
        return _error("unknown_channel", f"channel {channel!r}", raw)
    inst_id = frame.arg.instId
    if not inst_id:
        return _error("wrong_type", "arg.instId is missing", raw)
    if not frame.data:
        return _error("wrong_type", "data is empty", raw)
    action = frame.action
    if action is None:
        if channel not in SNAPSHOT_ONLY_CHANNELS:
            return _error("wrong_type", f"action is missing on channel {channel!r}", raw)
        action = "snapshot"
    return _to_deltas(frame.data, inst_id, action, recv_ns, raw)


def _classify(raw: bytes | str, why: Rejected) -> Control | ParseError:
    """The slow path: anything that is not a well-formed book frame (``why``: the book decode's rejection).
    A typed probe (which keys are there) instead of an untyped decode: nothing unbounded is built."""
    if why.reason in ("too_large", "too_deep"):
        return rejection(VENUE, why)
    if len(raw) <= 16 and (raw.strip() == "pong" if isinstance(raw, str) else bytes(raw).strip() == b"pong"):
        return Pong()
    probe = untrusted.decode(_probe_decoder, raw)
    if isinstance(probe, Rejected):
        if probe.reason == "wrong_type":  # valid JSON, but not an object
            return _error("unknown_message", f"not a JSON object: {probe.detail}", raw)
        return rejection(VENUE, probe)
    if probe.event:
        ctl = event_control(raw, single_channel=True)  # as the books source's hooks read it
        return _error("wrong_type", ctl.detail, raw) if isinstance(ctl, Rejected) else ctl
    if probe.arg and probe.data:
        arg = untrusted.decode(_probe_arg_decoder, probe.arg)
        channel: str | Rejected | None = None
        if isinstance(arg, _ProbeArg) and arg.channel:
            channel = untrusted.decode(_channel_decoder, arg.channel)
        if isinstance(channel, str) and channel not in BOOK_CHANNELS:
            return _error("unknown_channel", f"channel {channel[:60]!r}", raw)
        return _error("wrong_type", why.detail, raw)
    return _error("unknown_message", "neither a data frame nor an event", raw)


def parse_rest_books(body: bytes | str, *, instrument: str, recv_ns: int) -> BookDelta | Reject | ParseError:
    """An OKX REST ``GET /api/v5/market/books`` body -> a snapshot :class:`BookDelta` (checksum 0: REST sends
    none; ``seq_id`` when the body has ``seqId``, with ``prev_seq_id`` -1). A non-zero ``code`` -> a
    :class:`~connectors.ws.hooks.Reject` of ``instrument`` (reason ``"<code> <msg>"``, as a WS error's)."""
    rest = untrusted.decode(_rest_decoder, body)
    if isinstance(rest, Rejected):
        return rejection(VENUE, rest)
    if rest.code != "0":
        return Reject(f"{rest.code} {rest.msg}".strip(), (instrument,))
    if len(rest.data) != 1:
        return _error("wrong_type", f"expected one data entry, got {len(rest.data)}", body)
    entry = rest.data[0]
    if entry.seqId is not None and entry.prevSeqId is None:
        entry = msgspec.structs.replace(entry, prevSeqId=-1)
    result = _to_deltas((entry,), instrument, "snapshot", recv_ns, body)
    return result if isinstance(result, ParseError) else result[0]


_render_encoder = msgspec.json.Encoder()


def render_books_snapshot(book: BookDelta | BookView, *, channel: str = "books") -> str:
    """A snapshot (or a book view) as the text of an OKX WS ``books`` snapshot frame, e.g. to push to the
    buffer list after a REST resync. Levels get OKX's 4-element shape (``numOrders`` is unknown: ``"0"``);
    the checksum is computed from the levels, so consumers can verify it; ``seqId`` only when known."""
    entry: dict[str, object] = {
        "asks": [[lv.price, lv.size, "0", "0"] for lv in book.asks],
        "bids": [[lv.price, lv.size, "0", "0"] for lv in book.bids],
        "ts": str(book.ts_ms),
        "checksum": okx_checksum(book.bids, book.asks),
    }
    if book.seq_id is not None:
        entry["prevSeqId"] = -1
        entry["seqId"] = book.seq_id
    frame = {
        "arg": {"channel": channel, "instId": book.instrument},
        "action": "snapshot",
        "data": [entry],
    }
    return _render_encoder.encode(frame).decode()
