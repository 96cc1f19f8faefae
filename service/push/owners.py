"""Whose ``@my_alerts`` entry is it: the matcher writes the fired alert's id (``a``), SQL knows its owner.

The dataflows know nothing of users; the ``alerts`` table (``owner_id``) is the permanent record, written
before the alert is armed in Redis, so an alert that fires has its row. One query per XREAD batch of fired
alerts (they are rare), not per connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from cryptoflow.logs import get_logger
from service.push.entries import Entry

log = get_logger("service.push.owners")
OwnerLookup = Callable[[list[str]], Awaitable[dict[str, str]]]  # alert ids -> owner user id (as text)


def sql_alert_owners(db: Any) -> OwnerLookup:
    """The lookup on the service's :class:`service.db.Database` (owner ids as text, as auth returns them)."""
    from sqlalchemy import select

    from service.db.models import AlertRow

    async def lookup(ids: list[str]) -> dict[str, str]:
        query = select(AlertRow.id, AlertRow.owner_id).where(AlertRow.id.in_(ids))
        async with db.session() as s:
            rows = (await s.execute(query)).all()
        return {alert_id: str(owner) for alert_id, owner in rows if owner is not None}

    return lookup


async def no_owners(ids: list[str]) -> dict[str, str]:
    return {}


async def with_owners(entries: list[Entry], lookup: OwnerLookup) -> list[Entry]:
    """``entries`` with ``owner`` filled in from their alert id; unknown or unreachable: left empty (the
    entry then goes to nobody — never to the wrong user)."""
    ids = sorted({e.alert for e in entries if e.alert and not e.owner})
    if not ids:
        return entries
    try:
        owners = await lookup(ids)
    except Exception as err:  # any store error (SQLAlchemy, driver, OS): deliver to nobody, stay up
        log.warning("push_owner_lookup_failed", error=str(err), alerts=len(ids))
        owners = {}
    return [e._replace(owner=owners.get(e.alert, "")) if e.alert and not e.owner else e for e in entries]
