"""Alembic migrations of the service's schema, run programmatically (no ``alembic.ini``).

:func:`upgrade_to_head` runs inside a connection the caller opened (``await conn.run_sync(upgrade_to_head)``);
``env.py`` picks that connection up from ``config.attributes``. On PostgreSQL a transaction-scoped advisory
lock makes concurrent starters migrate one after the other. A schema change is a new file in ``versions/``
(``down_revision`` = the previous revision); :func:`upgrade_to_head` picks it up at the next start.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATION_LOCK = 0x63666C6F  # "cflo": the advisory-lock key of schema upgrades


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config  # imported when a database is opened, not by every CLI command

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade_to_head(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    from alembic import command

    command.upgrade(alembic_config(connection), "head")
