"""``cryptoflow status``: ``system:monitoring`` and each monitored pair's book status, as a table."""

from __future__ import annotations

import argparse
from typing import cast

import redis

from connectors.redis_keys import MONITORING, analysis_key, orderbook_key
from cryptoflow.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("status", help="pipeline health and per-pair book status")
    parser.set_defaults(run=run)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def run(args: argparse.Namespace, settings: Settings) -> int:
    client = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    monitoring = cast(dict[str, str], client.hgetall(MONITORING))
    print(MONITORING)
    if monitoring:
        print(_table([("field", "value"), *sorted(monitoring.items())]))
    else:
        print("  (empty: no dataflow has reported yet)")
    rows: list[tuple[str, ...]] = [("instrument", "book", "seq_id", "updated", "analysis")]
    for inst in sorted(cast(set[str], client.smembers(settings.redis_trading_pairs_key))):
        book = cast(list[str | None], client.hmget(orderbook_key(inst), "status", "seq_id", "latest_timestamp"))
        analysis = cast(str | None, client.hget(analysis_key(inst), "analysis_time"))
        rows.append((inst, book[0] or "-", book[1] or "-", book[2] or "-", analysis or "-"))
    print()
    print(_table(rows) if len(rows) > 1 else "no pairs in " + settings.redis_trading_pairs_key)
    return 0
