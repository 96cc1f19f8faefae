"""API-key authentication as FastAPI dependencies: ``Authorization: Bearer <key>`` -> :class:`Principal`.

- :func:`current_user`: a valid key or 401 ``unauthorized``;
- :func:`admin_user`: a valid admin key, 403 ``forbidden`` for any other user;
- :func:`public_reader`: the user or ``None``; 401 only when ``API_PUBLIC_READS`` is false and no valid key.
The database being down is a 503 naming it. Keys never reach a log line.
"""

from __future__ import annotations

from fastapi import Request

from service.alerts.model import SQL_ERRORS
from service.db import Database
from service.errors import ApiError, unavailable
from service.users import Principal, principal_for_key

_CHALLENGE = "send Authorization: Bearer <api key> (cryptoflow users add NAME prints one)"


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


async def _lookup(request: Request) -> Principal | None:
    key = _bearer(request)
    if key is None:
        return None
    db: Database = request.app.state.db
    try:
        return await principal_for_key(db, key)
    except SQL_ERRORS as err:
        error = unavailable("database")
        raise error from err


def _unauthorized(request: Request) -> ApiError:
    why = "no API key: " if _bearer(request) is None else "invalid API key: "
    return ApiError(401, "unauthorized", why + _CHALLENGE)


async def current_user(request: Request) -> Principal:
    user = await _lookup(request)
    if user is None:
        raise _unauthorized(request)
    return user


async def admin_user(request: Request) -> Principal:
    user = await current_user(request)
    if not user.is_admin:
        raise ApiError(403, "forbidden", "this route needs an admin API key")
    return user


async def public_reader(request: Request) -> Principal | None:
    user = await _lookup(request)
    if user is None and not request.app.state.settings.api_public_reads:
        raise _unauthorized(request)
    return user
