"""The generic Redis pipeline sink (market_data's): each batch sent without waiting for its reply, every batch
confirmed by ``snapshot()`` (the epoch's end) and ``close()``, held while Redis is down, given up only when
stopping, a failed write raised on the worker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import bytewax.operators as op
import pytest
import redis
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, cluster_main, run_main
from redis.client import Pipeline

from connectors import stopping
from connectors.redis.sink import RedisPipelineSink, RedisWriteError
from cryptoflow.servers import free_port, start_redis, stop_process

JOIN_S = 60  # bound on waiting for a writer or a held call to finish


def write_counts(pipe: Pipeline, items: list[tuple[str, int]]) -> None:
    for key, value in items:
        pipe.hset("counts", key, value)


def write_strings(pipe: Pipeline, items: list[tuple[str, int]]) -> None:
    for key, value in items:
        pipe.set(key, value)


@pytest.fixture
def stop_flag() -> Iterator[None]:
    yield
    stopping._stop.clear()  # the process-wide stop flag a test set: the next test starts clean


def run_in_thread(fn: object) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)  # type: ignore[arg-type]
    t.start()
    return t


def test_batches_land_by_the_epochs_end(redis_server, redis_db: redis.Redis) -> None:
    part = RedisPipelineSink(redis_server.url, write_counts).build_part("redis", "0", None)
    try:
        part.write_batch([[("a", 1), ("b", 2)], [("a", 3)]])
        part.write_batch([])  # nothing handed over: no round trip, no error
        part.snapshot()  # returns once both are in Redis
        assert redis_db.hgetall("counts") == {"a": "3", "b": "2"}
        part.write_batch([[("c", 4)]])
    finally:
        part.close()  # flushes too
    assert redis_db.hgetall("counts") == {"a": "3", "b": "2", "c": "4"}


def test_split_keeps_a_keys_items_in_one_partition_in_order() -> None:
    sink = RedisPipelineSink("redis://127.0.0.1:1/0", write_counts, key=lambda kv: kv[0], partitions=8)
    batch = [(k, i) for i, k in enumerate("abcabcdda")]
    groups = sink.split(batch)
    assert sorted(x for _, items in groups for x in items) == sorted(batch)
    for part, items in groups:
        assert part in sink.list_parts()
        assert items == [x for x in batch if x in items]  # batch order kept
    parts_of = {k: part for part, items in groups for k, _ in items}
    assert len(parts_of) == 4  # each key in exactly one group
    assert sink.split(batch) == groups  # the same partition every time
    assert sorted(sink.part_fn(p) for p in sink.list_parts()) == list(range(8))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_dataflow_writes_every_item_through_the_partitions(redis_server, redis_db: redis.Redis,
                                                             workers: int) -> None:
    sink = RedisPipelineSink(redis_server.url, write_strings, key=lambda kv: kv[0], partitions=4)
    items = [(f"k{i % 50}", i) for i in range(2_000)]
    flow = Dataflow("sink_test")
    batches = op.flat_map_batch("split", op.input("in", flow, TestingSource(items, batch_size=64)), sink.split)
    op.output("redis", batches, sink)
    if workers == 1:
        run_main(flow)
    else:  # two workers in one process: groups cross to their partition's worker, one shared connection
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    keys = [f"k{i}" for i in range(50)]
    got = dict(zip(keys, map(int, redis_db.mget(keys)), strict=True))
    assert got == {f"k{i}": 1_950 + i for i in range(50)}  # each key's last write won: order kept per key


def test_a_batch_in_flight_during_an_outage_is_held_until_redis_is_back(tmp_path: Path) -> None:
    port = free_port()
    server = start_redis(port, tmp_path / "redis")
    part = RedisPipelineSink(f"redis://127.0.0.1:{port}/0", write_counts).build_part("redis", "0", None)
    try:
        part.write_batch([[("before", 1)]])
        part.snapshot()
        stop_process(server)  # Redis goes away with nothing in flight
        held = run_in_thread(lambda: (part.write_batch([[("ticker", 7)]]), part.snapshot()))
        held.join(4)  # past the client's own retries (~3 s)
        assert held.is_alive(), "the epoch's end must wait for the batch Redis has not confirmed"
        server = start_redis(port, tmp_path / "redis")
        held.join(JOIN_S)
        assert not held.is_alive(), f"snapshot() still waiting {JOIN_S} s after Redis came back"
        client = redis.Redis(port=port, decode_responses=True)
        assert client.hgetall("counts") == {"ticker": "7"}  # a new, empty server: the held batch was written
        client.close()
    finally:
        part.close()
        stop_process(server)


@pytest.mark.usefixtures("stop_flag")
def test_a_stop_gives_up_a_batch_redis_refuses_instead_of_hanging(tmp_path: Path) -> None:
    port = free_port()
    part = RedisPipelineSink(f"redis://127.0.0.1:{port}/0", write_counts).build_part("redis", "0", None)
    closing = run_in_thread(lambda: (part.write_batch([[("ticker", 7)]]), part.close()))  # nobody listens
    closing.join(4)
    assert closing.is_alive(), "close() must wait for the batch while Redis may come back"
    stopping.request_stop()  # SIGINT/SIGTERM
    closing.join(JOIN_S)
    assert not closing.is_alive(), f"close() still waiting {JOIN_S} s after the stop was requested"


def test_a_failed_write_is_raised_on_the_worker_not_swallowed(redis_server, redis_db: redis.Redis) -> None:
    redis_db.set("counts", "a string")  # HSET on it: WRONGTYPE, not an outage: never retried
    part = RedisPipelineSink(redis_server.url, write_counts).build_part("redis", "0", None)
    part.write_batch([[("a", 1)]])
    with pytest.raises(RedisWriteError, match="ResponseError"):
        part.snapshot()
    with pytest.raises(RedisWriteError):  # and at every later call: the writer writes nothing after it
        part.write_batch([[("b", 2)]])
    with pytest.raises(RedisWriteError):
        part.close()
    assert redis_db.get("counts") == "a string"
