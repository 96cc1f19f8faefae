"""Stream entries as the gateway handles them: parsed once per process, shared by every connection."""

from __future__ import annotations

from typing import Any, NamedTuple

from service.push.channels import StreamId
from service.push.protocol import event_bytes
from service.push.wire import text_frame


class Entry(NamedTuple):
    """One ``stream:<channel>`` entry. ``frame`` is the WebSocket frame of the event every subscriber is sent,
    built once (:mod:`service.push.wire`).

    ``kind`` / ``seq`` / ``prev_seq``: ``@depth``'s ``t``/``s``/``p`` fields (``""``/0/0 elsewhere);
    ``owner``: ``@my_alerts``' ``o``, or the owner of ``alert`` (its ``a``: the alert id) looked up in SQL by
    the gateway before the entry is fanned out; an entry whose owner is unknown goes to nobody."""

    sid: StreamId
    id: str
    frame: bytes
    data: bytes
    kind: str
    seq: int
    prev_seq: int
    owner: str
    alert: str = ""


def _sid(raw: bytes) -> StreamId:
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq)


def parse_entry(channel: str, raw_id: bytes, fields: dict[bytes, Any]) -> Entry:
    eid = raw_id.decode()
    data = fields.get(b"d", b"{}")
    kind = fields.get(b"t", b"").decode()
    seq = int(fields.get(b"s", 0))
    prev = int(fields.get(b"p", 0))
    owner = fields.get(b"o", b"").decode()
    alert = fields.get(b"a", b"").decode()
    frame = text_frame(event_bytes(channel, raw_id, data))
    return Entry(_sid(raw_id), eid, frame, data, kind, seq, prev, owner, alert)


def parse_entries(channel: str, raw: list[Any]) -> list[Entry]:
    """XRANGE / XREAD rows (``[(id, {field: value})]``, bytes) -> entries, oldest first as given."""
    return [parse_entry(channel, rid, fields) for rid, fields in raw if fields is not None]
