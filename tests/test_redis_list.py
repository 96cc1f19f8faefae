"""The reliable Redis-list source against a real redis-server: FIFO, processing lists, acks, re-delivery,
recovery-mode offsets and trimming, and kill -9 of a consuming dataflow process (both modes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from connectors.redis_list import (
    AckMode,
    ListAcker,
    ListItem,
    ReliableRedisListSource,
    offset_key,
    processing_key,
)
from cryptoflow.servers import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent


def _drain(part, rounds: int = 50) -> list[ListItem]:  # type: ignore[no-untyped-def]
    got: list[ListItem] = []
    for _ in range(rounds):
        batch = part.next_batch()
        if not batch:
            break
        got.extend(batch)
    return got


def _push(client: redis.Redis, key: str, values: list[str]) -> None:
    for i in range(0, len(values), 1000):
        client.lpush(key, *values[i:i + 1000])


def test_explicit_mode_fifo_processing_and_ack(redis_server, redis_db) -> None:
    values = [f"job-{i}" for i in range(2500)]
    _push(redis_db, "q", values)
    src = ReliableRedisListSource(redis_server.url, "q", batch_size=1000)
    assert src.list_parts() == ["0"]
    part = src.build_part("read", "0", None)
    got = _drain(part)
    assert [i.raw.decode() for i in got] == values  # FIFO, every ready item, in three batches
    assert {i.partition for i in got} == {"0"} and all(i.offset is None for i in got)
    assert redis_db.llen("q") == 0 and redis_db.llen("q:processing:0") == 2500
    assert part.next_batch() == [] and part.next_awake() > datetime.now(UTC)  # idle: wake later, no block
    ListAcker(redis_server.url, "q").ack(got[:2000])
    assert redis_db.lrange("q:processing:0", 0, -1)[::-1] == values[2000:]
    part.close()


def test_leftovers_are_redelivered_first_then_new_items(redis_server, redis_db) -> None:
    _push(redis_db, "q", ["a", "b", "c", "d"])
    src = ReliableRedisListSource(redis_server.url, "q")
    first = src.build_part("read", "0", None)
    got = _drain(first)
    ListAcker(redis_server.url, "q").ack([got[1]])  # "b" done; a, c, d were taken by a run that "died"
    _push(redis_db, "q", ["e"])
    again = src.build_part("read", "0", None)
    assert [i.raw for i in _drain(again)] == [b"a", b"c", b"d", b"e"]


def test_max_in_flight_backpressure(redis_server, redis_db) -> None:
    _push(redis_db, "q", [str(i) for i in range(10)])
    part = ReliableRedisListSource(redis_server.url, "q", max_in_flight=3).build_part("read", "0", None)
    first = _drain(part)
    assert [i.raw for i in first] == [b"0", b"1", b"2"]
    ListAcker(redis_server.url, "q").ack(first[:2])
    assert [i.raw for i in _drain(part)] == [b"3", b"4"]


def test_partitions_share_the_list_without_duplicates(redis_server, redis_db) -> None:
    values = [str(i) for i in range(3000)]
    _push(redis_db, "q", values)
    src = ReliableRedisListSource(redis_server.url, "q", partitions=3, batch_size=100)
    parts = {p: src.build_part("read", p, None) for p in src.list_parts()}
    seen: dict[str, list[int]] = {p: [] for p in parts}
    while True:
        progressed = False
        for p, part in parts.items():
            batch = part.next_batch()
            progressed |= bool(batch)
            seen[p].extend(int(i.raw) for i in batch)
            assert all(i.partition == p for i in batch)
        if not progressed:
            break
    assert sorted(v for got in seen.values() for v in got) == list(range(3000))
    for p, got in seen.items():
        assert got == sorted(got) and got  # FIFO within each partition
        assert redis_db.llen(processing_key("q", p)) == len(got)


def test_recovery_mode_resume_skips_what_the_snapshot_covers(redis_server, redis_db) -> None:
    _push(redis_db, "f", [f"f{i}" for i in range(10)])
    src = ReliableRedisListSource(redis_server.url, "f", ack=AckMode.RECOVERY, batch_size=4)
    part = src.build_part("read", "0", None)
    assert [i.offset for i in part.next_batch()] == [0, 1, 2, 3]
    snap = part.snapshot()
    assert snap == 4
    rest = _drain(part)
    assert [(i.raw, i.offset) for i in rest] == [(f"f{i}".encode(), i) for i in range(4, 10)]
    # Crash; Bytewax restores operator state as of `snap`: frames 4..9 must come again, 0..3 must not.
    resumed = src.build_part("read", "0", snap)
    assert [(i.raw, i.offset) for i in _drain(resumed)] == [(f"f{i}".encode(), i) for i in range(4, 10)]
    # No resume state (recovery off / a new store): everything still held comes again.
    fresh = src.build_part("read", "0", None)
    assert [i.offset for i in _drain(fresh)] == list(range(10))
    assert redis_db.get(offset_key("f", "0")) == "10"


def test_recovery_mode_trims_only_below_old_snapshots(redis_server, redis_db) -> None:
    src = ReliableRedisListSource(redis_server.url, "f", ack=AckMode.RECOVERY, keep_snapshots=2)
    part = src.build_part("read", "0", None)
    snaps = []
    for epoch in range(5):
        _push(redis_db, "f", [f"e{epoch}-{i}" for i in range(3)])
        _drain(part)
        snaps.append(part.snapshot())
    assert snaps == [3, 6, 9, 12, 15]
    part.next_batch()  # trims lazily in next_batch, below the snapshot two before the latest
    held = redis_db.lrange(processing_key("f", "0"), 0, -1)[::-1]
    assert held == [f"e{epoch}-{i}" for epoch in (3, 4) for i in range(3)]  # offsets >= 9
    resumed = src.build_part("read", "0", 9)  # resuming from any snapshot not yet trimmed loses nothing
    assert [i.offset for i in _drain(resumed)] == list(range(9, 15))


def test_redis_down_returns_empty_and_backs_off() -> None:
    src = ReliableRedisListSource(f"redis://127.0.0.1:{free_port()}/0", "q", socket_timeout=0.5)
    part = src.build_part("read", "0", None)
    assert part.next_batch() == []
    assert part.next_awake() > datetime.now(UTC)


@contextmanager
def _flow(spec: str, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", spec, *extra], cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        stop_process(proc)  # type: ignore[arg-type]


def _kill9(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _wait(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_kill9_explicit_mode_loses_nothing(redis_server, redis_db) -> None:
    values = [f"job-{i}" for i in range(2000)]
    _push(redis_db, "jobs", values)
    spec = f"tests.flows.list_consumers:explicit_flow({redis_server.url!r}, 'jobs', 0.001)"
    with _flow(spec) as proc:
        _wait(lambda: redis_db.llen("jobs:done") >= 300, "the first run to get going")
        _kill9(proc)
    done_at_kill = redis_db.llen("jobs:done")
    assert done_at_kill < 2000, "the kill landed after the end; make the consumer slower"
    assert redis_db.llen("jobs:processing:0") > 0  # taken, not done: these must come back
    with _flow(spec):
        _wait(lambda: redis_db.llen("jobs:done") >= 2000 and redis_db.llen("jobs:processing:0") == 0,
              "the restart to finish")
    done = redis_db.lrange("jobs:done", 0, -1)
    assert sorted(done) == sorted(values)  # every job exactly once (work and ack share one MULTI)
    assert redis_db.llen("jobs") == 0


@pytest.mark.slow
def test_kill9_recovery_mode_state_counts_every_frame_once(redis_server, redis_db, tmp_path) -> None:
    store = tmp_path / "recovery"
    store.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(store), "1"], check=True, cwd=ROOT)
    keys = ("a", "b", "c")
    values = [f"{keys[i % 3]}:{i}" for i in range(3000)]
    expected = {k: f"{sum(1 for v in values if v[0] == k)}:{sum(int(v[2:]) for v in values if v[0] == k)}"
                for k in keys}
    spec = f"tests.flows.list_consumers:recovery_flow({redis_server.url!r}, 'frames', 0.003)"
    args = ("-r", str(store), "-s", "1", "-b", "0")
    _push(redis_db, "frames", values[:1500])
    with _flow(spec, *args) as proc:
        _wait(lambda: redis_db.llen("frames") < 1450, "the first run to consume")
        time.sleep(2.5)  # a few epochs: snapshots commit and the processing list gets trimmed
        _kill9(proc)
    assert redis_db.llen("frames") > 0, "the kill landed after the end; make the consumer slower"
    _push(redis_db, "frames", values[1500:])
    with _flow(spec, *args):
        _wait(lambda: redis_db.hgetall("frames:state") == expected, "the resumed state to count everything")
    assert redis_db.llen("frames") == 0


def test_recovery_mode_recovers_a_move_whose_reply_was_lost(redis_server, redis_db) -> None:
    from connectors.redis_list import _MOVE

    _push(redis_db, "f", [f"f{i}" for i in range(6)])
    part = ReliableRedisListSource(redis_server.url, "f", ack=AckMode.RECOVERY, batch_size=2).build_part(
        "read", "0", None)
    assert [i.raw for i in part.next_batch()] == [b"f0", b"f1"]
    # A move that ran in Redis but whose reply never arrived (connection dropped): f2, f3 are held, unseen.
    redis_db.eval(_MOVE, 3, "f", processing_key("f", "0"), offset_key("f", "0"), 2, 0)
    got = part.next_batch()
    assert [(i.raw, i.offset) for i in got] == [(b"f2", 2), (b"f3", 3), (b"f4", 4), (b"f5", 5)]
    assert part.snapshot() == 6
