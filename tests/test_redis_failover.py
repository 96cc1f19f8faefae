"""Redis Sentinel: ``REDIS_URL=redis+sentinel://...`` parsed in one place (:mod:`connectors.redis.client`), and a
real failover under the four dataflows.

The failover test runs ``redis-server`` x2 (master + replica) and ``redis-sentinel`` x3 (quorum 2,
down-after 1 s) on loopback (:mod:`tests.sentinel_helpers`), the simulator as OKX, aiosmtpd as the SMTP server,
and the collector, the analysis, market_data, the email sender and ``cryptoflow serve`` against the sentinels.
It SIGKILLs the master and checks that every dataflow writes to the new master, and the service reads from it
(REST, and the push gateway on a WebSocket kept open), within 30 s, that the CLI finds it, that every email job
queued before and after is delivered exactly once (none dead), that a price alert created after the failover
fires exactly once, and counts what the buffer list ``okex_orderbook`` lost (README "Redis Sentinel").
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import redis.sentinel
import websockets

from connectors.alerts.store import AlertStore, set_key
from connectors.redis.client import RETRYABLE, is_retryable, parse_sentinel_url, sync_client
from connectors.redis.list_source import ReliableRedisListSource
from connectors.redis.sink import execute_until_written, redis_client
from cryptoflow.servers import free_port, redis_server_binary, start_redis, stop_process, wait_for_port
from operators.alerts import Alert
from tests.dataflow_helpers import log_events, start_dataflow
from tests.fixtures.service import ServiceProcess, launch_service
from tests.fixtures.smtp import SmtpServer
from tests.sentinel_helpers import SentinelCluster, sentinel_cluster
from tests.waiting import wait_for

PAIRS = ["BTC-USDT", "ETH-USDT"]
FLOWS = ("orderbook_collector", "orderbook_analysis", "market_data", "email_sender")
CARRY_ON_S = 30.0
BUFFER = "okex_orderbook"
# One line per retry episode (not per attempt), from the code that loops on Redis in each dataflow.
RETRY_EVENTS = ("redis_write_failed", "redis_list_unavailable", "pairs_poll_failed", "email_redis_unavailable",
                "email_ack_retry", "price_alerts_redis_unavailable")


# --- the URL and the retry classification (no server) ------------------------------------------------------------
def test_sentinel_url_parsed_with_passwords_out_of_repr() -> None:
    parsed = parse_sentinel_url("redis+sentinel://app:p%40ss@10.0.0.1:26379,[::1]:26380,s3/mymaster/2"
                                "?sentinel_password=s%26p")
    assert parsed.sentinels == (("10.0.0.1", 26379), ("::1", 26380), ("s3", 26379))
    assert (parsed.service, parsed.db, parsed.username) == ("mymaster", 2, "app")
    assert (parsed.password, parsed.sentinel_password) == ("p@ss", "s&p")
    assert "p@ss" not in repr(parsed) and "s&p" not in repr(parsed)
    assert parse_sentinel_url("redis+sentinel://h/m").db == 0


@pytest.mark.parametrize(("url", "reason"), [
    ("redis+sentinel://h:26379", "expected /<service>/<db>"),
    ("redis+sentinel://h:26379/m/0/extra", "expected /<service>/<db>"),
    ("redis+sentinel://h:26379/m/zero", "expected a database number"),
    ("redis+sentinel://h:26379,,h2/m", "expected host:port"),
    ("redis+sentinel://:secret@h:99999/m", "expected a port number"),
    ("redis+sentinel://h/m?password=x", "unknown redis+sentinel URL option"),
])
def test_bad_sentinel_urls_say_what_is_wrong(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)) as err:
        parse_sentinel_url(url)
    assert "secret" not in str(err.value)


def test_failover_errors_are_retryable_and_command_errors_are_not() -> None:
    assert redis.exceptions.ReadOnlyError in RETRYABLE
    for err in (redis.ConnectionError("refused"), redis.TimeoutError("slow"),
                redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
                redis.sentinel.MasterNotFoundError("No master found for 'cf'"),
                redis.exceptions.ResponseError("NOREPLICAS Not enough good replicas to write.")):
        assert is_retryable(err), err
    for err in (redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
                redis.exceptions.NoScriptError("No matching script")):
        assert not is_retryable(err), err


# --- the failover ------------------------------------------------------------------------------------------------
def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _job(name: str) -> bytes:
    return orjson.dumps({"id": name, "alert_id": name, "to": f"{name}@example.com", "subject": f"job {name}",
                         "body": f"job {name}\n", "created_at": "2026-11-30T09:00:00.000Z", "attempts": 0})


def _alert(name: str) -> Alert:
    # gt 1: the first fresh BTC-USDT trade fires it
    return Alert(id=uuid.uuid4().hex, crypto="BTC-USDT", price=Decimal(1), direction=True,
                 email=f"{name}@example.com", created_at=_iso(time.time()))


def _received(smtp: SmtpServer) -> dict[str, int]:
    out: dict[str, int] = {}
    for msg in smtp.messages:
        for rcpt in str(msg["X-Envelope-To"]).split(","):
            out[rcpt] = out.get(rcpt, 0) + 1
    return out


def _chain_breaks(raws: list[bytes], killed_ms: int) -> tuple[list[tuple[str, int, int]], int]:
    """The breaks in the per-instrument seqId chains of OKX books frames listed oldest first, and the frames: a
    break is an update whose prevSeqId is not the seqId before it (frames missing between them; a snapshot starts
    over), as (instrument, exchange ms of the frame before it relative to the kill, ms to the frame after it)."""
    last: dict[str, tuple[int, int]] = {}
    breaks: list[tuple[str, int, int]] = []
    frames = 0
    for raw in raws:
        msg = orjson.loads(raw)
        inst = msg["arg"]["instId"]
        for d in msg["data"]:
            frames += 1
            ts = int(d["ts"])
            if d["prevSeqId"] != -1 and inst in last and d["prevSeqId"] != last[inst][0]:
                breaks.append((inst, last[inst][1] - killed_ms, ts - last[inst][1]))
            last[inst] = (d["seqId"], ts)
    return breaks, frames


class _Probe:
    """LPUSHes 0, 1, 2... onto a list of the current master as fast as one connection goes (a worst case for the
    buffer list's producer) and remembers the highest number the master acknowledged before it died."""

    def __init__(self, port: int, key: str) -> None:
        self.client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)
        self.key = key
        self.acked = -1
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while True:
            try:
                self.client.lpush(self.key, i)
            except redis.RedisError:
                return
            self.acked = i
            i += 1


