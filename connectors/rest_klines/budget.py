"""Staying within a venue's REST rate limit, and waiting when told.

:class:`RequestBudget` is the client's own limit: at most ``amount`` weight in any ``window_s`` seconds (a
sliding window over the times requests *finished*; a request's answer arrives after the venue counted it, so
no fixed window of the venue's can see more than ``amount``). It is the first line: a well-behaved client is
never refused. :class:`Backoff` is the second: capped, jittered exponential delays for a refusal without a
``Retry-After`` (OKX 50011) and for transient errors, reset after a success.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """``amount`` request weight per ``window_s`` seconds."""

    amount: int
    window_s: float

    @classmethod
    def parse(cls, text: str) -> Budget:
        """``"N/SECONDS"`` (a command-line value)."""
        try:
            amount, window = text.split("/")
            budget = cls(int(amount), float(window))
        except ValueError:
            budget = cls(0, 0.0)
        if budget.amount < 1 or not budget.window_s > 0:
            msg = f"expected N/SECONDS with N >= 1 and SECONDS > 0 (e.g. 10/2), got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return budget


class RequestBudget:
    """``async with budget.slot(weight):`` around one request (see the module docstring)."""

    def __init__(self, budget: Budget, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self._clock = clock
        self._done: deque[tuple[float, int]] = deque()  # (finish time, weight) inside the window
        self._in_flight = 0
        self._started = clock()
        self._lock = asyncio.Lock()
        self.waited_s = 0.0  # total time spent waiting for the budget

    def _used(self, now: float) -> int:
        while self._done and self._done[0][0] <= now - self.budget.window_s:
            self._done.popleft()
        return self._in_flight + sum(w for _, w in self._done)

    def delay(self, weight: int) -> float:
        """Seconds until ``weight`` more fits (0: now)."""
        now = self._clock()
        if self._used(now) + weight <= self.budget.amount:
            return 0.0
        need = self._used(now) + weight - self.budget.amount
        for finished, w in self._done:
            need -= w
            if need <= 0:
                return finished + self.budget.window_s - now + 0.001
        return self.budget.window_s  # in-flight requests hold it: look again after a window

    async def acquire(self, weight: int) -> None:
        weight = min(weight, self.budget.amount)
        async with self._lock:
            while (wait := self.delay(weight)) > 0:
                self.waited_s += wait
                await asyncio.sleep(wait)
            self._in_flight += weight

    def release(self, weight: int) -> None:
        weight = min(weight, self.budget.amount)
        self._in_flight -= weight
        self._done.append((self._clock(), weight))

    def spent_at_start(self) -> None:
        """Count the whole budget as spent the moment this budget was made, i.e. until one window after: what a
        run killed before this process began spent is then out of the venue's window. Calling it again changes
        nothing."""
        self._done.appendleft((self._started, self.budget.amount))  # no finish time is older: the order holds

    def hold_until(self, seconds: float) -> None:
        """The venue said to wait: count the whole budget as used for ``seconds`` from now."""
        self._done.append((self._clock() + seconds - self.budget.window_s, self.budget.amount))


class Backoff:
    """Capped exponential delays with full jitter (``initial * 2**n``, at most ``cap``); ``reset()`` after a
    success."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial, self.cap = initial, cap
        self._attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap, self.initial * 2**self._attempt)
        self._attempt += 1
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))  # at least half: a refusal must not spin

    def reset(self) -> None:
        self._attempt = 0
