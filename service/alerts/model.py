"""What the alert service takes and gives: the caller's scope, the alert as shown, and the store errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from connectors.alerts.index import IndexEntry
from service.db import AlertRow
from service.errors import ApiError, unavailable
from service.users import Principal

REDIS_ERRORS = (RedisError, OSError)
SQL_ERRORS = (SQLAlchemyError, OSError)  # asyncpg raises OSError subclasses when the server is gone


@dataclass(frozen=True)
class Scope:
    """Whose alerts a call sees and owns: ``owner_id`` for new alerts (None = no user: made by the CLI), and
    whether every alert is visible (admins, and the CLI without ``--user``)."""

    owner_id: int | None
    sees_all: bool

    @classmethod
    def of(cls, user: Principal) -> Scope:
        return cls(owner_id=user.id, sees_all=user.is_admin)

    def can_see(self, row: AlertRow) -> bool:
        return self.sees_all or (row.owner_id is not None and row.owner_id == self.owner_id)


OPERATOR = Scope(owner_id=None, sees_all=True)


class AlertOut(BaseModel):
    """An alert as the API and the CLI show it. Prices are exact decimal strings (never a float)."""

    model_config = ConfigDict(frozen=True)

    id: str
    crypto: str
    price: str
    direction: bool
    email: str
    status: Literal["active", "fired"]
    created_at: str
    fired_at: str | None
    fired_price: str | None
    owner: str | None = None


def iso(at: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, as the Redis hashes hold times."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def view(row: AlertRow, owner: str | None = None) -> AlertOut:
    return AlertOut(id=row.id, crypto=row.crypto, price=row.price, direction=row.direction, email=row.email,
                    status="fired" if row.status == "fired" else "active", created_at=iso(row.created_at),
                    fired_at=iso(row.fired_at) if row.fired_at else None, fired_price=row.fired_price,
                    owner=owner)


def entry_of(row: AlertRow) -> IndexEntry:
    return IndexEntry(id=row.id, crypto=row.crypto, price=row.price, direction=row.direction, email=row.email,
                      created_at=iso(row.created_at))


def no_alert(alert_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no alert with id {alert_id[:64]}")


def already_fired(alert_id: str) -> ApiError:
    return ApiError(409, "alert_fired", f"alert {alert_id} has already fired; add a new one")


@asynccontextmanager
async def store(name: Literal["redis", "database"]) -> AsyncIterator[None]:
    """Turn an outage of ``name`` inside the block into the 503 naming it."""
    errors = REDIS_ERRORS if name == "redis" else SQL_ERRORS
    try:
        yield
    except errors as err:
        raise unavailable(name) from err