def _wait_new(what: str, deadline: float, check: Any, *, not_yet: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll until ``check`` holds, failing at ``deadline``; a check that took long and held only after it fails
    too (one slow poll must not stretch the bound). ``not_yet``: errors that only mean "not yet"."""
    left = max(deadline - time.monotonic(), 0.1)
    got = wait_for(f"{what} within {CARRY_ON_S:.0f} s of the kill", check, timeout=left, every=0.2,
                   not_yet=not_yet)
    late = time.monotonic() - deadline
    assert late <= 0, f"{what}: only {late:.1f} s after the {CARRY_ON_S:.0f} s bound"
    return got


@pytest.mark.slow
def test_every_dataflow_follows_a_sentinel_failover(start_simulator: Any, smtp_server: SmtpServer,
                                                    tmp_path: Path) -> None:
    sim = start_simulator("--pairs", ",".join(PAIRS), "--seed", "7", "--rate", "20")
    with sentinel_cluster(tmp_path / "redis") as cluster:
        r = sync_client(cluster.url, decode_responses=True)  # the test's own reads and writes follow the master too
        r.sadd("config:trading_pairs", *PAIRS)
        env = {**sim.env(), "REDIS_URL": cluster.url, "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
               "TRADING_PAIRS_POLL_INTERVAL": "1", "MARKET_DATA_VENUES": "okx", "KLINE_TIMEFRAMES": "1m",
               "PRICE_ALERTS_ENABLED": "true", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_server.port),
               "SMTP_TIMEOUT": "5", "EMAIL_BACKOFF_INITIAL": "0.2", "EMAIL_BACKOFF_MAX": "1"}
        logs = {name: tmp_path / f"{name}.log" for name in FLOWS}
        procs = {name: start_dataflow(name, env, logs[name]) for name in FLOWS}
        service: ServiceProcess | None = None
        try:
            service = launch_service(tmp_path / "service", {"REDIS_URL": cluster.url})
            _run_failover(cluster, r, smtp_server, procs, logs, service)
        finally:
            for proc in procs.values():
                stop_process(proc)
            if service is not None:
                stop_process(service.proc)  # type: ignore[arg-type]
            r.close()


def _api_book_time(service: ServiceProcess) -> str:
    """The service's answer for BTC-USDT's book (its timestamp), or "" while it cannot read Redis."""
    try:
        resp = httpx.get(f"{service.url}/v1/orderbook/BTC-USDT", timeout=10)
    except httpx.HTTPError:
        return ""
    return str(resp.json().get("timestamp", "")) if resp.status_code == 200 else ""


class _PushFollower:
    """One WebSocket client of the service's push gateway (``GET /ws``), subscribed to ``BTC-USDT@depth5``,
    recording when each event arrives; the connection is meant to stay open through the failover."""

    def __init__(self, service_url: str) -> None:
        self.url = service_url.replace("http://", "ws://", 1) + "/ws"
        self.events: list[float] = []
        self.error: str | None = None
        self.stopping = False
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()

    async def _main(self) -> None:
        try:
            async with websockets.connect(self.url, open_timeout=30, ping_interval=None) as ws:
                await ws.send(orjson.dumps({"op": "subscribe", "channel": "BTC-USDT@depth5"}).decode())
                while not self.stopping:
                    try:
                        msg = orjson.loads(await asyncio.wait_for(ws.recv(), 1.0))
                    except TimeoutError:
                        continue
                    if "event" in msg:
                        self.events.append(time.monotonic())
                    elif msg.get("result") is not True:
                        self.error = f"unexpected reply {msg!r}"
        except Exception as err:  # reported by the test, not raised in this thread
            self.error = f"{type(err).__name__}: {err}"

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(10)


def _cli_pairs(url: str) -> str:
    """``cryptoflow pairs list`` against the sentinels: its stdout when it exits 0, else ""."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    proc = subprocess.run([sys.executable, "-m", "cryptoflow.cli", "pairs", "list"], env={**env, "REDIS_URL": url},
                          capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout if proc.returncode == 0 else ""


def _run_failover(cluster: SentinelCluster, r: redis.Redis, smtp: SmtpServer, procs: dict[str, Any],
                  logs: dict[str, Path], service: ServiceProcess) -> None:
    def alive() -> bool:
        dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
        assert not dead, f"dataflows exited: {dead}; log tail: " + " | ".join(
            logs[n].read_text(errors="replace")[-1500:] for n in dead)
        return True

    def field(key: str, name: str) -> str:
        return str(new_master.hget(key, name) or "")

    store = AlertStore(r)
    before = _alert("alert-before")
    store.add(before)
    r.lpush("queue:email", *[_job(f"before-{i}") for i in range(5)])
    wait_for("books, analysis, ticker and the first emails before the failover", lambda: (
        alive()
        and all(r.hget(f"orderbook:{i}", "status") == "valid" and r.exists(f"analysis:{i}") for i in PAIRS)
        and r.exists("ticker:okx:BTC-USDT") and _received(smtp).get("alert-before@example.com")
        and all(_received(smtp).get(f"before-{i}@example.com") for i in range(5))), timeout=90, every=0.2)
    assert _api_book_time(service), "the service reads the book through the sentinels"
    push = _PushFollower(service.url)
    wait_for("push events before the failover", lambda: push.error or push.events, timeout=30)
    assert push.error is None, push.error

    # In flight at the kill: email jobs queued just before it, and the loss probe.
    r.lpush("queue:email", *[_job(f"during-{i}") for i in range(10)])
    probe = _Probe(cluster.master_port, "probe:failover")
    probe.thread.start()
    wait_for("the probe writing", lambda: probe.acked >= 1000, timeout=30, every=0.05)
    killed_at, killed_wall = time.monotonic(), time.time()
    old = cluster.kill_master()
    probe.thread.join(10)
    deadline = killed_at + CARRY_ON_S

    # While they vote, every sentinel reports the old master as down: redis-py says MasterNotFoundError.
    new = _wait_new("the sentinels electing a new master", deadline,
                    lambda: (a := cluster.master_address()) and a[1] != old and a,
                    not_yet=(redis.sentinel.MasterNotFoundError,))
    elected_s = time.monotonic() - killed_at
    new_master = cluster.client(new[1])
    # What the buffer list could lose: the probe's acknowledged numbers missing on the new master, and breaks in
    # the seqId chains of the frames the new master holds (list + the analysis' processing list, read atomically).
    present = {int(x) for x in new_master.lrange("probe:failover", 0, -1)}
    probe_lost = sum(1 for i in range(probe.acked + 1) if i not in present)
    pipe = new_master.pipeline(transaction=True)
    pipe.lrange(f"{BUFFER}:processing:0", 0, -1)
    pipe.lrange(BUFFER, 0, -1)
    processing, queued = pipe.execute()
    breaks, frames = _chain_breaks([x.encode() for x in [*reversed(processing), *reversed(queued)]],
                                   int(killed_wall * 1000))

    after = _alert("alert-after")
    AlertStore(new_master).add(after)
    r.lpush("queue:email", *[_job(f"after-{i}") for i in range(5)])
    since = _iso(killed_wall)
    _wait_new("the collector writing books", deadline,
              lambda: all(field(f"orderbook:{i}", "latest_timestamp") > since for i in PAIRS))
    _wait_new("the analysis writing results", deadline,
              lambda: all(field(f"analysis:{i}", "analysis_time") > since for i in PAIRS))
    _wait_new("market_data writing tickers", deadline, lambda: field("ticker:okx:BTC-USDT", "timestamp") > since)
    _wait_new("the service answering from the new master", deadline, lambda: _api_book_time(service) > since)
    books_at = time.monotonic()  # the new master has fresh books: an event after this comes from its streams
    _wait_new("the push gateway streaming from the new master on the same WebSocket", deadline,
              lambda: push.error or any(t > books_at for t in push.events))
    push.stop()
    assert push.error is None, push.error
    names = [f"{p}-{i}@example.com" for p, n in (("before", 5), ("during", 10), ("after", 5)) for i in range(n)]
    names += ["alert-before@example.com", "alert-after@example.com"]
    _wait_new("every email job and both alerts' emails delivered", deadline,
              lambda: all(_received(smtp).get(n) for n in names))
    carried_s = time.monotonic() - killed_at
    alive()
    # A new process (CLI start-up: seconds on a loaded machine, not part of the bound) finds the new master.
    wait_for("the CLI reading the new master", lambda: all(p in _cli_pairs(cluster.url) for p in PAIRS), timeout=60)

    wait_for("the email queue settled", lambda: not new_master.llen("queue:email")
             and not new_master.llen("queue:email:processing:0"), timeout=15)
    got = _received(smtp)
    assert {n: got.get(n) for n in names} == dict.fromkeys(names, 1), "each job and alert email exactly once"
    assert sum(got.values()) == len(names), f"unexpected extra emails: {got}"
    assert new_master.llen("queue:email:dead") == 0, new_master.lrange("queue:email:dead", 0, -1)
    for alert in (before, after):  # fired (or already tidied away by the service's reconciler), no longer armed
        assert new_master.hget(f"alert:{alert.id}", "status") in ("fired", None)
        assert new_master.zscore(set_key(alert.crypto, alert.direction), alert.id) is None
    episodes = {n: sum(len(log_events(logs[n], ev)) for ev in RETRY_EVENTS) for n in FLOWS}
    dropped = sum(e.get("dropped_items", 0) for e in log_events(logs["orderbook_collector"], "redis_write_recovered"))
    print(f"\nfailover: master :{old} -> :{new[1]} elected {elected_s:.1f} s after the kill; every dataflow "
          f"carried on within {carried_s:.1f} s; probe acked "
          f"{probe.acked + 1} LPUSHes, lost {probe_lost}; collector batches dropped during the outage: {dropped} "
          f"items; buffer frames held {frames}, seqId breaks (inst, ms before the kill, gap ms) {breaks}; "
          f"retry log lines {episodes}")
    assert all(n <= 8 for n in episodes.values()), f"a retry line per attempt, not per episode: {episodes}"
    assert frames > 0 and probe.acked > 0, "nothing measured"
    # Measured, not asserted (README "Redis Sentinel"): asynchronous replication may lose the last acknowledged
    # writes of the old master; on loopback that is rare, across machines it is the replication lag.


# --- READONLY (a demoted master, or a URL that reaches a replica) is not fatal --------------------------------------
@pytest.fixture
def master_and_replica(tmp_path: Path) -> Iterator[tuple[int, int]]:
    mport, rport = free_port(), free_port()
    master = start_redis(mport, tmp_path / "master")
    replica = subprocess.Popen(
        [redis_server_binary(), "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--replicaof", "127.0.0.1", str(mport)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(rport, proc=replica)
        wait_for("the replica in sync", lambda: redis.Redis(port=rport).info("replication")
                 .get("master_link_status") == "up", timeout=30)
        yield mport, rport
    finally:
        stop_process(replica)
        stop_process(master)


def test_readonly_backs_off_the_list_source_and_holds_the_sink_until_a_master_takes_it(
        master_and_replica: tuple[int, int]) -> None:
    mport, rport = master_and_replica
    replica_url = f"redis://127.0.0.1:{rport}/0"
    redis.Redis(port=mport).lpush("q", b"a", b"b")
    wait_for("the elements replicated", lambda: redis.Redis(port=rport).llen("q") == 2, timeout=10)
    # The analysis' and the email sender's source: READONLY used to raise out of next_batch (dataflow stopped).
    part = ReliableRedisListSource(replica_url, "q", backoff_max=0.2).build_part("s", "0", None)
    try:
        assert part.next_batch() == [] and part.next_awake() is not None
        # The pipeline sinks hold a batch a replica refuses, until a master takes it (here: the replica promoted).
        promote = threading.Timer(1.0, lambda: redis.Redis(port=rport).replicaof("NO", "ONE"))
        promote.start()
        client = redis_client(replica_url)
        execute_until_written(client, lambda pipe: pipe.set("k", "v"), 1)
        promote.join()
        client.close()
        assert redis.Redis(port=rport).get("k") == b"v"
        got = wait_for("the source taking the elements from the promoted replica", part.next_batch, timeout=10)
        assert [item.raw for item in got] == [b"a", b"b"]
    finally:
        part.close()
