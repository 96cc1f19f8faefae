"""One venue's klines page by page over HTTP, inside the venue's rate limit (:mod:`budget`).

Every request first takes its weight from the :class:`RequestBudget`; an answer the venue refuses for its rate
limit is waited out (``Retry-After`` / Bybit's reset time when given, else a capped jittered backoff starting at
the budget's window) and asked again, so a client told 429 never asks before it may (no Binance 418). A
transient failure (connection error, timeout, HTTP 5xx, a body that is not the venue's shape) is retried with
the same backoff, at most ``max_attempts`` times in a row; a :class:`VenueRefused` (unknown symbol...) is fatal.
"""

from __future__ import annotations

import asyncio

import aiohttp

from connectors.rest_klines.budget import Backoff, Budget, RequestBudget
from connectors.rest_klines.venue import Answer, KlineVenue, RateLimited, VenueRefused
from connectors.untrusted import MAX_FRAME_BYTES
from cryptoflow.logs import get_logger
from operators.events import Kline

log = get_logger("connectors.rest_klines")


class BackfillError(Exception):
    """The venue refused the request, or kept failing; the message says which and why."""


class KlineClient:
    """``await client.page(inst, timeframe, start_ms, end_ms)``; ``await client.close()`` when done."""

    def __init__(self, venue: KlineVenue, base_url: str, budget: Budget | None = None, *, timeout: float = 15.0,
                 max_attempts: int = 8, max_wait_s: float = 600.0) -> None:
        self.venue = venue
        self._base = base_url
        self.budget = RequestBudget(budget or venue.default_budget)
        self._backoff = Backoff(self.budget.budget.window_s / 2, 60.0)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_attempts = max_attempts
        self._max_wait_s = max_wait_s  # told to wait longer (a Binance IP ban lasts up to 3 days): give up
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0
        self.rate_limited = 0
        self.retries = 0
        self.paused = 0  # times the venue's headers said its window was used up

    def follow_previous_run(self, age_s: float) -> None:
        """Another run of this venue saved a checkpoint ``age_s`` seconds ago and may have been killed with a
        request in flight: what it spent counts in the venue's current window, which this process cannot see.
        Unless its last request must be long answered (older than one window, for the budget's wait, plus the
        request timeout), the budget counts as spent when this client was made (:meth:`RequestBudget.
        spent_at_start`): a killed run sent nothing after that, so the venue never sees both runs in one window."""
        if age_s >= self.budget.budget.window_s + (self._timeout.total or 0.0):
            return
        self.budget.spent_at_start()
        log.info("kline_budget_follows_previous_run", venue=self.venue.name, checkpoint_age_s=round(age_s, 2))

    async def page(self, inst: str, timeframe: str, start_ms: int, end_ms: int) -> list[Kline]:
        """The venue's closed klines with open time in ``[start_ms, end_ms)``, oldest first."""
        url = self.venue.page_url(self._base, inst, timeframe, start_ms, end_ms)
        failures = 0
        while True:
            answer = await self._ask(url, inst, timeframe)
            if isinstance(answer, list):
                self._backoff.reset()
                return [k for k in answer if start_ms <= k.open_ms < end_ms]
            if isinstance(answer, VenueRefused):
                msg = f"{self.venue.name} refused {url}: HTTP {answer.status}, code {answer.code}: {answer.detail}"
                raise BackfillError(msg)
            if isinstance(answer, RateLimited):
                await self._wait_out(answer, url)
                continue
            failures += 1
            if failures >= self._max_attempts:
                msg = f"{self.venue.name}: {failures} failed attempts at {url}, the last: {answer}"
                raise BackfillError(msg)
            delay = self._backoff.next()
            self.retries += 1
            log.warning("kline_page_retry", venue=self.venue.name, delay_s=round(delay, 2), attempt=failures,
                        error=answer if isinstance(answer, str) else answer.reason)
            await asyncio.sleep(delay)

    async def _wait_out(self, limited: RateLimited, url: str) -> None:
        self.rate_limited += 1
        delay = limited.retry_after_s if limited.retry_after_s is not None else self._backoff.next()
        if delay > self._max_wait_s:
            what = "banned this IP" if limited.banned else "refused"
            msg = (f"{self.venue.name} {what} (HTTP {limited.status}) for {delay:.0f} s, longer than "
                   f"{self._max_wait_s:.0f} s")
            raise BackfillError(msg)
        self.budget.hold_until(delay)
        log.warning("kline_rate_limited", venue=self.venue.name, status=limited.status, delay_s=round(delay, 2),
                    told=limited.retry_after_s is not None, banned=limited.banned, url=url)
        await asyncio.sleep(delay)

    async def _ask(self, url: str, inst: str, timeframe: str) -> Answer | str:
        """One request: the venue's answer, or a string saying what failed on the way."""
        weight = self.venue.request_weight
        await self.budget.acquire(weight)
        try:
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=self._timeout)
            self.requests += 1
            async with self._session.get(url) as resp:
                status, headers = resp.status, resp.headers
                body = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_FRAME_BYTES:
                        break
        except (TimeoutError, aiohttp.ClientError) as err:
            return f"{type(err).__name__}: {err}"
        finally:
            self.budget.release(weight)
        if len(body) > MAX_FRAME_BYTES:
            return f"body longer than {MAX_FRAME_BYTES} bytes"
        if status >= 500:
            return f"HTTP {status}"
        pause = self.venue.pause_after(headers)
        if pause is not None:  # the venue's window is spent (by us or another client on this IP): wait it out
            self.budget.hold_until(pause)
            self.paused += 1
        return self.venue.read(status, headers, bytes(body), inst=inst, timeframe=timeframe)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
