"""What a Redis Sentinel failover loses from a list written with LPUSH (the order-book buffer ``okex_orderbook``).

Redis replicates asynchronously: the master acknowledges a write before its replica has it, so a ``kill -9`` of
the master loses whatever it acknowledged but had not yet sent (or the replica had not yet read). Counted here,
not estimated: ``redis-server`` x2 (master + replica) and ``redis-sentinel`` x3 (quorum 2, down-after 1 s) on
loopback (tests/sentinel_helpers.py); a writer LPUSHes numbered elements of ``--size`` bytes onto one list as
fast as one connection goes (``--pipeline N``: N per round trip, as the collector's one pipeline per batch), and
remembers the highest number the master acknowledged. ``--rounds`` times: SIGKILL the master, wait for the
sentinels' new master, count the acknowledged numbers missing from the list there (lost), then start the killed
server again as a replica for the next round. Also per round: the write outage a Sentinel client
(:func:`connectors.redis_client.sync_client`) sees, from the kill to its first accepted write on the new master
(during which the collector drops its buffer frames, README "Redis Sentinel").

Run: .venv/bin/python benchmarks/bench_failover_loss.py [--rounds 10] [--size 600] [--pipeline 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from connectors.redis_client import sync_client  # noqa: E402
from tests.sentinel_helpers import SentinelCluster  # noqa: E402

KEY = "bench:failover"


class Writer:
    def __init__(self, port: int, size: int, pipeline: int) -> None:
        self.client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)
        self.pad = b"x" * max(0, size - 12)
        self.pipeline = pipeline
        self.acked = -1
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while True:
            pipe = self.client.pipeline(transaction=False)
            for j in range(i, i + self.pipeline):
                pipe.lpush(KEY, b"%d:" % j + self.pad)
            try:
                pipe.execute()
            except redis.RedisError:
                return
            i += self.pipeline
            self.acked = i - 1


def one_round(cluster: SentinelCluster, size: int, pipeline: int) -> dict[str, float]:
    old = cluster.master_address()[1]
    cluster.client(old).delete(KEY)
    writer = Writer(old, size, pipeline)
    writer.thread.start()
    while writer.acked < 2000:
        time.sleep(0.01)
    killed = time.monotonic()
    cluster.kill_master()
    writer.thread.join(10)
    follower = sync_client(cluster.url, socket_timeout=1, socket_connect_timeout=1)
    while True:  # a Sentinel client's view: the first write the new master accepts
        try:
            follower.set("bench:probe", 1)
            break
        except redis.RedisError:
            time.sleep(0.05)
    outage = time.monotonic() - killed
    follower.close()
    new = cluster.master_address()[1]
    reader = redis.Redis(port=new, socket_timeout=5)
    present = {int(x.split(b":", 1)[0]) for x in reader.lrange(KEY, 0, -1)}  # type: ignore[union-attr]
    reader.close()
    lost = sum(1 for i in range(writer.acked + 1) if i not in present)
    cluster.restart_as_replica(old)
    return {"acked": writer.acked + 1, "lost": lost, "outage_s": outage}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--size", type=int, default=600, help="bytes per element (an OKX books update is 300-1500)")
    ap.add_argument("--pipeline", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = SentinelCluster(Path(tmp))
        try:
            cluster.start()
            rows = []
            for n in range(args.rounds):
                row = one_round(cluster, args.size, args.pipeline)
                rows.append(row)
                print(f"round {n + 1}: acked {row['acked']:.0f}, lost {row['lost']:.0f}, "
                      f"write outage {row['outage_s']:.2f} s", flush=True)
        finally:
            cluster.stop()
    lost = [r["lost"] for r in rows]
    outages = [r["outage_s"] for r in rows]
    print(f"\n{args.rounds} failovers, {args.size}-byte elements, {args.pipeline} per round trip: lost acknowledged "
          f"elements per failover: total {sum(lost):.0f}, max {max(lost):.0f}, rounds with a loss "
          f"{sum(1 for x in lost if x)}; write outage seen by a Sentinel client: median "
          f"{statistics.median(outages):.2f} s, max {max(outages):.2f} s")


if __name__ == "__main__":
    main()
