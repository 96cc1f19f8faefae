"""REST rate limits on the simulator, counted per venue in fixed windows like the venues count them.

* Binance: request **weight** per window (real: 6,000 per minute, ``/api/v3/klines`` weighs 2,
  ``/api/v3/depth`` 5 to 250 by ``limit``: :mod:`simulator.binance_books`). Over the limit:
  HTTP 429 with ``Retry-After`` (seconds to the next window). A request that comes before that time is over:
  HTTP 418 (an IP ban, ``Retry-After`` = the ban) — the client ignored the 429.
* OKX: requests per window on ``history-candles`` (real: 20 per 2 s). Over: HTTP 429, ``{"code":"50011"}``.
* Bybit: requests per window (real: 600 per 5 s per IP). Over: HTTP 403 with ``retCode`` 10006; every answer
  carries ``X-Bapi-Limit``, ``X-Bapi-Limit-Status`` (left) and ``X-Bapi-Limit-Reset-Timestamp`` (ms).

Limits are set on the command line as ``N/SECONDS`` (``--binance-rest-limit 6000/60``), so tests can use small
windows. ``counters()`` is served at ``GET /control/rest`` so a test can assert that a client never went over.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limit:
    amount: int  # weight (Binance) or requests per window
    window_s: float

    @classmethod
    def parse(cls, text: str) -> Limit:
        try:
            amount, window = text.split("/")
            limit = cls(int(amount), float(window))
        except ValueError:
            limit = cls(0, 0.0)
        if limit.amount < 1 or not limit.window_s > 0:
            msg = f"a REST limit is N/SECONDS with N >= 1 and SECONDS > 0, e.g. 20/2; got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return limit


DEFAULTS = {"binance": Limit(6000, 60.0), "okx": Limit(20, 2.0), "bybit": Limit(600, 5.0)}
BINANCE_BAN_WINDOWS = 2  # a 418 ban lasts this many windows


@dataclass
class Verdict:
    """The answer to one request: allowed or not, and what the venue would put in its headers."""

    allowed: bool
    status: int  # 200, or the venue's refusal status
    used: int  # weight/requests used in this window, this one included when allowed
    remaining: int
    reset_ms: int  # epoch ms when the window ends (or a ban is over)
    retry_after_s: int  # whole seconds (rounded up) until then


@dataclass
class VenueLimiter:
    """Fixed windows of one venue: ``check(weight)`` counts a request and says whether it is served."""

    venue: str
    limit: Limit
    clock: Callable[[], float] = time.time
    requests: int = 0
    refused: int = 0
    banned: int = 0  # Binance 418: requests that came while told to wait
    max_used: int = 0  # the most weight/requests served in one window
    _window: int = -1
    _used: int = 0
    _wait_until: float = 0.0  # after a Binance 429: no request before this
    by_status: dict[int, int] = field(default_factory=dict)

    def check(self, weight: int = 1) -> Verdict:
        now = self.clock()
        window = math.floor(now / self.limit.window_s)
        if window != self._window:
            self._window, self._used = window, 0
        reset = (window + 1) * self.limit.window_s
        self.requests += 1
        if self.venue == "binance" and now < self._wait_until:
            self._wait_until = max(self._wait_until, now + BINANCE_BAN_WINDOWS * self.limit.window_s)
            return self._refuse(418, self._wait_until, now, banned=True)
        if self._used + weight > self.limit.amount:
            if self.venue == "binance":
                self._wait_until = reset
            return self._refuse(429 if self.venue != "bybit" else 403, reset, now)
        self._used += weight
        self.max_used = max(self.max_used, self._used)
        self.by_status[200] = self.by_status.get(200, 0) + 1
        return Verdict(True, 200, self._used, self.limit.amount - self._used, int(reset * 1000),
                       max(0, math.ceil(reset - now)))

    def _refuse(self, status: int, until: float, now: float, *, banned: bool = False) -> Verdict:
        self.refused += 1
        self.banned += banned
        self.by_status[status] = self.by_status.get(status, 0) + 1
        return Verdict(False, status, self._used, max(0, self.limit.amount - self._used), int(until * 1000),
                       max(1, math.ceil(until - now)))

    def counters(self) -> dict[str, object]:
        return {"requests": self.requests, "refused": self.refused, "banned": self.banned,
                "max_used": self.max_used, "limit": self.limit.amount, "window_s": self.limit.window_s,
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())}}


class RestLimits:
    """One :class:`VenueLimiter` per venue."""

    def __init__(self, limits: dict[str, Limit], clock: Callable[[], float] = time.time) -> None:
        self.venues = {venue: VenueLimiter(venue, limits.get(venue, DEFAULTS[venue]), clock) for venue in DEFAULTS}

    def counters(self) -> dict[str, dict[str, object]]:
        return {venue: lim.counters() for venue, lim in self.venues.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for venue, default in DEFAULTS.items():
        what = "request weight" if venue == "binance" else "requests"
        paths = "REST klines and depth" if venue == "binance" else "REST klines"
        parser.add_argument(f"--{venue}-rest-limit", type=Limit.parse, default=default, metavar="N/SECONDS",
                            help=f"{venue} {paths}: {what} per window (default "
                            f"{default.amount}/{default.window_s:g})")


def from_args(args: argparse.Namespace) -> RestLimits:
    return RestLimits({venue: getattr(args, f"{venue}_rest_limit") for venue in DEFAULTS})
