"""Channel names -> the Redis stream behind each and how it is delivered.

Kinds (what a client that falls behind gets):

* ``depth`` — ``<inst>@depth``: a snapshot on subscribe, then updates chained by ``seq``/``prev_seq``; queued
  like an event channel, and a broken chain is mended with a fresh snapshot marked ``reset``;
* ``state`` — ``@depth5``, ``@depth20``, ``@ticker``, ``@kline_<tf>``, ``@analysis``, ``@monitoring``: every entry
  is a whole state, so a client that falls behind gets the latest one only (conflation), never a backlog;
* ``event`` — ``@trades``, ``@alerts``: every entry matters; a bounded queue, and a client that overflows it is
  sent an error and closed;
* ``private`` — ``@my_alerts``: an event channel delivered only to the authenticated owner of each entry.

Names are validated with anchored patterns of letters, digits and ``-:_@`` only, so a name can be spliced
into a JSON frame without escaping.
"""

from __future__ import annotations

import re

import msgspec

from connectors.redis.push_streams import ALERTS, MONITORING, MY_ALERTS, stream_key
from service.push.protocol import Code, Kind, ProtocolError

EXCHANGES = ("okx", "binance", "bybit", "local")
_INST = r"[A-Z0-9]{1,20}(?:-[A-Z0-9]{1,20}){1,4}"
_INST_CHANNEL = re.compile(rf"({_INST})@(depth|depth5|depth20|trades|analysis)")
_VENUE_CHANNEL = re.compile(rf"({'|'.join(EXCHANGES)}):({_INST})@(ticker|kline_[1-9][0-9]{{0,2}}[smhdw])")
_KINDS: dict[str, Kind] = {"depth": "depth", "depth5": "state", "depth20": "state", "trades": "event",
                           "analysis": "state", "ticker": "state"}
_GLOBAL: dict[str, Kind] = {ALERTS: "event", MONITORING: "state", MY_ALERTS: "private"}


class Channel(msgspec.Struct, frozen=True):
    name: str
    stream: str
    kind: Kind
    instrument: str = ""  # for @depth: whose orderbook:{inst} hash is its snapshot


def parse_channel(name: str) -> Channel:
    """A channel name -> :class:`Channel`, or :class:`ProtocolError` (``BAD_CHANNEL``) naming the forms."""
    kind = _GLOBAL.get(name)
    if kind is not None:
        return Channel(name, stream_key(name), kind)
    m = _INST_CHANNEL.fullmatch(name)
    if m is not None:
        return Channel(name, stream_key(name), _KINDS[m.group(2)], m.group(1))
    m = _VENUE_CHANNEL.fullmatch(name)
    if m is not None:
        return Channel(name, stream_key(name), "state", m.group(2))
    shown = name[:60]
    msg = (f"unknown channel {shown!r}; expected <inst>@depth|depth5|depth20|trades|analysis, "
           f"<exchange>:<inst>@ticker|kline_<tf> (exchange one of {', '.join(EXCHANGES)}), "
           f"{ALERTS}, {MONITORING} or {MY_ALERTS}")
    raise ProtocolError(Code.BAD_CHANNEL, msg)


StreamId = tuple[int, int]
_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


def parse_id(text: str) -> StreamId:
    """``"<ms>-<seq>"`` -> a comparable tuple (``BAD_SINCE`` otherwise; a bare ``<ms>`` means ``<ms>-0``)."""
    m = _ID.fullmatch(text)
    if m is not None:
        return int(m.group(1)), int(m.group(2))
    if text.isdigit() and len(text) <= 20:
        return int(text), 0
    msg = f"since must be a stream id like \"1700000000000-0\", got {text[:40]!r}"
    raise ProtocolError(Code.BAD_SINCE, msg)


def format_id(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"
