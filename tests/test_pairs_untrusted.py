"""An absurd member of ``config:trading_pairs`` (a 1 MB id) is rejected with a short reason and never logged or
stored whole (connectors/redis/pairs.py), against a real Redis."""

from __future__ import annotations

import asyncio

import redis
from structlog.testing import capture_logs

from connectors.redis.pairs import PairsPoller
from operators.instruments import MAX_INSTRUMENT_CHARS


def test_a_one_megabyte_pair_id_is_rejected_in_a_short_reason_and_short_logs(redis_server,
                                                                            redis_db: redis.Redis) -> None:
    huge = "B" * 1_000_000 + "-USDT"
    redis_db.sadd("config:trading_pairs", "BTC-USDT", huge)

    async def run() -> frozenset[str] | None:
        poller = PairsPoller(redis_server.url, "config:trading_pairs", limit=10, interval=1, venue="okx")
        try:
            with capture_logs() as logs:
                got = await poller.poll()
                await poller.report_rejected("BTC-USDT", "60018 " + "z" * 100_000)
            captured.extend(logs)
            return got
        finally:
            await poller.close()

    captured: list[dict[str, object]] = []
    assert asyncio.run(run()) == frozenset({"BTC-USDT"})
    reason = redis_db.hget("config:trading_pairs:rejected", huge)
    assert reason == f"instrument id too long: {len(huge)} characters, at most {MAX_INSTRUMENT_CHARS} " \
                     f"(starts {'B' * 40!r}…)"
    venue_reason = redis_db.hget("config:trading_pairs:rejected", "BTC-USDT")
    assert venue_reason is not None and venue_reason.startswith("okx: 60018 zzz") and len(venue_reason) <= 201
    rejected = [e for e in captured if e.get("event") == "pair_rejected"]
    assert len(rejected) == 2
    assert all(len(str(e)) < 1000 for e in captured), [len(str(e)) for e in captured]
