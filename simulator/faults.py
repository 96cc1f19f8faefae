"""Fault kinds, the ``--faults`` spec, and the state that the venues consult while they send.

A fault is ``{"kind": ..., **params}``, from the command line (``--faults "gap@3,inst=BTC-USDT;drop_connection@5"``:
items separated by ``;``, ``@SECONDS`` after start, ``key=value`` parameters) or live from
``POST /control/fault``. Kinds and their parameters (``venue`` defaults to okx for frame faults, to all venues
for connection faults):

==================  ===================================================================================
drop_connection     ``venue``: abort every WebSocket of that venue (TCP drop, no close frame)
gap / drop_frame    ``inst``, ``venue``: the next book frame of ``inst`` is not sent (a sequence gap)
duplicate_frame     ``inst``, ``venue``: the next book frame is sent twice
reorder_frame       ``inst``, ``venue``: the next book frame is sent after the one that follows it
seq_reset           ``inst``: OKX's next update has ``seqId`` lower than its ``prevSeqId`` (chain kept)
crossed_book        ``inst``: a bid at the best ask price (sent as a normal update, removed next step)
trade_gap           ``inst``, ``count`` (1): the next ``count`` trades of ``inst`` happen (book, the venues' own
                    klines) but are sent on no venue's trade channel: a trade-id gap for the receivers
malformed           ``inst`` (optional), ``venue``: one truncated, invalid JSON text frame
raw                 ``inst`` (optional), ``venue``, ``count`` (1): an arbitrary text frame on the live connections
                    (of ``inst``), built as ``prefix + open*repeat + text + close*repeat + suffix`` (all optional,
                    ``repeat`` 1; at most 64 MiB): ``prefix={"data":,open=[,close=],repeat=1000,suffix=}`` is a
                    1000-deep nested value, ``open=x,repeat=5000000`` a 5 MB frame
pong_delay          ``delay`` seconds, ``venue``: answers to pings come late (until cleared)
no_pong             ``venue``: pings are not answered (until cleared)
shutdown_notice     ``venue``, ``close_after`` (s, default 1): OKX notice 64008 / Binance ``serverShutdown``,
                    then the connections are closed
bybit_u1            ``inst``: Bybit sends a fresh snapshot with ``u=1`` (a service restart)
stale_snapshot      ``inst``: Binance's next REST ``/api/v3/depth`` of ``inst`` answers the book as it is now,
                    when the stream has moved on: a snapshot older than the stream (simulator/binance_books.py)
delta_first         ``inst``: Bybit's next subscription to a book topic of ``inst`` gets a delta before its
                    snapshot (a frame of the topic's earlier life still in flight)
refuse              ``seconds``: WebSocket handshakes are answered 503 for that long
hold                ``venue``: that venue's open connections send nothing (a feed that stops; the sockets stay
                    up, keep-alive included) until cleared, then every held frame in order (no gap)
liquidity_drain     ``inst``, ``fraction`` (0.05), ``band`` (0.01): sizes within band of mid shrink to
                    fraction, and new ones stay small, until cleared
depth_spike         ``inst``, ``side`` (bid/ask), ``multiple`` (200), ``distance`` (levels from best, 2): a
                    very large order that ordinary flow leaves alone (trades may eat it) until cleared
clear               ``target`` (a kind, optional), ``inst`` (optional): end sustained faults
==================  ===================================================================================
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

VENUES = ("okx", "binance", "bybit")
FRAME_FAULTS = {"gap": "drop", "drop_frame": "drop", "duplicate_frame": "duplicate", "reorder_frame": "reorder",
                "seq_reset": "seq_reset", "bybit_u1": "bybit_u1"}
KINDS = frozenset({
    *FRAME_FAULTS, "drop_connection", "crossed_book", "malformed", "raw", "pong_delay", "no_pong", "shutdown_notice",
    "refuse", "hold", "liquidity_drain", "depth_spike", "clear", "trade_gap", "stale_snapshot", "delta_first",
})
MAX_RAW_BYTES = 64 * 1024 * 1024


class FaultError(ValueError):
    """A fault that cannot be applied (unknown kind, missing or bad parameter)."""


def parse_value(raw: str) -> Any:
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            continue
    return raw


def parse_spec(spec: str) -> list[tuple[float, dict[str, Any]]]:
    """``"gap@3,inst=BTC-USDT;refuse,seconds=2"`` -> ``[(3.0, {"kind": "gap", ...}), (0.0, {...})]``."""
    out: list[tuple[float, dict[str, Any]]] = []
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        head, *params = (p.strip() for p in item.split(","))
        kind, _, at = head.partition("@")
        fault: dict[str, Any] = {"kind": kind.strip()}
        for param in params:
            key, sep, value = param.partition("=")
            if not sep:
                msg = f"fault parameter {param!r} in {item!r}: expected key=value"
                raise FaultError(msg)
            fault[key.strip()] = parse_value(value.strip())
        if fault["kind"] not in KINDS:
            msg = f"unknown fault kind {fault['kind']!r} in {item!r}; expected one of {sorted(KINDS)}"
            raise FaultError(msg)
        try:
            delay = float(at) if at else 0.0
        except ValueError:
            msg = f"fault time {at!r} in {item!r}: expected seconds after start"
            raise FaultError(msg) from None
        out.append((delay, fault))
    return out


def raw_text(params: dict[str, Any]) -> str:
    """The text of a ``raw`` fault: ``prefix + open*repeat + text + close*repeat + suffix``."""
    parts = {k: str(params.get(k, "")) for k in ("prefix", "open", "text", "close", "suffix")}
    try:
        repeat = int(params.get("repeat", 1))
    except (TypeError, ValueError):
        msg = f"fault 'raw': repeat {params.get('repeat')!r} is not an integer"
        raise FaultError(msg) from None
    size = sum(map(len, parts.values())) + repeat * (len(parts["open"]) + len(parts["close"]))
    if repeat < 0 or size > MAX_RAW_BYTES:
        msg = f"fault 'raw': expected 0 <= repeat and at most {MAX_RAW_BYTES} characters, got {size}"
        raise FaultError(msg)
    return (parts["prefix"] + parts["open"] * repeat + parts["text"] + parts["close"] * repeat
            + parts["suffix"])


class FaultState:
    """What the venues ask while sending: pending one-shot frame faults, pong behaviour, refusals."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.pong_delay: dict[str, float] = {}
        self.no_pong: set[str] = set()
        self.refuse_until = 0.0
        self.held: set[str] = set()  # venues whose connections hold their frames (the `hold` fault)
        self.history: list[dict[str, Any]] = []

    def add_frame_fault(self, venue: str, inst: str, action: str) -> None:
        self._pending[(venue, inst)].append(action)

    def take(self, venue: str, inst: str) -> list[str]:
        """The oldest one-shot frame fault waiting for ``inst`` on ``venue`` (consumed), for its next book frame.

        One per frame: two faults queued before a frame went out (a ``gap`` then a ``duplicate_frame``) are two
        frames' faults, not one frame dropped and the duplicate lost with it."""
        queue = self._pending.get((venue, inst))
        if not queue:
            return []
        action = queue.pop(0)
        if not queue:
            del self._pending[(venue, inst)]
        return [action]

    def pending(self, venue: str, inst: str) -> bool:
        return bool(self._pending.get((venue, inst)))

    def queued(self) -> list[dict[str, Any]]:
        """The frame faults not sent yet (``GET /control/status``: a test waits for its fault to be on the wire)."""
        return [{"venue": v, "inst": i, "actions": list(q)} for (v, i), q in self._pending.items() if q]

    def pong(self, venue: str) -> float | None:
        """Seconds to wait before answering a ping, or None for no answer at all."""
        if venue in self.no_pong:
            return None
        return self.pong_delay.get(venue, 0.0)

    def refusing(self) -> bool:
        return time.monotonic() < self.refuse_until

    def clear(self, target: str | None) -> None:
        if target in (None, "pong_delay"):
            self.pong_delay.clear()
        if target in (None, "no_pong"):
            self.no_pong.clear()
        if target in (None, "refuse"):
            self.refuse_until = 0.0
        if target in (None, "hold"):
            self.held.clear()
        if target is None or target in FRAME_FAULTS:
            self._pending.clear()
