"""OKX v5 REST: the order-book snapshot used to bootstrap or re-sync a book (``GET /api/v5/market/books``).

Returns the body text exactly as received; ``connectors.okx.books.parse_rest_books`` turns it into a
snapshot (bounded, typed). The body is read up to :data:`connectors.untrusted.MAX_FRAME_BYTES` (a 400-level
book is ~40 KB): a longer one is an :class:`OkxRestError` (the caller re-syncs), never held whole in memory.
One aiohttp session per fetcher (created lazily inside the running loop); 10 s timeout. OKX allows 40 requests
per 2 s per IP on this endpoint: a fetcher never has more than ``max_in_flight`` requests open.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import aiohttp

from connectors.http_body import bounded_text


class OkxRestError(Exception):
    """The REST call did not return HTTP 200."""


class OkxBooksFetcher:
    """``await fetcher(inst_id) -> body text``; ``await fetcher.close()`` when done."""

    def __init__(self, base_url: str, *, depth: int = 400, timeout: float = 10.0, max_in_flight: int = 4) -> None:
        self._base = base_url.rstrip("/")
        self._depth = depth
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(max_in_flight)

    def url(self, inst_id: str) -> str:
        return f"{self._base}/api/v5/market/books?{urlencode({'instId': inst_id, 'sz': self._depth})}"

    async def __call__(self, inst_id: str) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        async with self._slots, self._session.get(self.url(inst_id)) as resp:
            body = await bounded_text(resp, self.url(inst_id), OkxRestError)
            if resp.status != 200:
                msg = f"GET {self.url(inst_id)} answered HTTP {resp.status}: {body[:200]}"
                raise OkxRestError(msg)
            return body

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
