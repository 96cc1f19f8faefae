"""connectors/email_sink.py in-process, against a real redis-server and a real SMTP server (aiosmtpd):
an unforeseen error while sending is retried then dead-lettered, and never ends a sender thread."""

from __future__ import annotations

import orjson

from connectors.email_sink import RetryPolicy, _Pool
from connectors.redis_list import ListAcker, ListItem
from connectors.smtp import SmtpConfig
from tests.waiting import wait_for


def _job(i: int) -> bytes:
    return orjson.dumps({"id": f"job-{i}", "alert_id": f"alert-{i}", "to": f"user{i}@example.com",
                         "subject": "Price alert: BTC-USDT rose to 36000", "body": "hello\n",
                         "created_at": "2026-11-21T09:00:00.000Z", "attempts": 0})


def test_unforeseen_send_error_is_retried_then_dead_and_the_thread_lives_on(redis_server, redis_db,
                                                                           smtp_server) -> None:
    # A From header with CR/LF makes the message builder raise ValueError (not an SMTP error). Settings
    # refuse such an EMAIL_FROM; a caller building SmtpConfig by hand can still pass one.
    bad_sender = SmtpConfig(host="127.0.0.1", port=smtp_server.port, sender="a@b.example\r\nBcc: v@c.example",
                            timeout=5.0)
    redis_db.lpush("queue:email:processing:0", _job(1))
    pool = _Pool(ListAcker(redis_server.url, "queue:email"), bad_sender, RetryPolicy(3, 0.01, 0.02),
                 "queue:email:dead", concurrency=1)
    try:
        pool.submit([ListItem(_job(1), "0")])
        wait_for("the job to be dead-lettered", lambda: redis_db.llen("queue:email:dead") == 1)
        [dead] = [orjson.loads(d) for d in redis_db.lrange("queue:email:dead", 0, -1)]
        assert dead["id"] == "job-1" and dead["attempts"] == 3 and dead["last_error"].startswith("ValueError")
        assert redis_db.llen("queue:email:processing:0") == 0
        assert all(t.is_alive() for t in pool._threads)  # the sender thread survived
        assert smtp_server.messages == []
    finally:
        pool.stop()
    assert not any(t.is_alive() for t in pool._threads)  # stop() waits for the threads


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
