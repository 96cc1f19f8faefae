"""``cryptoflow status``: ``system:monitoring``, each monitored pair's book status (``rejected`` for an id in
``config:trading_pairs:rejected``, ``over-limit`` past ``MAX_TRADING_PAIRS``), and the rejected ids with their
reason, as tables."""

from __future__ import annotations

import argparse
from typing import cast

from connectors.redis.client import sync_client
from connectors.redis.keys import MONITORING, analysis_key, orderbook_key
from connectors.redis.monitoring import refresh
from connectors.untrusted import sample
from cryptoflow.settings import Settings
from operators.events import iso_ms


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("status", help="pipeline health and per-pair book status")
    parser.set_defaults(run=run)


ID_CHARS = 40  # an absurd id in config:trading_pairs is shown cut, never whole


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _time(field: str, value: str) -> str:
    """Times are ISO-8601 UTC; a ``*last_config_check`` in epoch ms (written by an older version) is shown so."""
    return iso_ms(int(value)) if field.endswith("last_config_check") and value.isdigit() else value


def run(args: argparse.Namespace, settings: Settings) -> int:
    client = sync_client(str(settings.redis_url), decode_responses=True)
    refresh(client)  # gauges from the live owners now: a stopped dataflow's shares have expired
    monitoring = cast(dict[str, str], client.hgetall(MONITORING))
    print(MONITORING)
    if monitoring:
        print(_table([("field", "value"), *sorted((f, _time(f, v)) for f, v in monitoring.items())]))
    else:
        print("  (empty: no dataflow has reported yet)")
    key = settings.redis_trading_pairs_key
    rejected = cast(dict[str, str], client.hgetall(f"{key}:rejected"))
    members = sorted(cast(set[str], client.smembers(key)))
    rows: list[tuple[str, ...]] = [("instrument", "book", "seq_id", "updated", "analysis")]
    subscribable = 0
    for inst in members:
        if inst in rejected:
            rows.append((sample(inst, ID_CHARS), "rejected", "-", "-", "-"))
            continue
        subscribable += 1
        book = cast(list[str | None], client.hmget(orderbook_key(inst), "status", "seq_id", "latest_timestamp"))
        analysis = cast(str | None, client.hget(analysis_key(inst), "analysis_time"))
        status = book[0] or ("over-limit" if subscribable > settings.max_trading_pairs else "-")
        rows.append((inst, status, book[1] or "-", book[2] or "-", analysis or "-"))
    print()
    print(_table(rows) if len(rows) > 1 else "no pairs in " + key)
    if rejected:
        print()
        print(f"{key}:rejected")
        print(_table([("instrument", "reason"),
                      *((sample(i, ID_CHARS), sample(why, 200)) for i, why in sorted(rejected.items()))]))
    return 0
