"""What a Redis Sentinel failover loses from a list written with LPUSH (the order-book buffer ``okex_orderbook``).

Redis replicates asynchronously: the master acknowledges a write before its replica has it, so a ``kill -9`` of
the master loses whatever it acknowledged but had not yet sent (or the replica had not yet read). Counted here,
not estimated: ``redis-server`` x2 (master + replica) and ``redis-sentinel`` x3 (quorum 2, down-after 1 s) on
loopback (tests/sentinel_helpers.py); a writer LPUSHes numbered elements of ``--size`` bytes onto one list as
fast as one connection goes (``--pipeline N``: N per round trip, as the collector's one pipeline per batch), and
remembers the highest number the master acknowledged. ``--rounds`` times: SIGKILL the master, wait for the
sentinels' new master, count the acknowledged numbers missing from the list there (lost), then start the killed
server again as a replica for the next round. Also per round: the write outage a Sentinel client
(:func:`connectors.redis.client.sync_client`) sees, from the kill to its first accepted write on the new master
(during which the collector drops its buffer frames, README "Redis Sentinel").

``--stall S`` stands in for a slow or cut-off replica (what a loopback kill cannot show): the replica is
SIGSTOPped S seconds before the kill (the master keeps acknowledging) and SIGCONTed after it.
``--min-replicas-max-lag N`` sets ``min-replicas-to-write 1`` and ``min-replicas-max-lag N`` on the master first:
it then refuses writes (``NOREPLICAS``, counted as refused) once its replica's last ack is N s old.

Run: .venv/bin/python benchmarks/bench_failover_loss.py [--rounds 10] [--size 600] [--pipeline 1] [--stall S]
     [--min-replicas-max-lag N]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from connectors.redis.client import sync_client  # noqa: E402
from tests.sentinel_helpers import SentinelCluster  # noqa: E402

KEY = "bench:failover"


class Writer:
    """LPUSHes numbered elements, ``pipeline`` per round trip; records each number the master acknowledged, and
    counts those it refused (``NOREPLICAS`` under ``min-replicas-to-write``), until the connection dies."""

    def __init__(self, port: int, size: int, pipeline: int) -> None:
        self.client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)
        self.pad = b"x" * max(0, size - 12)
        self.pipeline = pipeline
        self.acked: list[int] = []
        self.acked_at: list[float] = []  # when each was acknowledged (monotonic)
        self.refused = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while True:
            pipe = self.client.pipeline(transaction=False)
            for j in range(i, i + self.pipeline):
                pipe.lpush(KEY, b"%d:" % j + self.pad)
            try:
                results = pipe.execute(raise_on_error=False)
            except redis.RedisError:  # the connection: the master is gone
                return
            now = time.monotonic()
            refused = [isinstance(r, Exception) for r in results]
            ok = [i + j for j, no in enumerate(refused) if not no]
            self.acked.extend(ok)
            self.acked_at.extend([now] * len(ok))
            self.refused += sum(refused)
            i += self.pipeline
            if any(refused):
                time.sleep(0.005)


def one_round(cluster: SentinelCluster, size: int, pipeline: int, stall: float, max_lag: int) -> dict[str, float]:
    old = cluster.master_address()[1]
    master = cluster.client(old)
    master.delete(KEY)
    master.config_set("min-replicas-to-write", 1 if max_lag else 0)
    master.config_set("min-replicas-max-lag", max_lag or 10)
    replica = cluster.servers[cluster.replica_port]
    writer = Writer(old, size, pipeline)
    writer.thread.start()
    while len(writer.acked) < 2000:
        time.sleep(0.01)
    if stall:  # the replica stops reading (a slow or cut-off replica): the master keeps acknowledging
        os.kill(replica.pid, signal.SIGSTOP)
        time.sleep(stall)
    killed = time.monotonic()
    cluster.kill_master()
    if stall:
        os.kill(replica.pid, signal.SIGCONT)
    writer.thread.join(10)
    follower = sync_client(cluster.url, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # a Sentinel client's view: the first write the new master accepts
        try:
            follower.set("bench:probe", 1)
            break
        except redis.RedisError:
            time.sleep(0.05)
    else:
        sys.exit("no new master accepted a write within 120 s")
    outage = time.monotonic() - killed
    follower.close()
    new = cluster.master_address()[1]
    reader = redis.Redis(port=new, socket_timeout=5)
    present = {int(x.split(b":", 1)[0]) for x in reader.lrange(KEY, 0, -1)}  # type: ignore[union-attr]
    reader.close()
    lost_at = [t for i, t in zip(writer.acked, writer.acked_at, strict=True) if i not in present]
    cluster.restart_as_replica(old)
    # the lost writes as time: how long the master went on acknowledging writes its replica never got
    window = max(lost_at) - min(lost_at) if lost_at else 0.0
    return {"acked": len(writer.acked), "refused": writer.refused, "lost": len(lost_at), "lost_s": window,
            "outage_s": outage}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--size", type=int, default=600, help="bytes per element (an OKX books update is 300-1500)")
    ap.add_argument("--pipeline", type=int, default=1)
    ap.add_argument("--stall", type=float, default=0.0,
                    help="SIGSTOP the replica this many seconds before the kill (SIGCONT after it)")
    ap.add_argument("--min-replicas-max-lag", type=int, default=0,
                    help="with N > 0: min-replicas-to-write 1 and min-replicas-max-lag N on the master")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = SentinelCluster(Path(tmp))
        try:
            cluster.start()
            rows = []
            for n in range(args.rounds):
                row = one_round(cluster, args.size, args.pipeline, args.stall, args.min_replicas_max_lag)
                rows.append(row)
                print(f"round {n + 1}: acked {row['acked']:.0f}, refused {row['refused']:.0f}, lost {row['lost']:.0f} "
                      f"(acknowledged over {row['lost_s']:.2f} s), "
                      f"write outage {row['outage_s']:.2f} s", flush=True)
        finally:
            cluster.stop()
    lost = [r["lost"] for r in rows]
    lost_s = [r["lost_s"] for r in rows]
    outages = [r["outage_s"] for r in rows]
    print(f"\n{args.rounds} failovers, {args.size}-byte elements, {args.pipeline} per round trip, replica stalled "
          f"{args.stall} s, min-replicas-max-lag {args.min_replicas_max_lag or 'off'}: lost acknowledged "
          f"elements per failover: total {sum(lost):.0f}, max {max(lost):.0f}, rounds with a loss "
          f"{sum(1 for x in lost if x)}, lost writes acknowledged over at most {max(lost_s):.2f} s; write outage "
          f"seen by a Sentinel client: median "
          f"{statistics.median(outages):.2f} s, max {max(outages):.2f} s")


if __name__ == "__main__":
    main()
