"""``cryptoflow alerts add|list|show|update|rm|import``: manage price alerts through the same service as the
REST API (:class:`service.alerts.AlertService`): SQL (``DATABASE_URL``) is the record, Redis the matching index
(``alert:{id}``, ``alert:{inst}:gt|lt``), so the CLI and the API see the same alerts. Alerts made here belong to
no user (admins see them) unless ``--user NAME``; without ``--user`` every alert is visible.

Bad input prints ONE line to stderr and exits 2 with nothing written; an unknown or already-fired id exits 1.
``import`` adopts alerts that exist only in Redis (made before alerts moved to SQL) into SQL; idempotent.

An alert on an instrument that is not in ``config:trading_pairs`` is still stored (it fires once the pair is
monitored), with a warning on stderr; ``--monitor`` adds the pair to the set instead (and clears an earlier
rejection, as ``cryptoflow pairs add`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

import orjson
import redis

from connectors.alerts.store import AlertNotFound, AlertStore, AlertUnreadable
from connectors.redis.client import async_client, sync_client
from connectors.untrusted import sample
from cryptoflow.settings import Settings, mask_url
from operators.alerts import AlertInputError, check_alert_id, parse_change, parse_new_alert

if TYPE_CHECKING:
    from service.alerts import AlertOut, AlertService, Scope
    from service.errors import ApiError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("alerts", help="add, list, show, update or remove price alerts")
    actions = parser.add_subparsers(dest="action", required=True)

    add = actions.add_parser("add", help="add an alert (--crypto and --above/--below, or --json)")
    add.add_argument("--crypto", help="instrument id, e.g. BTC-USDT")
    _direction_args(add)
    add.add_argument("--json", dest="body", metavar="BODY",
                     help='the add-alert body, e.g. \'{"price": 40000.0, "crypto": "BTC-USDT", "direction": false}\'')
    add.add_argument("--email", help="where the alert email goes")
    add.add_argument("--monitor", action="store_true",
                     help="also add the instrument to the monitored pairs if it is not there yet")

    lst = actions.add_parser("list", help="every alert (active and fired), oldest first")
    lst.add_argument("--crypto", help="only this instrument")

    show = actions.add_parser("show", help="one alert, every field")
    show.add_argument("id")

    upd = actions.add_parser("update", help="change an active alert's instrument, threshold, direction or email")
    upd.add_argument("id")
    upd.add_argument("--crypto")
    _direction_args(upd)
    upd.add_argument("--price", help="new threshold, same direction")
    upd.add_argument("--email")
    upd.add_argument("--monitor", action="store_true",
                     help="also add the (new) instrument to the monitored pairs if it is not there yet")

    rm = actions.add_parser("rm", help="delete an alert")
    rm.add_argument("id")
    actions.add_parser("import", help="adopt alerts that exist only in Redis into SQL (idempotent)")
    for action in (add, lst, show, upd, rm, actions.choices["import"]):
        action.add_argument("--user", metavar="NAME",
                            help="act as this user (own the new alert, see only its alerts); default: no user")
    parser.set_defaults(run=run)


def _direction_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--above", metavar="PRICE", help="fire when the price rises to or above PRICE")
    group.add_argument("--below", metavar="PRICE", help="fire when the price falls to or below PRICE")


class _Usage(Exception):
    pass


def _new_alert_data(args: argparse.Namespace) -> dict[str, Any]:
    if args.body is not None:
        if args.crypto or args.above or args.below:
            msg = "give either --json or --crypto with --above/--below, not both"
            raise _Usage(msg)
        try:
            data = orjson.loads(args.body)
        except orjson.JSONDecodeError as err:
            msg = f"--json is not valid JSON: {err}"
            raise _Usage(msg) from None
        if not isinstance(data, dict):
            msg = '--json must be an object like {"price": 40000.0, "crypto": "BTC-USDT", "direction": false}'
            raise _Usage(msg)
        missing = [k for k in ("price", "crypto", "direction") if k not in data]
        if missing:
            msg = f"--json is missing {', '.join(missing)}"
            raise _Usage(msg)
        if args.email is not None:
            data["email"] = args.email
        elif "email" not in data:
            msg = "an email is required: --email ADDRESS"
            raise _Usage(msg)
        return dict(data)
    if args.crypto is None or (args.above is None and args.below is None) or args.email is None:
        msg = "add needs --crypto, one of --above/--below, and --email (or --json BODY --email ADDRESS)"
        raise _Usage(msg)
    above = args.above is not None
    return {"crypto": args.crypto, "price": args.above if above else args.below, "direction": above,
            "email": args.email}


def _change_data(args: argparse.Namespace) -> dict[str, Any]:
    given = [p for p in (args.above, args.below, args.price) if p is not None]
    if len(given) > 1:
        msg = "give one of --above, --below or --price"
        raise _Usage(msg)
    data: dict[str, Any] = {"crypto": args.crypto, "email": args.email}
    if args.above is not None:
        data.update(price=args.above, direction=True)
    elif args.below is not None:
        data.update(price=args.below, direction=False)
    elif args.price is not None:
        data["price"] = args.price
    return data


def _line(alert: AlertOut) -> str:
    word = "above" if alert.direction else "below"
    fired = f"  fired at {alert.fired_price} on {alert.fired_at}" if alert.status == "fired" else ""
    owner = f"  user {alert.owner}" if alert.owner else ""
    return f"{alert.id}  {alert.crypto:<16} {word} {alert.price:<14} {alert.email}  {alert.status}{fired}{owner}"


def _shown(alert: AlertOut) -> dict[str, str]:
    """``show``'s fields: as in the ``alert:{id}`` hash (strings), plus the owner."""
    out = {"id": alert.id, "crypto": alert.crypto, "price": alert.price,
           "direction": "true" if alert.direction else "false", "email": alert.email,
           "created_at": alert.created_at, "status": alert.status}
    if alert.status == "fired":
        out |= {"fired_price": alert.fired_price or "", "fired_at": alert.fired_at or ""}
    if alert.owner:
        out["owner"] = alert.owner
    return out


