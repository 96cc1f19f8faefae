"""The reconciler: makes the Redis matching index equal to SQL, and records fired alerts in SQL.

One pass (:func:`reconcile`) reads Redis first, then SQL (so a hash armed by a concurrent create, which
commits SQL before arming, is always found in SQL), then:

- an active SQL alert whose hash is missing, differs, sits in the wrong set or none, is (re-)armed; one whose
  hash says ``disarmed`` (a change in flight, or one that crashed before its SQL commit) only once
  ``disarmed_at`` is older than ``grace_s``;
- an active SQL alert whose hash says ``fired`` gets ``fired_at``/``fired_price`` written back, and the hash,
  now redundant, is dropped;
- a hash or set entry whose SQL alert is deleted or fired is removed;
- an alert that exists only in Redis (made before the service existed, by the demo, or by an old CLI) is
  adopted into SQL, owned by no user (:func:`import_from_redis`); a hash that does not parse as an alert is
  removed. Nothing that was armed is lost on upgrade.

Outages: :func:`reconcile_forever` logs one line when Redis or SQL goes away and one when it is back.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from sqlalchemy import select

from connectors.alerts.index import AlertIndex, IndexEntry, fired_of
from connectors.alerts.store import parse_alert_hash, set_key
from connectors.untrusted import Rejected
from cryptoflow.logs import get_logger
from operators.alerts import price_text
from service.alerts.model import REDIS_ERRORS, SQL_ERRORS, entry_of, parse_iso
from service.alerts.service import write_fired
from service.db import AlertRow, Database
from service.errors import ApiError

log = get_logger("service.alerts.reconcile")
DISARM_GRACE_S = 30.0  # longer than any request takes between its disarm and its re-arm
CHUNK = 500
STOP_WAIT_S = 10.0


@dataclass(frozen=True)
class ReconcileReport:
    armed: int = 0
    removed: int = 0
    fired_recorded: int = 0
    imported: int = 0
    unreadable_removed: int = 0
    pending_changes: int = 0  # disarmed within the grace period: a change in flight, left alone


@dataclass(frozen=True)
class ImportReport:
    imported: int
    already_known: int
    unreadable: list[str]


@dataclass
class _Snapshot:
    hashes: dict[str, dict[str, str]]
    sets: dict[str, dict[str, float]]


async def _snapshot(index: AlertIndex) -> _Snapshot:
    ids = [i async for i in index.hash_ids()]
    sets = await index.set_members()
    hashes: dict[str, dict[str, str]] = {}
    for start in range(0, len(ids), CHUNK):
        hashes.update(await index.read_many(ids[start:start + CHUNK]))
    return _Snapshot(hashes, sets)


async def _sql_rows(db: Database, ids: set[str]) -> dict[str, AlertRow]:
    """Every active row, and the rows (any status) of ``ids``."""
    async with db.session() as s:
        rows = {r.id: r for r in (await s.execute(select(AlertRow).where(AlertRow.status == "active"))).scalars()}
        wanted = sorted(ids - rows.keys())
        for start in range(0, len(wanted), CHUNK):
            query = select(AlertRow).where(AlertRow.id.in_(wanted[start:start + CHUNK]))
            rows.update({r.id: r for r in (await s.execute(query)).scalars()})
    return rows


def _row_from_hash(fields: dict[str, str], owner_id: int | None) -> AlertRow | None:
    alert = parse_alert_hash(fields)
    if isinstance(alert, Rejected) or alert.status not in ("active", "fired"):
        return None
    try:
        created = parse_iso(alert.created_at)
        fired_at = parse_iso(alert.fired_at) if alert.fired_at else None
    except ValueError:
        return None
    return AlertRow(id=alert.id, owner_id=owner_id, crypto=alert.crypto, price=price_text(alert.price),
                    direction=alert.direction, email=alert.email, status=alert.status, created_at=created,
                    fired_at=fired_at, fired_price=alert.fired_price)


async def import_from_redis(db: Database, redis: aioredis.Redis, *, owner_id: int | None = None) -> ImportReport:
    """Adopt every alert hash that SQL does not know (active or fired) into SQL. Idempotent."""
    snap = await _snapshot(AlertIndex(redis))
    return await _adopt(db, snap.hashes, await _sql_rows(db, set(snap.hashes)), owner_id)


async def _adopt(db: Database, hashes: dict[str, dict[str, str]], known: dict[str, AlertRow],
                 owner_id: int | None) -> ImportReport:
    """Write a row for every hash whose id ``known`` (the SQL rows read for them) lacks, and add the new rows
    to ``known``."""
    new: list[AlertRow] = []
    unreadable: list[str] = []
    for alert_id, fields in hashes.items():
        if alert_id in known:
            continue
        row = _row_from_hash(fields, owner_id) if fields.get("id") == alert_id else None
        if row is None:
            unreadable.append(alert_id)
        else:
            new.append(row)
    if new:
        async with db.session() as s:
            s.add_all(new)
            await s.commit()
        known.update((r.id, r) for r in new)
    return ImportReport(imported=len(new), already_known=len(hashes) - len(new) - len(unreadable),
                        unreadable=unreadable)


def _in_place(entry: IndexEntry, fields: dict[str, str], sets: dict[str, dict[str, float]]) -> bool:
    """The hash holds exactly the SQL values and the id is in its one set with its threshold as score."""
    if {k: fields.get(k) for k in entry.fields()} != entry.fields():
        return False
    home = set_key(entry.crypto, entry.direction)
    if sets.get(home, {}).get(entry.id) != float(entry.price):
        return False
    return not any(entry.id in members for key, members in sets.items() if key != home)


async def reconcile(db: Database, redis: aioredis.Redis, *, grace_s: float = DISARM_GRACE_S,
                    index: AlertIndex | None = None) -> ReconcileReport:
    """One pass (see the module docstring). Raises on a Redis or SQL outage (nothing half-done matters: every
    step is idempotent and the next pass resumes)."""
    index = index or AlertIndex(redis)
    snap = await _snapshot(index)
    members = {i for m in snap.sets.values() for i in m}
    rows = await _sql_rows(db, set(snap.hashes) | members)  # one read of SQL per pass, adoption included
    imported = await _adopt(db, snap.hashes, rows, owner_id=None)
    now_ms = time.time_ns() // 1_000_000
    armed = fired = pending = removed = 0
    keep: dict[str, str] = {}  # id -> the set it may stay in
    for row in [r for r in rows.values() if r.status == "active"]:
        fields = snap.hashes.get(row.id)
        entry = entry_of(row)
        home = set_key(row.crypto, row.direction)
        if fields is not None and fired_of(fields) is not None:
            await write_fired(db, row, fired_of(fields))  # type: ignore[arg-type]
            await index.drop_hash(row.id)
            fired += 1
            keep[row.id] = ""  # handled; in no set
        elif fields is not None and fields.get("status") == "disarmed" and not _grace_over(fields, now_ms, grace_s):
            pending += 1
            keep[row.id] = "*"
        elif fields is None or not _in_place(entry, fields, snap.sets):
            await index.arm(entry)
            armed += 1
            keep[row.id] = home
        else:
            keep[row.id] = home
    for alert_id in snap.hashes:
        if alert_id not in keep and alert_id in rows:  # deleted or fired in SQL: not an alert to match
            await index.remove(alert_id)
            removed += 1
    for alert_id in imported.unreadable:
        await index.remove(alert_id)
    for key, ids in snap.sets.items():
        stray = [i for i in ids if keep.get(i) not in (key, "*")]
        await index.drop_from_set(key, stray)
        removed += len(stray)
    return ReconcileReport(armed=armed, removed=removed, fired_recorded=fired, imported=imported.imported,
                           unreadable_removed=len(imported.unreadable), pending_changes=pending)


def _grace_over(fields: dict[str, str], now_ms: int, grace_s: float) -> bool:
    try:
        return now_ms - int(fields.get("disarmed_at", "0")) >= grace_s * 1000
    except ValueError:
        return True


async def reconcile_forever(db: Database, redis: aioredis.Redis, interval: float, *,
                            grace_s: float = DISARM_GRACE_S) -> None:
    """Reconcile now and every ``interval`` seconds until cancelled; survives outages of either store."""
    down: str | None = None
    while True:
        try:
            report = await _one_pass(db, redis, grace_s)
        except asyncio.CancelledError:
            raise
        except (*REDIS_ERRORS, *SQL_ERRORS, ApiError) as err:
            _reraise_if_cancelled()  # a driver may turn a cancellation mid-connect into its own error
            store = "redis" if isinstance(err, REDIS_ERRORS[:1]) else "database"
            if down != store:
                log.warning("alert_sync_failed", store=store, error=str(err)[:300],
                            action=f"retrying every {interval} s")
            down = store
        except Exception as err:  # a bug must not stop the sync for good; say so loudly, once per pass
            _reraise_if_cancelled()
            log.error("alert_sync_crashed", error=repr(err)[:300], exc_info=True)
        else:
            if down is not None:
                log.info("alert_sync_recovered", store=down)
                down = None
            if report != ReconcileReport():
                log.info("alert_sync", **report.__dict__)
        await asyncio.sleep(interval)


async def _one_pass(db: Database, redis: aioredis.Redis, grace_s: float) -> ReconcileReport:
    """One pass that a cancellation (the app stopping) lets finish, for up to :data:`STOP_WAIT_S`: cancelling an
    aiosqlite call half-way can hang its connection's close for good (aiosqlite 0.22 under SQLAlchemy), and
    every step of a pass is short and idempotent anyway."""
    task = asyncio.ensure_future(reconcile(db, redis, grace_s=grace_s))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task}, timeout=STOP_WAIT_S)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: the stop is what matters now
        raise


def _reraise_if_cancelled() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
