"""The one gate for untrusted text: every decode is bounded and ends in a typed value or a typed rejection.

Untrusted text is anything cryptoflow did not produce in this process: WebSocket frames, REST bodies, the
buffer list, email jobs, alert hashes. :func:`decode` is the only way such text becomes a value:

* size first: a text longer than ``max_bytes`` is rejected unread (``too_large``);
* then one typed msgspec decode. A typed schema bounds the depth of every value it accepts; what it must skip
  (unknown fields) or take as ``Any`` is bounded by the decoder's own recursion guard, which msgspec raises as
  ``RecursionError`` and which becomes ``too_deep`` here (orjson stops at 1,024 levels the same way);
* never an exception for anything the text holds: ``malformed_json``, ``wrong_type``, ``too_deep``,
  ``too_large`` (and the callers' own reasons, e.g. ``invalid_number``) are :class:`Rejected` values.

A rejection is counted by the caller as ``rejected_<reason>`` in ``system:monitoring`` and logged once per
reason with :func:`sample` (the first :data:`SAMPLE_CHARS` characters), never the whole text: see
:class:`RejectTally`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, TypeVar

import msgspec

MAX_FRAME_BYTES = 4 * 1024 * 1024  # a 400-level OKX snapshot is ~40 KB; venues' own frame caps are lower
SAMPLE_CHARS = 200
REASONS = ("too_large", "too_deep", "malformed_json", "wrong_type")

T = TypeVar("T")


class Rejected(msgspec.Struct, frozen=True):
    """Text that could not be used: ``reason`` (a short snake_case word), what was wrong, and its start."""

    reason: str
    detail: str
    sample: str


def sample(raw: bytes | bytearray | memoryview | str, limit: int = SAMPLE_CHARS) -> str:
    """At most ``limit`` characters of ``raw`` for a log line (bytes decoded leniently), marked when cut."""
    if not isinstance(raw, str):
        head = bytes(raw[: limit * 4]).decode("utf-8", "replace")
        cut = len(raw) > limit * 4 or len(head) > limit
    else:
        head, cut = raw, len(raw) > limit
    return head[:limit] + ("…" if cut else "")


def rejected(reason: str, detail: str, raw: bytes | bytearray | memoryview | str) -> Rejected:
    return Rejected(reason, detail[:SAMPLE_CHARS], sample(raw))


def decode(decoder: msgspec.json.Decoder[T], raw: bytes | bytearray | memoryview | str, *,
           max_bytes: int = MAX_FRAME_BYTES) -> T | Rejected:
    """``raw`` as the decoder's type, or a :class:`Rejected`; never raises for anything in ``raw``."""
    if len(raw) > max_bytes:
        return rejected("too_large", f"{len(raw)} bytes, more than {max_bytes}", raw)
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return rejected("wrong_type", str(exc), raw)
    except (msgspec.DecodeError, UnicodeError) as exc:
        return rejected("malformed_json", str(exc), raw)
    except RecursionError:
        return rejected("too_deep", "nested deeper than the decoder's recursion limit", raw)


_any = msgspec.json.Decoder()


def decode_any(raw: bytes | bytearray | memoryview | str, *, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """An untyped decode under the same bounds (for classifying text a typed decode refused)."""
    return decode(_any, raw, max_bytes=max_bytes)


class RejectTally:
    """Counts rejections by reason and logs the first of each reason once, with a sample.

    ``drain()`` returns ``{"rejected_messages": n, "rejected_<reason>": n, ...}`` since the last drain, for the
    caller's ``system:monitoring`` writer.
    """

    def __init__(self, log: Any, event: str = "message_rejected", **context: object) -> None:
        self._log = log
        self._event = event
        self._context = context
        self._counts: Counter[str] = Counter()
        self._logged: set[str] = set()

    def add(self, r: Rejected, **context: object) -> None:
        self._counts["rejected_messages"] += 1
        self._counts[f"rejected_{r.reason}"] += 1
        if r.reason not in self._logged:
            self._logged.add(r.reason)
            self._log.warning(self._event, reason=r.reason, detail=r.detail, sample=r.sample,
                              note="logged once per reason; counted in system:monitoring",
                              **self._context, **context)

    def drain(self) -> dict[str, int]:
        out = dict(self._counts)
        self._counts.clear()
        return out
