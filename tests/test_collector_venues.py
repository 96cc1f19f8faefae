"""End to end: the collector (real ``python -m bytewax.run dataflows.orderbook_collector`` process) with
``BOOK_VENUES=okx,binance,bybit`` against the simulator (a real process) and a real Redis.

* Every fault of each venue hits ETH-USDT on that venue and heals that book only: every other book (the
  other venues', and BTC-USDT on every venue) never leaves ``valid`` and keeps updating, as every write Redis
  received shows (:class:`tests.book_watch.BookWatch`, MONITOR); after each fault the market is paused and all
  six hashes must equal the simulator's books exactly.
* ``bbo:{inst}`` leaves a venue out when its feed stops (the simulator's ``hold`` fault: the connection stays
  up, nothing is sent) and takes it back when it resumes; with every feed held, nothing reaches the ``bbo`` step
  at all, so only its own deadline (``notify_at``) can leave the venues out.

Every wait is bounded and says what it waited for; nothing is timed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from connectors.redis.keys import venue_book_key
from tests.book_watch import BookWatch
from tests.collector_helpers import Collector, start_collector
from tests.fixtures.simulator import Simulator
from tests.waiting import wait_for

pytestmark = pytest.mark.slow
PAIRS = ("BTC-USDT", "ETH-USDT")
VENUES = ("okx", "binance", "bybit")
SEQ = {"okx": "seqId", "binance": "u", "bybit": "u"}
LEVELS = {"okx": 400, "binance": 400, "bybit": 50}
KEYS = [venue_book_key(v, i) for v in VENUES for i in PAIRS]


def book(r: redis.Redis, venue: str, inst: str) -> dict[str, Any]:
    h = r.hgetall(venue_book_key(venue, inst))
    return {**h, "bids": json.loads(h["bids"]), "asks": json.loads(h["asks"])} if "bids" in h else h


def all_valid(r: redis.Redis) -> bool:
    return all(book(r, v, i).get("status") == "valid" for v in VENUES for i in PAIRS)


def matches(r: redis.Redis, sim: Simulator) -> list[str]:
    """The books that differ from the simulator's (call with the market paused)."""
    wrong = []
    for venue in VENUES:
        for inst in PAIRS:
            ours, truth = book(r, venue, inst), sim.book(venue, inst)
            n = LEVELS[venue]
            if not (ours.get("status") == "valid" and ours.get("seq_id") == str(truth[SEQ[venue]])
                    and ours["bids"] == truth["bids"][:n] and ours["asks"] == truth["asks"][:n]):
                wrong.append(f"{venue}:{inst}")
    return wrong


def start(start_simulator: Any, redis_server: Any, redis_db: redis.Redis, tmp_path: Path, workers: int = 1,
          **env: str) -> tuple[Simulator, Collector]:
    sim = start_simulator("--pairs", ",".join(PAIRS), "--seed", "7", "--rate", "10", "--checksum", "real")
    redis_db.sadd("config:trading_pairs", *PAIRS)
    col = start_collector(tmp_path, {**sim.env(), "REDIS_URL": redis_server.url, "BOOK_VENUES": ",".join(VENUES),
                                     "WS_STALE_AFTER": "60", **env}, workers=workers)
    return sim, col


def failures(col: Collector, venue: str, inst: str) -> list[str]:
    """The collector's logged failures of one book, as ``event:reason``."""
    out = []
    for name in ("book_integrity_failed", "book_resync_failed", "book_rest_failed"):
        out += [f"{name}:{e.get('reason', e.get('result', ''))[:40]}" for e in col.events(name)
                if e.get("venue") == venue and e.get("instrument") == inst]
    return out


def resynced(col: Collector, venue: str) -> list[dict[str, Any]]:
    return [e for e in col.events("book_resynced") if e.get("venue") == venue and e.get("instrument") == "ETH-USDT"]


