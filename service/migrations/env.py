"""Alembic environment: runs on the connection handed in by :func:`service.migrations.upgrade_to_head`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from service.db.models import Base

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters tables by copying
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is None:
    msg = "run migrations through service.migrations.upgrade_to_head (Database.open does), not the alembic CLI"
    raise RuntimeError(msg)
_run(connection)
