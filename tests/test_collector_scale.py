"""300 synthetic pairs x 2 updates/s through a 2-process collector cluster and a 1-process collector at once,
against the simulator and a real redis-server (issue 15, "Must show").

Both collectors subscribe to the same simulator (each its own connections: the same market, seqId for seqId)
and write to their own Redis database. With the market paused, every one of the 300 ``orderbook:{inst}``
hashes of both must be ``valid`` and equal to the simulator's book at the simulator's ``seqId``, so the two
deployments hold the same books. Conditions are polled with deadlines; nothing is timed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.collector_helpers import start_collector
from tests.waiting import wait_for

pytestmark = pytest.mark.slow
PAIRS = [f"P{i:03d}-USDT" for i in range(300)]


def statuses(r: redis.Redis) -> dict[str, str]:
    pipe = r.pipeline(transaction=False)
    for inst in PAIRS:
        pipe.hget(f"orderbook:{inst}", "status")
    return {inst: s or "missing" for inst, s in zip(PAIRS, pipe.execute(), strict=True)}


def books(r: redis.Redis) -> dict[str, dict[str, Any]]:
    pipe = r.pipeline(transaction=False)
    for inst in PAIRS:
        pipe.hmget(f"orderbook:{inst}", "status", "seq_id", "bids", "asks")
    out = {}
    for inst, (status, seq, bids, asks) in zip(PAIRS, pipe.execute(), strict=True):
        out[inst] = {"status": status, "seq_id": seq, "bids": json.loads(bids) if bids else None,
                     "asks": json.loads(asks) if asks else None}
    return out


class Pending(str):
    """Not yet (falsy), saying why: :func:`tests.waiting.wait_for` shows the last one when it times out."""

    def __bool__(self) -> bool:
        return False


def not_valid(r: redis.Redis) -> Pending | bool:
    bad = {i: s for i, s in statuses(r).items() if s != "valid"}
    return Pending(f"{len(bad)} books not valid, e.g. {sorted(bad.items())[:3]}") if bad else True


def differing(r: redis.Redis, expected: dict[str, dict[str, Any]]) -> Pending | bool:
    """Why not every hash is ``valid`` with exactly the simulator's book and seqId (True: all are)."""
    bad = [inst for inst, b in books(r).items() if (b["status"], b["seq_id"], b["bids"], b["asks"]) != (
        "valid", str(expected[inst]["seqId"]), expected[inst]["bids"], expected[inst]["asks"])]
    return Pending(f"{len(bad)} books differ from the simulator's, e.g. {bad[:5]}") if bad else True


def test_300_pairs_on_a_2_process_cluster_equal_the_simulator_and_1_process(
        start_simulator, redis_server, redis_db: redis.Redis, tmp_path: Path) -> None:
    sim = start_simulator("--pairs", ",".join(PAIRS), "--seed", "5", "--rate", "2")
    single_db = redis.Redis(port=redis_server.port, db=1, decode_responses=True)
    for r in (redis_db, single_db):
        r.sadd("config:trading_pairs", *PAIRS)
    base = {**sim.env(), "MAX_TRADING_PAIRS": "300", "OKX_PAIRS_PER_CONNECTION": "50"}
    url = f"redis://127.0.0.1:{redis_server.port}"
    cluster = start_collector(tmp_path, {**base, "REDIS_URL": f"{url}/0"}, processes=2)
    single = start_collector(tmp_path, {**base, "REDIS_URL": f"{url}/1"})
    try:
        for name, r in (("2-process cluster", redis_db), ("1 process", single_db)):
            wait_for(f"all 300 books valid ({name})", lambda r=r: not_valid(r), timeout=90, every=0.5)
        sim.pause()
        expected = {inst: sim.book("okx", inst) for inst in PAIRS}
        for name, r in (("2-process cluster", redis_db), ("1 process", single_db)):
            wait_for(f"every book equal to the simulator's ({name})", lambda r=r: differing(r, expected),
                     timeout=60, every=0.5)
        assert books(redis_db) == books(single_db), "the cluster and the single process hold different books"
        for name, col in (("2-process cluster", cluster), ("1 process", single)):
            assert col.alive(), f"{name} died:\n{col.log()[-3000:]}"
            failed = col.events("book_integrity_failed")
            assert not failed, f"{name}: integrity failures on a fault-free feed: {failed[:3]}"
        # Both members of the cluster carry books: each process opened connections of its own shards.
        for i, log in enumerate(cluster.logs):
            text = log.read_text(errors="replace")
            assert '"ws_connected"' in text, f"cluster process {i} opened no connection:\n{text[-2000:]}"
    finally:
        cluster.stop()
        single.stop()
        sim.resume() if sim.proc.poll() is None else None
        single_db.close()
