"""``system:monitoring`` gauges: each owner's share, recomputed by one Lua call over the live owners.

Against a real Redis (the shares of several shards, sink partitions and dataflows; an owner that stopped
reporting), the OKX books processor (a gauge change is reported in the same output as the books it counts),
and end to end: the collector as a two-process Bytewax cluster against the simulator, one process killed.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import redis

from connectors.books.outputs import shard_report
from connectors.market.outputs import shard_report as market_report
from connectors.market.source import MarketStats
from connectors.okx.book_source import BookState, OkxBookProcessor, ShardStats
from connectors.redis.book_sink import CollectorRedisSink
from connectors.redis.keys import MONITORING
from connectors.redis.monitoring import EXPIRE_MS, OWNERS, MonitorReport, queue_monitoring, refresh
from connectors.ws.events import Frame, Subscribed, TopicsChecked
from connectors.ws.shard import shard_of
from operators.events import BookStatus, BookView, Level
from tests.collector_helpers import monitoring, start_collector
from tests.test_cli import cli
from tests.test_okx_book_processor import SNAP, Control
from tests.waiting import wait_for


def write(r: redis.Redis, *reports: MonitorReport, retire: tuple[str, ...] = ()) -> dict[str, str]:
    pipe = r.pipeline(transaction=False)
    queue_monitoring(pipe, reports, retire=retire)
    pipe.execute()
    return monitoring(r)


def stats(shard: int, connections: int, active: int, *, counters: tuple[tuple[str, int], ...] = (),
          check_ms: int = 0, rate: float = 0.0) -> ShardStats:
    return ShardStats(shard, 1_700_000_000_000, connections, active, 0, 0, counters, check_ms, 0.0, rate)


def test_gauges_are_the_sum_of_the_owners_not_the_last_writer(redis_db: redis.Redis) -> None:
    # Two shards (on different workers or processes: each sends only its own share) and a sink partition.
    mon = write(redis_db, shard_report(stats(0, 2, 3, counters=(("gaps", 1),), check_ms=1_700_000_000_000,
                                             rate=12.5)))
    mon = write(redis_db, shard_report(stats(1, 1, 2, counters=(("gaps", 2),), check_ms=1_700_000_001_000,
                                             rate=7.5)))
    assert (mon["websocket_connections"], mon["active_pairs"], mon["influxdb_write_rate"]) == ("3", "5", "20")
    assert mon["gaps"] == "3" and mon["last_config_check"] == "2023-11-14T22:13:21.000Z"
    assert int(mon["redis_memory_usage"]) > 0
    # The same shard again replaces its share (it is not added twice); the other shard's share stays.
    mon = write(redis_db, shard_report(stats(0, 1, 1, check_ms=1_699_999_999_000)))
    assert (mon["websocket_connections"], mon["active_pairs"]) == ("2", "3")
    assert mon["last_config_check"] == "2023-11-14T22:13:21.000Z"  # the newest check, whoever made it
    # Latency: a weighted mean over the sink partitions (3 books at 10 ms, 1 at 2 ms).
    mon = write(redis_db, MonitorReport("orderbook_collector/writer-0", means=(("avg_processing_latency", 30.0, 3),)),
                MonitorReport("orderbook_collector/writer-1", means=(("avg_processing_latency", 2.0, 1),)))
    assert mon["avg_processing_latency"] == "8.000"
    # A second dataflow: its connections join websocket_connections; its own fields stay per venue.
    mon = write(redis_db, market_report(MarketStats("binance", "binance", 0, 1, 2, 1, 6, (), 1_700_000_002_000)))
    assert (mon["websocket_connections"], mon["collector_connections"], mon["market_binance_connections"]) \
        == ("4", "2", "2")
    assert mon["market_binance_topics"] == "6" and mon["market_last_config_check"] == "2023-11-14T22:13:22.000Z"
    assert mon["active_pairs"] == "3"  # market_data's topics are not book pairs


def test_an_owner_that_stops_reporting_drops_out(redis_db: redis.Redis) -> None:
    write(redis_db, shard_report(stats(0, 1, 2)), shard_report(stats(1, 1, 1)))
    _expire(redis_db, "orderbook_collector/okx/shard-1")  # shard 1's process was killed
    mon = write(redis_db, shard_report(stats(0, 1, 2)))
    assert (mon["websocket_connections"], mon["active_pairs"]) == ("1", "2")
    # A clean stop retires its owners at once; with no owner left a sum is 0, not its last value.
    mon = write(redis_db, retire=("orderbook_collector/okx/shard-0",))
    assert (mon["websocket_connections"], mon["active_pairs"]) == ("0", "0")
    # A reader can recompute with nobody writing (cryptoflow status).
    write(redis_db, shard_report(stats(2, 1, 4)))
    _expire(redis_db, "orderbook_collector/okx/shard-2")
    refresh(redis_db)
    assert monitoring(redis_db)["active_pairs"] == "0"


def _expire(r: redis.Redis, owner: str) -> None:
    """Make ``owner``'s entry as old as the expiry and more: a process that was killed long ago."""
    stamp, body = r.hget(OWNERS, owner).split("|", 1)
    r.hset(OWNERS, owner, f"{int(stamp) - EXPIRE_MS - 1}|{body}")


