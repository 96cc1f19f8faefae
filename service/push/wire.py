"""Server WebSocket frames built once per message, and a writer straight to uvicorn's transport.

Why: the gateway sends every stream entry to every subscriber. Through ASGI each message to each client is one
``websocket.send``: Starlette's and uvicorn's checks, websockets' framing (and compression, when negotiated)
and one ``transport.write`` -- one ``send(2)`` -- per message. bench_push measured ~23 us of gateway CPU per
delivered message that way, two thirds of it in the write (benchmarks/RESULTS.md, issue 12). Here an entry's
frame is built once (:mod:`service.push.entries`) and its bytes shared by every client, and what waits for a
client goes out in one write, still one WebSocket message per event.

The frames are unmasked text frames with FIN set and no RSV bits: a server never masks (RFC 6455 5.1), and an
uncompressed message is valid on a connection that negotiated permessage-deflate (RFC 7692 6: RSV1 unset means
not compressed), so the same bytes serve every client.

The direct write is used only under uvicorn's websockets-sansio protocol (uvicorn's default when ``websockets``
is installed: what ``cryptoflow serve`` runs), found through the ASGI ``receive`` callable Starlette holds (the
protocol's bound method). It keeps uvicorn's flow control (the protocol's ``writable`` event, cleared while the
transport's buffer is over its high-water mark) and writes nothing once a close was sent or the peer left.
Under any other server (wsproto, uvicorn's legacy websockets protocol, a test client) every message goes
through ASGI's ``websocket.send``, one by one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - a service without uvicorn's sansio protocol: ASGI sends only
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked, uncompressed text frame carrying ``payload`` (UTF-8)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def frame_of(text: str) -> bytes:
    return text_frame(text.encode())


def text_of(frame: bytes) -> str:
    """The payload of a :func:`text_frame`, for a server the frames cannot be written to directly."""
    n = frame[1]
    return frame[2 if n < 126 else 4 if n == 126 else 10:].decode()


class Direct:
    """A uvicorn websockets-sansio connection written to without ASGI (see the module docstring)."""

    __slots__ = ("_proto", "writable", "write")

    def __init__(self, proto: Any) -> None:
        self._proto = proto
        self.writable: asyncio.Event = proto.writable  # set while the transport takes more
        self.write: Callable[[bytes], object] = proto.transport.write  # its own method: no Python call between

    def open(self) -> bool:
        # uvicorn sets close_sent when the app closes, disconnected when the connection is lost, and closes the
        # transport when the peer's close frame arrives (or its frames do not parse): every way out of OPEN
        p = self._proto
        return not (p.close_sent or p.disconnected or p.transport.is_closing())

    def ready(self) -> bool:
        """Open, and the transport's buffer under its high-water mark."""
        p = self._proto
        return p.writable.is_set() and not (p.close_sent or p.disconnected or p.transport.is_closing())


def direct_writer(ws: WebSocket) -> Direct | None:
    """The direct writer under uvicorn's websockets-sansio protocol; ``None`` elsewhere (ASGI sends)."""
    proto = getattr(getattr(ws, "_receive", None), "__self__", None)
    if WebSocketsSansIOProtocol is not None and isinstance(proto, WebSocketsSansIOProtocol):
        return Direct(proto)
    return None