def run(args: argparse.Namespace, settings: Settings) -> int:
    # The service (FastAPI, SQLAlchemy) is imported here, not at module import: every other command skips it.
    from service.alerts.model import SQL_ERRORS
    from service.errors import ApiError
    from service.users import UserError

    try:
        code = asyncio.run(_open_and_run(args, settings))
        if code == 0 and args.action in ("add", "update") and args.crypto_checked:
            client = sync_client(str(settings.redis_url), decode_responses=True)
            _check_monitored(client, settings.redis_trading_pairs_key, args.crypto_checked, monitor=args.monitor)
        return code
    except (_Usage, AlertInputError, UserError) as err:
        print(f"cryptoflow alerts: {err}", file=sys.stderr)
        return 2
    except ApiError as err:
        print(f"cryptoflow alerts: {_api_message(err, settings)}", file=sys.stderr)
        return 1
    except (AlertNotFound, AlertUnreadable) as err:
        print(f"cryptoflow alerts: {err}", file=sys.stderr)
        return 1
    except redis.RedisError as err:
        print(f"cryptoflow alerts: Redis at {mask_url(str(settings.redis_url))} failed: {err}", file=sys.stderr)
        return 1
    except SQL_ERRORS as err:
        print(f"cryptoflow alerts: database at {mask_url(settings.database)} failed: {sample(str(err))}",
              file=sys.stderr)
        return 1


def _api_message(err: ApiError, settings: Settings) -> str:
    cause = f": {sample(str(err.__cause__))}" if err.__cause__ else ""
    if err.code == "redis_unavailable":
        return f"Redis at {mask_url(str(settings.redis_url))} is unavailable{cause}"
    if err.code == "database_unavailable":
        return f"database at {mask_url(settings.database)} is unavailable{cause}"
    return err.msg


