"""The ``/ws`` wire protocol: client messages parsed with a bounded size, error codes, server frames.

Client -> server (JSON text frames): ``{"op":"subscribe","channel":"...","since":"<id>"?}``,
``{"op":"unsubscribe","channel":"..."}``, ``{"op":"auth","token":"..."}``, ``{"op":"ping"}``. Anything else is
answered with ``{"code": <int>, "msg": "..."}`` and the connection stays open — except the errors that close
it (:data:`CLOSING`).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal, NamedTuple

import msgspec
import orjson


class Code(IntEnum):
    """Error codes. 40xx: the client's message; 41xx: limits; 50xx: the server. Stable: clients match them."""

    MALFORMED = 4000  # not JSON, not an object, a field of the wrong type
    UNKNOWN_OP = 4001
    BAD_CHANNEL = 4002  # not a channel name this server knows
    BAD_SINCE = 4003  # not a stream id ("<ms>-<seq>")
    NOT_SUBSCRIBED = 4004  # unsubscribe from a channel not subscribed
    ALREADY_SUBSCRIBED = 4005
    AUTH_REQUIRED = 4010  # a private channel before a successful auth
    AUTH_FAILED = 4011
    TOO_LARGE = 4100  # a message over PUSH_MAX_MESSAGE_BYTES
    TOO_MANY_SUBSCRIPTIONS = 4101  # over PUSH_MAX_SUBSCRIPTIONS on this connection
    TOO_MANY_CONNECTIONS = 4102  # over PUSH_MAX_CONNECTIONS_PER_IP from this address (closes)
    SLOW_CONSUMER = 4103  # more than PUSH_QUEUE_MAX event messages waiting for this client (closes)
    UNAVAILABLE = 5003  # Redis unreachable: try again


# WebSocket close codes used with the closing errors (4000-4999 are the application's own range).
CLOSE_TOO_MANY_CONNECTIONS = 4102
CLOSE_SLOW_CONSUMER = 4103


class Subscribe(msgspec.Struct, frozen=True, tag_field="op", tag="subscribe", forbid_unknown_fields=True):
    channel: str
    since: str | None = None


class Unsubscribe(msgspec.Struct, frozen=True, tag_field="op", tag="unsubscribe", forbid_unknown_fields=True):
    channel: str


class Auth(msgspec.Struct, frozen=True, tag_field="op", tag="auth", forbid_unknown_fields=True):
    token: str


class Ping(msgspec.Struct, frozen=True, tag_field="op", tag="ping", forbid_unknown_fields=True):
    pass


ClientMessage = Subscribe | Unsubscribe | Auth | Ping


class Limits(NamedTuple):
    """Per connection, from the settings (PUSH_MAX_SUBSCRIPTIONS, PUSH_MAX_MESSAGE_BYTES, PUSH_QUEUE_MAX)."""

    max_subscriptions: int
    max_bytes: int
    queue_max: int

_OPS = frozenset({"subscribe", "unsubscribe", "auth", "ping"})
_decoder = msgspec.json.Decoder(ClientMessage)
_op_only = msgspec.json.Decoder(dict[str, object])


class ProtocolError(Exception):
    def __init__(self, code: Code, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg

    def frame(self) -> str:
        return error_frame(self.code, self.msg)


def parse_message(raw: str | bytes, max_bytes: int) -> ClientMessage:
    """One client frame -> a typed message, or :class:`ProtocolError` saying what was expected.

    The size is checked before any parsing, so a huge frame costs no more than its length check."""
    size = len(raw.encode()) if isinstance(raw, str) else len(raw)
    if size > max_bytes:
        msg = f"message of {size} bytes is over the limit of {max_bytes}"
        raise ProtocolError(Code.TOO_LARGE, msg)
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as err:
        # tell an unknown op from a bad field: decode loosely once, only on this error path
        try:
            obj = _op_only.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            msg = f"expected a JSON object with an \"op\" field: {err}"
            raise ProtocolError(Code.MALFORMED, msg) from None
        op = obj.get("op")
        if isinstance(op, str) and op not in _OPS:
            msg = f"unknown op {op[:40]!r}; expected one of {sorted(_OPS)}"
            raise ProtocolError(Code.UNKNOWN_OP, msg) from None
        msg = f"malformed {op!r} message: {err}" if isinstance(op, str) else f"malformed message: {err}"
        raise ProtocolError(Code.MALFORMED, msg[:200]) from None
    except msgspec.DecodeError:
        msg = "expected a JSON object, got text that is not JSON"
        raise ProtocolError(Code.MALFORMED, msg) from None


def error_frame(code: int, msg: str) -> str:
    return orjson.dumps({"code": int(code), "msg": msg}).decode()


def result_frame(channel: str | None = None) -> str:
    return orjson.dumps({"result": True} if channel is None else {"result": True, "channel": channel}).decode()


PONG = '{"op":"pong"}'


def event_frame(channel: str, entry_id: str, data: bytes | str, *, reset: bool = False) -> str:
    """``{"event":..., "id":..., "data":...}`` with ``data`` spliced in as the JSON the dataflow wrote: the
    gateway never decodes an entry to forward it. ``channel`` and ``entry_id`` are validated names/ids."""
    body = data.decode() if isinstance(data, bytes) else data
    tail = ',"reset":true}' if reset else "}"
    return f'{{"event":"{channel}","id":"{entry_id}","data":{body}{tail}'


def event_bytes(channel: str, entry_id: bytes, data: bytes) -> bytes:
    """:func:`event_frame` of a live entry as UTF-8, built without a round trip through ``str`` (once per entry
    per gateway process, whatever the number of subscribers)."""
    return b"".join((b'{"event":"', channel.encode(), b'","id":"', entry_id, b'","data":', data, b"}"))


Kind = Literal["depth", "state", "event", "private"]
