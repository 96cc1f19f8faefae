"""The email sender dataflow as a process, against a real redis-server and a real SMTP server (aiosmtpd):
delivery and header safety, SMTP down -> retries -> dead list -> back up, and kill -9 mid-way."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller

from cryptoflow.servers import free_port, stop_process
from tests.fixtures.smtp import SmtpServer, _Inbox
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def job(i: int | str, **kw: Any) -> bytes:
    n = int(i) if str(i).isdigit() else 0
    base = {"id": f"job-{i}", "alert_id": f"alert-{i}", "to": f"user{i}@example.com",
            "subject": f"Price alert: BTC-USDT rose to {36000 + n}",
            "body": f"Your price alert fired.\n\nInstrument:    BTC-USDT\nJob {i}\n",
            "created_at": "2026-11-21T09:00:00.000Z", "attempts": 0}
    return orjson.dumps({**base, **kw})


@contextmanager
def sender(redis_url: str, smtp_port: int, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    full = {**os.environ, "REDIS_URL": redis_url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port),
            "SMTP_TIMEOUT": "2", "EMAIL_MAX_ATTEMPTS": "3", "EMAIL_BACKOFF_INITIAL": "0.1",
            "EMAIL_BACKOFF_MAX": "0.3", "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json", **env}
    proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.email_sender"], cwd=ROOT, env=full,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        stop_process(proc)  # type: ignore[arg-type]


def received(smtp: SmtpServer) -> Counter[str]:
    return Counter(str(m["X-Cryptoflow-Job"]) for m in smtp.messages)


def test_sends_readable_mail_and_dead_letters_unsafe_jobs(redis_server, redis_db, smtp_server) -> None:
    good = [job(i) for i in range(5)]
    bad = [b"not json", job("inj1", subject="hi\r\nBcc: victim@example.com"),
           job("inj2", to="a@example.com\r\nBcc: victim@example.com"), job("inj3", to="nobody")]
    redis_db.lpush("queue:email", *good, *bad)
    with sender(redis_server.url, smtp_server.port):
        wait_for("delivery and dead-lettering",
                 lambda: len(smtp_server.messages) >= 5 and redis_db.llen("queue:email:dead") >= 4)
        wait_for("the processing list to empty", lambda: redis_db.llen("queue:email:processing:0") == 0)
    msgs = {str(m["X-Cryptoflow-Job"]): m for m in smtp_server.messages}
    assert set(msgs) == {f"job-{i}" for i in range(5)}
    m = msgs["job-3"]
    assert m["To"] == "user3@example.com" and m["X-Envelope-To"] == "user3@example.com"
    assert m["Subject"] == "Price alert: BTC-USDT rose to 36003" and m["From"] == "cryptoflow@localhost"
    assert m.get_content_type() == "text/plain" and "Instrument:    BTC-USDT" in m.get_payload(decode=True).decode()
    assert all("victim" not in str(v) for msg in smtp_server.messages for v in msg.values())
    dead = [orjson.loads(d) for d in redis_db.lrange("queue:email:dead", 0, -1)]
    assert sorted(d.get("id", d.get("raw")) for d in dead) == ["job-inj1", "job-inj2", "job-inj3", "not json"]
    assert all(d["last_error"] for d in dead)
    assert redis_db.llen("queue:email") == 0


def test_smtp_down_retries_then_dead_list_then_recovers(redis_server, redis_db, smtp_server) -> None:
    smtp_server.stop()
    redis_db.lpush("queue:email", job(1), job(2))
    with sender(redis_server.url, smtp_server.port):
        # Held (with a growing attempts count) while retrying, then dead after EMAIL_MAX_ATTEMPTS=3.
        wait_for("both jobs to be dead-lettered", lambda: redis_db.llen("queue:email:dead") == 2)
        dead = {d["id"]: d for d in map(orjson.loads, redis_db.lrange("queue:email:dead", 0, -1))}
        assert set(dead) == {"job-1", "job-2"} and {d["attempts"] for d in dead.values()} == {3}
        assert all("Connection" in d["last_error"] or "refused" in d["last_error"] for d in dead.values())
        assert redis_db.llen("queue:email:processing:0") == 0
        smtp_server.start()
        redis_db.lpush("queue:email", job(3), job(4))
        wait_for("new jobs to flow again", lambda: set(received(smtp_server)) == {"job-3", "job-4"})
        wait_for("the processing list to empty", lambda: redis_db.llen("queue:email:processing:0") == 0)
    assert redis_db.llen("queue:email:dead") == 2


@dataclass
class _SlowInbox(_Inbox):
    delay: float = 0.02

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def slow_smtp() -> Iterator[SmtpServer]:
    inbox = _SlowInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer(port, inbox, controller)
    finally:
        controller.stop()


def test_kill9_mid_batch_then_restart_sends_every_job(redis_server, redis_db, slow_smtp) -> None:
    ids = [f"job-{i}" for i in range(100)]
    redis_db.lpush("queue:email", *[job(i) for i in range(100)])
    env = {"EMAIL_CONCURRENCY": "1"}
    with sender(redis_server.url, slow_smtp.port, **env) as proc:
        wait_for("the first sends", lambda: len(slow_smtp.messages) >= 20)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    at_kill = len(slow_smtp.messages)
    assert at_kill < 100, "the kill landed after the end; make the SMTP server slower"
    held = redis_db.llen("queue:email:processing:0") + redis_db.llen("queue:email")
    assert held >= 100 - at_kill - 1  # nothing lost: every unsent job is still in Redis
    with sender(redis_server.url, slow_smtp.port, **env):
        wait_for("every job after the restart", lambda: set(received(slow_smtp)) == set(ids))
        wait_for("the processing list to empty", lambda: redis_db.llen("queue:email:processing:0") == 0)
    counts = received(slow_smtp)
    twice = [i for i, n in counts.items() if n > 1]
    assert len(twice) <= 1 and all(counts[i] == 2 for i in twice)  # at most the one in flight at the kill
    assert redis_db.llen("queue:email") == 0 and redis_db.llen("queue:email:dead") == 0


def _hostile() -> dict[str, bytes]:
    """Jobs no sender must trip over: each is sent once or dead once, never twice, never a retry loop."""
    def deep(name: str, depth: int) -> bytes:
        return job(name)[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"
    return {
        "h-huge-attempts": job("h-huge-attempts")[:-1].replace(b'"attempts":0', b'"attempts":99999999999999999999999')
        + b"}",
        "h-negative-attempts": job("h-negative-attempts", attempts=-1),
        "h-u2028-subject": job("h-u2028-subject", subject="Price alert\u2028Bcc: victim@example.com"),
        "h-crlf-recipient": job("h-crlf-recipient", to="a@example.com\r\nBcc: victim@example.com"),
        "h-deep-1000": deep("h-deep-1000", 1000),
        "h-deep-10000": deep("h-deep-10000", 10_000),
        "h-5mb": job("h-5mb", body="x" * (5 * 1024 * 1024)),
        "h-not-utf8": job("h-not-utf8").replace(b"Job h-not-utf8", b"Job \xff\xfe\xc3("),
        "h-bare-deep": b"[" * 10_000 + b"]" * 10_000,
    }


def _dead_ids(redis_db: Any) -> Counter[str]:
    """The job id of each dead-list entry: its ``id``, or the one its raw text starts with, or ``"?"``."""
    out: Counter[str] = Counter()
    for d in map(orjson.loads, redis_db.lrange("queue:email:dead", 0, -1)):
        found = re.match(r'\{"id":"([^"]+)"', str(d.get("raw", "")))
        out[str(d.get("id") or (found.group(1) if found else "?"))] += 1
    return out


def test_hostile_jobs_are_sent_or_dead_once_across_a_restart(redis_server, redis_db, smtp_server) -> None:
    hostile = _hostile()
    names = [f"job-{n}" for n in hostile if n != "h-bare-deep"] + ["?"]  # the bare array has no id
    redis_db.lpush("queue:email", job(1), *hostile.values(), job(2))
    env = {"LIST_MAX_DELIVERIES": "2"}

    def settled() -> bool:
        done = set(received(smtp_server)) | set(_dead_ids(redis_db))
        return set(names) | {"job-1", "job-2"} <= done and redis_db.llen("queue:email:processing:0") == 0

    with sender(redis_server.url, smtp_server.port, **env) as proc:
        wait_for("every hostile job to be sent or dead", settled)
        proc.send_signal(signal.SIGTERM)  # the sender leads its process group; a clean stop
        assert proc.wait(30) == 0
    first = (received(smtp_server), _dead_ids(redis_db))
    with sender(redis_server.url, smtp_server.port, **env):
        redis_db.lpush("queue:email", job(3))
        wait_for("the restarted sender to deliver a new job", lambda: "job-3" in received(smtp_server))
        wait_for("the processing list to empty", lambda: redis_db.llen("queue:email:processing:0") == 0)
    sent, dead = received(smtp_server), _dead_ids(redis_db)
    assert (sent - Counter({"job-3": 1}), dead) == first  # nothing sent or dead-lettered again
    assert all(n == 1 for n in sent.values())
    assert all(sent[name] + dead[name] == 1 for name in names), (sent, dead)
    # Every job that breaks a rule is dead at once, with its reason, and never reached the SMTP server.
    never_sendable = set(names) - {"job-h-deep-1000"}  # a deep unknown field may be skipped or refused
    assert not never_sendable & set(sent)
    reasons = {}
    for d in map(orjson.loads, redis_db.lrange("queue:email:dead", 0, -1)):
        found = re.match(r'\{"id":"([^"]+)"', str(d.get("raw", "")))
        reasons[str(d.get("id") or (found.group(1) if found else "?"))] = d["reason"]
    assert {reasons[f"job-h-{n}"] for n in ("huge-attempts", "negative-attempts", "u2028-subject",
                                              "crlf-recipient")} == {"invalid_job"}
    assert (reasons["job-h-5mb"], reasons["job-h-not-utf8"], reasons["?"]) == (
        "too_large", "malformed_json", "wrong_type")
    assert all("attempts" not in d or d["attempts"] == 0
               for d in map(orjson.loads, redis_db.lrange("queue:email:dead", 0, -1)))  # no retries


def test_a_clean_stop_neither_loses_nor_double_sends(redis_server, redis_db, slow_smtp) -> None:
    ids = [f"job-{i}" for i in range(60)]
    redis_db.lpush("queue:email", *[job(i) for i in range(60)])
    env = {"EMAIL_CONCURRENCY": "1"}
    with sender(redis_server.url, slow_smtp.port, **env) as proc:
        wait_for("the first sends", lambda: len(slow_smtp.messages) >= 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # a clean exit
    assert len(slow_smtp.messages) < 60, "the stop landed after the end; make the SMTP server slower"
    assert redis_db.llen("queue:email:processing:0") == 0  # finished and acked, or given back to the queue
    assert redis_db.llen("queue:email") + len(slow_smtp.messages) == 60
    with sender(redis_server.url, slow_smtp.port, **env):
        wait_for("every job after the restart", lambda: set(received(slow_smtp)) == set(ids))
        wait_for("the processing list to empty", lambda: redis_db.llen("queue:email:processing:0") == 0)
    assert received(slow_smtp) == Counter(ids)  # each exactly once
    assert redis_db.llen("queue:email:dead") == 0
