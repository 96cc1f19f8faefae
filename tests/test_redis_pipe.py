"""The hot reads' pipelined Redis connection (:mod:`service.redis_pipe`) against real redis-servers.

Oracle: redis-py's answers to the same commands, and redis-py's exceptions for the failures (the service's
handlers turn those into its 503s).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import redis.exceptions

from cryptoflow.servers import free_port, start_redis, stop_process
from service.redis_pipe import RedisPipe, ViaRedisPy, redis_calls
from tests.fixtures.redis import RedisServer

SCRIPT = "return {KEYS[1], ARGV[1], redis.call('HGET', KEYS[1], ARGV[1])}"


def test_replies_are_redis_py_s_and_concurrent_calls_share_the_connection(
        redis_server: RedisServer, redis_db: redis.Redis) -> None:
    redis_db.hset("h", mapping={"a": "1", "b": "é"})

    async def main() -> None:
        pipe = RedisPipe("127.0.0.1", redis_server.port)
        try:
            many = await asyncio.gather(*(pipe.call("HMGET", "h", "a", "b", f"missing{i}") for i in range(50)))
            assert many == [["1", "é", None]] * 50
            assert await pipe.call("HGETALL", "h") == ["a", "1", "b", "é"]  # RESP2, as the Lua rows come
            with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
                await pipe.call("LLEN", "h")
            assert await pipe.call("HGET", "h", "a") == "1"  # an error reply leaves the connection usable
            redis_db.script_flush()
            assert await pipe.script(SCRIPT, ["h"], ["a"]) == ["h", "a", "1"]  # NOSCRIPT -> EVAL
            assert await pipe.script(SCRIPT, ["h"], ["b"]) == ["h", "b", "é"]  # EVALSHA
            via = ViaRedisPy(aioredis.Redis(port=redis_server.port, decode_responses=True))
            assert await via.call("HMGET", "h", "a", "b", "missing") == ["1", "é", None]
            assert await via.script(SCRIPT, ["h"], ["a"]) == ["h", "a", "1"]
            await via.client.aclose()
        finally:
            await pipe.aclose()

    asyncio.run(main())


def test_a_restarted_redis_is_503_then_found_again_by_itself(tmp_path: Path) -> None:
    port = free_port()
    server = start_redis(port, tmp_path / "redis")

    async def main() -> None:
        nonlocal server
        pipe = RedisPipe("127.0.0.1", port, connect_timeout=1)
        try:
            assert await pipe.call("PING") == "PONG"
            stop_process(server)
            with pytest.raises(redis.exceptions.ConnectionError):
                await pipe.call("PING")
            server = start_redis(port, tmp_path / "redis")
            assert await pipe.call("PING") == "PONG"
            stop_process(server)  # the connection dies under us, Redis comes back: the retry finds it
            server = start_redis(port, tmp_path / "redis")
            assert await pipe.call("PING") == "PONG"
        finally:
            await pipe.aclose()

    try:
        asyncio.run(main())
    finally:
        stop_process(server)


def test_no_reply_in_time_is_redis_py_s_timeout() -> None:
    async def main() -> None:
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
        port = silent.sockets[0].getsockname()[1]
        pipe = RedisPipe("127.0.0.1", port, timeout=0.2)
        try:
            with pytest.raises(redis.exceptions.TimeoutError):
                await pipe.call("PING")
        finally:
            await pipe.aclose()
            silent.close()

    asyncio.run(main())


def test_password_and_database_from_the_url(tmp_path: Path) -> None:
    port = free_port()
    server = start_redis(port, tmp_path / "redis")
    try:
        admin = redis.Redis(port=port, db=3, decode_responses=True)
        admin.set("k", "in db 3")
        admin.config_set("requirepass", "s3cret")

        async def main() -> None:
            client = aioredis.Redis()
            good = redis_calls(f"redis://:s3cret@127.0.0.1:{port}/3", client)
            bad = redis_calls(f"redis://:wrong@127.0.0.1:{port}/3", client)
            try:
                assert isinstance(good, RedisPipe) and await good.call("GET", "k") == "in db 3"
                with pytest.raises(redis.exceptions.ConnectionError, match="AUTH"):
                    await bad.call("GET", "k")
            finally:
                await good.aclose()
                await bad.aclose()
                await client.aclose()

        asyncio.run(main())
    finally:
        stop_process(server)


def test_tls_and_unix_urls_go_through_redis_py() -> None:
    client = aioredis.Redis()
    for url in ("rediss://127.0.0.1:6380/0", "unix:///tmp/redis.sock?db=1"):
        calls = redis_calls(url, client)
        assert isinstance(calls, ViaRedisPy) and calls.client is client
