"""The alert service, shared by the REST routes and ``cryptoflow alerts``: SQL first, then the Redis index.

- create: Redis must answer (else 503 and nothing written), SQL commit, then arm the index.
- change and delete "disarm first": (1) the hash's status leaves ``active`` (the Lua matcher skips it; a
  Redis outage here is a 503 with nothing changed), (2) SQL commit (on failure the disarm is undone), (3) arm
  the new values / remove the entries. A crash after (1) leaves SQL as it was and the reconciler re-arms it;
  after (2) the alert cannot fire and the reconciler finishes the job. An index write that fails after the
  commit is logged, not returned as an error: the change is recorded, and the reconciler converges.
- reads come from SQL; an active alert whose hash says the matcher fired it is written back on the way out
  (``fired_at``, ``fired_price``), so its owner sees ``fired`` at once. Redis down on a read: the SQL state.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import Update, select, update

from connectors.alerts.index import AlertIndex, Fired, fired_of
from cryptoflow.logs import get_logger
from operators.alerts import ALERT_ID_RE, AlertChange, NewAlert, new_alert_id, price_text
from service.alerts.model import (
    REDIS_ERRORS,
    AlertOut,
    Scope,
    already_fired,
    entry_of,
    no_alert,
    parse_iso,
    store,
    view,
)
from service.db import AlertRow, Database, User

log = get_logger("service.alerts")


def _now() -> datetime:
    return datetime.now(UTC)


# An alert row with its owner's name (None: no owner), in the one query that reads the row.
_WITH_OWNER = select(AlertRow, User.name).outerjoin(User, User.id == AlertRow.owner_id)


class AlertService:
    def __init__(self, db: Database, index: AlertIndex) -> None:
        self.db = db
        self.index = index

    async def create(self, scope: Scope, spec: NewAlert) -> AlertOut:
        async with store("redis"):
            await self.index.client.ping()  # an index we cannot write now: refuse before recording anything
        row = AlertRow(id=new_alert_id(), owner_id=scope.owner_id, crypto=spec.crypto,
                       price=price_text(spec.price), direction=spec.direction, email=spec.email, status="active",
                       created_at=_now())
        async with store("database"), self.db.session() as s:
            s.add(row)
            await s.commit()
        await self._arm(row, step="create")
        return view(row, await self._owner_name(row))

    async def list_alerts(self, scope: Scope, crypto: str | None = None) -> list[AlertOut]:
        query = _WITH_OWNER.where(AlertRow.status != "deleted").order_by(AlertRow.created_at, AlertRow.id)
        if not scope.sees_all:
            query = query.where(AlertRow.owner_id == scope.owner_id)
        if crypto is not None:
            query = query.where(AlertRow.crypto == crypto)
        async with store("database"), self.db.session() as s:
            found = (await s.execute(query)).all()
        await self._read_through([row for row, _ in found])
        return [view(row, owner) for row, owner in found]

    async def get(self, scope: Scope, alert_id: str) -> AlertOut:
        row, owner = await self._visible(scope, alert_id)
        await self._read_through([row])
        return view(row, owner)

    async def change(self, scope: Scope, alert_id: str, change: AlertChange) -> AlertOut:
        row, owner = await self._visible(scope, alert_id)
        if row.status == "fired":
            raise already_fired(alert_id)
        values = {k: v for k, v in change.model_dump(exclude_unset=True).items() if v is not None}
        if "price" in values:
            values["price"] = price_text(values["price"])
        changed = await self._disarm_and_commit(
            row, update(AlertRow).where(AlertRow.id == row.id, AlertRow.status == "active").values(**values))
        if changed == 0:  # fired or deleted meanwhile, by the matcher or another request
            await self._undo_disarm(row.id)
            return await self.get(scope, alert_id)
        for name, value in values.items():
            setattr(row, name, value)
        await self._arm(row, step="change")
        return view(row, owner)

    async def delete(self, scope: Scope, alert_id: str) -> None:
        row, _ = await self._visible(scope, alert_id)
        await self._disarm_and_commit(row, update(AlertRow).where(AlertRow.id == row.id)
                                      .values(status="deleted", deleted_at=_now()), fired_ok=True)
        try:
            await self.index.remove(row.id)
        except REDIS_ERRORS as err:  # disarmed already: it cannot fire; the reconciler removes it
            log.warning("alert_index_deferred", alert_id=row.id, step="delete", error=str(err))

    # --- helpers ---------------------------------------------------------------------------------------
    async def _visible(self, scope: Scope, alert_id: str) -> tuple[AlertRow, str | None]:
        """The row and its owner's name, or 404."""
        if not ALERT_ID_RE.fullmatch(alert_id):
            raise no_alert(alert_id)
        async with store("database"), self.db.session() as s:
            found = (await s.execute(_WITH_OWNER.where(AlertRow.id == alert_id))).one_or_none()
        if found is None or found[0].status == "deleted" or not scope.can_see(found[0]):
            raise no_alert(alert_id)  # another user's alert is as absent as a missing one
        return found[0], found[1]

    async def _disarm_and_commit(self, row: AlertRow, stmt: Update, *, fired_ok: bool = False) -> int:
        """Steps (1) and (2) of a change or delete (module docstring): disarm the hash, then run ``stmt`` and
        commit, undoing the disarm if that fails. An alert the matcher fired first is recorded and refused
        (409) unless ``fired_ok``. Returns the number of rows ``stmt`` changed."""
        async with store("redis"):
            fired = await self.index.disarm(row.id, time.time_ns() // 1_000_000)
        if fired is not None and not fired_ok:
            await write_fired(self.db, row, fired)
            raise already_fired(row.id)
        try:
            async with store("database"), self.db.session() as s:
                done = await s.execute(stmt)
                await s.commit()
        except BaseException:
            await self._undo_disarm(row.id)
            raise
        return int(getattr(done, "rowcount", 1))

    async def _undo_disarm(self, alert_id: str) -> None:
        try:
            await self.index.restore(alert_id)
        except REDIS_ERRORS as err:  # the reconciler re-arms it after its grace period
            log.warning("alert_disarm_not_undone", alert_id=alert_id, error=str(err))

    async def _arm(self, row: AlertRow, *, step: str) -> None:
        try:
            await self.index.arm(entry_of(row))
        except REDIS_ERRORS as err:  # recorded in SQL; the reconciler indexes it at its next pass
            log.warning("alert_index_deferred", alert_id=row.id, step=step, error=str(err))

    async def _read_through(self, rows: list[AlertRow]) -> None:
        active = [r for r in rows if r.status == "active"]
        try:
            hashes = await self.index.read_many([r.id for r in active])
        except REDIS_ERRORS as err:
            log.debug("alert_read_through_skipped", error=str(err))
            return
        for row in active:
            fired = fired_of(hashes.get(row.id, {}))
            if fired is not None:
                await write_fired(self.db, row, fired)

    async def _owner_name(self, row: AlertRow) -> str | None:
        if row.owner_id is None:
            return None
        async with store("database"), self.db.session() as s:
            return (await s.execute(select(User.name).where(User.id == row.owner_id))).scalar_one_or_none()


async def write_fired(db: Database, row: AlertRow, fired: Fired) -> None:
    """Record what the matcher did (idempotent: only an active row changes) and update ``row`` to match."""
    try:
        at = parse_iso(fired.at)
    except ValueError:
        at = _now()  # a hash with an unreadable time still fired; record when we learnt it
    async with store("database"), db.session() as s:
        await s.execute(update(AlertRow).where(AlertRow.id == row.id, AlertRow.status == "active")
                        .values(status="fired", fired_at=at, fired_price=fired.price or None))
        await s.commit()
    row.status, row.fired_at, row.fired_price = "fired", at, fired.price or None
    log.info("alert_fired_recorded", alert_id=row.id, fired_price=fired.price, fired_at=fired.at)