async def _open_and_run(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.alerts.index import AlertIndex
    from service.alerts import OPERATOR, AlertService, Scope
    from service.db import Database
    from service.users import find_user

    args.crypto_checked = None
    _validate(args)  # bad input exits 2 before any store is opened
    db = await Database.open(settings.database)
    client = async_client(str(settings.redis_url), decode_responses=True)
    try:
        scope = OPERATOR if args.user is None else Scope.of(await find_user(db, args.user))
        return await _run(args, AlertService(db, AlertIndex(client)), scope, settings)
    finally:
        await client.aclose()
        await db.close()


def _validate(args: argparse.Namespace) -> None:
    if args.action == "add":
        args.spec = parse_new_alert(_new_alert_data(args))
    elif args.action in ("show", "update", "rm"):
        check_alert_id(args.id)
        if args.action == "update":
            args.change = parse_change(_change_data(args))


def _check_monitored(client: redis.Redis, key: str, inst: str, *, monitor: bool) -> None:
    """Warn when ``inst`` is not monitored (the alert cannot fire before), or add it with ``--monitor``."""
    if client.sismember(key, inst):
        why = client.hget(f"{key}:rejected", inst)
        if why:
            print(f"cryptoflow alerts: warning: {inst} is monitored but was rejected ({sample(str(why))}), so this "
                  "alert cannot fire until that is fixed", file=sys.stderr)
        return
    if monitor:
        client.sadd(key, inst)
        client.hdel(f"{key}:rejected", inst)  # a corrected or re-added id gets a fresh chance
        print(f"cryptoflow alerts: {inst} added to {key} (monitored from the dataflows' next poll)", file=sys.stderr)
        return
    print(f"cryptoflow alerts: warning: {inst} is not in {key}, so this alert cannot fire until it is monitored; "
          f"run `cryptoflow pairs add {inst}` (or pass --monitor)", file=sys.stderr)


async def _run(args: argparse.Namespace, svc: AlertService, scope: Scope, settings: Settings) -> int:
    from service.alerts import import_from_redis

    if args.action == "add":
        alert = await svc.create(scope, args.spec)
        args.crypto_checked = alert.crypto
        print(alert.id)
        print(_line(alert), file=sys.stderr)
    elif args.action == "list":
        alerts = await svc.list_alerts(scope, args.crypto)
        for alert in alerts:
            print(_line(alert))
        print(f"{len(alerts)} alert(s)", file=sys.stderr)
    elif args.action == "show":
        print(orjson.dumps(await _show(svc, scope, args.id, settings), option=orjson.OPT_INDENT_2).decode())
    elif args.action == "update":
        updated = await svc.change(scope, args.id, args.change)
        args.crypto_checked = updated.crypto
        print(_line(updated))
    elif args.action == "rm":
        await svc.delete(scope, args.id)
        print(f"removed {args.id}")
    else:
        report = await import_from_redis(svc.db, svc.index.client, owner_id=scope.owner_id)
        print(f"imported {report.imported}, already in SQL {report.already_known}, "
              f"unreadable {len(report.unreadable)}")
        for alert_id in report.unreadable:
            print(f"cryptoflow alerts: skipped unreadable alert:{sample(alert_id, 40)}", file=sys.stderr)
    return 0


async def _show(svc: AlertService, scope: Scope, alert_id: str, settings: Settings) -> dict[str, str]:
    from service.errors import ApiError

    try:
        return _shown(await svc.get(scope, alert_id))
    except ApiError as err:
        if err.status != 404 or not scope.sees_all:
            raise
    # Not in SQL: it may be an alert made before alerts moved there (still armed in Redis). Show it, say so.
    fields = AlertStore.from_url(str(settings.redis_url)).get(alert_id).to_hash()
    print("cryptoflow alerts: this alert exists only in Redis; `cryptoflow alerts import` adopts it into SQL",
          file=sys.stderr)
    return fields