def test_status_shows_live_gauges_and_iso_times_only(redis_server, redis_db: redis.Redis) -> None:
    write(redis_db, shard_report(stats(0, 1, 2, check_ms=1_700_000_000_000)))
    _expire(redis_db, "orderbook_collector/okx/shard-0")  # the collector was killed; nobody recomputed
    redis_db.hset(MONITORING, "market_last_config_check", "1700000001000")  # epoch ms of an older version
    proc = cli(redis_server.url, "status")
    assert proc.returncode == 0, proc.stderr
    rows = {cells[0]: cells[1:] for line in proc.stdout.splitlines() if (cells := line.split())}
    assert rows["active_pairs"] == ["0"] and rows["websocket_connections"] == ["0"]
    assert rows["last_config_check"] == ["2023-11-14T22:13:20.000Z"]
    assert rows["market_last_config_check"] == ["2023-11-14T22:13:21.000Z"]


def test_collector_sink_partitions_are_owners_and_retire_at_close(redis_server, redis_db: redis.Redis) -> None:
    sinks = [CollectorRedisSink(redis_server.url, "buf", 0).build("redis", w, 2) for w in range(2)]
    view = BookView("okx", "A-B", BookStatus.VALID, (Level("1", "1"),), (Level("2", "1"),), 1_700_000_000_000,
                    0, checksum=0, seq_id=1)
    sinks[0].write_batch([shard_report(stats(0, 1, 1)), view])
    sinks[1].write_batch([shard_report(stats(1, 1, 1))])
    assert monitoring(redis_db)["active_pairs"] == "2"
    sinks[0].write_batch([view])  # a second batch: its latency share is reported (next due second)
    sinks[1].close()  # worker 1 stops cleanly: shard 1 leaves the gauges now
    assert monitoring(redis_db)["active_pairs"] == "1"
    assert set(redis_db.hkeys(OWNERS)) <= {"orderbook_collector/okx/shard-0", "orderbook_collector/writer-0"}
    sinks[0].close()
    assert monitoring(redis_db)["active_pairs"] == "0" and not redis_db.exists(OWNERS)


