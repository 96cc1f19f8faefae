"""Waiting for a condition in integration tests: poll with a generous deadline, never sleep-then-assert."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, every: float = 0.1, *,
             not_yet: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll ``check`` until it returns something truthy (returned); fail with ``what`` after ``timeout`` s.

    ``check`` raising one of ``not_yet`` counts as "not yet" (a browser read timing out on a starved renderer):
    the deadline decides, not one read."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except not_yet as err:
            last = err
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
