"""The real-server fixtures themselves: each one answers like the server it stands for."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage


def test_redis_fixture_is_a_real_redis(redis_db) -> None:
    assert redis_db.execute_command("PING") is True
    assert redis_db.info("server")["redis_version"].split(".")[0] >= "6"
    redis_db.lpush("l", "a", "b")
    assert redis_db.lmove("l", "m", "RIGHT", "LEFT") == "a"


def test_smtp_fixture_receives_mail(smtp_server) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.test", "b@example.test", "hello"
    msg.set_content("body text")
    with smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10) as client:
        client.send_message(msg)
    [got] = smtp_server.messages
    assert got["Subject"] == "hello" and got["X-Envelope-To"] == "b@example.test"
    assert got.get_payload().strip() == "body text"
