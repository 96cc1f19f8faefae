"""The one gate for untrusted text: every decode is bounded and ends in a typed value or a typed rejection.

Untrusted text is anything cryptoflow did not produce in this process: WebSocket frames, REST bodies, the
buffer list, email jobs, alert hashes. :func:`decode` is the only way such text becomes a value:

* size first: a text longer than ``max_bytes`` is rejected unread (``too_large``);
* then one typed msgspec decode. A typed schema bounds the depth of every value it accepts; what it must skip
  (unknown fields) or take as ``Any`` is bounded by the decoder's own recursion guard, which msgspec raises as
  ``RecursionError`` and which becomes ``too_deep`` here (orjson stops at 1,024 levels the same way);
* never an exception for anything the text holds: ``malformed_json``, ``wrong_type``, ``too_deep``,
  ``too_large`` (and the callers' own reasons, e.g. ``invalid_number``) are :class:`Rejected` values.

A rejection is counted by the caller as ``rejected_<reason>`` (product-wide) and ``<dataflow>:rejected_<reason>``
plus ``rejected_messages`` in ``system:monitoring``, and logged once per reason with :func:`sample` (the first
:data:`SAMPLE_CHARS` characters), never the whole text: see :class:`RejectTally`. The venue parsers' one error
type, :class:`connectors.market.frames.ParseError`, is a subclass of :class:`Rejected` that adds the venue.

The depth bound is the decoders' own recursion guard, so it costs nothing per frame (no pre-scan): msgspec
checks Python's recursion budget on every nested container it enters or skips, and :func:`decode` turns the
``RecursionError`` into ``too_deep``. Every value cryptoflow accepts is at most a few levels deep.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, TypeVar

import msgspec

MAX_FRAME_BYTES = 4 * 1024 * 1024  # a 400-level OKX snapshot is ~40 KB; venues' own frame caps are lower
SAMPLE_CHARS = 200
REASONS = ("too_large", "too_deep", "malformed_json", "wrong_type")
Text = bytes | bytearray | memoryview | str | msgspec.Raw

T = TypeVar("T")


class Rejected(msgspec.Struct, frozen=True):
    """Text that could not be used: ``reason`` (a short snake_case word), what was wrong, and its start."""

    reason: str
    detail: str
    sample: str


def sample(raw: Text, limit: int = SAMPLE_CHARS) -> str:
    """At most ``limit`` characters of ``raw`` for a log line (bytes decoded leniently), marked when cut."""
    if not isinstance(raw, str):
        head = bytes(memoryview(raw)[: limit * 4]).decode("utf-8", "replace")
        cut = len(raw) > limit * 4 or len(head) > limit
    else:
        head, cut = raw, len(raw) > limit
    return head[:limit] + ("…" if cut else "")


def rejected(reason: str, detail: str, raw: Text) -> Rejected:
    return Rejected(reason, detail[:SAMPLE_CHARS], sample(raw))


def decode(decoder: msgspec.json.Decoder[T], raw: Text, *, max_bytes: int = MAX_FRAME_BYTES) -> T | Rejected:
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


def decode_any(raw: Text, *, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """An untyped decode under the same bounds (for classifying text a typed decode refused)."""
    return decode(_any, raw, max_bytes=max_bytes)


def counter_names(dataflow: str, reason: str) -> tuple[str, ...]:
    """The ``system:monitoring`` counters one rejection adds 1 to (product-wide and per dataflow)."""
    return ("rejected_messages", f"rejected_{reason}", f"{dataflow}:rejected_messages",
            f"{dataflow}:rejected_{reason}")


class RejectTally:
    """Counts rejections by reason and logs the first of each reason once, with a sample.

    ``drain()`` returns the :func:`counter_names` increments since the last drain (``rejected_messages``,
    ``rejected_<reason>`` and the same prefixed with ``<dataflow>:``), for the caller's ``system:monitoring``
    writer (HINCRBY, shared by every dataflow).
    """

    def __init__(self, log: Any, dataflow: str, event: str = "message_rejected", *,
                 note: str = "logged once per reason; counted in system:monitoring", **context: object) -> None:
        self._log = log
        self._note = note
        self.dataflow = dataflow
        self._event = event
        self._context = context
        self._counts: Counter[str] = Counter()
        self._logged: set[str] = set()
        self._names: dict[str, tuple[str, ...]] = {}

    def add(self, r: Rejected, **context: object) -> None:
        names = self._names.get(r.reason)
        if names is None:
            names = self._names[r.reason] = counter_names(self.dataflow, r.reason[:64])
        counts = self._counts
        for name in names:
            counts[name] += 1
        if r.reason not in self._logged:
            self._logged.add(r.reason)
            self._log.warning(self._event, reason=r.reason, detail=r.detail, sample=r.sample,
                              dataflow=self.dataflow, note=self._note,
                              **{**self._context, **context})

    def drain(self) -> dict[str, int]:
        out = dict(self._counts)
        self._counts.clear()
        return out