# (venue, fault, parameters, the failures it must cause: None = no failure, the book never leaves valid)
FAULTS: list[tuple[str, str, dict[str, str], int | None]] = [
    ("okx", "gap", {}, 1),
    ("okx", "crossed_book", {}, 1),  # a market step: every venue's ETH-USDT book gets it
    ("okx", "seq_reset", {}, None),
    ("okx", "duplicate_frame", {}, None),
    ("binance", "gap", {"venue": "binance"}, 1),
    ("binance", "stale_snapshot", {}, None),  # armed: the next fault's re-sync is served a stale snapshot
    ("binance", "gap", {"venue": "binance"}, 2),  # the gap, then the stale snapshot refused: fetched again
    ("bybit", "bybit_u1", {}, None),
    ("bybit", "duplicate_frame", {"venue": "bybit"}, None),
    ("bybit", "delta_first", {}, None),  # armed: the gap's resubscription gets a delta before its snapshot
    ("bybit", "gap", {"venue": "bybit"}, 1),
]


def test_every_venue_fault_heals_that_book_only(start_simulator, redis_server, redis_db, tmp_path: Path) -> None:
    watch = BookWatch(redis_server.port).start()
    sim, col = start(start_simulator, redis_server, redis_db, tmp_path)
    r = redis_db
    try:
        wait_for("all six books valid", lambda: all_valid(r), timeout=90)
        owners = wait_for("each venue's shards report", lambda: (lambda o: o if {"orderbook_collector/okx/shard-0",
                          "orderbook_collector/binance/shard-0", "orderbook_collector/bybit/shard-0"} <= o else None)(
                          set(r.hkeys("system:monitoring:owners"))))
        assert {o.rsplit("/", 1)[0] for o in owners if "/shard-" in o} == {
            f"orderbook_collector/{v}" for v in VENUES}, owners
        wait_for("the venues' pairs in system:monitoring", lambda: (lambda m: (m.get("book_binance_pairs"),
                 m.get("book_bybit_pairs"), m.get("active_pairs")) == ("2", "2", "2"))(r.hgetall("system:monitoring")))
        sim.pause()
        wait_for("all six hashes equal the simulator's books", lambda: not matches(r, sim))
        sim.resume()
        for venue, fault, params, expected in FAULTS:
            key = venue_book_key(venue, "ETH-USDT")
            marks, before = watch.marks(), len(failures(col, venue, "ETH-USDT"))
            resyncs = len(resynced(col, venue))
            sim.fault(fault, inst="ETH-USDT", **params)
            if fault in ("stale_snapshot", "delta_first"):
                continue  # armed for the next fault
            wait_for(f"{venue} {fault}: sent", lambda: sim.pending_faults() == [])
            if expected is None:
                writes = wait_for(f"{venue} {fault}: ETH-USDT written after it",
                                  lambda k=key, m=marks: watch.since(k, m)[3:])
                assert all(w.status == "valid" for w in writes), (venue, fault, writes)
                assert len(failures(col, venue, "ETH-USDT")) == before, failures(col, venue, "ETH-USDT")
            else:
                # A re-sync may take a few ms: its resyncing state and the valid book after it can share one sink
                # batch (coalesced, never written): the failure is read from the collector's log instead.
                want, v = before + expected, venue
                wait_for(f"{venue} {fault}: ETH-USDT failed",
                         lambda w=want, v=v: len(failures(col, v, "ETH-USDT")) >= w)
                wait_for(f"{venue} {fault}: ETH-USDT resynced", lambda n=resyncs, v=v: len(resynced(col, v)) > n)
                healed = watch.marks()
                new = wait_for(f"{venue} {fault}: ETH-USDT written again",
                               lambda k=key, m=healed: watch.since(k, m)[2:])
                assert all(w.status == "valid" for w in new), (venue, fault, new)
                got = failures(col, venue, "ETH-USDT")[before:]
                if fault == "crossed_book":  # a snapshot taken before the simulator uncrosses it fails again
                    assert got and all("BookCrossed" in f for f in got), got
                else:
                    assert len(got) == expected, (venue, fault, got)
            # the other five books: never left valid, and kept updating (ten new levels each)
            for other in KEYS:
                if other == key or (fault == "crossed_book" and "ETH-USDT" in other):
                    continue
                new = wait_for(f"{venue} {fault}: {other} keeps updating",
                               lambda o=other, m=marks: (lambda ws: ws if sum(w.seq_id is not None for w in ws) >= 10
                                                         else None)(watch.since(o, m)))
                assert all(w.status == "valid" for w in new), (venue, fault, other, [w for w in new
                                                                                     if w.status != "valid"])
                seqs = [w.seq_id for w in new if w.seq_id is not None]
                assert seqs == sorted(seqs), (other, seqs)
            sim.pause()
            try:
                wait_for(f"{venue} {fault}: all six hashes equal the simulator's books", lambda: not matches(r, sim))
            finally:
                sim.resume()
        # Whatever the faults, only ETH-USDT's books ever left valid: in every write, and in the log (a state
        # that lasted less than a sink batch is never written)
        for k in KEYS:
            if "BTC-USDT" in k:
                assert {w.status for w in watch.writes[k][1:]} == {"valid"}, k
        for v in VENUES:
            assert failures(col, v, "BTC-USDT") == [], v
            assert [e for e in col.events("book_stale")] == []
        assert col.events("ws_reconnecting") == [] and col.events("book_resync_failed") == [
            e for e in col.events("book_resync_failed") if e["venue"] == "binance" and e["instrument"] == "ETH-USDT"]
        assert {(e["venue"], e["instrument"]) for e in col.events("book_integrity_failed")} <= {
            (v, "ETH-USDT") for v in VENUES}
        assert col.alive() and not watch.errors
    finally:
        col.stop()
        watch.stop()


