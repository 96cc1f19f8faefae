"""``cryptoflow alerts add|list|show|update|rm``: manage price alerts (``alert:{id}``, ``alert:{inst}:gt|lt``).

Bad input prints ONE line to stderr and exits 2 with nothing written; an unknown or already-fired id exits 1.

An alert on an instrument that is not in ``config:trading_pairs`` is still stored (it fires once the pair is
monitored), with a warning on stderr; ``--monitor`` adds the pair to the set instead (and clears an earlier
rejection, as ``cryptoflow pairs add`` does).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson
import redis

from connectors.alerts.store import AlertAlreadyFired, AlertNotFound, AlertStore, AlertUnreadable
from connectors.untrusted import sample
from cryptoflow.settings import Settings, mask_url
from operators.alerts import (
    Alert,
    AlertInputError,
    check_alert_id,
    create_alert,
    parse_change,
    parse_new_alert,
    price_text,
)


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


def _line(alert: Alert) -> str:
    word = "above" if alert.direction else "below"
    fired = f"  fired at {alert.fired_price} on {alert.fired_at}" if alert.status == "fired" else ""
    return (f"{alert.id}  {alert.crypto:<16} {word} {price_text(alert.price):<14} {alert.email}  "
            f"{alert.status}{fired}")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        client = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
        code = _run(args, AlertStore(client))
        if code == 0 and args.action in ("add", "update") and args.crypto_checked:
            _check_monitored(client, settings.redis_trading_pairs_key, args.crypto_checked, monitor=args.monitor)
        return code
    except (_Usage, AlertInputError) as err:
        print(f"cryptoflow alerts: {err}", file=sys.stderr)
        return 2
    except (AlertNotFound, AlertAlreadyFired) as err:
        print(f"cryptoflow alerts: {err.args[0]}", file=sys.stderr)
        return 1
    except AlertUnreadable as err:
        print(f"cryptoflow alerts: {err}", file=sys.stderr)
        return 1
    except redis.RedisError as err:
        print(f"cryptoflow alerts: Redis at {mask_url(str(settings.redis_url))} failed: {err}", file=sys.stderr)
        return 1


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


def _run(args: argparse.Namespace, store: AlertStore) -> int:
    args.crypto_checked = None
    if args.action == "add":
        spec = parse_new_alert(_new_alert_data(args))
        alert = create_alert(spec, time.time_ns() // 1_000_000)
        store.add(alert)
        args.crypto_checked = alert.crypto
        print(alert.id)
        print(_line(alert), file=sys.stderr)
        return 0
    if args.action == "list":
        alerts = sorted(store.iter_all(args.crypto), key=lambda a: (a.created_at, a.id))
        for alert in alerts:
            print(_line(alert))
        print(f"{len(alerts)} alert(s)", file=sys.stderr)
        return 0
    alert_id = check_alert_id(args.id)
    if args.action == "show":
        print(orjson.dumps(store.get(alert_id).to_hash(), option=orjson.OPT_INDENT_2).decode())
        return 0
    if args.action == "update":
        change = parse_change(_change_data(args))
        updated = store.update(alert_id, change)
        args.crypto_checked = updated.crypto
        print(_line(updated))
        return 0
    if not store.remove(alert_id):
        msg = f"no alert with id {alert_id}"
        raise AlertNotFound(msg)
    print(f"removed {alert_id}")
    return 0
