"""The reliable Redis-list source against a real redis-server: FIFO, processing lists, acks, re-delivery,
recovery-mode offsets and trimming, and kill -9 of a consuming dataflow process (both modes)."""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis

from connectors.redis.list_source import ReliableRedisListSource
from connectors.redis.lists import (
    AckMode,
    ListAcker,
    ListItem,
    deliveries_key,
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


def _committed_offset(store: Path, step_id: str) -> int | None:
    """The input offset of the newest snapshot of ``step_id`` that the recovery store has committed."""
    with sqlite3.connect(f"file:{store / 'part-0.sqlite3'}?mode=ro", uri=True, timeout=5) as db:
        row = db.execute(
            "SELECT s.ser_change FROM snaps s JOIN commits c ON s.snap_epoch <= c.commit_epoch "
            "WHERE s.step_id = ? AND s.ser_change IS NOT NULL ORDER BY s.snap_epoch DESC LIMIT 1", (step_id,),
        ).fetchone()
    return None if row is None else pickle.loads(row[0])  # our own recovery store


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
        # Kill only once a committed snapshot covers consumed frames and the processing list has been trimmed
        # below it, so that the resume really starts from a snapshot in the middle of the stream.
        _wait(lambda: (_committed_offset(store, "list_recovery.read") or 0) >= 100
              and redis_db.llen("frames:processing:0") < int(redis_db.get("frames:processing:0:offset") or 0),
              "a committed snapshot and a trimmed processing list")
        _kill9(proc)
    assert redis_db.llen("frames") > 0, "the kill landed after the end; make the consumer slower"
    _push(redis_db, "frames", values[1500:])
    with _flow(spec, *args):
        _wait(lambda: redis_db.hgetall("frames:state") == expected, "the resumed state to count everything")
    assert redis_db.llen("frames") == 0


def test_recovery_mode_recovers_a_move_whose_reply_was_lost(redis_server, redis_db) -> None:
    from connectors.redis.list_scripts import MOVE

    _push(redis_db, "f", [f"f{i}" for i in range(6)])
    part = ReliableRedisListSource(redis_server.url, "f", ack=AckMode.RECOVERY, batch_size=2).build_part(
        "read", "0", None)
    assert [i.raw for i in part.next_batch()] == [b"f0", b"f1"]
    # A move that ran in Redis but whose reply never arrived (connection dropped): f2, f3 are held, unseen.
    redis_db.eval(MOVE, 3, "f", processing_key("f", "0"), offset_key("f", "0"), 2, 0)
    got = part.next_batch()
    assert [(i.raw, i.offset) for i in got] == [(b"f2", 2), (b"f3", 3), (b"f4", 4), (b"f5", 5)]
    assert part.snapshot() == 6


# -- poison elements: dead-lettered after max_deliveries, never a restart loop ---------------------------------

def _dead(client: redis.Redis, key: str) -> list[dict[str, object]]:
    return [orjson.loads(d) for d in reversed(client.lrange(f"{key}:dead", 0, -1))]  # oldest first


def _start(src: ReliableRedisListSource, resume: int | None = None):  # type: ignore[no-untyped-def]
    return src.build_part("read", "0", resume)


def test_explicit_mode_dead_letters_what_is_never_finished(redis_server, redis_db) -> None:
    _push(redis_db, "q", ["a", "b", "c"])
    src = ReliableRedisListSource(redis_server.url, "q", max_deliveries=3)
    acker = ListAcker(redis_server.url, "q")
    run = _start(src)
    got = _drain(run)
    acker.ack([got[1]])  # the run finished b and died: a and c were delivered once
    run.close()
    run = _start(src)
    assert [i.raw for i in _drain(run)] == [b"a", b"c"]  # delivered again together (2nd delivery)
    run.close()  # died again without finishing them: now they are suspects
    run = _start(src)
    assert [i.raw for i in run.next_batch()] == [b"a"]  # a suspect goes alone (3rd delivery)...
    assert run.next_batch() == []  # ...and the next one waits until it is finished
    acker.ack([ListItem(b"a", "0")])
    assert [i.raw for i in run.next_batch()] == [b"c"]  # 3rd delivery of c; the run dies on it
    run.close()
    _push(redis_db, "q", ["d"])
    run = _start(src)
    assert [i.raw for i in _drain(run)] == [b"d"]  # c is not delivered a 4th time
    run.close()
    [dead] = _dead(redis_db, "q")
    assert dead["raw"] == "c" and dead["deliveries"] == 3 and "3 times" in str(dead["reason"])
    assert datetime.fromisoformat(str(dead["dead_at"]).replace("Z", "+00:00")).tzinfo is not None
    assert redis_db.lrange("q:processing:0", 0, -1) == ["d"]


def test_normal_restarts_never_dead_letter_good_elements(redis_server, redis_db) -> None:
    """Each run finishes what the previous one left and dies with one new element in flight, many times over:
    every element is delivered at most twice and nothing goes dead."""
    src = ReliableRedisListSource(redis_server.url, "q", max_deliveries=2)
    acker = ListAcker(redis_server.url, "q")
    seen: list[bytes] = []
    for n in range(10):
        _push(redis_db, "q", [f"e{n}"])
        run = _start(src)
        got = _drain(run)
        seen += [i.raw for i in got]
        acker.ack(got[:-1])  # dies before finishing the newest
        run.close()
    assert seen == [b"e0"] + [f"e{n}".encode() for k in range(1, 10) for n in (k - 1, k)]
    assert redis_db.llen("q:dead") == 0
    run = _start(src)
    assert [i.raw for i in _drain(run)] == [b"e9"]
    run.close()
    # The count of e8 (finished) was forgotten at that start; e9 has been delivered twice.
    assert redis_db.hgetall(deliveries_key("q", "0")) == {hashlib.sha1(b"e9").hexdigest(): "2"}


def test_recovery_mode_skips_dead_frames_and_keeps_the_offsets(redis_server, redis_db) -> None:
    _push(redis_db, "f", [f"f{i}" for i in range(6)])
    src = ReliableRedisListSource(redis_server.url, "f", ack=AckMode.RECOVERY, max_deliveries=3)
    run = _start(src)
    assert [i.offset for i in _drain(run)] == list(range(6))
    # Every run crashes on f3 before the snapshot after offset 2 commits: Bytewax resumes from 2 each time.
    run = _start(src, 2)
    assert [i.offset for i in _drain(run)] == [2, 3, 4, 5]  # delivered again once, in one batch
    run = _start(src, 2)  # suspects now go one at a time; the run dies on f3, f4 and f5 are not delivered
    assert [[i.offset for i in run.next_batch()] for _ in range(2)] == [[2], [3]]
    run = _start(src, 2)
    # f3 (delivered 3 times, the last run died on it) is dead; f2 (3 times too, but the run went on past it) is
    # not: the frames before the crash point carry on, alone, then the rest.
    assert [[i.offset for i in run.next_batch()] for _ in range(3)] == [[2], [4], [5]]
    _push(redis_db, "f", ["f6"])
    assert [(i.raw, i.offset) for i in _drain(run)] == [(b"f6", 6)]
    assert run.snapshot() == 7
    assert [(d["raw"], d["offset"], d["deliveries"]) for d in _dead(redis_db, "f")] == [("f3", 3, 3)]
    # The offset arithmetic is intact: nothing was removed from the middle of the processing list.
    assert redis_db.lrange(processing_key("f", "0"), 0, -1)[::-1] == [f"f{i}" for i in range(7)]
    assert redis_db.get(offset_key("f", "0")) == "7"
    # Killed again before a commit (not on a suspect): nothing more goes dead before twice max_deliveries, and a
    # dead frame is never dead-lettered twice.
    again = _start(src, 2)
    assert [i.offset for i in _drain(again)] == [2, 4, 5, 6]
    assert [d["offset"] for d in _dead(redis_db, "f")] == [3]
    for _ in range(2):
        _drain(_start(src, 2))
    assert [d["offset"] for d in _dead(redis_db, "f")] == [3, 2]  # f2: 6 deliveries, the hard cap


def test_a_stop_request_ends_the_input(redis_server, redis_db, monkeypatch) -> None:
    _push(redis_db, "q", ["a"])
    run = _start(ReliableRedisListSource(redis_server.url, "q"))
    monkeypatch.setattr("connectors.redis.list_source.stop_requested", lambda: True)
    with pytest.raises(StopIteration):
        run.next_batch()
    run.close()
    assert redis_db.lrange("q", 0, -1) == ["a"]  # nothing taken after the stop


def _crash_loop(spec: str, *args: str, until: Callable[[], bool], runs: int) -> list[int]:
    """Start the dataflow again after every crash (as a supervisor would) until ``until()`` holds while it
    runs; returns the exit codes of the runs that crashed."""
    crashed: list[int] = []
    for _ in range(runs):
        proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", spec, *args], cwd=ROOT,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(lambda p=proc: p.poll() is not None or until(), "a crash or the end of the work", timeout=120)
        finally:
            code = proc.poll()
            stop_process(proc)  # type: ignore[arg-type]
        if code is None:
            return crashed
        crashed.append(code)
    raise AssertionError(f"still crashing after {runs} runs: {crashed}")


@pytest.mark.slow
def test_crash_loop_explicit_mode_ends_with_the_element_dead(redis_server, redis_db) -> None:
    good = [f"g{i}" for i in range(12)]
    _push(redis_db, "jobs", [*good[:3], "poison", *good[3:]])
    spec = f"tests.flows.poison_consumers:explicit_flow({redis_server.url!r}, 'jobs', 3)"
    crashed = _crash_loop(spec, runs=6, until=lambda: redis_db.llen("jobs:done") == len(good)
                          and redis_db.llen("jobs:processing:0") == 0)
    assert len(crashed) == 3 and all(code != 0 for code in crashed)  # delivered 3 times, then dead
    assert sorted(redis_db.lrange("jobs:done", 0, -1)) == sorted(good)  # every other job exactly once
    [dead] = _dead(redis_db, "jobs")
    assert dead["raw"] == "poison" and dead["deliveries"] == 3
    assert redis_db.llen("jobs") == 0


@pytest.mark.slow
def test_crash_loop_recovery_mode_ends_with_the_element_dead(redis_server, redis_db, tmp_path) -> None:
    store = tmp_path / "recovery"
    store.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(store), "1"], check=True, cwd=ROOT)
    good = [f"{'ab'[i % 2]}:{i}" for i in range(40)]
    _push(redis_db, "frames", [*good[:20], "poison", *good[20:]])
    spec = f"tests.flows.poison_consumers:recovery_flow({redis_server.url!r}, 'frames', 3)"
    args = ("-r", str(store), "-s", "1", "-b", "0")

    def state() -> dict[str, str]:
        dead = {str(d["raw"]) for d in _dead(redis_db, "frames")}
        alive = [v for v in good if v not in dead]
        return {k: f"{sum(1 for v in alive if v[0] == k)}:{sum(int(v[2:]) for v in alive if v[0] == k)}"
                for k in "ab"}

    crashed = _crash_loop(spec, *args, runs=6, until=lambda: "poison" in {d["raw"] for d in _dead(
        redis_db, "frames")} and redis_db.hgetall("frames:state") == state() and redis_db.llen("frames") == 0)
    assert len(crashed) == 3 and all(code != 0 for code in crashed)
    assert [d["raw"] for d in _dead(redis_db, "frames")] == ["poison"]  # the frames around it are counted
    # Pushed after the loop ended: processed.
    _push(redis_db, "frames", ["a:100", "b:101"])
    good += ["a:100", "b:101"]
    with _flow(spec, *args):
        _wait(lambda: redis_db.hgetall("frames:state") == state(), "the new frames to be counted")
    dead = _dead(redis_db, "frames")
    assert len({d["offset"] for d in dead}) == len(dead)  # each dead once
    assert not {"a:100", "b:101"} & {str(d["raw"]) for d in dead}
