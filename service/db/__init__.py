"""The SQL side of the service: :class:`Database` (async engine, sessions, migrations) and the models.

``Database.open(url)`` takes a ``sqlite+aiosqlite:///PATH`` (its directory is created) or a
``postgresql+asyncpg://...`` URL and brings the schema to the newest migration before returning, so every
process (``cryptoflow serve`` replicas, the CLI) can open it first. Two processes migrating at once are
serialized: on PostgreSQL by an advisory lock, on SQLite by an flock on ``PATH.migrate.lock`` (SQLite runs
Alembic's DDL outside a transaction, so two starters on a new file both tried ``CREATE TABLE alembic_version``
and one failed: a ``serve --workers 2`` worker died at start).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from service.db.models import AlertRow, ApiKey, Base, User
from service.migrations import upgrade_to_head

__all__ = ["AlertRow", "ApiKey", "Base", "Database", "User"]

SQLITE_BUSY_MS = 5000  # the CLI and the service may write the same SQLite file at once


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
    # WAL: readers do not block the writer (serve and the CLI share the file); foreign keys are off by default.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cursor.close()


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive flock on ``path`` (created if missing), waited for in a thread; released on close."""
    with path.open("a") as f:
        await asyncio.to_thread(fcntl.flock, f.fileno(), fcntl.LOCK_EX)
        yield


class Database:
    """One async engine and its session factory. Sessions do not expire objects on commit (they are read
    after the commit, outside the session)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str) -> Database:
        parsed = make_url(url)
        lock: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                path = Path(parsed.database)
                path.parent.mkdir(parents=True, exist_ok=True)
                lock = _file_lock(path.with_name(path.name + ".migrate.lock"))
            engine = create_async_engine(url)
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            engine = create_async_engine(url, pool_pre_ping=True)
        db = cls(engine)
        try:
            async with lock, engine.begin() as conn:
                await conn.run_sync(upgrade_to_head)
        except BaseException:
            await engine.dispose()
            raise
        return db

    def session(self) -> AsyncSession:
        """A new session; use it as ``async with db.session() as s:``."""
        return self._sessions()

    async def ping(self) -> None:
        """Raises (an SQLAlchemy or OS error) when the database cannot answer."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
