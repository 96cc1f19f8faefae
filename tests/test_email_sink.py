"""connectors/email/sink.py in-process, against a real redis-server and a real SMTP server (aiosmtpd): a job
that can never be sent is dead at once and never ends a sender thread; an accepted job is acked even when
Redis refuses writes for a while; a stop gives the jobs not started back to the queue."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiosmtpd.controller import Controller
from structlog.testing import capture_logs

from connectors.email.sink import RetryPolicy, _Pool
from connectors.email.smtp import SmtpConfig
from connectors.redis.lists import ListAcker, ListItem, list_client
from cryptoflow.servers import free_port
from tests.fixtures.smtp import _Inbox
from tests.waiting import wait_for


def _job(i: int) -> bytes:
    return orjson.dumps({"id": f"job-{i}", "alert_id": f"alert-{i}", "to": f"user{i}@example.com",
                         "subject": "Price alert: BTC-USDT rose to 36000", "body": "hello\n",
                         "created_at": "2026-11-21T09:00:00.000Z", "attempts": 0})


def test_a_message_the_library_refuses_is_dead_at_once_and_the_thread_lives_on(redis_server, redis_db,
                                                                                smtp_server) -> None:
    # A From header with CR/LF makes the message builder refuse every message. Settings refuse such an
    # EMAIL_FROM; a caller building SmtpConfig by hand can still pass one. Never sendable: no retries.
    bad_sender = SmtpConfig(host="127.0.0.1", port=smtp_server.port, sender="a@b.example\r\nBcc: v@c.example",
                            timeout=5.0)
    redis_db.lpush("queue:email:processing:0", _job(1))
    pool = _Pool(ListAcker(redis_server.url, "queue:email"), bad_sender, RetryPolicy(3, 0.01, 0.02),
                 "queue:email:dead", concurrency=1)
    try:
        pool.submit([ListItem(_job(1), "0")])
        wait_for("the job to be dead-lettered", lambda: redis_db.llen("queue:email:dead") == 1)
        [dead] = [orjson.loads(d) for d in redis_db.lrange("queue:email:dead", 0, -1)]
        assert dead["id"] == "job-1" and dead["reason"] == "invalid_job" and orjson.loads(dead["raw"]) == \
            orjson.loads(_job(1)) and "ValueError" in dead["last_error"] and dead["dead_at"].endswith("Z")
        assert redis_db.llen("queue:email:processing:0") == 0
        assert all(t.is_alive() for t in pool._threads)  # the sender thread survived
        assert smtp_server.messages == []
    finally:
        pool.stop()
    assert not any(t.is_alive() for t in pool._threads)  # stop() waits for the threads


@dataclass
class _GatedInbox(_Inbox):
    """Holds every DATA until the test opens the gate."""

    gate: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.get_running_loop().run_in_executor(None, self.gate.wait, 30)
        return await super().handle_DATA(server, session, envelope)


def test_an_accepted_job_is_acked_even_when_redis_refuses_the_first_writes(redis_server, redis_db) -> None:
    """Redis stops taking writes between the SMTP acceptance and the ack: the ack is retried until it lands,
    so the job is never left to be sent again."""
    inbox = _GatedInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    acker = ListAcker(redis_server.url, "queue:email", client=list_client(redis_server.url, socket_timeout=0.3))
    pool = _Pool(acker, SmtpConfig(host="127.0.0.1", port=controller.port, sender="a@b.example", timeout=20.0),
                 RetryPolicy(3, 0.01, 0.02), "queue:email:dead", concurrency=1)
    try:
        redis_db.lpush("queue:email:processing:0", _job(1))
        with capture_logs() as logs:
            pool.submit([ListItem(_job(1), "0")])
            wait_for("the SMTP conversation to reach DATA", lambda: controller.smtpd is not None)
            redis_db.execute_command("CLIENT", "PAUSE", 3000, "WRITE")  # the ack's LREM times out meanwhile
            inbox.gate.set()
            wait_for("the ack", lambda: redis_db.llen("queue:email:processing:0") == 0, timeout=30)
            # the sender logs the send after its ack landed: a loaded machine can run the test first
            wait_for("the email_sent line", lambda: any(e["event"] == "email_sent" for e in logs), timeout=30)
        assert [e["event"] for e in logs].count("email_ack_retry") >= 1
        assert [e["event"] for e in logs if e["event"] in ("email_sent", "email_retry", "email_dead")] == \
            ["email_sent"]
        assert [m["X-Cryptoflow-Job"] for m in inbox.messages] == ["job-1"]
        assert redis_db.llen("queue:email:dead") == 0
    finally:
        inbox.gate.set()
        pool.stop()
        controller.stop()


def test_a_stop_gives_waiting_jobs_back_to_the_queue(redis_server, redis_db) -> None:
    """A job waiting for its retry when the sink closes goes back to the queue's consuming end (taken first at
    the next start), not left in processing to be counted as an unfinished delivery."""
    port = free_port()  # nothing listens: a temporary failure, retried after a long backoff
    pool = _Pool(ListAcker(redis_server.url, "queue:email"),
                 SmtpConfig(host="127.0.0.1", port=port, sender="a@b.example", timeout=2.0),
                 RetryPolicy(5, 60.0, 60.0), "queue:email:dead", concurrency=1)
    redis_db.lpush("queue:email", _job(9))
    redis_db.lpush("queue:email:processing:0", _job(1))
    pool.submit([ListItem(_job(1), "0")])
    retried = _job(1).replace(b'"attempts":0', b'"attempts":1')
    wait_for("the retry to be recorded", lambda: redis_db.lrange("queue:email:processing:0", 0, -1) ==
             [retried.decode()])
    pool.stop()
    assert redis_db.llen("queue:email:processing:0") == 0
    assert redis_db.lrange("queue:email", 0, -1) == [_job(9).decode(), retried.decode()]  # RPOP takes job-1 first


def test_settling_again_after_a_lost_reply_changes_nothing(redis_server, redis_db) -> None:
    """The sink repeats a retry swap or a dead-letter move when the reply was lost (a connection error after
    Redis ran it): the repeat must not leave a second copy, which would be sent again at the next start."""
    acker = ListAcker(redis_server.url, "queue:email")
    held, retry = ListItem(_job(1), "0"), _job(1).replace(b'"attempts":0', b'"attempts":1')
    redis_db.lpush("queue:email:processing:0", _job(2), _job(1))
    for _ in range(2):
        new = acker.replace(held, retry)
    assert redis_db.lrange("queue:email:processing:0", 0, -1) == [retry.decode(), _job(2).decode()]
    for _ in range(2):
        acker.move_to(new, "queue:email:dead", b'{"dead": 1}')
    assert redis_db.lrange("queue:email:processing:0", 0, -1) == [_job(2).decode()]
    assert redis_db.lrange("queue:email:dead", 0, -1) == ['{"dead": 1}']
    acker.close()
