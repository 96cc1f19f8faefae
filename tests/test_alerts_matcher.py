"""The atomic Lua matcher and its Bytewax sink against a real redis-server, and the two-process race."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from connectors.alerts.matcher import AlertMatcher, PriceAlertSink, fresh_ticks, reduce_ticks
from connectors.alerts.store import AlertStore
from cryptoflow.servers import stop_process
from operators.alerts import Alert, create_alert, parse_new_alert, render_email
from operators.events import Trade, iso_ms

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_763_715_600_000  # 2025-11-21T09:00:00Z


def _alert(crypto: str, price: str, above: bool, email: str = "a@b.example", i: int | None = None) -> Alert:
    spec = parse_new_alert({"crypto": crypto, "price": price, "direction": above, "email": email})
    return create_alert(spec, T0, alert_id=None if i is None else f"{i:032x}")


def _jobs(redis_db) -> list[dict]:  # type: ignore[no-untyped-def]
    return [orjson.loads(j) for j in redis_db.lrange("queue:email", 0, -1)]


def test_fires_at_the_threshold_once_and_queues_the_rendered_job(redis_db) -> None:
    store = AlertStore(redis_db)
    up, down, far = _alert("BTC-USDT", "36000", True), _alert("BTC-USDT", "34000", False), \
        _alert("BTC-USDT", "50000", True)
    for a in (up, down, far):
        store.add(a)
    m = AlertMatcher(redis_db)
    assert m.match([("BTC-USDT", Decimal("35999.99"), T0), ("BTC-USDT", Decimal("34000.01"), T0)]) == []
    fired = m.match([("BTC-USDT", Decimal("35500"), T0 + 1), ("BTC-USDT", Decimal("36000"), T0 + 2),
                     ("BTC-USDT", Decimal("36000"), T0 + 3), ("BTC-USDT", Decimal("33999.5"), T0 + 4)],
                    now_ms=T0 + 10)
    assert sorted(fired) == sorted([up.id, down.id])
    assert m.match([("BTC-USDT", Decimal("36001"), T0 + 20), ("BTC-USDT", Decimal("1"), T0 + 20)]) == []
    h = redis_db.hgetall(f"alert:{up.id}")
    assert (h["status"], h["fired_price"], h["fired_at"]) == ("fired", "36000", iso_ms(T0 + 2))
    assert redis_db.hget(f"alert:{down.id}", "fired_price") == "33999.5"
    assert redis_db.zrange("alert:BTC-USDT:gt", 0, -1) == [far.id] and redis_db.zcard("alert:BTC-USDT:lt") == 0
    jobs = {j["alert_id"]: j for j in _jobs(redis_db)}
    assert set(jobs) == {up.id, down.id}
    subject, body = render_email(up.id, "BTC-USDT", True, "36000", "36000", iso_ms(T0 + 2))
    assert jobs[up.id] == {"id": up.id, "alert_id": up.id, "to": "a@b.example", "subject": subject,
                           "body": body, "created_at": iso_ms(T0 + 10), "attempts": 0}
    assert jobs[down.id]["subject"] == "Price alert: BTC-USDT fell to 33999.5"  # the trigger price


def test_many_alerts_on_one_side_are_finished_by_further_calls(redis_db) -> None:
    AlertStore(redis_db).add_many([_alert("ETH-USDT", str(2000 + i), True, i=i) for i in range(25)])
    fired = AlertMatcher(redis_db, max_per_call=4).match([("ETH-USDT", Decimal(2010), T0)])
    assert sorted(fired) == [f"{i:032x}" for i in range(11)]
    assert len(_jobs(redis_db)) == 11


def test_reduce_and_staleness() -> None:
    assert reduce_ticks([("A-B", Decimal(2), 1), ("A-B", Decimal(3), 2), ("A-B", Decimal(3), 3),
                         ("A-B", Decimal(1), 4), ("C-D", Decimal(9), 5)]) == {
        "A-B": (Decimal(3), 2, Decimal(1), 4), "C-D": (Decimal(9), 5, Decimal(9), 5)}
    fresh = Trade("okx", "A-B", "1", Decimal(1), Decimal(1), "buy", ts_ms=10_000, recv_ns=14_000 * 10**6)
    stale = Trade("okx", "A-B", "2", Decimal(2), Decimal(1), "buy", ts_ms=10_000, recv_ns=16_000 * 10**6)
    no_recv = Trade("okx", "A-B", "3", Decimal(3), Decimal(1), "buy", ts_ms=10_000)  # judged against now
    assert fresh_ticks([fresh, stale, no_recv], 5_000, now_ms=20_000) == ([("A-B", Decimal(1), 10_000)], 2)


def _run_sink(redis_server, trades: list[Trade]) -> None:  # type: ignore[no-untyped-def]
    flow = Dataflow("alerts")
    op.output("match", op.input("trades", flow, TestingSource(trades)),
              PriceAlertSink(redis_server.url, max_age_s=5))
    run_main(flow)


def test_sink_skips_stale_trades_then_fires_on_a_fresh_one(redis_server, redis_db) -> None:
    alert = _alert("SOL-USDT", "150", True)
    AlertStore(redis_db).add(alert)
    now = time.time_ns()
    old_ms = now // 10**6 - 60_000  # a trade a reconnecting feed replays, a minute old
    _run_sink(redis_server, [Trade("okx", "SOL-USDT", "1", Decimal(160), Decimal(1), "buy", old_ms, now)])
    assert redis_db.hget(f"alert:{alert.id}", "status") == "active" and redis_db.llen("queue:email") == 0
    _run_sink(redis_server, [Trade("bybit", "SOL-USDT", "2", Decimal("150.5"), Decimal(1), "sell",
                                   now // 10**6, now)])
    assert redis_db.hget(f"alert:{alert.id}", "status") == "fired"
    assert [j["alert_id"] for j in _jobs(redis_db)] == [alert.id]


@pytest.mark.slow
def test_race_two_matcher_processes_fire_each_alert_exactly_once(redis_server, redis_db, tmp_path) -> None:
    rng = random.Random(7)
    bases = {"BTC-USDT": 36000, "ETH-USDT": 2000, "SOL-USDT": 150, "XRP-USDT": 1, "DOGE-USDT": 0.2}
    alerts: list[Alert] = []
    for i in range(10_000):
        inst = rng.choice(list(bases))
        thr = Decimal(str(round(bases[inst] * rng.uniform(0.9, 1.1), 4)))
        alerts.append(_alert(inst, str(thr), rng.random() < 0.5, email=f"u{i}@example.com", i=i))
    AlertStore(redis_db).add_many(alerts)
    ticks: list[tuple[str, str]] = []
    prices = {inst: Decimal(str(b)) for inst, b in bases.items()}
    for _ in range(2000):
        inst = rng.choice(list(bases))
        prices[inst] = (prices[inst] * Decimal(str(1 + rng.gauss(0, 0.004)))).quantize(Decimal("0.0001"))
        ticks.append((inst, str(prices[inst])))
    hi = {i: max(Decimal(p) for n, p in ticks if n == i) for i in bases}
    lo = {i: min(Decimal(p) for n, p in ticks if n == i) for i in bases}
    expected = {a.id for a in alerts if (a.price <= hi[a.crypto] if a.direction else a.price >= lo[a.crypto])}
    assert 1000 < len(expected) < 9000  # both fired and untouched alerts are exercised
    path = tmp_path / "ticks.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(t) for t in ticks))
    procs = [subprocess.Popen([sys.executable, "-m", "tests.flows.alert_matcher_worker", redis_server.url,
                               str(path)], cwd=ROOT, start_new_session=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while int(redis_db.get("race:ready") or 0) < 2:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.02)
        redis_db.set("race:go", 1)  # both processes start matching the same stream now
        for p in procs:
            assert p.wait(120) == 0
    finally:
        for p in procs:
            stop_process(p)  # type: ignore[arg-type]
    jobs = _jobs(redis_db)
    job_ids = [j["alert_id"] for j in jobs]
    assert len(job_ids) == len(set(job_ids))  # one job per fired alert, never two
    assert set(job_ids) == expected
    by_id = {a.id: a for a in alerts}
    assert all(j["to"] == by_id[j["alert_id"]].email for j in jobs)
    fired = {a.id for a in alerts if redis_db.hget(f"alert:{a.id}", "status") == "fired"}
    assert fired == expected
    still = set()
    for inst in bases:
        still |= set(redis_db.zrange(f"alert:{inst}:gt", 0, -1)) | set(redis_db.zrange(f"alert:{inst}:lt", 0, -1))
    assert still == {a.id for a in alerts} - expected
