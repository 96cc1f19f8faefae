"""``ORDERBOOK_HASH_INTERVAL``: the full ``orderbook:{inst}`` hash at most once per interval per instrument, the
newest state always written last; the buffer list and the ``@depth`` stream still see every update.

The rules on a hand-driven clock (:class:`connectors.redis.hash_throttle.HashThrottle`), then the collector's sink
against a real redis-server (its throttle on the same hand-driven clock: no sleeps, nothing timed)."""

from __future__ import annotations

import json

import redis

from connectors.okx.book_source import BookState, BufferFrame
from connectors.redis.book_sink import CollectorRedisSink
from connectors.redis.hash_throttle import HashThrottle
from connectors.redis.monitoring import MonitorReport
from operators.events import BookStatus, BookView, Level


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def levels(seq: int) -> dict[str, str]:
    return {"asks": f"[[{seq}]]", "bids": "[]", "seq_id": str(seq), "status": "valid"}


def test_interval_zero_writes_every_batch() -> None:
    th = HashThrottle(0.0)
    for seq in range(3):
        assert th.take({"A": (False, levels(seq))}) == {"A": (False, levels(seq))}


def test_a_burst_is_written_first_and_last_and_status_never_waits() -> None:
    clock = Clock()
    th = HashThrottle(1.0, clock)
    assert th.take({"A": (False, levels(1)), "B": (False, levels(1))}) == {
        "A": (False, levels(1)), "B": (False, levels(1))}, "first writes go out at once"
    for seq in range(2, 6):
        clock.t += 0.1
        assert th.take({"A": (False, levels(seq))}) == {}, f"update {seq} inside the interval is held"
    assert th.held == 1
    clock.t = 0.95
    assert th.take({"A": (False, {"status": "resyncing"})}) == {"A": (False, {**levels(5), "status": "resyncing"})}, \
        "a status change is written at once, with the held levels"
    clock.t = 0.96
    assert th.take({"A": (False, levels(6))}) == {"A": (False, levels(6))}, "resyncing -> valid: at once"
    clock.t = 0.97
    assert th.take({"A": (False, levels(7))}) == {}
    clock.t = 1.95
    assert th.take({}) == {}
    clock.t = 1.96
    assert th.take({}) == {"A": (False, levels(7))}, "the held newest state goes out once the interval passed"
    assert th.held == 0
    clock.t = 2.1
    assert th.take({"A": (False, {**levels(8), "status": "stale"})}) == {"A": (False, {**levels(8), "status": "stale"})}
    clock.t = 2.2
    assert th.take({"A": (False, levels(9))}) == {"A": (False, levels(9))}, "stale -> valid is a status change"
    clock.t = 2.3
    assert th.take({"A": (False, levels(10))}) == {}
    assert th.take({"A": (True, {})}) == {"A": (True, {})}, "a removal is written at once and drops what was held"
    assert th.held == 0
    assert th.take({"A": (False, levels(11))}) == {"A": (False, levels(11))}, "after a removal: a first write again"


def view(seq: int, status: BookStatus = BookStatus.VALID) -> BookView:
    return BookView("okx", "A-B", status, (Level(str(100 - seq), "1"),), (Level(str(100 + seq), "2"),),
                    1_700_000_000_000 + seq, 0, checksum=0, seq_id=seq)


def frame(seq: int) -> BufferFrame:
    return BufferFrame(json.dumps({"arg": {"channel": "books", "instId": "A-B"}, "seq": seq}))


def test_collector_sink_against_real_redis(redis_server, redis_db: redis.Redis) -> None:
    clock = Clock()
    part = CollectorRedisSink(redis_server.url, "buf", 0, hash_interval=10.0).build("redis", 0, 1)
    part._throttle = HashThrottle(10.0, clock)  # the sink's own throttle, on a hand-driven clock
    try:
        def book() -> dict[str, str]:
            return redis_db.hgetall("orderbook:A-B")

        part.write_batch([frame(1), view(1)])
        assert book()["seq_id"] == "1", "the first state is written at once"
        for seq in range(2, 7):
            clock.t += 1
            part.write_batch([frame(seq), view(seq)])
        assert book()["seq_id"] == "1", f"levels held inside the interval: {book()}"
        assert redis_db.llen("buf") == 6, "the buffer list gets every frame"
        last = redis_db.xrevrange("stream:A-B@depth", count=1)[0][1]
        assert redis_db.xlen("stream:A-B@depth") == 6 and json.loads(last["d"])["seq"] == 6, \
            f"the @depth stream gets every update: {last}"
        clock.t += 1
        part.write_batch([BookState("A-B", BookStatus.RESYNCING)])
        h = book()
        assert (h["status"], h["seq_id"], json.loads(h["asks"])) == ("resyncing", "6", [["106", "2"]]), \
            f"a status change goes out at once, with the held levels: {h}"
        clock.t += 1
        part.write_batch([frame(7), view(7)])
        assert (book()["status"], book()["seq_id"]) == ("valid", "7"), "valid again: written at once"
        clock.t += 1
        part.write_batch([frame(8), view(8)])
        assert book()["seq_id"] == "7"
        clock.t += 10  # nothing more for A-B: the next batch (a shard's stats report) carries the trailing write
        part.write_batch([MonitorReport("orderbook_collector/okx/shard-0", sums=(("active_pairs", 1),))])
        h = book()
        assert (h["status"], h["seq_id"], json.loads(h["bids"])) == ("valid", "8", [["92", "1"]]), \
            f"the last update of the burst is written once the interval passed: {h}"
    finally:
        part.close()
