"""The service's one error shape: ``{"code": "...", "msg": "..."}`` with a 4xx/5xx status, never a traceback.

Raise :class:`ApiError` anywhere in a route or dependency; the app's handlers (``service.app``) render it, and
turn validation errors, oversize bodies and store outages into the same shape.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error a client sees: HTTP ``status``, a stable machine ``code`` and a one-line ``msg``."""

    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def unavailable(store: str) -> ApiError:
    """A backing store is down: 503 naming it (``redis``, ``database``, ``influxdb``)."""
    return ApiError(503, f"{store}_unavailable", f"{store} is unavailable; try again shortly")
