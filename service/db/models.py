"""The SQL record: ``users``, ``api_keys`` and ``alerts`` (SQLAlchemy 2 declarative, typed columns).

``alerts`` is the permanent record of price alerts (docs: DESIGN "SQL"); the Redis ``alert:*`` keys are only
its matching index. Prices are kept as their exact decimal text (``String``), never a float. Times are
timezone-aware UTC (:class:`UtcDateTime`, which also turns SQLite's naive values back into UTC). A deleted
alert stays as a tombstone (``status='deleted'``, ``deleted_at``): the reconciler must be able to tell "deleted
in SQL, still in the index" (remove it) from "only ever in Redis" (adopt it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

RowStatus = Literal["active", "fired", "deleted"]
PRICE_CHARS = 40  # check_price caps prices below 1e15; 40 characters hold any normalized one
EMAIL_CHARS = 320
INSTRUMENT_CHARS = 64  # operators.instruments.MAX_INSTRUMENT_CHARS
USER_NAME_CHARS = 64


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime in and out, on every backend (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            msg = f"naive datetime {value!r}: the database keeps UTC times only"
            raise ValueError(msg)
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(USER_NAME_CHARS), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiKey(Base):
    """One API key of a user: only the SHA-256 of the key is kept (keys are random 32-byte tokens)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AlertRow(Base):
    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_owner_status", "owner_id", "status"), Index("ix_alerts_status", "status"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    crypto: Mapped[str] = mapped_column(String(INSTRUMENT_CHARS))
    price: Mapped[str] = mapped_column(String(PRICE_CHARS))
    direction: Mapped[bool] = mapped_column(Boolean)
    email: Mapped[str] = mapped_column(String(EMAIL_CHARS))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    fired_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    fired_price: Mapped[str | None] = mapped_column(String(PRICE_CHARS), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
