"""One client WebSocket connection and its subscriptions, with a cheap batched write path.

Synthetic frames are framed once (server frames are unmasked, so the same bytes go to every subscriber of a
topic) and appended to each connection's buffer; the engine flushes every buffer once per wake-up with a
single ``transport.write``. Replay frames go through aiohttp's ``send_str`` instead, whose ``drain`` gives
``--speed 0`` its "as fast as the client reads" pacing.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from cryptoflow.logs import get_logger

log = get_logger("simulator.conn")

# A client that does not read is cut off like a real venue does with a slow consumer.
SLOW_CONSUMER_BYTES = 64 * 1024 * 1024
# Frames wait in our list (cheap to append) rather than in asyncio's transport buffer, which Python 3.11
# keeps as one bytearray that it shifts after every partial send (quadratic with a large backlog).
TRANSPORT_HIGH_WATER = 256 * 1024
_conn_ids = itertools.count(1)


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One unmasked, unfragmented server-to-client WebSocket frame (RFC 6455 section 5.2)."""
    size = len(payload)
    if size < 126:
        return struct.pack("!BB", 0x80 | opcode, size) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


def text_frame(text: str) -> bytes:
    return ws_frame(text.encode())


@dataclass(eq=False)
class Sub:
    """One subscription of one connection: what it is and how many frames it has been sent."""

    conn: Conn
    venue: str
    channel: str
    inst: str
    key: Any  # the venue's topic key
    wrap: bool = False  # Binance combined-stream envelope
    replay: bool = False
    frames: int = 0
    done: bool = False
    task: asyncio.Task[None] | None = None

    def describe(self) -> dict[str, Any]:
        return {"venue": self.venue, "conn": self.conn.conn_id, "channel": self.channel, "inst": self.inst,
                "frames": self.frames, "replay": self.replay, "done": self.done}


@dataclass(eq=False)
class Conn:
    venue: str
    path: str
    ws: web.WebSocketResponse
    request: web.Request
    conn_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    number: int = field(default_factory=lambda: next(_conn_ids))
    subs: dict[Any, Sub] = field(default_factory=dict)
    buffer: deque[bytes] = field(default_factory=deque)
    buffered: int = 0  # bytes in ``buffer``
    activity: bool = False  # a frame went either way since the idle watchdog last looked
    closed: bool = False
    pongs: int = 0  # WebSocket pong frames received (answers to server pings)
    hold: bool = False  # the `hold` fault: frames stay queued until it is cleared

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.request.transport

    def write(self, frame: bytes) -> None:
        """Queue a pre-framed WebSocket frame; :meth:`flush` (or the engine) sends it."""
        if not self.closed:
            self.buffer.append(frame)
            self.buffered += len(frame)

    def send_text(self, text: str) -> None:
        """Send one text frame now, after anything already queued."""
        self.write(text_frame(text))
        self.flush()

    def flush(self) -> None:
        """Hand queued frames to the transport, about a high-water mark at a time, while it takes them."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.buffer.clear()
            self.buffered = 0
            return
        if self.hold:
            return
        buffer = self.buffer
        while buffer:
            if transport.get_write_buffer_size() > TRANSPORT_HIGH_WATER:
                if self.buffered > SLOW_CONSUMER_BYTES:
                    log.warning("slow_consumer_dropped", venue=self.venue, conn=self.conn_id, buffered=self.buffered)
                    self.abort()
                return  # the socket is full: the engine flushes again at its next wake-up
            if self.buffered <= TRANSPORT_HIGH_WATER:
                data = b"".join(buffer) if len(buffer) > 1 else buffer[0]
                buffer.clear()
                size = self.buffered
            else:
                chunk, size, pop = [], 0, buffer.popleft
                while size < TRANSPORT_HIGH_WATER:
                    frame = pop()
                    chunk.append(frame)
                    size += len(frame)
                data = b"".join(chunk)
            self.buffered -= size
            transport.write(data)
            self.activity = True

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (what a client sees when a venue drops it)."""
        self.closed = True
        self.buffer.clear()
        self.buffered = 0
        transport = self.transport
        if transport is not None:
            transport.abort()

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        self.flush()
        self.closed = True
        await self.ws.close(code=code, message=message)

    def cancel_tasks(self) -> None:
        for sub in self.subs.values():
            if sub.task is not None:
                sub.task.cancel()
