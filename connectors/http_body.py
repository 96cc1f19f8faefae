"""A REST body read under the same bound as every untrusted frame (:data:`connectors.untrusted.MAX_FRAME_BYTES`):
a longer body is refused while it streams in, never held whole in memory."""

from __future__ import annotations

import aiohttp

from connectors.untrusted import MAX_FRAME_BYTES


async def bounded_text(resp: aiohttp.ClientResponse, url: str, error: type[Exception]) -> str:
    """The body as text; ``error`` (the venue's REST error) when it is longer than the bound."""
    data = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > MAX_FRAME_BYTES:
            msg = f"GET {url}: body longer than {MAX_FRAME_BYTES} bytes (too_large)"
            raise error(msg)
    return data.decode(resp.get_encoding(), "replace")