def bbo(r: redis.Redis) -> dict[str, Any]:
    h = r.hgetall("bbo:ETH-USDT")
    return {**h, "venues": json.loads(h["venues"]), "excluded": json.loads(h["excluded"])} if h else h


@pytest.mark.parametrize("workers", [1, 2])
def test_bbo_leaves_out_a_stopped_feed_and_takes_it_back(workers: int, start_simulator, redis_server, redis_db,
                                                         tmp_path: Path) -> None:
    """With 2 workers the venues' shards and the instrument's bbo key may live on different workers: the quotes
    cross to the key's worker."""
    max_age = 1500
    watch = BookWatch(redis_server.port).start()
    sim, col = start(start_simulator, redis_server, redis_db, tmp_path, workers, BBO_MAX_AGE_MS=str(max_age))
    r = redis_db
    try:
        wait_for("all six books valid", lambda: all_valid(r), timeout=90)
        full = wait_for("bbo:ETH-USDT with every venue kept", lambda: (lambda b: b if b and b["excluded"] == []
                        and set(b["venues"]) == set(VENUES) else None)(bbo(r)))
        best_bid = max(float(full["venues"][v]["bid"]) for v in VENUES)
        assert float(full["bid"]) == best_bid and full["bid_venue"] in VENUES
        # One feed stops: Bybit's socket stays up, its book stays valid, nothing arrives from it
        sim.fault("hold", venue="bybit")
        left = wait_for("bybit left out of bbo:ETH-USDT", lambda: (lambda b: b if b["excluded"] == ["bybit"]
                        else None)(bbo(r)))
        assert left["venues"]["bybit"]["status"] == "valid" and left["venues"]["bybit"]["age_ms"] >= max_age
        assert left["bid_venue"] != "bybit" and left["ask_venue"] != "bybit"
        assert r.hget(venue_book_key("bybit", "ETH-USDT"), "status") == "valid"  # left out by age alone
        print(f"bybit left out at age_ms={left['venues']['bybit']['age_ms']} (BBO_MAX_AGE_MS={max_age})")
        sim.clear_faults("hold")
        wait_for("bybit taken back", lambda: bbo(r)["excluded"] == [])
        # Every feed stops: no quote reaches the bbo step any more; its deadlines alone leave them out
        sim.fault("hold")
        held = wait_for("every venue left out", lambda: (lambda b: b if sorted(b["excluded"]) == sorted(VENUES)
                        else None)(bbo(r)))
        assert (held["bid"], held["bid_venue"], held["ask"], held["ask_venue"]) == ("", "", "", "")
        assert all(held["venues"][v]["age_ms"] >= max_age for v in VENUES), held
        marks = watch.marks()
        sim.clear_faults("hold")
        wait_for("every venue taken back", lambda: bbo(r)["excluded"] == [])
        assert all(w.status == "valid" for k in KEYS for w in watch.since(k, marks))
        assert col.alive()
    finally:
        col.stop()
        watch.stop()
