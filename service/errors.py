"""The service's one error shape: ``{"code": "...", "msg": "..."}`` with a 4xx/5xx status, never a traceback.

Raise :class:`ApiError` anywhere in a route, a dependency or the alert service. The CLI shares it through the
alert service, so this module imports nothing heavy; :func:`service.handlers.install` registers the handlers
that render it, and turn validation errors (422 naming the field), unknown routes (404), oversize bodies (413,
see :class:`service.handlers.BodyLimit`) and store outages (503 naming ``redis``, ``database`` or
``influxdb``) into the same shape. The stores' clients reconnect by themselves, so the first request after an
outage simply works.
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


def invalid(field: str, why: str) -> ApiError:
    """422 for one bad parameter, named first in the message (as validation errors are)."""
    return ApiError(422, "invalid_request", f"{field}: {why}")
