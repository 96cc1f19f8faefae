"""Rate budgets and reconnect backoff for WebSocket sessions. Pure timing logic; callers pass ``now``.

:class:`Budget` is a sliding-window counter ("at most N events per W seconds"): used for control messages
per second, subscribe requests per hour (OKX: 480 per connection) and new connections per second.
:class:`Backoff` is capped, fully jittered exponential backoff, reset after a healthy connection (like
redis-py's ``EqualJitterBackoff`` and python-websockets' client loop).
"""

from __future__ import annotations

import random
from collections import deque

import msgspec


class WsTiming(msgspec.Struct, frozen=True):
    """A venue connection's keep-alive and reconnect timing: ``WS_PING_INTERVAL``, ``WS_PONG_TIMEOUT``,
    ``WS_BACKOFF_INITIAL``, ``WS_BACKOFF_MAX`` (:func:`cryptoflow.connector_configs.ws_timing`)."""

    ping_interval: float
    pong_timeout: float
    backoff_initial: float
    backoff_max: float


class Budget:
    """At most ``limit`` events in any window of ``window`` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            msg = f"expected limit >= 1 and window > 0, got limit={limit} window={window}"
            raise ValueError(msg)
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._times and now - self._times[0] >= self.window:
            self._times.popleft()

    def available(self, now: float) -> int:
        self._expire(now)
        return self.limit - len(self._times)

    def wait_time(self, now: float) -> float:
        """Seconds until one more event fits (0 when it fits now)."""
        self._expire(now)
        if len(self._times) < self.limit:
            return 0.0
        return self._times[0] + self.window - now

    def take(self, now: float) -> bool:
        """Spend one event if it fits; ``False`` (nothing spent) when the budget is exhausted."""
        if self.wait_time(now) > 0:
            return False
        self._times.append(now)
        return True


def per_second(rate: float) -> Budget:
    """A budget of ``rate`` events per second, also for fractional rates (1.5/s -> 3 per 2 s)."""
    if rate >= 1:
        return Budget(int(rate), 1.0)
    return Budget(1, 1.0 / rate)


class Backoff:
    """Delay before reconnect attempt n: uniform in [0, min(cap, initial * 2**n)] (full jitter), at least
    ``initial / 2`` so a flapping server is not hammered."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return max(self.initial / 2, self._rng.uniform(0, ceiling))

    def reset(self) -> None:
        self.attempt = 0
