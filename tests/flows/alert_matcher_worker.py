"""One price-alert matcher PROCESS for the race test: a Bytewax dataflow feeding trades from a file to
:class:`connectors.alerts.matcher.PriceAlertSink`, started when the Redis key ``race:go`` appears.

``python -m tests.flows.alert_matcher_worker REDIS_URL TICKS_FILE`` (ticks: JSON lines ``[inst, price]``).
"""

from __future__ import annotations

import sys
import time
from decimal import Decimal

import orjson
import redis
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from connectors.alerts.matcher import PriceAlertSink
from operators.events import Trade


def main(url: str, ticks_file: str) -> None:
    client = redis.Redis.from_url(url)
    rows = [orjson.loads(line) for line in open(ticks_file, "rb")]  # noqa: SIM115
    client.incr("race:ready")
    while not client.exists("race:go"):
        time.sleep(0.001)
    now_ms = time.time_ns() // 1_000_000
    trades = [Trade("okx", inst, str(i), Decimal(price), Decimal(1), "buy", now_ms, now_ms * 1_000_000)
              for i, (inst, price) in enumerate(rows)]
    flow = Dataflow("race")
    stream = op.input("ticks", flow, TestingSource(trades, batch_size=25))
    op.output("match", stream, PriceAlertSink(url, max_age_s=60))
    run_main(flow)
    client.incr("race:done")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
