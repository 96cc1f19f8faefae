"""``cryptoflow users add|list|rm``: the service's users and their API keys (``DATABASE_URL``).

``add NAME [--admin]`` prints the new API key alone on the last line of stdout; it is shown this once (only
its SHA-256 is stored). ``rm NAME`` deletes the user, its keys and its price alerts (disarmed in Redis first,
as the API deletes them); ``--keep-alerts`` leaves the alerts armed and owned by no user (admins see them).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from connectors.untrusted import sample
from cryptoflow.settings import Settings, mask_url

if TYPE_CHECKING:
    from service.db import Database


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("users", help="add, list or remove API users (keys for cryptoflow serve)")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create a user; prints its API key (shown once) on the last line")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may manage pairs and see every alert")
    actions.add_parser("list", help="every user: name, role, created, number of keys")
    rm = actions.add_parser("rm", help="delete a user, its keys and its alerts")
    rm.add_argument("name")
    rm.add_argument("--keep-alerts", action="store_true", help="keep its alerts, owned by no user")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    # The service (FastAPI, SQLAlchemy) is imported here, not at module import: every other command skips it.
    from service.alerts.model import SQL_ERRORS
    from service.errors import ApiError
    from service.users import UserError

    try:
        return asyncio.run(_run(args, settings))
    except UserError as err:
        print(f"cryptoflow users: {err}", file=sys.stderr)
        return 2
    except ApiError as err:
        print(f"cryptoflow users: {err.msg}", file=sys.stderr)
        return 1
    except SQL_ERRORS as err:
        print(f"cryptoflow users: database at {mask_url(settings.database)} failed: {sample(str(err))}",
              file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from service.db import Database
    from service.users import add_user, list_users, remove_user

    db = await Database.open(settings.database)
    try:
        if args.action == "add":
            key = await add_user(db, args.name, admin=args.admin)
            role = "admin" if args.admin else "user"
            print(f"created {role} {args.name}; its API key (shown once, keep it safe):", file=sys.stderr)
            print(key)
        elif args.action == "list":
            for user in await list_users(db):
                role = "admin" if user.is_admin else "user"
                print(f"{user.name:<24} {role:<6} {user.created_at.isoformat(timespec='seconds')}  keys={user.keys}")
        else:
            removed = 0 if args.keep_alerts else await _remove_alerts(db, args.name, settings)
            await remove_user(db, args.name)
            print(f"removed user {args.name}" + ("" if args.keep_alerts else f" and its {removed} alert(s)"))
        return 0
    finally:
        await db.close()


async def _remove_alerts(db: Database, name: str, settings: Settings) -> int:
    from connectors.alerts.index import AlertIndex
    from connectors.redis.client import async_client
    from service.alerts import AlertService, Scope
    from service.users import find_user

    scope = Scope(owner_id=(await find_user(db, name)).id, sees_all=False)
    client = async_client(str(settings.redis_url), decode_responses=True)
    try:
        svc = AlertService(db, AlertIndex(client))
        alerts = await svc.list_alerts(scope)
        for alert in alerts:
            await svc.delete(scope, alert.id)
        return len(alerts)
    finally:
        await client.aclose()
