"""Backfill speed against the simulator: klines per second per venue, with each venue's default budget (what a
user gets: the budget, not the client, is the limit) and with an unlimited budget (the client's own cost: HTTP,
typed parsing, line protocol, a synchronous InfluxDB write per page, to a real VictoriaMetrics).

Usage: ``.venv/bin/python benchmarks/bench_backfill.py --days 7``
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.influx.sync import SyncInfluxWriter  # noqa: E402
from connectors.rest_klines.backfill import VENUES, backfill  # noqa: E402
from connectors.rest_klines.budget import Budget  # noqa: E402
from connectors.rest_klines.client import KlineClient  # noqa: E402
from cryptoflow.servers import free_port, stop_process, wait_for_port  # noqa: E402
from tests.fixtures.simulator import launch_simulator  # noqa: E402

UNLIMITED = Budget(10**9, 1.0)


async def _one(venue: str, base: str, influx: str, days: int, budget: Budget | None) -> tuple[int, int, float]:
    client = KlineClient(VENUES[venue], base, budget)
    store = SyncInfluxWriter(influx, "t", "org", "bench")
    end = int(time.time() * 1000) // 60_000 * 60_000
    started = time.perf_counter()
    try:
        result = await backfill(client, store, None, "BTC-USDT", "1m", end - days * 86_400_000, end)
    finally:
        await client.close()
        store.close()
    return result.klines, client.requests, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    binary = shutil.which("victoria-metrics")
    if binary is None:
        sys.exit("victoria-metrics is not installed (make bootstrap installs it)")
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        vm = subprocess.Popen([binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={data}",
                               "-retentionPeriod=100y", "-loggerLevel=ERROR"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        sim = launch_simulator("--pairs", "BTC-USDT", "--rate", "5", "--okx-rest-limit", "1000000/1",
                               "--binance-rest-limit", "1000000/1", "--bybit-rest-limit", "1000000/1")
        try:
            wait_for_port(port, proc=vm)
            print(f"{args.days} days of 1m BTC-USDT klines per run ({args.days * 1440} klines)")
            for venue in ("binance", "okx", "bybit"):
                for label, budget in (("default budget", None), ("unlimited", UNLIMITED)):
                    klines, requests, seconds = asyncio.run(
                        _one(venue, sim.okx_rest_url, f"http://127.0.0.1:{port}", args.days, budget))
                    shown = budget or VENUES[venue].default_budget
                    print(f"{venue:8} {label:15} ({shown.amount}/{shown.window_s:g}s): {klines} klines, "
                          f"{requests} requests in {seconds:.2f} s = {klines / seconds:,.0f} klines/s")
        finally:
            sim.stop()
            stop_process(vm)


if __name__ == "__main__":
    main()
