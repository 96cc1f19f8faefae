"""``cryptoflow pairs list|add|rm``: edit the monitored set (``config:trading_pairs``)."""

from __future__ import annotations

import argparse
import sys
from typing import cast

from connectors.redis.client import sync_client
from connectors.untrusted import sample
from cryptoflow.settings import Settings
from operators.instruments import InvalidInstrument, validate_instrument


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("pairs", help="list, add or remove monitored instruments")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="the monitored set, the rejected ids and what is over the limit")
    for name, verb in (("add", "add to"), ("rm", "remove from")):
        p = actions.add_parser(name, help=f"{verb} the monitored set")
        p.add_argument("instruments", nargs="+", metavar="INST_ID", help="OKX instrument id, e.g. BTC-USDT")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    client = sync_client(str(settings.redis_url), decode_responses=True)
    key = settings.redis_trading_pairs_key
    if args.action == "list":
        members = sorted(cast(set[str], client.smembers(key)))
        rejected = cast(dict[str, str], client.hgetall(f"{key}:rejected"))
        listed = [i for i in members if i not in rejected]
        for i, inst in enumerate(listed):
            note = "  (over MAX_TRADING_PAIRS: not subscribed)" if i >= settings.max_trading_pairs else ""
            print(f"{inst}{note}")
        for inst, reason in sorted(rejected.items()):  # an absurd id or reason is shown cut, never whole
            print(f"{sample(inst, 40)}  REJECTED: {sample(reason)}")
        return 0
    try:
        ids = [validate_instrument(i) for i in args.instruments]
    except InvalidInstrument as err:
        print(f"cryptoflow pairs: {err}", file=sys.stderr)
        return 2
    if args.action == "add":
        added = client.sadd(key, *ids)
        client.hdel(f"{key}:rejected", *ids)  # give a corrected id a fresh chance
        print(f"added {added}, now {client.scard(key)} in {key}")
    else:
        removed = client.srem(key, *ids)
        print(f"removed {removed}, now {client.scard(key)} in {key}")
    return 0
