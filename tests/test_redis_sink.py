"""The generic Redis pipeline sink (market_data's): one pipeline per batch, held while Redis is down."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import redis
from redis.client import Pipeline

from connectors.redis.sink import RedisPipelineSink
from cryptoflow.servers import free_port, start_redis, stop_process


def write_counts(pipe: Pipeline, items: list[tuple[str, int]]) -> None:
    for key, value in items:
        pipe.hset("counts", key, value)


def test_one_batch_lands_in_one_pipeline(redis_server, redis_db: redis.Redis) -> None:
    part = RedisPipelineSink(redis_server.url, write_counts).build("redis", 0, 1)
    try:
        part.write_batch([("a", 1), ("b", 2), ("a", 3)])
        part.write_batch([])  # nothing queued: no round trip, no error
    finally:
        part.close()
    assert redis_db.hgetall("counts") == {"a": "3", "b": "2"}


def test_a_batch_is_held_until_redis_is_back(tmp_path: Path) -> None:
    port = free_port()
    part = RedisPipelineSink(f"redis://127.0.0.1:{port}/0", write_counts).build("redis", 0, 1)
    writer = threading.Thread(target=part.write_batch, args=([("ticker", 7)],), daemon=True)
    writer.start()  # nobody listens yet
    time.sleep(4)  # past the client's own retries (~3 s): the batch used to fail and stop the dataflow
    assert writer.is_alive()
    server = start_redis(port, tmp_path / "redis")
    try:
        writer.join(60)
        assert not writer.is_alive()
        client = redis.Redis(port=port, decode_responses=True)
        assert client.hgetall("counts") == {"ticker": "7"}
        client.close()
    finally:
        part.close()
        stop_process(server)