def test_a_gauge_change_is_reported_with_the_books_it_counts() -> None:
    """The flake's cause: ``active_pairs`` was sampled once a second, so a book could be ``valid`` in Redis
    (and ``subscription_changes`` moved) while the last sample still counted the pair as not subscribed."""
    p = OkxBookProcessor(0, Control(), channel="books")
    p.on_tick(1)  # the regular stats: nothing subscribed yet
    out = p.on_events([TopicsChecked(2, True, ("A-B",), ("A-B",)), Subscribed(0, "A-B"), Frame(SNAP, 3, 0)])
    assert isinstance(out[0], ShardStats) and type(out[1]) is BookState  # the gauge first, then the books
    assert any(isinstance(i, BookView) and i.status is BookStatus.VALID for i in out)
    reported = [i for i in out if isinstance(i, ShardStats)]
    # with the counters of the events that moved it: a reader who sees the pair counted sees its subscription
    assert [(s.connections, s.active_pairs, s.counters) for s in reported] \
        == [(1, 1, (("frames_received", 1), ("subscription_changes", 1)))]
    assert not [i for i in p.on_events([Frame(SNAP, 4, 0)]) if isinstance(i, ShardStats)]  # no change, no report
    out = p.on_events([TopicsChecked(5, True, (), (), ("A-B",))])
    assert [(i.active_pairs, i.counters) for i in out if isinstance(i, ShardStats)] \
        == [(0, (("frames_received", 1), ("subscription_changes", 1)))]  # the frame at 4, counted now
    assert BookState("A-B", BookStatus.SYNCING, removed=True) in out
    assert next(i for i in p.on_tick(10**18) if isinstance(i, ShardStats)).counters == ()  # nothing counted twice


# --- end to end: a two-process cluster ---------------------------------------------------------------------
PAIRS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "ADA-USDT", "DOGE-USDT"]


def _topics_by_process(col) -> list[set[str]]:
    """Which pairs each process's shards subscribed (its own log: ``ws_topics_changed``)."""
    out = []
    for path in col.logs:
        mine: set[str] = set()
        for line in path.read_text(errors="replace").splitlines():
            if '"ws_topics_changed"' in line:
                ev = json.loads(line)
                mine |= set(ev["added"])
                mine -= set(ev["removed"])
        out.append(mine)
    return out


@pytest.mark.slow
def test_two_processes_count_every_pair_once_and_a_killed_one_drops_out(start_simulator, redis_server,
                                                                         redis_db: redis.Redis,
                                                                         tmp_path: Path) -> None:
    sim = start_simulator("--pairs", ",".join(PAIRS), "--seed", "4", "--rate", "5")
    redis_db.sadd("config:trading_pairs", *PAIRS)
    shards = 6  # MAX_TRADING_PAIRS 6, one pair per connection: shards spread over both processes
    assert len({shard_of(p, shards) for p in PAIRS}) >= 3
    col = start_collector(tmp_path, {**sim.env(), "REDIS_URL": redis_server.url, "MAX_TRADING_PAIRS": "6",
                                     "OKX_PAIRS_PER_CONNECTION": "1"}, processes=2)
    try:
        wait_for("every book valid", lambda: all(
            (h := redis_db.hgetall(f"orderbook:{p}")) and h.get("status") == "valid" for p in PAIRS), timeout=90)
        wait_for("active_pairs 6", lambda: monitoring(redis_db).get("active_pairs") == "6")
        by_process = wait_for("both processes' subscriptions logged",
                              lambda: (t := _topics_by_process(col)) and sum(map(len, t)) == 6 and t)
        assert by_process[0] and by_process[1] and not by_process[0] & by_process[1]
        mon = monitoring(redis_db)
        assert mon["websocket_connections"] == "6" and mon["last_config_check"].endswith("Z")
        owners = redis_db.hkeys(OWNERS)
        assert sorted(o for o in owners if "/shard-" in o) == [f"orderbook_collector/okx/shard-{i}"
                                                                for i in range(shards)]

        left = len(by_process[0])

        # Process 1 killed: no clean stop, nothing retired, its shares expire. A Bytewax cluster member whose
        # peer died exits as well (and a frozen peer stalls it at the next epoch), so the recompute is run by
        # a reader here (cryptoflow status; any other dataflow's report does the same).
        os.killpg(col.procs[1].pid, signal.SIGKILL)
        col.procs[1].wait()

        def dropped() -> bool:
            refresh(redis_db)  # what cryptoflow status does
            return monitoring(redis_db)["active_pairs"] == ("0" if col.procs[0].poll() is not None else str(left))

        wait_for("process 1's pairs drop out of active_pairs", dropped)
    finally:
        col.stop()
